"""Tests for the survivors of a fifth mutation sweep (106 mutations of the code changed in
the last sessions: the graph's claim, the setters, set_values, Batches, checks, the
optimizer, the savers, the trainers, the engines' entry points; 76 caught, 10 equivalent):
a claim let go on every path, where a number beyond float32 is named, an input's block
after set_values, and the trainers' checks."""
import threading
import time

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import checks
from fastgraph.datasets import Batches
from fastgraph.trainer import SimpleTrainer

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def _network(dtype=np.float64, dim=(3, 1)):
    with fg.Graph(dtype=dtype, seed=0) as graph:
        x = fg.Variable(dim, trainable=False, name="x")
        label = fg.Variable((2, 1), trainable=False, name="label")
        w = fg.Variable((2, dim[0] * dim[1]), name="w")
        w.set_value(np.arange(2 * dim[0] * dim[1], dtype=float).reshape(2, -1) / 10)
        flat = fg.ops.Reshape(x, (dim[0] * dim[1], 1)) if dim[1] != 1 else x
        logits = fg.ops.MatMul(w, flat, name="logits")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, label, name="loss")
    return graph, x, label, w, logits, loss


def _in_another_thread(use):
    """Run ``use`` in a new thread; its exception (or None)."""
    errors = []

    def run():
        try:
            use()
        except Exception as error:  # reported to the caller
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    return errors[0] if errors else None


# -- a claim is let go on every path --------------------------------------------------------
def test_a_refused_use_leaves_the_graph_free_for_another_thread():
    """N7, F7, O8, E1: a use refused with an error inside its claim (a value beyond float32,
    an input with no value) must still release the graph."""
    graph, x, label, w, logits, loss = _network(np.float32)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    refused = [
        lambda: logits.forward(),                                  # x has no value (E1)
        lambda: optimizer.one_step(),                              # x has no value (O8)
        lambda: x.set_value(np.full((2, 3, 1), 1e39)),             # beyond float32 (N7)
        lambda: fg.set_values([x], np.full((1, 2, 3, 1), 1e39)),   # beyond float32 (F7)
    ]
    for use in refused:
        with pytest.raises(ValueError):
            use()
        error = _in_another_thread(lambda: x.set_value(np.ones((2, 3, 1))))
        assert error is None, f"after a refused use: {error!r}"


def test_every_finished_use_leaves_the_graph_free_for_another_thread():
    """F6, B10, E3: set_values, a Batches.feed that gathers into the inputs, and
    per_sample_gradients each let the graph go when they return."""
    graph, x, label, w, logits, loss = _network()
    batches = Batches(np.ones((8, 3)), np.arange(8) % 2, 4, classes=2)
    uses = [
        lambda: fg.set_values([x], np.ones((1, 4, 3, 1))),
        lambda: [size for size in batches.feed(x, label)],  # 2nd batch: gather_inputs
        lambda: fg.per_sample_gradients(loss, [w]),
    ]
    for use in uses:
        use()
        error = _in_another_thread(lambda: x.set_value(np.ones((4, 3, 1))))
        assert error is None, f"after a use that returned: {error!r}"


def test_a_graph_in_use_is_refused_at_once_not_after_a_wait():
    """G2: claim refuses at once (the docstring: refused rather than made to wait)."""
    graph, x, *_ = _network()
    held, go = threading.Event(), threading.Event()

    def hold():
        graph.claim("holder")
        held.set()
        go.wait(30)
        graph.release()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30)
    try:
        began = time.perf_counter()
        with pytest.raises(fg.GraphInUse):
            x.set_value(np.ones((2, 3, 1)))
        assert time.perf_counter() - began < 0.4
    finally:
        go.set()
        thread.join(30)


def test_a_thread_claims_its_graph_again_inside_its_own_claim():
    """A pass calls the setters and other passes inside its claim: the claim is re-entrant
    (a plain lock would refuse the thread its own graph, or wait on itself forever)."""
    graph, x, label, w, logits, loss = _network()
    graph.claim("an outer use")
    try:
        x.set_value(np.ones((2, 3, 1)))
        logits.forward()
    finally:
        graph.release()
    assert _in_another_thread(lambda: x.set_value(np.ones((2, 3, 1)))) is None


# -- beyond float32: where, and the first number ----------------------------------------------
def test_a_matrix_input_beyond_float32_names_its_sample():
    """N5: the sample of a (rows, cols > 1) input (an image) with a number beyond float32."""
    graph, x, *_ = _network(np.float32, dim=(2, 3))
    batch = np.zeros((2, 2, 3))
    batch[1, 0, 1] = 1e39
    with pytest.raises(ValueError, match=r"^x: 1e\+39 \(sample 1\) is beyond the range"):
        x.set_value(batch)


def test_set_values_refuses_a_first_number_beyond_float32_and_changes_nothing():
    """F1: the very first number of the block (flat index 0) beyond float32."""
    graph, x, *_ = _network(np.float32)
    fg.set_values([x], np.ones((1, 2, 3, 1)))
    values = np.ones((1, 4, 3, 1))
    values[0, 0, 0, 0] = 1e39
    with pytest.raises(ValueError, match=r"^set_values: x: 1e\+39 \(sample 0\) is beyond"):
        fg.set_values([x], values)
    np.testing.assert_array_equal(x.value, np.ones((2, 3, 1)))


def test_a_batch_beyond_float32_in_its_first_sample_names_sample_0():
    """C14: sample 0 is a sample (only a single sample set in its own shape has none)."""
    graph, x, *_ = _network(np.float32)
    batch = np.zeros((2, 3, 1))
    batch[0, 1, 0] = -1e39
    with pytest.raises(ValueError, match=r"^x: -1e\+39 \(sample 0\) is beyond"):
        x.set_value(batch)


def test_first_beyond_looks_for_finite_numbers_only():
    """C6, C16: NaN and infinity are not "beyond" (first_non_finite reports those), and a
    NaN that makes the extremes NaN is no element beyond."""
    assert checks.first_beyond(np.array([np.nan, 1.0]), np.float32) is None
    assert checks.first_beyond(np.array([np.inf, 1e39]), np.float32) == (1,)
    graph, x, label, w, *_ = _network(np.float32)
    w.set_value(np.array([[np.nan, 0, 0], [0, 0, 0]]))  # as before: a parameter may be NaN
    assert np.isnan(w.value[0, 0])


# -- an input's block and its short path ------------------------------------------------------
def test_one_sample_after_set_values_is_the_inputs_value():
    """F5: set_values gives x a new block; its old one-sample view must not be written."""
    graph, x, label, w, logits, loss = _network()
    x.set_value(np.asmatrix([[1.0], [2.0], [3.0]]))
    fg.set_values([x], np.zeros((1, 5, 3, 1)))
    x.set_value(np.asmatrix([[4.0], [5.0], [6.0]]))
    np.testing.assert_array_equal(np.asarray(x.value).ravel(), [4.0, 5.0, 6.0])
    logits.forward()
    np.testing.assert_allclose(np.asarray(logits.value).ravel(),
                               np.asarray(w.value) @ [4.0, 5.0, 6.0])


# -- Batches, saver, trainers -----------------------------------------------------------------
def test_batches_refuse_an_integer_scale_too_large_for_a_float():
    """B4: 10**400 (math.isfinite raises OverflowError) is refused in words."""
    with pytest.raises(ValueError, match="Batches: scale must be a finite number"):
        Batches(np.ones((4, 3)), np.arange(4) % 2, 2, classes=2, scale=10**400)


def test_an_article_load_beyond_float32_changes_no_parameter(tmp_path):
    """S6: the second parameter beyond float32: the first must not be loaded either."""
    def build(dtype):
        with fg.Graph(dtype=dtype, seed=0) as graph:
            x = fg.Variable((2, 1), trainable=False, name="x")
            a = fg.Variable((1, 2), name="a")
            b = fg.Variable((1, 1), name="b")
            fg.ops.Add(fg.ops.MatMul(a, x), b, name="out")
        return graph, a, b
    g64, a64, b64 = build(np.float64)
    a64.set_value(np.array([[5.0, 6.0]]))
    b64.set_value(np.array([[1e300]]))
    g32, a32, b32 = build(np.float32)
    a32.set_value(np.array([[1.0, 2.0]]))
    fg.trainer.Saver(str(tmp_path)).save(g64)
    with pytest.raises(fg.saver.ModelFileError, match="the graph was left as it was"):
        fg.trainer.Saver(str(tmp_path)).load(g32)
    np.testing.assert_array_equal(a32.value, [[1.0, 2.0]])


def _trainer_graph():
    with fg.Graph(dtype=np.float64, seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        y = fg.Variable((2, 1), trainable=False, name="y")
        w = fg.Variable((2, 3), name="w", init=True)
        logits = fg.ops.MatMul(w, x, name="logits")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, y, name="loss")
    return x, y, logits, loss, fg.optimizer.GradientDescent(graph, loss, 0.1)


def test_test_features_and_labels_that_disagree_are_refused_before_training():
    """T7: found after the first epoch otherwise ("4 labels but 5 predictions")."""
    x, y, logits, loss, optimizer = _trainer_graph()
    trainer = SimpleTrainer(x, y, logits, optimizer, batch_size=4, progress=False,
                            log=lambda line: None)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="^5 test samples but 4 test labels"):
        trainer.train(rng.normal(size=(10, 3)), np.arange(10) % 2,
                      rng.normal(size=(5, 3)), np.arange(4) % 2)
    assert optimizer.steps == 0


def test_the_articles_loss_op_keyword_with_a_node_first_is_explained():
    """T9: loss_op alone names the article's call."""
    x, y, logits, loss, optimizer = _trainer_graph()
    with pytest.raises(TypeError, match="loss_op is an option of the article's SimpleTrainer"):
        SimpleTrainer(x, y, loss_op=loss, optimizer=optimizer)


def test_the_article_trainer_leaves_its_fed_inputs_holding_the_last_batch(capsys):
    """A5, A6: only constants (inputs it does not feed) get their one sample back; an input
    it feeds that held one sample before training is left with the last batch."""
    x, y, logits, loss, optimizer = _trainer_graph()
    x.set_value(np.asmatrix([[9.0], [9.0], [9.0]]))
    y.set_value(np.asmatrix([[1.0], [0.0]]))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(32, 3))
    labels = np.eye(2)[np.arange(32) % 2]
    trainer = SimpleTrainer([x], y, loss, optimizer, epoches=1, batch_size=16)
    trainer.train({"x": features}, labels)
    assert x.batch_size == 16 and y.batch_size == 16
    np.testing.assert_array_equal(np.asarray(x.value).reshape(16, 3), features[16:])
