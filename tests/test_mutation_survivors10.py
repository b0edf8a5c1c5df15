"""The mutation sweep of this session's library changes (helper hE, 2026-12-01): which
passes ``_drop_dead`` forgets, the least-recently-used store of ``_pass``, what
``graph.clear()`` lets go, a refused rewiring, a loss of parameters alone."""
import gc
import weakref

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines import compiled
from tests.test_batch_sizes import _network

pytestmark = pytest.mark.compiled


def _train(graph, x, one_hot, optimizer, sizes, seed=5):
    rng = np.random.default_rng(seed)
    for size in sizes:
        x.set_value(rng.normal(size=(size, 6)))
        one_hot.set_value(np.eye(3)[rng.integers(0, 3, size)])
        optimizer.one_step()
        optimizer.update()


def test_passes_still_alive_are_kept_when_a_size_is_dropped(recordings):
    """Six sizes: the first is pushed out of the nodes' KEPT_SHAPES and its pass dies; the
    passes of the other five can still be pointed back at their buffers and are kept (none
    is recorded again when those sizes come back), the dead one goes."""
    graph, x, one_hot, logits, cost = _network()
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    _train(graph, x, one_hot, optimizer, [1, 2, 3, 4, 5, 6])
    assert len(recordings) == 6
    stored = compiled.passes(graph, optimizer)
    assert len(stored) == 5 and not any(found.dead() for found in stored)
    _train(graph, x, one_hot, optimizer, [2, 3, 4, 5, 6, 2])
    assert len(recordings) == 6


def test_a_dead_pass_of_a_parameter_set_let_aside_is_freed():
    """The optimizer's last passes for a parameter set it keeps aside (one parameter
    frozen, then thawed) are kept with its sums; once that pass can never run again (its
    batch size was pushed out of the nodes' kept shapes), it is not kept alive there."""
    graph, x, one_hot, logits, cost = _network()
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    _train(graph, x, one_hot, optimizer, [2])
    (first,) = compiled.passes(graph, optimizer)
    first = weakref.ref(first)
    optimizer.params[0].trainable = False  # another parameter set, other sums
    _train(graph, x, one_hot, optimizer, [3, 4, 5, 6, 7])  # 2 goes at 7
    gc.collect()
    assert first() is None


def test_the_passes_least_recently_used_go_first(recordings, monkeypatch):
    """A store of at most CACHE_SIZE passes (here 3) drops the one used least recently,
    not the one it just recorded nor the oldest recorded: size 2, used between every
    other, is recorded once."""
    monkeypatch.setattr(compiled, "CACHE_SIZE", 3)
    graph, x, one_hot, logits, cost = _network()
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    _train(graph, x, one_hot, optimizer, [2, 3, 2, 4, 2, 5, 2, 3, 2])
    assert len(recordings) == 5  # 2, 3, 4, 5, and 3 again (pushed out by 4 and 5)
    assert len(optimizer._passes) <= 3 + 1


def test_clear_lets_go_of_the_training_passes_and_the_blocks():
    """graph.clear(): the passes an engine caller without a store of its own recorded
    (graph.training_passes) and set_values' blocks (graph.feed_blocks) go with the nodes."""
    graph = fg.Graph(dtype=np.float64, seed=1)
    with graph:
        inputs = [fg.Variable((2, 1), trainable=False) for _ in range(3)]
        w = fg.Variable((2, 2), init=True)
        total = fg.ops.MatMul(w, fg.ops.Add(*inputs))
        cost = fg.ops.loss.MeanSquaredError(total, fg.Variable((2, 1), trainable=False))
    fg.set_values(inputs, np.ones((3, 4, 2, 1)))
    cost.parents[1].set_value(np.zeros((4, 2, 1)))
    sums = (np.zeros((1, 4)),)
    fg.engines.get_engine("vjp")(cost, [w], sums, True)  # no store: the graph's
    assert graph.training_passes and graph.feed_blocks
    node = weakref.ref(inputs[0])
    graph.clear()
    del inputs, w, total, cost
    gc.collect()
    assert not graph.training_passes and not graph.feed_blocks
    assert node() is None


def test_a_refused_rewiring_leaves_the_parents_as_they_were():
    graph, x, one_hot, logits, cost = _network()
    with graph:
        point = fg.ops.Add(logits, name="point")
        fg.ops.Add(point, name="after")  # built on point: its shape may not change
        wide = fg.Variable((4, 1), trainable=False, name="wide")
    with pytest.raises(ValueError):
        graph.rewire(point, [wide])
    assert list(point.parents) == [logits] and point.dim == (3, 1)
    x.set_value(np.ones((2, 6)))
    graph.get_node("after").forward()
    np.testing.assert_array_equal(graph.get_node("after").value, logits.value)


def test_a_loss_of_parameters_alone_counts_one_sample_a_step():
    """A target on no input (a penalty on the weights alone): the tape's batch size is
    None, and each step, the first (recorded) and the next (the pass found again), counts
    one sample."""
    graph = fg.Graph(dtype=np.float64, seed=2)
    with graph:
        w, u = fg.Variable((3, 1), init=True, name="w"), fg.Variable((3, 1), init=True)
        node = w
        for _ in range(8):  # more nodes than vjp.FEW: a compiled pass
            node = fg.ops.Add(node, u)
        cost = fg.ops.loss.MeanSquaredError(node, w)
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    for _ in range(3):
        optimizer.one_step()
    assert optimizer.samples == 3
