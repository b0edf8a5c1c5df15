"""Element-wise kernels: broadcast arithmetic, batch sums, and activations with their VJPs."""

import numpy as np
from numba import prange

from . import array_at, inline, kernel, parallel_kernel

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
def sum_rows(a, out, beta):
    """out[0, :] = the sum of a's rows (+ out, with ``beta`` 1): the VJP of broadcasting a
    parameter over a batch. ``beta`` is 0 or 1; with 1 the sum accumulates into ``out``."""
    if beta == 0:
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
            out[i, j] = 0 if v <= 0 else v  # NaN fails every comparison: NaN stays NaN


@kernel
def relu_vjp(x, upstream, out):
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            v = x[r, j]
            out[i, j] = upstream[i, j] if v > 0 else (0 if v <= 0 else v)  # NaN x: NaN


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
            v = x[r, j]
            out[i, j] = u if v > 0 else (slope * u if v <= 0 else v)  # NaN x: NaN


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
            v = x[i, j]
            out[i, j] = 1 if v >= 0 else (0 if v < 0 else v)  # NaN x: NaN


# -- moving numbers: what operators would otherwise do with NumPy between kernels ----------


@kernel
def fill(out, value):
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = value


@kernel
def copy_columns(a, out, start):
    """out[i, start:start + n] = a[i, :]: one parent's block of a concatenation."""
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        for j in range(a.shape[1]):
            out[i, start + j] = a[ia, j]


@kernel
def take_columns(a, start, out):
    """out[i, :] = a[i, start:start + n]: the VJP of ``copy_columns``."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[i, start + j]


@kernel
def matmul_rows(a, b, out, m, k, n, transpose_a, transpose_b):
    """out[i] = A_i @ B_i for the small matrices that rows hold, row-major.

    A_i is (m, k), stored as such or (``transpose_a``) as its (k, m) transpose; B_i is
    (k, n), or stored (n, k) with ``transpose_b``. The general case of ``MatMul`` (a batch of
    matrices times a batch of matrices) and its VJPs; the network cases are GEMMs.
    """
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        ib = i * b.shape[0] // out.shape[0]
        for p in range(m):
            for q in range(n):
                total = 0.0
                for s in range(k):
                    x = a[ia, s * m + p] if transpose_a else a[ia, p * k + s]
                    y = b[ib, q * k + s] if transpose_b else b[ib, s * n + q]
                    total += x * y
                out[i, p * n + q] = total


@kernel
def identity_rows(out):
    """Row i is the (i mod n)-th unit vector: n identity seeds per sample, stacked."""
    n = out.shape[1]
    for i in range(out.shape[0]):
        for j in range(n):
            out[i, j] = 0
        out[i, i % n] = 1


@kernel
def raise_states(states, indices, state):
    """states[i] = max(states[i], state) for i in indices: invalidating what depends on a
    changed input or parameter (``Graph.invalidate``), in one call."""
    for k in range(indices.shape[0]):
        i = indices[k]
        if states[i] < state:
            states[i] = state


#: The smallest magnitude that float32 rounds to infinity: halfway between its largest
#: number, (2 - 2**-23) * 2**127, and 2**128 (a tie, which rounds to the even 2**128).
FLOAT32_OVERFLOW = (2 - 2**-24) * 2.0**127


@inline
def _first_beyond(source, flat):
    """The flat index of the first number of 2-D ``source`` that is finite but becomes
    infinite in ``flat``'s dtype (float64 numbers beyond float32's range), or -1. Nothing
    to look for unless ``source`` has wider numbers than ``flat``."""
    if source.itemsize <= flat.itemsize:
        return -1
    for i in range(source.shape[0]):
        for j in range(source.shape[1]):
            v = abs(source[i, j])
            if v >= FLOAT32_OVERFLOW and v != np.inf:
                return i * source.shape[1] + j
    return -1


@kernel
def feed_input(source, flat, states, downstream, state, computed, index, stamp):
    """An input's ``set_value`` in one call: ``flat[:] = source`` (cast to its dtype), the
    input marked computed by pass ``stamp``, what depends on it raised to ``state``; -1.
    A finite number of ``source`` that would be infinite in ``flat``'s dtype: its flat
    index, with nothing changed."""
    beyond = _first_beyond(source, flat)
    if beyond >= 0:
        return beyond
    for i in range(flat.shape[0]):
        for j in range(flat.shape[1]):
            flat[i, j] = source[i, j]
    states[index] = 0
    computed[index] = stamp
    raise_states(states, downstream, state)
    return -1


@kernel
def feed_inputs(source, block, states, inputs, downstream, state, computed, stamp):
    """Many inputs' ``set_value`` in one call: ``block[t] = source[t]`` for every input t
    (their batches are ``block[t]``), the inputs marked computed by pass ``stamp``, what
    depends on any of them raised to ``state``; -1. A finite number of ``source`` that
    would be infinite in ``block``'s dtype: its flat index, with nothing changed."""
    for t in range(block.shape[0]):
        beyond = _first_beyond(source[t], block[t])
        if beyond >= 0:
            return t * source.shape[1] * source.shape[2] + beyond
    for t in range(block.shape[0]):
        for i in range(block.shape[1]):
            for j in range(block.shape[2]):
                block[t, i, j] = source[t, i, j]
    for index in inputs:
        states[index] = 0
        computed[index] = stamp
    raise_states(states, downstream, state)
    return -1


@kernel
def settle_fed(header, stamp, state):
    """What the inputs fed one sample each since the last call still owe: each marked
    computed by pass ``stamp``, and everything downstream of any of them raised to
    ``state``, each node once. ``header``: the address of 7 integers (``Graph.settle``):
    the address of the graph's table and its row length (one entry per node), of its
    states, of ``first`` and its length less one (the nodes), of ``children`` and its
    length. The table's rows: the pass that computed each node, 1 for an input fed, and
    scratch (the nodes reached hold ``stamp``; a stack), read flat here. The graph's edges:
    node i's children are ``children[first[i]:first[i + 1]]``."""
    h = array_at(header, 7, np.int64)
    n = h[1]
    table, states = array_at(h[0], 4 * n, np.int64), array_at(h[2], n, np.int8)
    first, children = array_at(h[3], h[4] + 1, np.int64), array_at(h[5], h[6], np.int64)
    fed, seen, stack = n, 2 * n, 3 * n  # where each row starts (the first: computed)
    top = 0
    for i in range(h[4]):
        if table[fed + i]:
            table[fed + i] = 0
            states[i] = 0
            table[i] = stamp
            table[seen + i] = stamp
            table[stack + top] = i
            top += 1
    while top > 0:
        top -= 1
        node = table[stack + top]
        for k in range(first[node], first[node + 1]):
            child = children[k]
            if table[seen + child] != stamp:
                table[seen + child] = stamp
                if states[child] < state:
                    states[child] = state
                table[stack + top] = child
                top += 1


@kernel
def outer(a, b, out, beta):
    """out = a^T b (+ out, with ``beta`` 1) for one-row a (1, m) and b (1, n): a weight's
    gradient from one sample, on one core (starting threads costs more than these few
    hundred kilobytes). ``beta`` is 0 or 1."""
    n = b.shape[1]
    for i in range(a.shape[1]):
        u = a[0, i]
        if beta == 0:
            for j in range(n):
                out[i, j] = u * b[0, j]
        else:
            for j in range(n):
                out[i, j] += u * b[0, j]


@kernel
def step_vjp(x, upstream, out):
    """The step's VJP: zero, times the upstream (so NaN or infinity upstream stays NaN), and
    NaN where x is NaN."""
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            v = x[r, j]
            out[i, j] = 0.0 * upstream[i, j] if v == v else v
