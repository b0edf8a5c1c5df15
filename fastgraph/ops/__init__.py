"""The operators, in the article's names and argument orders. Losses live in ``ops.loss``
(and, as in the article, are also importable from here); the article's metric nodes in
``ops.metrics``."""

from . import loss, metrics
from .activations import LeakyReLU, Logistic, ReLU, SoftMax, Step, Tanh
from .arithmetic import Add, Concat, Dot, MatMul, Multiply, Reshape, ScalarMultiply
from .base import Operator
from .convolution import AddScalar, AvgPool2D, Conv2D, Convolve, MaxPool2D, MaxPooling
from .loss import CrossEntropyWithSoftMax, LogLoss, MeanSquaredError, PerceptionLoss
from .movement import Transpose, Welding

__all__ = [
    "Add", "Concat", "Dot", "MatMul", "Multiply", "Reshape", "ScalarMultiply",
    "LeakyReLU", "Logistic", "ReLU", "SoftMax", "Step", "Tanh", "loss",
    "AddScalar", "AvgPool2D", "Conv2D", "Convolve", "MaxPool2D", "MaxPooling",
    "CrossEntropyWithSoftMax", "LogLoss", "MeanSquaredError", "PerceptionLoss", "metrics",
    "Transpose", "Welding", "Operator",
]
