"""The survivors of a fourth mutation sweep (70 mutations of the graph, nodes, set_values,
arithmetic ops, element-wise, softmax and BLAS kernels, checks, trainer, profiler and CLI;
53 caught, 2 equivalent): each test names the mutation it catches and fails on it (P4's is
tests/test_kernels.py's profiler test, on the walker)."""

import numpy as np
import pytest

import fastgraph as fg

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def test_a_node_added_after_a_settle_is_marked_stale_by_the_next_short_path_feed():
    """G16 (graph.py settle: the edges of an older graph version reused): a node built on an
    input after a settle() must be invalidated when that input next takes a sample on the
    short path."""
    with fg.Graph() as graph:
        x = fg.Variable((2, 1), trainable=False)
        y = fg.ops.Add(x, x)
    x.set_value(np.array([[1.0], [2.0]]))  # general path: x now holds one sample
    y.forward()
    x.set_value(np.array([[3.0], [4.0]]))  # short path
    assert y.value is None  # settled along the edges of this version
    y.forward()
    with graph:
        z = fg.ops.Add(x, y)  # a new node on x, after that settle
    z.forward()
    np.testing.assert_array_equal(np.asarray(z.value), [[9.0], [12.0]])
    x.set_value(np.array([[5.0], [6.0]]))  # short path again
    assert z.value is None  # z depends on x: stale
    z.forward()
    np.testing.assert_array_equal(np.asarray(z.value), [[15.0], [18.0]])


def test_a_sample_in_its_own_shape_on_the_short_path_makes_values_matrices_again():
    """N1 (node.py short path: graph.single_sample = True dropped): a batch of one
    (1, rows, cols) reads as batched arrays; the next sample set in its own shape (the
    short path, as the input holds one sample) must read as the article's np.matrix."""
    with fg.Graph():
        x = fg.Variable((2, 1), trainable=False)
        y = fg.ops.Add(x, x)
    x.set_value(np.ones((1, 2, 1)))  # a batch of one: arrays (1, 2, 1)
    y.forward()
    assert y.value.shape == (1, 2, 1) and not isinstance(y.value, np.matrix)
    x.set_value(np.array([[1.0], [2.0]]))  # one sample in its own shape: the short path
    y.forward()
    assert isinstance(y.value, np.matrix) and y.value.shape == (2, 1)
    assert isinstance(x.value, np.matrix)
    np.testing.assert_array_equal(y.value, [[2.0], [4.0]])


def test_an_update_leaves_a_value_emptied_by_a_new_input_empty():
    """E8 (kernels/elementwise.py raise_states: ``states[i] = state`` without ``<``): an
    optimizer's update raises what depends on its parameters to OUTDATED *at least*; a node
    already EMPTY because an input changed must stay EMPTY (its old value belongs to the old
    input), not be lowered to OUTDATED and read back as the stale value."""
    rng = np.random.default_rng(0)
    with fg.Graph() as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((4, 3), init=True)
        y = fg.ops.MatMul(w, x)
        label = fg.Variable((4, 1), trainable=False)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(y, label)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    x.set_value(rng.normal(size=(5, 3, 1)))
    label.set_value(np.eye(4)[rng.integers(0, 4, 5)].reshape(5, 4, 1))
    optimizer.one_step()
    assert y.value is not None
    x.set_value(rng.normal(size=(5, 3, 1)))  # a new batch: y and the loss are EMPTY
    assert y.value is None
    optimizer.update()
    assert y.value is None and loss.value is None  # still: nothing computed them for it


def test_reset_value_of_an_input_keeps_its_value_and_empties_what_depends_on_it():
    """N11 (node.py reset_value: ``itself=True`` for every node): a leaf keeps its value when
    reset (only what depends on it is forgotten), so the next forward recomputes from it."""
    with fg.Graph():
        x = fg.Variable((2, 1), trainable=False)
        y = fg.ops.Add(x, x)
    x.set_value(np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1))
    y.forward()
    x.reset_value()
    assert y.value is None
    np.testing.assert_array_equal(x.value, [[[1.0], [2.0]], [[3.0], [4.0]]])
    y.forward()  # from the value x kept: no "x has no value"
    np.testing.assert_array_equal(y.value, [[[2.0], [4.0]], [[6.0], [8.0]]])


def test_set_values_of_a_batch_after_a_single_sample_reads_parameters_as_arrays():
    """F4 (feed.py set_values: ``graph.single_sample = False`` dropped): after a batch is set
    with set_values, values are arrays, as after set_value with a batch -- also the values
    of nodes without a batch axis, which a single sample set before made np.matrix."""
    with fg.Graph():
        inputs = [fg.Variable((3, 1), trainable=False) for _ in range(2)]
        w = fg.Variable((2, 3), init=True)
        ys = [fg.ops.MatMul(w, x) for x in inputs]
    inputs[0].set_value(np.ones((3, 1)))  # one sample: the article's matrices
    inputs[1].set_value(np.ones((3, 1)))
    ys[0].forward()
    assert isinstance(w.value, np.matrix)
    fg.set_values(inputs, np.ones((2, 4, 3, 1)))  # a batch of 4 for each input
    ys[0].forward()
    assert ys[0].value.shape == (4, 2, 1)
    assert type(w.value) is np.ndarray  # as after inputs[t].set_value(batch) one by one
    for x, value in zip(inputs, np.ones((2, 4, 3, 1))):
        x.set_value(value)
    assert type(w.value) is np.ndarray


def test_the_float64_number_that_float32_rounds_to_infinity_is_refused():
    """E9 (kernels/elementwise.py _first_beyond: ``>=`` made ``>``): the smallest float64
    magnitude that becomes infinite in float32 is the tie (2 - 2**-24) * 2**127; an input
    given it is refused, like any larger one, not silently made infinite."""
    tie = (2 - 2**-24) * 2.0**127
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(tie)) and np.isfinite(np.float32(np.nextafter(tie, 0)))
    with fg.Graph():
        x = fg.Variable((2, 1), trainable=False)
    ok = np.array([[[1.0], [np.nextafter(tie, 0)]]])
    x.set_value(ok)  # the largest float64 that stays finite is taken
    for sign in (1, -1):
        with pytest.raises(ValueError, match="beyond the range of float32"):
            x.set_value(np.array([[[1.0], [sign * tie]]]))
    with pytest.raises(ValueError, match="beyond the range of float32"):
        fg.set_values([x], np.array([[[[1.0], [tie]], [[0.0], [0.0]]]]))


def test_an_input_built_last_gives_its_new_sample_on_the_short_path():
    """E11 (kernels/elementwise.py settle_fed: the loop over the nodes stops one early): an
    input that is the graph's last node, fed one sample on the short path, must be settled
    like any other -- its value is the new sample, not the snapshot of the one before."""
    with fg.Graph():
        a = fg.Variable((2, 1), trainable=False)
        fg.ops.Add(a, a)
        x = fg.Variable((2, 1), trainable=False)  # the last node of the graph
    x.set_value(np.array([[1.0], [2.0]]))  # the general path
    np.testing.assert_array_equal(np.asarray(x.value), [[1.0], [2.0]])
    x.set_value(np.array([[3.0], [4.0]]))  # the short path: x holds one sample
    np.testing.assert_array_equal(np.asarray(x.value), [[3.0], [4.0]])
    x.set_value(np.array([[5.0], [6.0]]))
    np.testing.assert_array_equal(np.asarray(x.value), [[5.0], [6.0]])


def test_set_values_names_the_input_and_sample_that_hold_a_number_beyond_float32():
    """E13 (kernels/elementwise.py feed_inputs: the input's offset ``t * B * n`` dropped
    from the index it returns): the error names the input and the sample of the bad number."""
    with fg.Graph():
        inputs = [fg.Variable((2, 1), trainable=False, name=f"step{t}") for t in range(3)]
        fg.ops.Add(*inputs)
    values = np.full((3, 4, 2, 1), 0.5)  # float64: 3 inputs, a batch of 4 each
    values[2, 1, 1, 0] = 1e39  # infinite in float32
    with pytest.raises(ValueError, match=r"set_values: step2: 1e\+39 \(sample 1\) is beyond"):
        fg.set_values(inputs, values)


@pytest.mark.parametrize("where", [0, 1, 2])
def test_softmax_and_its_cross_entropy_are_finite_for_huge_logits_in_any_column(where):
    """S1 (kernels/softmax.py _softmax_row: the row maximum taken over all but the last
    column): logits of 1e4 give finite probabilities and losses wherever the largest is."""
    logits = np.zeros((1, 3, 1))
    logits[0, where, 0] = 1e4
    with fg.Graph():
        x = fg.Variable((3, 1), trainable=False)
        label = fg.Variable((3, 1), trainable=False)
        probs = fg.ops.SoftMax(x)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(x, label)
    x.set_value(logits)
    label.set_value(np.eye(3)[[where]].reshape(1, 3, 1))
    probs.forward()
    loss.forward()
    expected = np.zeros((1, 3, 1))
    expected[0, where, 0] = 1
    np.testing.assert_allclose(probs.value, expected, atol=1e-6)
    np.testing.assert_allclose(loss.value, [[[0.0]]], atol=1e-4)


def _trainer(scale=1.0, lr=0.01, lr_decay=1.0):
    from fastgraph.trainer import SimpleTrainer

    model = fg.models.mlp(4, (3,), 2, "ReLU", seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, lr)
    return model, SimpleTrainer(model.x, model.one_hot, model.predict, optimizer,
                                progress=False, log=lambda line: None, seed=0,
                                lr_decay=lr_decay, scale=scale)


def _data(samples=12):
    rng = np.random.default_rng(0)
    return rng.integers(0, 10, size=(samples, 4)).astype(np.uint8), np.arange(samples) % 2


def test_the_history_holds_the_learning_rate_each_epoch_trained_with():
    """T1 (trainer.py: the learning rate recorded after lr_decay applied): epoch e's record
    holds the rate its batches used, lr * decay**(e - 1)."""
    model, trainer = _trainer(lr=0.01, lr_decay=0.5)
    history = trainer.train(*_data(), epochs=3)
    assert [record["learning_rate"] for record in history] == pytest.approx([0.01, 0.005, 0.0025])
    assert trainer.optimizer.learning_rate == pytest.approx(0.00125)


def test_a_decay_that_reaches_zero_after_the_last_epoch_is_refused_before_training():
    """T2 (trainer.py _check_decay: the last epoch's decay not looked at): the rate is
    multiplied after every epoch, the last too; if that makes it 0 in float32 the run is
    refused before any work, not stopped by the optimizer at its end."""
    model, trainer = _trainer(lr=1e-45, lr_decay=0.1)  # 1e-46 is 0 in float32
    before = [p.flat.copy() for p in trainer.optimizer.params]
    with pytest.raises(ValueError, match=r"lr_decay 0.1 .* after epoch 1 of 1"):
        trainer.train(*_data(), epochs=1)
    assert trainer.history == []
    for param, value in zip(trainer.optimizer.params, before):
        np.testing.assert_array_equal(param.flat, value)  # nothing trained


def test_scores_scale_the_features_as_training_does():
    """T6 (trainer.py _scores: the features fed without ``scale``): scores are the model's
    output for the scaled features, as the batches it trained on were scaled."""
    model, trainer = _trainer(scale=1 / 255)
    features, _ = _data()
    scores = trainer.scores(features)
    model.x.set_value((features / 255).astype(np.float32).reshape(-1, 4, 1))
    model.predict.forward()
    np.testing.assert_allclose(scores, model.predict.flat, rtol=1e-6)
    model.x.set_value(features.astype(np.float32).reshape(-1, 4, 1))  # unscaled: other scores
    model.predict.forward()
    assert not np.allclose(scores, model.predict.flat, rtol=1e-3)


def test_a_stacked_weight_gradient_is_one_product_not_a_sum_of_per_sample_ones(monkeypatch):
    """A12 (ops/arithmetic.py vjp_summed: ``slot == 1 and self._vectors`` for ``_stacked``):
    a batch of matrices times a parameter gets its parameter's gradient as one GEMM over
    the stack, never through the per-sample products that the base class would sum."""
    from fastgraph.ops import arithmetic

    rng = np.random.default_rng(0)
    with fg.Graph(dtype=np.float64):
        a = fg.Variable((3, 4), trainable=False)
        w = fg.Variable((4, 2))
        product = fg.ops.MatMul(a, w)
    a.set_value(rng.normal(size=(5, 3, 4)))
    w.set_value(rng.normal(size=(4, 2)))
    product.forward()
    upstream = rng.normal(size=(5, 6))

    def refused(*args):
        raise AssertionError("the stacked weight gradient went through per-sample products")

    monkeypatch.setattr(arithmetic, "matmul_rows", refused)
    summed = product.vjp_summed(1, upstream)
    expected = np.einsum("bij,bik->jk", a.value, upstream.reshape(5, 3, 2))
    np.testing.assert_allclose(summed.reshape(4, 2), expected, rtol=1e-12)
