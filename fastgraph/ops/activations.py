"""Activations: element-wise functions of one parent, and the softmax of each sample."""

import math
import numbers

import numpy as np

from ..kernels import elementwise as kernels
from ..kernels.softmax import softmax, softmax_vjp
from ..node import fixed
from .base import Operator


class Activation(Operator):
    """One parent, same shape; the VJP is element-wise too."""

    arity = 1

    def infer_dim(self):
        return self.parents[0].dim

    def vjp_buffer(self, upstream):
        return self.buffer(0, upstream.shape)


class ReLU(Activation):
    """max(x, 0); the derivative at 0 is taken as 0."""

    def compute(self):
        kernels.relu(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        kernels.relu_vjp(self.parents[0].flat, upstream, out)
        return out

    def dense_jacobian(self, slot):
        return np.diag(_nan_where_nan(self.parents[0].sample().ravel(), lambda x: x > 0))


class LeakyReLU(Activation):
    """x for x > 0, ``slope * x`` otherwise (slope 0.01 by default, as in PyTorch)."""

    slope = fixed("slope")

    def __init__(self, parent, slope=0.01, graph=None, name=None):
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real) or not math.isfinite(
                slope):
            raise ValueError(f"LeakyReLU: slope must be a finite number, got {slope!r}")
        dtype = getattr(getattr(parent, "graph", None), "dtype", None)
        with np.errstate(over="ignore"):  # 1e39 in float32 is inf: said below
            rounded = None if dtype is None else dtype.type(slope)
        if rounded is not None and not np.isfinite(rounded):
            raise ValueError(f"LeakyReLU: slope must be a finite number, got {slope!r}, which "
                             f"is infinite in {dtype.name}")
        self.slope = float(slope)
        super().__init__(parent, graph=graph, name=name)

    def config(self):
        return {"slope": self.slope}

    def compute(self):
        kernels.leaky_relu(self.parents[0].flat, self.slope, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        kernels.leaky_relu_vjp(self.parents[0].flat, self.slope, upstream, out)
        return out

    def dense_jacobian(self, slot):
        x = self.parents[0].sample().ravel()
        return np.diag(_nan_where_nan(x, lambda x: np.where(x > 0, 1.0, self.slope)))


class Logistic(Activation):
    """1 / (1 + exp(-x))."""

    def compute(self):
        kernels.logistic(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        kernels.logistic_vjp(self.flat, upstream, out)
        return out

    def dense_jacobian(self, slot):
        y = self.sample().ravel()
        return np.diag(y * (1 - y))


class Tanh(Activation):
    def compute(self):
        kernels.tanh(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        kernels.tanh_vjp(self.flat, upstream, out)
        return out

    def dense_jacobian(self, slot):
        y = self.sample().ravel()
        return np.diag(1 - y * y)


class Step(Activation):
    """1 where x >= 0, else 0. Its derivative is zero wherever it exists."""

    def compute(self):
        kernels.step(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        kernels.step_vjp(self.parents[0].flat, upstream, out)
        return out

    def dense_jacobian(self, slot):
        return np.diag(_nan_where_nan(self.parents[0].sample().ravel(), np.zeros_like))


class SoftMax(Activation):
    """exp(x) / sum(exp(x)) over all the elements of each sample."""

    def compute(self):
        softmax(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        softmax_vjp(self.flat, upstream, out)
        return out

    def dense_jacobian(self, slot):
        y = self.sample().ravel()
        return np.diag(y) - np.outer(y, y)


def _nan_where_nan(x, derivative):
    """``derivative(x)`` as the graph's floats, NaN where ``x`` is NaN (NaN in, NaN out)."""
    return np.where(np.isnan(x), np.nan, derivative(x)).astype(x.dtype)
