"""The article's ``model`` package: ready-made graphs in the default graph.

Both take the number of input features and of classes and return ``(x, logits)``: the
input ``Variable`` (a column ``(input_size, 1)``, named under the ``Input`` scope) and the
logits, to which the caller attaches a ``SoftMax`` or a loss, as in the article.
``fastgraph.models.mlp`` is the same network with its loss, in a graph of its own.
"""

import numpy as np

from . import checks
from .graph import name_scope
from .layer import fc, fc_activation
from .node import MOST_NUMBERS, Variable
from .ops import Add, MatMul

__all__ = ["logistic_regression", "multilayer_perception"]


def logistic_regression(input_size, classes):
    """Multi-class logistic regression: ``logits = W x + b``, parameters from N(0, 0.001)."""
    input_size, classes = _sizes("logistic_regression", input_size, classes)
    with name_scope("Input"):
        x = Variable((input_size, 1), init=False, trainable=False)
    with name_scope("Parameter"):
        w = Variable((classes, input_size), init=True, trainable=True)
        b = Variable((classes, 1), init=True, trainable=True)
    with name_scope("Logits"):
        logits = Add(MatMul(w, x), b)
    return x, logits


def multilayer_perception(input_size, classes, hidden_layers, activation):
    """``fc`` layers of the sizes in ``hidden_layers`` with ``activation``, then ``classes``
    logits with no activation."""
    if not isinstance(hidden_layers, (list, tuple, range, np.ndarray)):  # a dict: its keys
        raise ValueError(f"multilayer_perception: hidden_layers must be a list of layer "
                         f"sizes, such as [100, 20] or [] for none, got {hidden_layers!r}")
    fc_activation(activation)  # a near miss ("relu") refused with no hidden layer too
    input_size, classes = _sizes("multilayer_perception", input_size, classes)
    hidden_layers = [checks.positive_integer(f"multilayer_perception: hidden_layers[{i}]", width,
                                             MOST_NUMBERS)
                     for i, width in enumerate(hidden_layers)]
    with name_scope("Input"):
        x = Variable((input_size, 1), init=False, trainable=False)
    output, size = x, input_size
    with name_scope("Hidden"):
        for width in hidden_layers:
            output, size = fc(output, size, width, activation), width
    with name_scope("Logits"):
        logits = fc(output, size, classes, None)
    return x, logits


def _sizes(caller, input_size, classes):
    """The two sizes as ints, checked before any node is made: a refused call leaves the
    default graph as it was (a layer refusing its size would leave the layers before)."""
    input_size = checks.positive_integer(f"{caller}: input_size", input_size, MOST_NUMBERS)
    classes = checks.positive_integer(f"{caller}: classes", classes, MOST_NUMBERS)
    if input_size * classes > MOST_NUMBERS:
        raise ValueError(f"{caller}: {input_size:,} inputs by {classes:,} classes are more "
                         f"weights than an array can hold ({MOST_NUMBERS:,} at most)")
    return input_size, classes
