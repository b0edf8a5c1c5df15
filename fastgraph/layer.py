"""Layers: functions that build the article's subgraphs from operators."""

import numpy as np

from .node import Variable
from .ops import Add, Logistic, MatMul, ReLU, Tanh

ACTIVATIONS = {"ReLU": ReLU, "Logistic": Logistic, "Tanh": Tanh, None: None}


def fc(input, input_size, size, activation):
    """A fully connected layer: ``activation(W @ input + b)``.

    ``W`` is ``(size, input_size)``, drawn as He-normal for ReLU and Glorot-uniform
    otherwise, from the graph's generator; ``b`` is ``(size, 1)`` zeros. ``activation`` is
    ``"ReLU"``, ``"Logistic"``, ``"Tanh"`` or None (the affine map alone).
    """
    if activation not in ACTIVATIONS:
        choices = ", ".join(repr(key) for key in ACTIVATIONS)
        raise ValueError(f"unknown activation {activation!r}: choose one of {choices}")
    if input.dim != (input_size, 1):
        raise ValueError(
            f"fc: {input.name} has shape {input.dim}, expected a column of ({input_size}, 1)"
        )
    graph = input.graph
    weights = Variable((size, input_size), trainable=True, graph=graph)
    if activation == "ReLU":
        weights.set_value(graph.rng.normal(0.0, np.sqrt(2.0 / input_size), weights.dim))
    else:
        limit = np.sqrt(6.0 / (input_size + size))
        weights.set_value(graph.rng.uniform(-limit, limit, weights.dim))
    bias = Variable((size, 1), trainable=True, graph=graph)
    bias.set_value(np.zeros(bias.dim))
    affine = Add(MatMul(weights, input), bias)
    return affine if activation is None else ACTIVATIONS[activation](affine)
