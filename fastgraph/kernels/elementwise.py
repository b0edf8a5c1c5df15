"""Element-wise kernels: broadcast arithmetic, batch sums, and activations with their VJPs."""

import numpy as np
from numba import prange

from . import kernel, parallel_kernel

# -- rows: an operand with fewer rows than ``out`` is read at row i * rows // out_rows -------
# One row stands for every row of the batch (a parameter beside a batch); B rows stand for
# B * m (the per-sample passes of fastgraph.jacobians repeat each sample's upstream m times).


@kernel
def copy_rows(a, out):
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = a[ia, j]


@kernel
def add_rows(a, b, out):
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        ib = i * b.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = a[ia, j] + b[ib, j]


@kernel
def add_into(out, a):
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] += a[ia, j]


@kernel
def multiply_rows(a, b, out):
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        ib = i * b.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = a[ia, j] * b[ib, j]


@kernel
def scale_rows(a, scale, out):
    """out[i, :] = a[i, :] * scale[i, 0]."""
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        s = scale[i * scale.shape[0] // out.shape[0], 0]
        for j in range(out.shape[1]):
            out[i, j] = a[ia, j] * s


@kernel
def dot_rows(a, b, out):
    """out[i, 0] = a[i, :] . b[i, :]."""
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        ib = i * b.shape[0] // out.shape[0]
        total = 0.0
        for j in range(a.shape[1]):
            total += a[ia, j] * b[ib, j]
        out[i, 0] = total


@parallel_kernel
def outer_rows(a, b, out):
    """out[r, i * n + j] = a[r, i] * b[r, j]: one outer product per row, flattened.

    The per-sample gradient of ``W @ x`` with respect to ``W``: the batched GEMM
    ``upstream.T @ x`` sums exactly these over the rows. The output is large (B times the
    weights) and only written, so both cores write it.
    """
    n = b.shape[1]
    for r in prange(out.shape[0]):
        rb = r * b.shape[0] // out.shape[0]
        for i in range(a.shape[1]):
            u = a[r, i]
            for j in range(n):
                out[r, i * n + j] = u * b[rb, j]


@kernel
def sum_rows(a, out):
    """out[0, :] = the sum of a's rows: the VJP of broadcasting a parameter over a batch."""
    for j in range(out.shape[1]):
        out[0, j] = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[0, j] += a[i, j]


# -- activations: forward on x, VJP on (x or y, upstream) ---------------------------------


@kernel
def relu(x, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            out[i, j] = v if v > 0 else 0


@kernel
def relu_vjp(x, upstream, out):
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = upstream[i, j] if x[r, j] > 0 else 0


@kernel
def leaky_relu(x, slope, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            out[i, j] = v if v > 0 else slope * v


@kernel
def leaky_relu_vjp(x, slope, upstream, out):
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            u = upstream[i, j]
            out[i, j] = u if x[r, j] > 0 else slope * u


@kernel
def logistic(x, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            if v >= 0:
                out[i, j] = 1.0 / (1.0 + np.exp(-v))
            else:
                e = np.exp(v)
                out[i, j] = e / (1.0 + e)


@kernel
def logistic_vjp(y, upstream, out):
    for i in range(out.shape[0]):
        r = i * y.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = upstream[i, j] * y[r, j] * (1.0 - y[r, j])


@kernel
def tanh(x, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.tanh(x[i, j])


@kernel
def tanh_vjp(y, upstream, out):
    for i in range(out.shape[0]):
        r = i * y.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = upstream[i, j] * (1.0 - y[r, j] * y[r, j])


@kernel
def step(x, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = 1 if x[i, j] >= 0 else 0
