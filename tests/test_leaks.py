"""Memory that outlived what used it (helper hB, 2026-12-01): graphs kept alive by
process-wide caches, dropped optimizers' sums and passes, passes that can never run again.
Each is held to a weak reference that must die, or a count that must stay bounded."""
import gc
import weakref

import numpy as np

import fastgraph as fg
from fastgraph.engines import compiled
from fastgraph.node import KEPT_SHAPES
from fastgraph.optimizer import LAYOUTS_KEPT


def _model(batch=6, seed=0):
    graph = fg.Graph(dtype=np.float64, seed=seed)
    with graph:
        x = fg.Variable((4, 1), trainable=False)
        y = fg.Variable((3, 1), trainable=False)
        logits = fg.layer.fc(fg.layer.fc(x, 4, 5, "Tanh"), 5, 3, None)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, y)
    _feed(x, y, batch)
    return graph, x, y, loss


def _feed(x, y, batch):
    rng = np.random.default_rng(batch)
    x.set_value(rng.normal(size=(batch, 4, 1)))
    y.set_value(np.eye(3)[rng.integers(0, 3, batch)].reshape(batch, 3, 1))


def test_set_values_keeps_no_dropped_graph_alive():
    """feed._blocks is a WeakKeyDictionary whose values hold the inputs (whose .graph is
    the key): every graph ever fed by set_values stayed alive, with its buffers."""
    graph = fg.Graph(dtype=np.float64)
    with graph:
        inputs = [fg.Variable((2, 1), trainable=False) for _ in range(3)]
        total = fg.ops.Add(*inputs)
    fg.set_values(inputs, np.ones((3, 4, 2, 1)))
    total.forward()
    dropped = weakref.ref(graph)
    del graph, inputs, total
    gc.collect()
    assert dropped() is None


def test_a_dropped_optimizer_keeps_no_graph_alive():
    """compiled._last (16 entries, process-wide) kept the optimizer's sums and its pass, so
    the graph and all its buffers, after both were dropped."""
    graph, x, y, loss = _model()
    optimizer = fg.optimizer.Adam(graph, loss)
    optimizer.one_step()
    optimizer.update()
    dropped = weakref.ref(graph)
    del graph, x, y, loss, optimizer
    gc.collect()
    assert dropped() is None


def test_a_dropped_optimizer_leaves_no_sums_in_its_graph():
    """The graph's cache kept each dropped optimizer's training pass, with its gradient
    sums, until 256 others pushed it out (a learning-rate sweep on a 200k-parameter MLP
    held 200 MB of dead sums)."""
    graph, x, y, loss = _model()
    buffers = []
    for rate in (0.1, 0.01, 0.001):
        optimizer = fg.optimizer.GradientDescent(graph, loss, learning_rate=rate)
        optimizer.one_step()
        optimizer.update()
        buffers.append(weakref.ref(optimizer._buffer))
        del optimizer
    gc.collect()
    assert [ref() is None for ref in buffers] == [True] * 3


def test_passes_that_can_never_run_again_are_not_kept():
    """A pass recorded with buffers that its nodes no longer hold nor keep (a batch size
    pushed out of the KEPT_SHAPES kept) can never run again, but stayed cached with those
    buffers: one per batch size seen, up to 256 (600 MB for a 784-256-10 MLP fed batches of
    64..512)."""
    graph, x, y, loss = _model()
    optimizer = fg.optimizer.GradientDescent(graph, loss)
    for batch in (2, 3, 4, 5, 6, 7, 8, 9):
        _feed(x, y, batch)
        optimizer.one_step()
        optimizer.update()
    assert [p for p in compiled.passes(graph, optimizer) if p.dead()] == []
    assert len(compiled.passes(graph, optimizer)) <= KEPT_SHAPES + 1


def test_parameter_sets_no_longer_kept_leave_no_sums_behind():
    """Freezing in turn more parameter sets than an optimizer keeps the layouts of: the
    passes that added into the sums of a set it let go went too (they held those sums)."""
    graph, x, y, loss = _model()
    optimizer = fg.optimizer.Adam(graph, loss)
    params = list(optimizer.params)
    sets = len(params) + 2
    buffers = []
    for step in range(3 * sets):
        for k, param in enumerate(params):
            param.trainable = k != step % sets  # one frozen (or none) at a time
        optimizer.one_step()
        optimizer.update()
        buffers.append(weakref.ref(optimizer._buffer))
    gc.collect()
    alive = {id(ref()) for ref in buffers if ref() is not None}
    assert sets > LAYOUTS_KEPT and len(alive) <= LAYOUTS_KEPT + 1
    assert len(compiled.passes(graph, optimizer)) <= LAYOUTS_KEPT + 1
