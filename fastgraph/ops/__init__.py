"""The operators, in the article's names and argument orders. Losses live in ``ops.loss``."""

from . import loss
from .activations import LeakyReLU, Logistic, ReLU, SoftMax, Step, Tanh
from .arithmetic import Add, Concat, Dot, MatMul, Multiply, Reshape, ScalarMultiply
from .convolution import AvgPool2D, Conv2D, Convolve, MaxPool2D, MaxPooling, ScalarMap

__all__ = [
    "Add", "Concat", "Dot", "MatMul", "Multiply", "Reshape", "ScalarMultiply",
    "LeakyReLU", "Logistic", "ReLU", "SoftMax", "Step", "Tanh", "loss",
    "AvgPool2D", "Conv2D", "Convolve", "MaxPool2D", "MaxPooling", "ScalarMap",
]
