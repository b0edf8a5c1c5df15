"""Per-sample Jacobians and per-sample gradients, from batched VJPs.

The article's ``node.jacobi`` is the Jacobian of a result with respect to a node for one
sample. ``jacobian`` gives it for every sample of a batch at once, and
``per_sample_gradients`` gives each sample's own gradient of a loss. Both run one backward
pass over the tape with the operators' VJP kernels; neither loops over samples in Python.

How: for a result of dimension ``m``, the backward pass is seeded with ``m`` identity rows
per sample, so row ``(b, i)`` of a node's gradient is row ``i`` of sample ``b``'s
Jacobian. The forward pass runs once on the batch as it is: kernels read a node's value at
row ``i * B // (B * m)``, that is, sample ``i // m``. For a parameter, which has no batch
axis, the pass follows a per-sample plan: operators keep each sample's contribution
instead of summing them (a per-sample plan: operators' ``vjp`` rather than
``vjp_summed``; MatMul's weight gradient becomes a batch of outer products).

Memory grows as (samples per pass) x ``m`` rows for every node on the path, and the
result as ``B x m x n``. When that is too much, pass ``chunk_size``: the batch is then
processed that many samples at a time, with the same result.
"""

import functools
import inspect
import numbers

import numpy as np

from . import checks, engines
from .engines.vjp import backward
from .graph import refuse_removed
from .node import Node
from .threads import chosen


def _holding_the_graph(function):
    """``function(result, ...)`` run holding ``result``'s graph (``Graph.claim``): its
    passes, and the feeding of chunks between them, are one use of the graph."""

    first = next(iter(inspect.signature(function).parameters))

    @functools.wraps(function)
    def holding(*args, **kwargs):
        result = args[0] if args else kwargs.get(first)
        graph = getattr(result, "graph", None)
        if graph is None:  # not a node: the function's own checks say so
            return function(*args, **kwargs)
        graph.claim("{} of {}", function.__name__, result.name)
        try:
            return function(*args, **kwargs)
        finally:
            graph.release()

    return holding


@_holding_the_graph
@chosen
def jacobian(result, wrt, chunk_size=None):
    """Per-sample Jacobians of ``result`` with respect to ``wrt`` on the current values.

    ``wrt``: a node (an input, a parameter or any node ``result`` depends on) or a list of
    them. For each, an array ``(B, result.dimension(), node.dimension())`` whose slice ``b``
    is the Jacobian of sample ``b``'s result with respect to sample ``b``'s node (for a
    parameter: with respect to the shared parameter). When ``result`` has no batch axis,
    ``(result.dimension(), node.dimension())``. ``chunk_size``: samples per pass.
    """
    nodes, single = _as_list(wrt)
    tape, batch = _prepare(result, nodes, chunk_size, "jacobian")
    graph = result.graph
    size = result.dimension()
    if batch is None:  # nothing batched: one VJP per row of the result
        tape.forward()
        plan = graph.plan(result, nodes)
        rows = []
        for i in range(size):
            seed = np.zeros((1, size), graph.dtype)
            seed[0, i] = 1
            backward(plan, result, seed)
            rows.append([node.grad.reshape(-1).copy() for node in nodes])
        jacobians = [np.stack([row[k] for row in rows]) for k in range(len(nodes))]
        return jacobians[0] if single else jacobians
    jacobians = [np.empty((batch, size, node.dimension()), graph.dtype) for node in nodes]
    for start, stop in _passes(tape, batch, chunk_size or batch):
        _per_sample(result, nodes, size, [array[start:stop] for array in jacobians])
    return jacobians[0] if single else jacobians


@_holding_the_graph
@chosen
def per_sample_gradients(loss, params, chunk_size=None, copy=True):
    """Each sample's gradient of ``loss`` (summed over its elements) for each of ``params``.

    Returns a list with, for each parameter, an array ``(B, *param.shape())``; their sum
    over the batch is the ordinary batch gradient. ``params`` may be one node: then its
    array itself is returned.
    ``chunk_size``: samples per pass. ``copy=False`` returns views of the engine's own
    buffers, valid until the next backward pass on the graph: a training loop that only
    reads them (to clip and sum, as DP-SGD does) saves new memory as large as the result,
    ``B`` times the parameters (for MNIST's network and B = 64, 20 MB). A weight's
    gradients are written straight into the new arrays, so what that costs is fresh memory:
    on one core, copy=False took 0.9 ms a call, copy=True 1.0 when each result was dropped
    before the next call and 2.7 when every result was kept. With a ``chunk_size`` below
    the batch, the result is always assembled in new arrays.
    """
    copy = checks.flag("per_sample_gradients: copy", copy)
    nodes, single = _as_list(params)
    tape, batch = _prepare(loss, nodes, chunk_size, "per_sample_gradients")
    graph = loss.graph
    if batch is None:
        raise ValueError(f"per_sample_gradients: {loss.name} has no batch axis (it depends on "
                         "no input), so it has no samples")
    chunk = chunk_size or batch
    if not copy and chunk >= batch:
        gradients = engines.per_sample(loss, nodes, None)
        gradients = [gradient.reshape(batch, *node.dim) for gradient, node in zip(gradients, nodes)]
        return gradients[0] if single else gradients
    gradients = [np.empty((batch, *node.dim), graph.dtype) for node in nodes]
    for start, stop in _passes(tape, batch, chunk):
        _per_sample(loss, nodes, None, [array[start:stop] for array in gradients])
    return gradients[0] if single else gradients


def _per_sample(result, nodes, seeds, into):
    """A per-sample pass whose gradients end in the arrays ``into`` (one per node: slices of
    the arrays returned to the user, C-contiguous). The compiled engine has the call that
    makes a gradient write it there when that one call alone touches it (an input's
    gradient, a weight's, usually): no copy, which took 45 us of the MNIST network's 0.6 ms
    Jacobian and 1.5 ms of its per-sample gradients' 2.7 (one thread). The others (a
    gradient that a later call reads or adds to, a bias's; all of the walker's) are
    copied."""
    into = [array.reshape(len(array), -1) for array in into]  # matrices, as the engine's
    gradients = engines.per_sample(result, nodes, seeds, into=into)
    for array, gradient in zip(into, gradients):
        if gradient is not array:
            array[...] = gradient.reshape(array.shape)


def _passes(tape, batch, chunk):
    """``(start, stop)`` of each pass over the batch; the inputs hold that slice meanwhile,
    and the batch the caller set (and its values) again after the last."""
    if chunk >= batch:  # one pass over the batch as it is: nothing to feed or restore
        yield 0, batch
        return
    with tape.feeding() as feed:
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            feed(lambda flat, start=start, stop=stop: flat[start:stop])
            yield start, stop
    engines.forward(tape.target)


def _as_list(nodes):
    if isinstance(nodes, (list, tuple)):
        return list(nodes), False
    return [nodes], True


def _prepare(result, nodes, chunk_size, caller):
    what = "loss" if caller == "per_sample_gradients" else "result"
    if not isinstance(result, Node):
        raise TypeError(f"{caller}: the {what} must be a node, got {type(result).__name__}")
    for node in nodes:
        if not isinstance(node, Node):
            raise TypeError(f"{caller}: derivatives are taken with respect to nodes, got "
                            f"{type(node).__name__} ({node!r:.60})")
    if not nodes:
        raise ValueError(f"{caller}: no nodes to take derivatives with respect to")
    whole = isinstance(chunk_size, numbers.Integral) and not isinstance(chunk_size, bool)
    if chunk_size is not None and not (whole and chunk_size >= 1):  # np.int64 too
        raise ValueError(f"{caller}: chunk_size must be a positive integer, got {chunk_size!r}")
    graph = result.graph
    for node in nodes:
        if node.graph is not graph:
            refuse_removed(node)
            raise ValueError(f"{caller}: {node.name} belongs to another graph than {result.name}")
    tape = graph.tape(result)
    missing = [node.name for node in nodes if node not in tape.nodes]
    if missing:
        raise ValueError(f"{caller}: {result.name} does not depend on {', '.join(missing)}")
    batch = tape.batch_size()
    if batch is not None:
        if chunk_size is not None and chunk_size < batch:
            tape.forward()  # an error (bad labels) names a sample of the batch, not of a chunk
    return tape, batch
