"""Batch sizes that alternate (training batches and an evaluation, a last partial batch):
each node keeps its buffers for the last few shapes, and a compiled pass recorded with
them points the nodes back at them instead of being recorded again. Held to the walker's
numbers, with the recordings counted."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines import compiled
from fastgraph.node import FLAT, KEPT_SHAPES
from fastgraph.ops import loss
from tests.helpers import with_executor

pytestmark = pytest.mark.compiled


def _network(pooling=False):
    """A small network with more nodes than ``vjp.FEW`` (so that a forward is a pass), on
    6-number inputs, or with ``pooling`` on 4x4 images through a convolution and a max
    pooling (a forward that leaves the VJP a buffer: where each maximum was)."""
    graph = fg.Graph(dtype=np.float64, seed=3)
    with graph:
        if pooling:
            x = fg.Variable((4, 4), trainable=False, name="x")
            node, size = _pooled_column(x), 16
        else:
            x = fg.Variable((6, 1), trainable=False, name="x")
            node, size = x, 6
        for width in (5, 4, 4, 3, 3, 3):
            node, size = fg.layer.fc(node, size, width, "ReLU"), width
        logits = fg.layer.fc(node, size, 3, None)
        cost = loss.CrossEntropyWithSoftMax(logits, fg.Variable((3, 1), trainable=False,
                                                                name="one_hot"), name="loss")
    return graph, x, graph.get_node("one_hot"), logits, cost


def _pooled_column(x):
    """A 4x4 image through a convolution, a ReLU and a max pooling (whose forward leaves the
    VJP a buffer: where each maximum was), as a column of 16."""
    kernel = fg.Variable((2, 2), init=True, name="kernel")
    maps = fg.ops.MaxPooling(fg.ops.ReLU(fg.ops.Convolve(x, kernel)), size=(2, 2),
                             stride=(1, 1))
    return fg.ops.Reshape(maps, shape=(16, 1))


def _loop(sizes, pooling=False, evaluate=None, jacobian=False):
    """Train with batches of ``sizes`` in turn (one step, one update each); after each
    step, with ``evaluate``, a forward of the logits on that many samples, with
    ``jacobian``, the per-sample Jacobian of the logits. Returns what was computed."""
    graph, x, one_hot, logits, cost = _network(pooling)
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    rng = np.random.default_rng(5)
    shape = x.dim if pooling else (6,)
    seen = []
    for size in sizes:
        x.set_value(rng.normal(size=(size, *shape)))
        one_hot.set_value(np.eye(3)[rng.integers(0, 3, size)])
        optimizer.one_step()
        optimizer.update()
        seen.append(cost.value.copy())
        if evaluate:
            x.set_value(rng.normal(size=(evaluate, *shape)))
            logits.forward()
            seen.append(logits.value.copy())
        if jacobian:
            seen.append(fg.jacobian(logits, x))
    seen.extend(param.flat.copy() for param in optimizer.params)
    return seen


def _same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pooling", [False, True])
def test_alternating_batch_sizes_record_each_pass_once(recordings, pooling):
    sizes = [4, 7, 4, 7, 1, 4, 7, 1, 4]
    got = _loop(sizes, pooling)
    assert len(recordings) == 3  # one training pass a size
    _same(got, with_executor("python", lambda: _loop(sizes, pooling)))


def test_training_and_evaluating_in_turn_record_each_pass_once(recordings):
    got = _loop([4] * 6, evaluate=9)
    assert len(recordings) == 2  # the training pass and the evaluation's forward
    _same(got, with_executor("python", lambda: _loop([4] * 6, evaluate=9)))


def test_training_and_per_sample_jacobians_in_turn(recordings):
    """The two passes use one batch size and differ in the VJPs' buffers (a row per sample
    and output against a row per sample): each takes its own back, computing again."""
    got = _loop([4] * 5, jacobian=True)
    assert len(recordings) == 2
    _same(got, with_executor("python", lambda: _loop([4] * 5, jacobian=True)))


def test_a_node_keeps_the_last_shapes_of_each_buffer():
    graph, x, one_hot, logits, cost = _network()
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    rng = np.random.default_rng(0)
    sizes = list(range(1, KEPT_SHAPES + 4))
    for size in sizes:
        x.set_value(rng.normal(size=(size, 6)))
        one_hot.set_value(np.eye(3)[rng.integers(0, 3, size)])
        optimizer.one_step()
        optimizer.update()
    for node in [x, logits, cost]:
        kept = sorted(shape[0] for role, shape in node._kept if role is FLAT)
        assert kept == sizes[-KEPT_SHAPES - 1:-1]  # the last ones but the one it holds
        assert node.flat.shape[0] == sizes[-1]


def test_a_pass_whose_buffer_is_no_longer_kept_is_recorded_again(recordings):
    """More sizes in turn than a node keeps: the oldest size's pass cannot have its
    buffers back and is recorded again, with the walker's numbers."""
    sizes = list(range(1, KEPT_SHAPES + 3)) * 2
    got = _loop(sizes)
    assert len(recordings) == 2 * len(set(sizes))
    _same(got, with_executor("python", lambda: _loop(sizes)))


def test_values_read_after_a_switch_are_the_new_batchs(recordings):
    """A node read after the nodes were pointed back at another size's buffers holds
    what was computed there now, not what those buffers held from before."""
    graph, x, one_hot, logits, cost = _network()
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=(3, 6)), rng.normal(size=(8, 6))
    labels = np.eye(3)[[0, 1, 2]]
    for features in (small, large, small):
        x.set_value(features)
        one_hot.set_value(labels if len(features) == 3 else np.eye(3)[[0] * 8])
        optimizer.one_step()  # no update: the parameters stay as they were
        optimizer.samples = 0
    first = logits.value.copy()
    x.set_value(large)
    logits.forward()
    x.set_value(small * 2)
    one_hot.set_value(labels)
    optimizer.one_step()
    optimizer.samples = 0
    assert logits.value.shape == (3, 3, 1)
    assert len(recordings) == 3  # training at 3 and 8, the forward at 8
    fresh = _network()
    fresh[1].set_value(small * 2)
    fresh[3].forward()
    np.testing.assert_allclose(logits.value, fresh[3].value, rtol=1e-12)
    assert not np.allclose(logits.value, first)


def test_a_rewiring_that_changes_a_shape_drops_the_kept_buffers():
    graph, x, one_hot, logits, cost = _network()
    with graph:
        point = fg.ops.Add(logits, name="point")
        wide = fg.Variable((4, 1), trainable=False, name="wide")
    rng = np.random.default_rng(2)
    for size in (2, 5):
        x.set_value(rng.normal(size=(size, 6)))
        point.forward()
    assert [shape for role, shape in point._kept if role is FLAT] == [(2, 3)]
    graph.rewire(point, [wide])
    assert point._kept == {} and point.flat is None
    wide.set_value(rng.normal(size=(2, 4)))
    point.forward()
    np.testing.assert_array_equal(point.value, wide.value)
    x.set_value(rng.normal(size=(3, 6)))
    logits.forward()  # a recording: the passes through the old point can never run again
    assert not [found for found in compiled.passes(graph) if found.dead()]


def _recurrent(steps=20):
    """An unrolled recurrent net (more nodes than ``vjp.FEW``) fed with ``set_values``."""
    graph = fg.Graph(dtype=np.float64, seed=4)
    with graph:
        inputs = [fg.Variable((3, 1), trainable=False, name=f"x{t}") for t in range(steps)]
        u, w = fg.Variable((4, 3), init=True, name="u"), fg.Variable((4, 4), init=True, name="w")
        state = fg.ops.Tanh(fg.ops.MatMul(u, inputs[0]))
        for x in inputs[1:]:
            state = fg.ops.Tanh(fg.ops.Add(fg.ops.MatMul(u, x), fg.ops.MatMul(w, state)))
        label = fg.Variable((4, 1), trainable=False, name="label")
        cost = loss.MeanSquaredError(state, label)
    return graph, inputs, label, cost


def _recurrent_loop(sizes):
    graph, inputs, label, cost = _recurrent()
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    rng = np.random.default_rng(6)
    seen = []
    for size in sizes:
        fg.set_values(inputs, rng.normal(size=(len(inputs), size, 3)))
        label.set_value(np.eye(4)[rng.integers(0, 4, size)])
        optimizer.one_step()
        optimizer.update()
        seen.append(cost.value.copy())
    return seen + [param.flat.copy() for param in optimizer.params]


def test_inputs_fed_together_take_their_block_back(recordings):
    """``set_values`` feeds the inputs rows of one block per batch size; coming back to a
    size, they take the same rows back, and the pass of that size is not recorded again."""
    sizes = [5, 2, 5, 2, 5]
    got = _recurrent_loop(sizes)
    assert len(recordings) == 2
    _same(got, with_executor("python", lambda: _recurrent_loop(sizes)))


def test_an_input_given_another_array_of_its_size_is_not_pointed_back():
    """x takes a row of a set_values block (same batch size, another array); the pass
    recorded with its former array must not point x back at it (it holds the old batch)."""
    graph, x, one_hot, logits, cost = _network()
    with graph:
        other = fg.Variable((6, 1), trainable=False, name="other")
    rng = np.random.default_rng(7)
    first, second = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    x.set_value(first)
    logits.forward()
    fg.set_values([x, other], np.stack([second, first]))
    logits.forward()
    fresh = _network()
    fresh[1].set_value(second)
    fresh[3].forward()
    np.testing.assert_allclose(logits.value, fresh[3].value, rtol=1e-12)


def test_the_dense_engine_reads_the_restored_values():
    """A restored node's ``_value`` (what the dense engine and MatMul read) follows its
    ``flat``."""
    graph, x, one_hot, logits, cost = _network()
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    rng = np.random.default_rng(8)
    for size in (1, 3, 1):
        x.set_value(rng.normal(size=(size, 6)))
        one_hot.set_value(np.eye(3)[rng.integers(0, 3, size)])
        optimizer.one_step()
        optimizer.update()
    for node in graph.nodes:
        if node.flat is not None:
            assert np.shares_memory(node._value, node.flat), node.name
    np.testing.assert_allclose(x.backward(cost, engine="jacobian"),
                               x.backward(cost, engine="vjp"), rtol=1e-9, atol=1e-12)


def _train_evaluate_train(pooling):
    """Train at 3, at 5, then a forward at 3 (a pass recorded after the training pass of
    that size), then train at 3: the forward's buffers must be the ones the training pass
    is pointed back at, or it reads what they held from the first step."""
    graph, x, one_hot, logits, cost = _network(pooling)
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    rng = np.random.default_rng(9)
    shape = x.dim if pooling else (6,)
    seen = []
    for size in (3, 5):
        x.set_value(rng.normal(size=(size, *shape)))
        one_hot.set_value(np.eye(3)[rng.integers(0, 3, size)])
        optimizer.one_step()
        optimizer.update()
    x.set_value(rng.normal(size=(3, *shape)))
    logits.forward()
    seen.append(logits.value)
    one_hot.set_value(np.eye(3)[[0, 1, 2]])
    optimizer.one_step()
    seen.append(cost.value)
    seen.extend(optimizer.get_gradient(param) for param in optimizer.params)
    return seen


@pytest.mark.parametrize("pooling", [False, True])
def test_a_forward_recorded_between_takes_the_kept_buffers(pooling):
    got = _train_evaluate_train(pooling)
    _same(got, with_executor("python", lambda: _train_evaluate_train(pooling)))


def test_five_sizes_in_turn_record_each_pass_once(recordings):
    """A training batch, an evaluation, a last partial batch, one sample and another: a
    node holds one and keeps four (KEPT_SHAPES, as the README says)."""
    sizes = [4, 7, 1, 3, 2] * 2
    got = _loop(sizes)
    assert len(recordings) == 5
    _same(got, with_executor("python", lambda: _loop(sizes)))


def test_a_block_is_taken_back_only_by_the_inputs_that_keep_its_rows():
    """x keeps its row of the block it shared with z; fed together with y at that size,
    y must not be given z's row (z's values would change under it)."""
    graph = fg.Graph(dtype=np.float64)
    with graph:
        x, y, z = (fg.Variable((2, 1), trainable=False, name=n) for n in "xyz")
    rng = np.random.default_rng(10)
    zs = rng.normal(size=(3, 2, 1))
    fg.set_values([x, z], np.stack([rng.normal(size=(3, 2, 1)), zs]))
    x.set_value(rng.normal(size=(5, 2, 1)))  # x keeps its row of the (x, z) block
    fg.set_values([x, y], rng.normal(size=(2, 3, 2, 1)))
    np.testing.assert_array_equal(z.value, zs)
    assert not np.shares_memory(y.flat, z.flat)

def test_inputs_fed_in_another_order_get_their_own_rows():
    """Fed together as ``[x, y]`` at one size, then another, then as ``[y, x]`` at the first:
    each takes a row of the old block back only if it is its own row."""
    graph = fg.Graph(dtype=np.float64)
    with graph:
        x, y = (fg.Variable((2, 1), trainable=False, name=n) for n in "xy")
    rng = np.random.default_rng(11)
    fg.set_values([x, y], rng.normal(size=(2, 3, 2, 1)))
    fg.set_values([x, y], rng.normal(size=(2, 5, 2, 1)))
    values = rng.normal(size=(2, 3, 2, 1))
    fg.set_values([y, x], values)
    np.testing.assert_array_equal(y.value, values[0])
    np.testing.assert_array_equal(x.value, values[1])


def test_a_longer_block_is_not_taken_back_by_fewer_inputs():
    graph = fg.Graph(dtype=np.float64)
    with graph:
        x, y, z = (fg.Variable((2, 1), trainable=False, name=n) for n in "xyz")
    rng = np.random.default_rng(12)
    first = rng.normal(size=(3, 3, 2, 1))
    fg.set_values([x, y, z], first)
    fg.set_values([x, y], rng.normal(size=(2, 5, 2, 1)))
    values = rng.normal(size=(2, 3, 2, 1))
    fg.set_values([x, y], values)
    np.testing.assert_array_equal(x.value, values[0])
    np.testing.assert_array_equal(y.value, values[1])
    np.testing.assert_array_equal(z.value, first[2])


def _shared_weight(sizes_of_turns):
    """A weight used three times (an unrolled recurrence): training steps and per-sample
    gradients in turn on one batch size (the weight's summed gradient is (1, n) in one pass
    and (B, n) in the other: its scratch buffer is taken back, not the pass recorded)."""
    graph = fg.Graph(dtype=np.float64, seed=2)
    with graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w = fg.Variable((3, 3), init=True, name="w")
        state = x
        for _ in range(3):
            state = fg.ops.Tanh(fg.ops.MatMul(w, state))
        cost = loss.MeanSquaredError(state, fg.Variable((3, 1), trainable=False, name="y"))
    y = graph.get_node("y")
    optimizer = fg.optimizer.Adam(graph, cost, 0.05)
    rng = np.random.default_rng(13)
    seen = []
    for size in sizes_of_turns:
        x.set_value(rng.normal(size=(size, 3)))
        y.set_value(rng.normal(size=(size, 3)))
        optimizer.one_step()
        optimizer.update()
        seen.append(fg.per_sample_gradients(cost, w))
    return seen + [w.flat.copy()]


def test_a_shared_weights_training_and_per_sample_passes_in_turn(recordings):
    got = _shared_weight([4] * 5)
    assert len(recordings) == 2
    _same(got, with_executor("python", lambda: _shared_weight([4] * 5)))


def _pooled(sizes):
    """A convolution, a max pooling (whose forward leaves the VJP where each maximum was)
    and Tanh layers that let its gradient through; trained at ``sizes[0]``, then each other
    size, then a forward at the first size (a pass recorded after the switch back), then a
    step there: what that step's pass reads is what the forward wrote."""
    graph = fg.Graph(dtype=np.float64, seed=5)
    with graph:
        x = fg.Variable((4, 4), trainable=False, name="x")
        node, size = _pooled_column(x), 16
        kernel = graph.get_node("kernel")
        for _ in range(4):  # more nodes than vjp.FEW: the forward is a pass
            node, size = fg.layer.fc(node, size, 8, "Tanh"), 8
        logits = fg.layer.fc(node, size, 3, None)
        one_hot = fg.Variable((3, 1), trainable=False, name="one_hot")
        cost = loss.CrossEntropyWithSoftMax(logits, one_hot)
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    rng = np.random.default_rng(14)
    for size in sizes:
        x.set_value(rng.normal(size=(size, 4, 4)))
        one_hot.set_value(np.eye(3)[rng.integers(0, 3, size)])
        optimizer.one_step()
        optimizer.update()
    x.set_value(rng.normal(size=(sizes[0], 4, 4)))
    logits.forward()
    one_hot.set_value(np.eye(3)[rng.integers(0, 3, sizes[0])])
    optimizer.one_step()
    gradient = optimizer.get_gradient(kernel)
    assert np.abs(gradient).max() > 1e-6  # the pooling's routing shows in it
    return [logits.value.copy(), gradient]


def test_a_scratch_buffer_recorded_between_is_the_one_taken_back(recordings):
    """The forward's pass, recorded after the switch back, writes the pooling's argmax
    into the array the training pass of that size is pointed back at (the one the node
    keeps for that shape), not a new one it would skip."""
    got = _pooled([3, 5])
    assert len(recordings) == 3
    _same(got, with_executor("python", lambda: _pooled([3, 5])))
