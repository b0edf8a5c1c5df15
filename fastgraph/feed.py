"""Many inputs set at once: a recurrent net's time steps in one call.

``set_values(inputs, values)`` does what ``inputs[t].set_value(values[t])`` does for every
``t``. The article's recurrent programs give every time step an input node and set them
one by one; each ``set_value`` costs a microsecond or two of Python and kernel dispatch,
which for 96 steps is a fifth of the whole training step of a small RNN. Here the inputs'
batches become views of one ``(T, B, n)`` array (laid out by the first call, and again
only after an input's batch was reallocated), and each call is one kernel call: it copies
the values in and marks the inputs set and everything downstream of them stale, exactly
as the separate calls would.
"""

import numpy as np

from . import checks
from .graph import EMPTY, Graph, each_whole, refuse_removed
from .kernels.elementwise import feed_inputs
from .node import FLAT, Variable


def set_values(inputs, values):
    """Set ``inputs[t]`` to ``values[t]`` for every ``t``, as ``set_value`` would, for
    inputs of one shape (an RNN's time steps; inputs of two shapes are refused by name).

    ``values`` is an array (or a sequence of arrays of one shape) whose first axis runs over
    the inputs: ``(T, B, rows, cols)``, or ``(T, B, rows)`` for column inputs, is one batch
    of ``B`` for each input and takes the fast path; any other shape is handed to the
    inputs' ``set_value`` one by one (the article's single samples among them), once all
    are checked.
    """
    if isinstance(inputs, (Variable, str, bytes)) or not hasattr(inputs, "__iter__"):
        raise TypeError(f"set_values: inputs must be a list of input nodes, got "
                        f"{type(inputs).__name__} (one input: node.set_value(value))")
    inputs = tuple(inputs)
    if not inputs:
        raise ValueError("set_values: no inputs given")
    graph = getattr(inputs[0], "graph", None)
    if graph is not None and not isinstance(graph, Graph):  # a node graph.clear() removed
        graph.claim("set_values")  # says so
    known = graph.feed_blocks if graph is not None else None
    if known is None or inputs not in known:  # checked once; a node's kind never changes
        _check(inputs, graph)
    array = checks.as_array(values, "set_values: the values")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"set_values: expected numeric values, got dtype {array.dtype}")
    if array.ndim == 0 or len(array) != len(inputs):
        raise ValueError(f"set_values: {len(inputs)} inputs but values of shape "
                         f"{array.shape} (the first axis runs over the inputs)")
    dim = inputs[0].dim
    rows, cols = dim
    if array.ndim == 4 and array.shape[2:] == dim:
        batch = array.shape[1]
    elif array.ndim == 3 and cols == 1 and array.shape[2] == rows:
        batch = array.shape[1]
    else:
        batch = 0
    if array.dtype.kind == "f" and array.dtype.itemsize > 8:  # long double: refused before
        beyond = checks.first_beyond(array, graph.dtype)  # the cast that would make it
        if beyond is not None:  # infinite, as float64 is by the checks after it
            raise checks.beyond_range(f"set_values: {inputs[beyond[0]].name}", array[beyond],
                                      graph.dtype, beyond[1] if batch else None)
    array = checks.kernel_numbers(array, graph.dtype)  # float16, long double: cast
    if batch < 2:  # one sample (the article's matrices) or a shape set_value will explain
        # Every input's values are checked before the first is set (the inputs share one
        # shape, so the first's set_value refuses a wrong one before anything changes).
        beyond = checks.first_beyond(array, graph.dtype)
        if beyond is not None:
            raise checks.beyond_range(f"set_values: {inputs[beyond[0]].name}",
                                      array[beyond].item(), graph.dtype)
        graph.claim("set_values")  # one use: no other thread's between two inputs
        try:
            each_whole(zip(inputs, array), lambda pair: pair[0].set_value(pair[1]))
        finally:
            graph.release()
        return
    graph.claim("set_values")
    try:
        block, indices, downstream = _block(graph, inputs, batch)
        graph.passes += 1
        source = array.reshape(len(inputs), batch, rows * cols)
        if np.may_share_memory(source, block):  # the inputs' own values (shifted in time)
            source = source.copy()  # would be read where the copy has written already
        beyond = feed_inputs(source, block, graph.states, indices, downstream, EMPTY,
                             graph.computed, graph.passes)
        if beyond >= 0:  # nothing was changed
            at = np.unravel_index(int(beyond), source.shape)
            raise checks.beyond_range(f"set_values: {inputs[at[0]].name}", source[at].item(),
                                      graph.dtype, int(at[1]))
        if inputs[0].flat is None or inputs[0].flat.base is not block:  # a new block
            _keep(graph, inputs, block, indices, downstream)
        graph.single_sample = False
    finally:
        graph.release()


def _check(inputs, graph):
    dim = getattr(inputs[0], "dim", None)
    for node in inputs:
        if not isinstance(node, Variable) or not node.is_input:
            raise ValueError(f"set_values: {getattr(node, 'name', node)!r} is not an input "
                             "(a Variable with trainable=False)")
        if node.graph is not graph:
            refuse_removed(node)
            raise ValueError(f"set_values: {node.name} belongs to another graph than the first "
                             f"input, {inputs[0].name}")
        if node.dim != dim:
            raise ValueError(f"set_values: {node.name} is {node.dim[0]}x{node.dim[1]}, "
                             f"{inputs[0].name} {dim[0]}x{dim[1]}: the inputs must share a "
                             "shape (set inputs of other shapes each with set_value)")
    if len(set(inputs)) != len(inputs):
        raise ValueError("set_values: an input appears twice")


def _block(graph, inputs, batch):
    """The ``(T, B, n)`` array whose rows are the inputs' batches, their indices, and the
    indices of what depends on them (for the graph's wiring now): the one they hold, or a
    new one, which ``_keep`` gives them once it is filled."""
    known = graph.feed_blocks
    found = known.get(inputs)
    if found is not None:
        block, indices, layout, version, downstream = found
        if block.shape[1] == batch and layout == graph.layout and version == graph._version:
            return block, indices, downstream
        if block.shape[1] == batch and all(node.flat is not None and node.flat.base is block
                                           for node in inputs):
            downstream = graph.downstream_indices(*inputs)
            known[inputs] = block, indices, graph.layout, graph._version, downstream
            return block, indices, downstream
    block = _kept_block(inputs, (batch, inputs[0].dimension()))
    if block is None:
        block = np.empty((len(inputs), batch, inputs[0].dimension()), graph.dtype)
    indices = np.array([node.index for node in inputs], np.int64)
    return block, indices, graph.downstream_indices(*inputs)


def _kept_block(inputs, shape):
    """The block whose rows the inputs keep for batches of ``shape`` (they were fed such a
    batch before another size: see ``Node.output``), or None."""
    block = getattr(inputs[0]._kept.get((FLAT, shape)), "base", None)
    if block is None or block.shape != (len(inputs), *shape):
        return None
    for node, rows in zip(inputs, block):
        if not _same_rows(node._kept.get((FLAT, shape)), rows):
            return None
    return block


def _same_rows(array, rows):
    """Whether ``array`` is a view of exactly ``rows`` (another view object of them)."""
    return (array is not None and array.base is rows.base and array.shape == rows.shape
            and array.__array_interface__["data"] == rows.__array_interface__["data"])


def _keep(graph, inputs, block, indices, downstream):
    """Give the inputs their rows of a new ``block`` (once it holds their values) and keep
    it for the next call."""
    for node, rows in zip(inputs, block):
        kept = node._kept.get((FLAT, rows.shape))  # the view held before, if any: the
        node._hold(kept if _same_rows(kept, rows) else rows)  # passes recorded know it
        node._sample = None
    known = graph.feed_blocks
    if len(known) >= 16:
        known.clear()
    known[inputs] = block, indices, graph.layout, graph._version, downstream
