"""Gathering mini-batches: rows picked by index, scaled to floats, labels made one-hot."""

from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import inline, parallel_kernel
from .elementwise import raise_states

#: Rows ahead whose cache lines are asked for while a row is converted. The rows of a
#: shuffled batch are scattered over the 47 MB of MNIST's images, so each starts with cache
#: misses; a loop that waits for them one row at a time leaves memory idle. Prefetching 4
#: rows ahead took a 64-row batch from 15 to 10 us on one core (2 to 16 measured).
AHEAD = 4
LINE = 64  # bytes in a cache line


@intrinsic
def _prefetch(typingctx, array, row, column):
    """Ask for the cache line holding ``array[row, column]`` (LLVM's ``llvm.prefetch``: a
    hint with no effect on results, so it cannot fault or change a value)."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        structure = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, structure,
                                           [args[1], args[2]])
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch")
        # read (0), keep in every cache level (3), data cache (1)
        builder.call(function, [builder.bitcast(pointer, byte_pointer), ir.Constant(i32, 0),
                                ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, row, column), codegen


@inline
def _prefetch_row(features, row):
    for j in range(0, features.shape[1], max(1, LINE // features.itemsize)):
        _prefetch(features, row, j)


@inline
def _prefetch_first(features, rows):
    for b in range(min(AHEAD, rows.shape[0])):
        _prefetch_row(features, rows[b])


@inline
def _gather(features, labels, rows, scale, out_x, out_y, b):
    if b + AHEAD < rows.shape[0]:
        _prefetch_row(features, rows[b + AHEAD])
    row = rows[b]
    source, target = features[row], out_x[b]  # (rows as 1-D views: a loop over them took
    for j in range(source.shape[0]):  # 0.91 of the time of one indexing both dimensions)
        target[j] = source[j] * scale
    for j in range(out_y.shape[1]):
        out_y[b, j] = 0
    out_y[b, labels[row]] = 1


@parallel_kernel
def gather_batch(features, labels, rows, scale, out_x, out_y):
    """out_x[b] = features[rows[b]] * scale; out_y[b] = one-hot of labels[rows[b]].

    Reading uint8 pixels and scaling them here moves a quarter of the bytes that gathering
    float32 rows would; the buffers are reused, so nothing is allocated per batch.
    """
    _prefetch_first(features, rows)
    for b in prange(rows.shape[0]):  # rows from all over memory: two cores wait better
        _gather(features, labels, rows, scale, out_x, out_y, b)


@parallel_kernel
def gather_inputs(features, labels, rows, scale, out_x, out_y, states, inputs, downstream,
                  state, computed, stamp):
    """``gather_batch`` straight into two input nodes' batches, then what their
    ``set_value`` does besides: the inputs marked computed by pass ``stamp``, what depends
    on them raised to ``state``."""
    _prefetch_first(features, rows)
    for b in prange(rows.shape[0]):
        _gather(features, labels, rows, scale, out_x, out_y, b)
    for index in inputs:
        states[index] = 0
        computed[index] = stamp
    raise_states(states, downstream, state)
