"""Ready-made graphs: the article's multilayer perceptron."""

from dataclasses import dataclass

import numpy as np

from . import layer, ops
from .graph import Graph
from .node import Node, Variable


@dataclass
class Classifier:
    """The nodes a training loop needs: inputs, logits, probabilities and loss."""

    graph: Graph
    x: Variable
    one_hot: Variable
    logits: Node
    predict: Node
    loss: Node


def mlp(input_size=784, hidden=(100, 20), classes=10, activation="ReLU", dtype=np.float32,
        seed=None):
    """The article's network: ``fc`` layers with ``activation``, then a softmax output.

    The inputs are named ``x`` and ``one_hot``, the outputs ``predict`` and ``loss``, so a
    saved model can be found again by name.
    """
    graph = Graph(dtype=dtype, seed=seed)
    with graph:
        x = Variable(dim=(input_size, 1), init=False, trainable=False, name="x")
        one_hot = Variable(dim=(classes, 1), init=False, trainable=False, name="one_hot")
        node, size = x, input_size
        for width in hidden:
            node, size = layer.fc(node, size, width, activation), width
        logits = layer.fc(node, size, classes, None)
        predict = ops.SoftMax(logits, name="predict")
        loss = ops.loss.CrossEntropyWithSoftMax(logits, one_hot, name="loss")
    return Classifier(graph, x, one_hot, logits, predict, loss)
