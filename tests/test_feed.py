"""fg.set_values: many inputs set in one call, as their set_value calls one by one would."""

import numpy as np
import pytest

import fastgraph as fg

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def recurrent(steps=6, width=3, state=4, seed=0):
    rng = np.random.default_rng(seed)
    with fg.Graph() as graph:
        inputs = [fg.Variable((width, 1), trainable=False) for _ in range(steps)]
        u, w = fg.Variable((state, width)), fg.Variable((state, state))
        u.set_value(rng.normal(size=(state, width)))
        w.set_value(rng.normal(size=(state, state)) * 0.3)
        h = None
        for x in inputs:
            a = fg.ops.MatMul(u, x)
            h = fg.ops.ReLU(a if h is None else fg.ops.Add(a, fg.ops.MatMul(w, h)))
        label = fg.Variable((state, 1), trainable=False)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(h, label)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    return inputs, label, loss, optimizer


def train(feed, rounds=4, batch=5, steps=6, width=3):
    inputs, label, loss, optimizer = recurrent(steps, width)
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(rounds):
        x = rng.normal(size=(batch, steps, width)).astype(np.float32)
        feed(inputs, x)
        label.set_value(np.eye(4, dtype=np.float32)[rng.integers(0, 4, batch)])
        optimizer.one_step()
        optimizer.update()
        losses.append(loss.value.copy())
    return losses, [p.value.copy() for p in optimizer.params], inputs


def one_by_one(inputs, x):
    for t, node in enumerate(inputs):
        node.set_value(x[:, t])


def test_set_values_trains_exactly_as_set_value_one_by_one():
    expected, params, _ = train(one_by_one)
    got, got_params, inputs = train(lambda inputs, x: fg.set_values(inputs, x.swapaxes(0, 1)))
    for a, b in zip(expected + params, got + got_params):
        np.testing.assert_array_equal(a, b)
    assert inputs[2].value.shape == (5, 3, 1)


def test_the_inputs_share_one_block_and_later_calls_move_nothing():
    inputs, label, loss, optimizer = recurrent()
    x = np.arange(5 * 6 * 3, dtype=np.float32).reshape(6, 5, 3)
    fg.set_values(inputs, x)
    layout = inputs[0].graph.layout
    base = inputs[0].flat.base
    assert all(node.flat.base is base for node in inputs)
    fg.set_values(inputs, x + 1)
    assert inputs[0].graph.layout == layout
    np.testing.assert_array_equal(inputs[4].value[:, :, 0], x[4] + 1)


def test_marks_the_inputs_set_and_what_depends_on_them_stale():
    inputs, label, loss, optimizer = recurrent()
    label.set_value(np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]])
    fg.set_values(inputs, np.ones((6, 5, 3), np.float32))
    loss.forward()
    first = loss.value.copy()
    fg.set_values(inputs, np.zeros((6, 5, 3), np.float32))
    assert loss.value is None  # stale, as after set_value, until computed again
    loss.forward()
    assert not np.array_equal(loss.value, first)


def test_an_input_reallocated_by_set_value_is_laid_out_again():
    inputs, label, loss, optimizer = recurrent()
    fg.set_values(inputs, np.ones((6, 5, 3), np.float32))
    inputs[3].set_value(np.ones((2, 3, 1), np.float32))  # another batch size: its own array
    fg.set_values(inputs, np.full((6, 5, 3), 2, np.float32))
    assert all(node.flat.base is inputs[0].flat.base for node in inputs)
    np.testing.assert_array_equal(inputs[3].value, np.full((5, 3, 1), 2))
    fg.set_values(inputs, np.full((6, 7, 3), 3, np.float32))  # a new batch size for all
    assert inputs[5].value.shape == (7, 3, 1)


def test_single_samples_take_the_articles_path():
    inputs, label, loss, optimizer = recurrent()
    fg.set_values(inputs, [np.asmatrix(np.ones((3, 1))) * t for t in range(6)])
    assert inputs[2].value.shape == (3, 1) and inputs[2].value[1, 0] == 2


def test_errors_name_what_is_wrong():
    inputs, label, loss, optimizer = recurrent()
    with pytest.raises(ValueError, match="no inputs"):
        fg.set_values([], np.ones((0, 5, 3)))
    with pytest.raises(ValueError, match="is not an input"):
        fg.set_values([inputs[0], optimizer.params[0]], np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="must share a shape"):
        fg.set_values([inputs[0], label], np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="appears twice"):
        fg.set_values([inputs[0], inputs[0]], np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"6 inputs but values of shape \(5, 5, 3\)"):
        fg.set_values(inputs, np.ones((5, 5, 3)))
    with pytest.raises(TypeError, match="numeric"):
        fg.set_values(inputs, np.array([["a"]] * 6))
    other, *_ = recurrent()
    with pytest.raises(ValueError, match="another graph"):
        fg.set_values([inputs[0], other[1]], np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"expected a batch of shape"):
        fg.set_values(inputs, np.ones((6, 5, 4)))  # handed to set_value, which explains


# -- Batches.feed: batches gathered straight into the input nodes ---------------------------
def mnist_like(count=70, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 6, 6)).astype(np.uint8), rng.integers(0, 4, count)


def fit(feed_by_nodes, epochs=2):
    features, labels = mnist_like()
    model = fg.models.mlp(36, (8,), 4, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    batches = fg.datasets.Batches(features, labels, 16, classes=4, scale=1 / 255)
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(labels))
        if feed_by_nodes:
            sizes = list(batches.feed(model.x, model.one_hot, order))
            for _ in batches.feed(model.x, model.one_hot, order):
                optimizer.one_step()
                optimizer.update()
        else:
            sizes = [len(x) for x, _ in batches.iterate(order)]
            for x, y in batches.iterate(order):
                model.x.set_value(x)
                model.one_hot.set_value(y)
                optimizer.one_step()
                optimizer.update()
    return sizes, [p.value.copy() for p in optimizer.params], model


def test_batches_feed_trains_exactly_as_set_value_does():
    sizes, expected, _ = fit(False)
    got_sizes, got, model = fit(True)
    assert got_sizes == sizes == [16, 16, 16, 16, 6]  # the last batch is smaller
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_batches_feed_fills_the_nodes_and_marks_what_depends_on_them():
    features, labels = mnist_like()
    model = fg.models.mlp(36, (8,), 4, seed=0)
    batches = fg.datasets.Batches(features, labels, 16, classes=4, scale=1 / 255)
    order = np.arange(32)[::-1]
    feed = batches.feed(model.x, model.one_hot, order)
    next(feed)  # the first lays the nodes out through set_value
    model.loss.forward()
    assert model.loss.value is not None
    next(feed)  # the second is the one kernel call
    assert model.loss.value is None
    np.testing.assert_allclose(model.x.value.reshape(16, 36),
                               features[order[16:32]].reshape(16, 36) / 255, rtol=1e-6)
    np.testing.assert_array_equal(model.one_hot.value.reshape(16, 4),
                                  np.eye(4)[labels[order[16:32]]])


def test_batches_feed_refuses_what_is_not_its_inputs():
    features, labels = mnist_like()
    model = fg.models.mlp(36, (8,), 4, seed=0)
    other = fg.models.mlp(36, (8,), 4, seed=0)
    batches = fg.datasets.Batches(features, labels, 16, classes=4)
    weight = next(node for node in model.graph.nodes if getattr(node, "trainable", False))
    with pytest.raises(ValueError, match="is not an input"):
        next(batches.feed(weight, model.one_hot))
    with pytest.raises(ValueError, match="different graphs"):
        next(batches.feed(model.x, other.one_hot))
    with pytest.raises(ValueError, match="holds 4 values a sample, the batches 36 features"):
        next(batches.feed(model.one_hot, model.x))
    with pytest.raises(ValueError, match=r"order\[0\] is 99"):
        next(batches.feed(model.x, model.one_hot, [99]))


def test_a_node_added_after_a_call_is_marked_stale_by_the_next():
    inputs, label, loss, optimizer = recurrent()
    fg.set_values(inputs, np.ones((6, 5, 3), np.float32))
    with inputs[0].graph:
        doubled = fg.ops.Add(inputs[2], inputs[2])  # depends on an input, added after
    doubled.forward()
    np.testing.assert_array_equal(doubled.value, np.full((5, 3, 1), 2))
    fg.set_values(inputs, np.full((6, 5, 3), 3, np.float32))
    assert doubled.value is None  # the new node is stale too
    doubled.forward()
    np.testing.assert_array_equal(doubled.value, np.full((5, 3, 1), 6))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_the_gather_kernel_matches_numpy_whatever_the_batch_and_row_width(dtype):
    """The gather prefetches rows ahead of the one it converts (one hint per 64 bytes); the
    values must be NumPy's for batches shorter and longer than the distance ahead, widths
    around a cache line, repeated rows and the last row."""
    from fastgraph.kernels.data import AHEAD, gather_batch

    rng = np.random.default_rng(3)
    for width in (1, 15, 63, 64, 65, 200):
        features = (rng.random((50, width)) * 255).astype(dtype)
        labels = rng.integers(0, 7, 50)
        for size in (1, AHEAD - 1, AHEAD, AHEAD + 1, 2 * AHEAD + 3):
            rows = rng.integers(0, 50, size)
            rows[-1] = 49
            out_x = np.full((size, width), np.nan, np.float32)
            out_y = np.full((size, 7), np.nan, np.float32)
            gather_batch(features, labels, rows, np.float32(0.5), out_x, out_y)
            np.testing.assert_array_equal(out_x, features[rows].astype(np.float32) * 0.5)
            np.testing.assert_array_equal(out_y, np.eye(7, dtype=np.float32)[labels[rows]])


def test_the_trainer_feeds_its_batches_as_set_value_would():
    """SimpleTrainer gathers each batch straight into its input nodes (Batches.feed): the
    parameters after an epoch, last partial batch included, are those of the loop that sets
    every batch with set_value."""
    rng = np.random.default_rng(5)
    features = rng.integers(0, 256, (150, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, 150)
    trained = []
    for by_hand in (False, True):
        model = fg.models.mlp(784, (16,), 10, seed=0)
        optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
        if by_hand:
            batches = fg.datasets.Batches(features, labels, 64, classes=10, scale=1 / 255,
                                          seed=3)
            for x, one_hot in batches:
                model.x.set_value(x)
                model.one_hot.set_value(one_hot)
                optimizer.one_step()
                optimizer.update()
        else:
            trainer = fg.trainer.SimpleTrainer(model.x, model.one_hot, model.predict, optimizer,
                                               seed=3, progress=False, scale=1 / 255,
                                               log=lambda line: None)
            history = trainer.train(features, labels, epochs=1)
            assert history[0]["samples"] == 150
        trained.append([param.flat.copy() for param in optimizer.params])
    for fed, by_hand in zip(*trained):
        np.testing.assert_array_equal(fed, by_hand)


def test_a_ranks_share_is_fed_as_iterated_and_an_empty_share_leaves_the_nodes():
    from fastgraph.distributed import ShardedBatches

    features = np.arange(7 * 3, dtype=np.uint8).reshape(7, 3)
    labels = np.arange(7) % 2
    with fg.Graph():
        x = fg.Variable((3, 1), trainable=False)
        one_hot = fg.Variable((2, 1), trainable=False)
    for rank in (0, 1, 2):
        order = np.arange(7)
        batches = ShardedBatches(features, labels, 2, rank, 3, classes=2, shuffle=False)
        expected = [(bx.copy(), by.copy()) for bx, by in batches.iterate(order)]
        sizes = []
        for size, (bx, by) in zip(batches.feed(x, one_hot, order), expected):
            sizes.append(size)
            if size:
                np.testing.assert_array_equal(x.flat, bx)
                np.testing.assert_array_equal(one_hot.flat, by)
        # batches of 2 split 3 ways: rank 0 gets nothing of each pair, ranks 1, 2 one row each
        assert sizes == [len(bx) for bx, _ in expected]
        assert sizes == ([0, 0, 0, 0] if rank == 0 else [1, 1, 1, 1 if rank == 2 else 0])


def _batch_of_one_loop(form, dtype, steps=40):
    """The article's loop with each sample fed as a batch of one, ``form`` of a (1, 6) row:
    the parameters after it, the loss's value (its shape tells how values read), and the
    one_hot node."""
    model = fg.models.mlp(6, (5,), 3, seed=0, dtype=np.float32)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    rng = np.random.default_rng(2)
    rows = rng.random((steps, 6)).astype(np.float32)
    hot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, steps)]
    for i in range(steps):
        model.x.set_value(form(rows[i:i + 1]).astype(dtype))
        model.one_hot.set_value(form(hot[i:i + 1]).astype(dtype))
        optimizer.one_step()
        if (i + 1) % 8 == 0:
            optimizer.update()
    return [p.value.copy() for p in optimizer.params], model.loss.value, model


@pytest.mark.parametrize("form", [lambda row: row, lambda row: row[:, :, None]],
                         ids=["(1, rows)", "(1, rows, 1)"])
def test_a_batch_of_one_of_the_graphs_dtype_takes_the_short_path(form, monkeypatch):
    """x.set_value(rows[i:i + 1]) of the graph's dtype, into an input that holds a batch of
    one, is a copy and a note (as a sample in its own shape is), where it took the general
    path at 3-4x the cost: the same parameters as the general path gives (float64 rows of
    the same numbers still take it), the values still read as a batch."""
    calls = []
    general = fg.Variable._set_claimed
    monkeypatch.setattr(fg.Variable, "_set_claimed",
                        lambda node, value: (node.is_input and calls.append(node.name))
                        or general(node, value))
    short, loss, _ = _batch_of_one_loop(form, np.float32)
    assert calls == ["x", "one_hot"]  # only the first feed of each input
    assert loss.shape == (1, 1, 1) and not isinstance(loss, np.matrix)
    calls.clear()
    slow, _, _ = _batch_of_one_loop(form, np.float64)  # cast: the general path every time
    assert len(calls) == 80
    for got, expected in zip(short, slow):
        np.testing.assert_array_equal(got, expected)


def test_a_batch_of_one_after_a_sample_in_its_own_shape_reads_as_a_batch_again():
    """The two short paths in turn: a sample in its own shape makes values the article's
    matrices, a batch of one makes them batches again, each computed from the sample fed."""
    with fg.Graph():
        x = fg.Variable((2, 1), trainable=False)
        y = fg.ops.Add(x, x)
    x.set_value(np.ones((1, 2), np.float32))  # general path: x holds a batch of one
    x.set_value(np.array([[1.0], [2.0]], np.float32))  # short path, its own shape
    y.forward()
    assert isinstance(y.value, np.matrix)
    x.set_value(np.array([[3.0, 4.0]], np.float32))  # short path, a batch of one
    assert y.value is None  # stale
    y.forward()
    assert not isinstance(y.value, np.matrix)
    np.testing.assert_array_equal(y.value, [[[6.0], [8.0]]])
    with pytest.raises(ValueError, match=r"^Variable:0: 1e\+39 .*float32"):
        x.set_value(np.array([[1e39, 0.0]]))  # float64 beyond float32: refused, as before
    np.testing.assert_array_equal(x.value, [[[3.0], [4.0]]])
