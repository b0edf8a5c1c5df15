"""Gathering mini-batches: rows picked by index, scaled to floats, labels made one-hot."""

from numba import prange

from . import inline, parallel_kernel
from .elementwise import raise_states


@inline
def _gather(features, labels, row, scale, out_x, out_y, b):
    for j in range(features.shape[1]):
        out_x[b, j] = features[row, j] * scale
    for j in range(out_y.shape[1]):
        out_y[b, j] = 0
    out_y[b, labels[row]] = 1


@parallel_kernel
def gather_batch(features, labels, rows, scale, out_x, out_y):
    """out_x[b] = features[rows[b]] * scale; out_y[b] = one-hot of labels[rows[b]].

    Reading uint8 pixels and scaling them here moves a quarter of the bytes that gathering
    float32 rows would; the buffers are reused, so nothing is allocated per batch.
    """
    for b in prange(rows.shape[0]):  # rows from all over memory: two cores wait better
        _gather(features, labels, rows[b], scale, out_x, out_y, b)


@parallel_kernel
def gather_inputs(features, labels, rows, scale, out_x, out_y, states, inputs, downstream,
                  state, computed, stamp):
    """``gather_batch`` straight into two input nodes' batches, then what their
    ``set_value`` does besides: the inputs marked computed by pass ``stamp``, what depends
    on them raised to ``state``."""
    for b in prange(rows.shape[0]):
        _gather(features, labels, rows[b], scale, out_x, out_y, b)
    for index in inputs:
        states[index] = 0
        computed[index] = stamp
    raise_states(states, downstream, state)
