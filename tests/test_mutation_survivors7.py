"""Tests for the survivors of a seventh mutation sweep (the modules the earlier sweeps did not
mutate: the operators' dense Jacobians, VJPs and checks, metrics, layers, the optimizers'
rules, both trainers, the thread chooser, set_values). Each one passes on the unmutated code
and fails under the mutation named in its docstring."""

import numpy as np
import pytest

import fastgraph as fg
from tests.helpers import chosen_counts, small_network

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


# -- ops: the operators' checks and dense Jacobians ---------------------------------------
def test_operators_without_parents_say_so():
    """BA2 (base.py: ``if not parents`` dropped)."""
    graph = fg.Graph(dtype=np.float64)
    for kind in (fg.ops.Add, fg.ops.Concat):
        with pytest.raises(TypeError, match=f"^{kind.__name__} takes at least one parent node$"):
            kind(graph=graph)


def test_operators_refuse_parents_of_the_wrong_shape():
    """LO14 (MeanSquaredError.infer_dim without same_dims), AR15 (ScalarMultiply takes a
    (1, k) scalar), AR20 (Reshape into fewer numbers than its parent holds)."""
    graph = fg.Graph(dtype=np.float64)
    a = fg.Variable((3, 2), trainable=False, graph=graph, name="a")
    with pytest.raises(ValueError, match="MeanSquaredError needs parents of one shape"):
        fg.ops.loss.MeanSquaredError(a, fg.Variable((2, 3), trainable=False, graph=graph))
    with pytest.raises(ValueError, match="MeanSquaredError needs parents of one shape"):
        fg.ops.loss.MeanSquaredError(a, fg.Variable((2, 1), trainable=False, graph=graph))
    with pytest.raises(ValueError, match="ScalarMultiply needs a 1x1 scalar first"):
        fg.ops.ScalarMultiply(fg.Variable((1, 2), graph=graph), a)
    with pytest.raises(ValueError, match=r"Reshape cannot make a of shape \(3, 2\) into \(2, 2\)"):
        fg.ops.Reshape(a, (2, 2))


def test_a_nan_slope_is_named_as_not_finite_not_as_infinite():
    """AC9 (LeakyReLU without ``math.isfinite(slope)``: NaN reached the dtype check, whose
    message calls it infinite)."""
    graph = fg.Graph(dtype=np.float32)
    x = fg.Variable((2, 1), trainable=False, graph=graph)
    with pytest.raises(ValueError, match=r"slope must be a finite number, got nan$"):
        fg.ops.LeakyReLU(x, float("nan"))


def test_cross_entropy_names_the_labels_that_are_not_one_hot_in_any_sample():
    """LO1 (``bad > 0``: labels wrong in sample 0 went unreported, the loss computed from
    them) and LO2 (the message printed sample 0's labels for any sample)."""
    graph = fg.Graph(dtype=np.float64)
    z = fg.Variable((2, 1), trainable=False, graph=graph, name="z")
    y = fg.Variable((2, 1), trainable=False, graph=graph, name="y")
    with graph:
        ce = fg.ops.loss.CrossEntropyWithSoftMax(z, y, name="ce")
    z.set_value(np.zeros((2, 2, 1)))
    y.set_value(np.array([[[0.5], [0.6]], [[1.0], [0.0]]]))
    with pytest.raises(ValueError, match=r"labels of sample 0 in y are not one-hot "
                                         r".*\[0\.5 0\.6\]"):
        ce.forward()
    y.set_value(np.array([[[1.0], [0.0]], [[0.5], [0.6]]]))
    with pytest.raises(ValueError, match=r"labels of sample 1 in y are not one-hot "
                                         r".*\[0\.5 0\.6\]"):
        ce.forward()


@pytest.mark.parametrize("make", [fg.ops.ReLU, lambda x: fg.ops.LeakyReLU(x, 0.2), fg.ops.Step])
def test_dense_jacobians_are_in_the_graphs_dtype(make):
    """AC8 (``_nan_where_nan`` without ``.astype(x.dtype)``: float64 Jacobians, and a float64
    ``backward(engine="jacobian")``, in a float32 graph)."""
    graph = fg.Graph(dtype=np.float32)
    x = fg.Variable((3, 1), trainable=False, graph=graph)
    x.set_value(np.array([[0.5], [0.0], [-0.5]]))
    with graph:
        op = make(x)
    op.forward()
    assert op.get_jacobi(x).dtype == np.float32
    assert x.backward(op, engine="jacobian").dtype == np.float32


def test_welding_the_node_already_welded_changes_nothing():
    """MV4 (``weld`` without its early return: welding the same node again re-wired the
    graph, rebuilding its tapes and programs and emptying every value after the weld)."""
    from tests.helpers import welded_tanh

    graph, x, target, weld, branches, _, loss = welded_tanh(np.random.default_rng(0))
    x.set_value(np.ones((2, 1)))
    target.set_value(np.ones((1, 1)))
    loss.forward()
    version, value = graph._version, loss.value.copy()
    weld.weld(branches[0])
    assert graph._version == version
    np.testing.assert_array_equal(loss.value, value)


def test_a_welding_point_refuses_a_node_with_its_rows_but_other_columns():
    """MV5 (``_check_weld`` comparing the rows only: a (2, 2) node welded to a (2, 1)
    welding point)."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 2), trainable=False, name="x")
        column = fg.Variable((2, 1), trainable=False, name="column")
        weld = fg.ops.Welding(column, name="weld")
        fg.ops.Tanh(weld)
    for make in (lambda: weld.weld(x), lambda: fg.ops.Welding(x, dim=(2, 1), graph=graph),
                 lambda: fg.ops.Welding(dim=(2, 1), graph=graph).weld(x)):
        with pytest.raises(ValueError, match=r"has shape \(2, 1\) and cannot weld x of shape "
                                             r"\(2, 2\)"):
            make()


# -- metrics.py ---------------------------------------------------------------------------
def test_labels_of_three_axes_need_one_column_in_the_last():
    """ME1 (``labels.ndim == 3`` without ``shape[2] == 1``: (N, k, 2) labels were read from
    their first column, silently)."""
    labels = np.zeros((2, 2, 2))
    labels[0, 0, 0] = labels[1, 1, 0] = 1
    labels[:, :, 1] = 7
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 2\)"):
        fg.metrics.class_labels(labels)


def test_one_hot_labels_of_more_classes_than_the_scores_are_refused():
    """ME3 (the one-hot width against ``classes`` unchecked: 3-class labels scored against
    2-class scores gave an accuracy of 1.0)."""
    with pytest.raises(ValueError, match="labels are one-hot rows of 3 classes, expected 2"):
        fg.metrics.accuracy(np.eye(3)[[0, 1, 1]], np.eye(2)[[0, 1, 1]])


# -- layer.py -----------------------------------------------------------------------------
def _weights(layer_output):
    """The trainable Variables of the graph, largest first."""
    nodes = layer_output.graph.nodes
    return sorted((n for n in nodes if isinstance(n, fg.Variable) and n.trainable),
                  key=lambda n: -n.dimension())


def test_fc_draws_he_normal_for_relu_and_glorot_uniform_otherwise():
    """LA3 (ReLU's weights drawn as Glorot-uniform) and LA2 (Glorot's limit from the inputs
    alone, sqrt(6 / input_size))."""
    graph = fg.Graph(dtype=np.float64, seed=1)
    x = fg.Variable((400, 1), trainable=False, graph=graph)
    relu = fg.layer.fc(x, 400, 300, "ReLU")
    weights = _weights(relu)[0].value
    assert weights.std() == pytest.approx(np.sqrt(2.0 / 400), rel=0.02)
    assert np.abs(weights).max() > 3 * np.sqrt(2.0 / 400)  # normal, not bounded
    graph = fg.Graph(dtype=np.float64, seed=1)
    x = fg.Variable((400, 1), trainable=False, graph=graph)
    weights = _weights(fg.layer.fc(x, 400, 300, "Tanh"))[0].value
    limit = np.sqrt(6.0 / (400 + 300))
    assert limit * 0.99 < np.abs(weights).max() <= limit


def test_the_article_conv_layer_draws_he_normal_for_all_its_inputs():
    """LA8 (the kernels' scale without ``len(feature_maps)``: sqrt(2 / (kh kw)), too large
    by sqrt(3) for three input maps)."""
    graph = fg.Graph(dtype=np.float64, seed=1)
    maps = [fg.Variable((8, 8), trainable=False, graph=graph) for _ in range(3)]
    fg.layer.conv(maps, (8, 8), 40, (5, 5), "ReLU")
    kernels = np.concatenate([n.value.ravel() for n in graph.nodes
                              if isinstance(n, fg.Variable) and n.dim == (5, 5)])
    assert kernels.size == 3 * 40 * 25
    assert kernels.std() == pytest.approx(np.sqrt(2.0 / (3 * 25)), rel=0.06)


def test_conv2d_draws_he_normal_and_makes_no_bias_when_told():
    """LA12 (the weights drawn with sqrt(1 / fan_in)) and LA13 (``bias=False`` ignored: a
    bias Variable made and added)."""
    graph = fg.Graph(dtype=np.float64, seed=1)
    x = fg.Variable((64, 4), trainable=False, graph=graph)
    before = len(graph.nodes)
    out = fg.layer.conv2d(x, 64, 3, image_shape=(8, 8), bias=False)
    assert len(out.parents) == 2 and len(graph.nodes) - before == 2  # the weights, the op
    weights = out.parents[1].value
    assert weights.shape == (64, 36)
    assert weights.std() == pytest.approx(np.sqrt(2.0 / 36), rel=0.05)


# -- optimizer.py -------------------------------------------------------------------------
def test_get_gradient_of_a_node_that_is_no_parameter_says_so():
    """OP23 (``get_gradient`` without its check: a bare ``KeyError: <x ...>`` after a step,
    and "no gradient accumulated" before one, for a node that is no parameter at all)."""
    graph, x, label, w, logits, loss = small_network()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    with pytest.raises(KeyError, match="x is not a parameter of this optimizer"):
        optimizer.get_gradient(x)
    x.set_value(np.ones((3, 1)))
    label.set_value(np.array([[1.0], [0.0]]))
    optimizer.one_step()
    with pytest.raises(KeyError, match="x is not a parameter of this optimizer"):
        optimizer.get_gradient(x)


@pytest.mark.parametrize("momentum", [1.0, -0.1, float("nan"), "0.9", True])
def test_momentum_must_be_a_fraction(momentum):
    """OP25 (``Momentum`` keeping its momentum unchecked: 1.0 never forgets, a negative one
    flips the velocity, NaN makes the weights NaN, a string fails at the first update)."""
    graph, x, label, w, logits, loss = small_network()
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\)"):
        fg.optimizer.Momentum(graph, loss, 0.1, momentum=momentum)


# -- trainer.py ---------------------------------------------------------------------------
def _separable(n=16):
    """Features whose class is the argmax of their first two numbers, with a wide margin."""
    rng = np.random.default_rng(0)
    classes = np.arange(n) % 2
    features = rng.normal(size=(n, 3)) * 0.1
    features[np.arange(n), classes] += 5.0
    return features, classes


def test_the_train_accuracy_of_an_epoch_counts_the_hits():
    """TR4 (``!=`` for ``==``: the history's train_accuracy counted the misses)."""
    graph, x, label, w, logits, loss = small_network()
    w.set_value(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    optimizer = fg.optimizer.GradientDescent(graph, loss, 1e-6)
    trainer = fg.trainer.SimpleTrainer(x, label, logits, optimizer, batch_size=4, seed=0,
                                       progress=False, log=lambda line: None)
    features, classes = _separable()
    history = trainer.train(features, classes, features, classes)
    assert history[0]["train_accuracy"] == 1.0 and history[0]["test_accuracy"] == 1.0


def test_ctrl_c_stops_training_after_the_running_batch_and_restores_the_handler():
    """TR5 (the epoch went on to its end after Ctrl-C) and TR6 (the trainer's SIGINT handler
    left in place after training)."""
    import os
    import signal

    graph, x, label, w, logits, loss = small_network()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.01)
    update, updates = optimizer.update, []

    def update_then_ctrl_c():
        update()
        updates.append(1)
        if len(updates) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    optimizer.update = update_then_ctrl_c
    lines = []
    trainer = fg.trainer.SimpleTrainer(x, label, logits, optimizer, batch_size=4, seed=0,
                                       progress=False, log=lines.append)
    before = signal.getsignal(signal.SIGINT)
    features, classes = _separable()
    history = trainer.train(features, classes, epochs=3)
    assert trainer.interrupted and len(updates) == 2
    assert len(history) == 1 and history[0]["samples"] == 8
    assert lines[-1] == "interrupted: stopped after 8 samples of epoch 1"
    assert signal.getsignal(signal.SIGINT) is before


def _trainer(**options):
    graph, x, label, w, logits, loss = small_network()
    w.set_value(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.01)
    return fg.trainer.SimpleTrainer(x, label, logits, optimizer, batch_size=4, seed=0,
                                    progress=False, log=lambda line: None, **options)


def test_scores_in_chunks_are_the_scores_of_every_sample():
    """TR10 (each chunk of ``eval_batch_size`` lost its last sample)."""
    features, _ = _separable(10)
    np.testing.assert_allclose(_trainer(eval_batch_size=4).scores(features),
                               _trainer().scores(features), rtol=0, atol=0)
    assert _trainer(eval_batch_size=4).scores(features).shape == (10, 2)


def test_features_that_are_no_samples_of_real_numbers_are_named():
    """TR11 (complex features accepted by the check) and TR12 (a 0-d array reached
    ``len()``: "TypeError: len() of unsized object")."""
    trainer = _trainer()
    with pytest.raises(ValueError, match="scores: the features must be numbers, got dtype "
                                         "complex128"):
        trainer.scores(np.ones((2, 3), complex))
    with pytest.raises(ValueError, match=r"scores: the features are empty \(no samples\)"):
        trainer.scores(np.float64(3.0))


def test_features_or_labels_alone_are_refused_before_training():
    """TR16 (``and`` for ``or``: training features without labels reached class_labels with
    None) and TR17 (test features without test labels, or the reverse, ignored: a whole
    epoch trained, then no test accuracy or a failure)."""
    features, classes = _separable()
    for given in ({"test_features": features}, {"test_labels": classes}):
        trainer = _trainer()
        with pytest.raises(ValueError, match="test features and labels go together"):
            trainer.train(features, classes, **given)
        assert trainer.optimizer.steps == 0
    with pytest.raises(ValueError, match="training features and labels go together"):
        _trainer().train(features, None)


# -- article_trainer.py -------------------------------------------------------------------
def _article_trainer(**options):
    from fastgraph.trainer import SimpleTrainer

    graph, x, label, w, logits, loss = small_network()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.01)
    features, classes = _separable(8)
    data = ({"x": features}, np.eye(2)[classes])
    return SimpleTrainer([x], label, loss, optimizer, **options), data, w


def test_the_article_trainer_prints_each_samples_own_loss(capsys):
    """AT3 (every line of a batch printed the loss of the batch's first sample)."""
    trainer, (train_x, train_y), w = _article_trainer(epoches=1, batch_size=4,
                                                      print_iteration_interval=1)
    logits = train_x["x"][:4] @ w.value.T  # the first batch, before its update
    expected = np.log(np.exp(logits).sum(axis=1)) - (logits * train_y[:4]).sum(axis=1)
    trainer.train(train_x, train_y)
    printed = [float(line.rsplit(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()
               if "loss value" in line]
    assert len(printed) == 8
    np.testing.assert_allclose(printed[:4], expected, atol=2e-6)


def test_the_article_trainer_evaluates_only_when_told_and_checks_the_test_data_first(capsys):
    """AT4 (the metrics evaluated after every epoch without ``eval_on_train``) and AT5 (the
    test data not checked before training: bad test data trained a whole run, unseen)."""
    trainer, (train_x, train_y), w = _article_trainer(epoches=1, batch_size=4)
    trainer.train_and_eval(train_x, train_y, train_x, train_y)
    assert "evaluation metrics" not in capsys.readouterr().out
    steps = trainer.optimizer.steps
    bad = {"x": train_x["x"].copy()}
    bad["x"][2, 0] = np.nan
    with pytest.raises(ValueError, match=r"test data 'x' hold nan \(sample 2\)"):
        trainer.train_and_eval(train_x, train_y, bad, train_y)
    assert trainer.optimizer.steps == steps


def test_the_article_trainer_refuses_data_of_no_samples():
    """AT8 (no samples trained nothing and printed an epoch, silently)."""
    trainer, _, _ = _article_trainer(epoches=1, batch_size=4)
    with pytest.raises(ValueError, match="train data hold no samples"):
        trainer.train({"x": np.zeros((0, 3))}, np.zeros((0, 2)))


def test_the_article_trainer_refuses_a_metric_without_value_str():
    """AT12 (only ``reset`` checked: an object without ``value_str`` failed after a whole
    epoch, in eval)."""
    from fastgraph.trainer import SimpleTrainer

    class Half:
        name = "half"

        def reset(self):
            pass

    graph, x, label, w, logits, loss = small_network()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.01)
    with pytest.raises(TypeError, match="metrics_ops: half is not a metric node"):
        SimpleTrainer([x], label, loss, optimizer, epoches=1, metrics_ops=[Half()])


# -- threads.py ---------------------------------------------------------------------------
@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="needs two")
def test_thread_counts_stay_between_one_and_the_most():
    """TH3 (``limit(0)``, as cores // ranks gives with more ranks than cores, set ``most``
    to 0: the next use() asked Numba for 0 threads) and TH4 (``use`` above ``most``)."""
    import numba

    from fastgraph.threads import threads

    before, most = threads.current, threads.most
    try:
        threads.limit(1)
        threads.use(2)
        assert threads.current == 1 and numba.get_num_threads() == 1
        threads.limit(0)
        assert threads.most == 1
        threads.use(1)
        assert numba.get_num_threads() == 1
    finally:
        threads.limit(most)
        threads.use(before or most)


def test_a_trial_is_judged_by_its_median_not_its_slowest_step(monkeypatch):
    """TH7 (the largest time of a trial taken for its median: one slow step, 3.0 against a
    median of 1.0, lost a trial that two threads won)."""
    counts, chooser = chosen_counts(lambda n, i: (3.0 if i == 12 else 1.0) if n == 2 else 1.6, 30,
                              monkeypatch)
    assert counts[8:17] == [2] * 9 and counts[17:] == [2] * 13
    assert chooser.medians == pytest.approx([1.6, 1.0])


def test_a_count_must_be_clearly_faster_to_be_taken(monkeypatch):
    """TH10 (``_WIN`` dropped: two threads 3% faster, within the noise, were taken)."""
    counts, chooser = chosen_counts(lambda n, i: 0.97 if n == 2 else 1.0, 40, monkeypatch)
    assert counts[8:17] == [2] * 9 and counts[17:] == [1] * 23 and chooser.home == 0


def test_a_lost_trial_waits_twenty_times_what_it_lost_waking_step_included(monkeypatch):
    """TH8 (the waking step left out of the steps the lost time is counted over: a trial of
    a waking step and one judged step, each 10.0 against 1.0, lost 18, not 19)."""
    counts, chooser = chosen_counts(lambda n, i: 10.0 if n == 2 else 1.0, 12, monkeypatch)
    assert counts[8:10] == [2, 2] and counts[10:] == [1, 1]
    assert chooser.interval == 20 * 18


def test_a_chooser_starts_over_after_limit_and_never_reports_more_than_the_most(monkeypatch):
    """TH5 (``record`` no longer starting over when ``limit()`` changed the most: medians
    of the old count kept, counts (1, 2) after a limit of 3) and TH13 (``count`` above the
    most after a limit of 1)."""
    from fastgraph.threads import threads

    counts, chooser = chosen_counts(lambda n, i: 1.0 if n == 2 else 1.6, 12, monkeypatch)
    assert chooser.count == 2
    monkeypatch.setattr(threads, "most", 1)
    assert chooser.count == 1
    monkeypatch.setattr(threads, "most", 3)
    chooser.clock.step()
    assert chooser.counts == (1, 3) and chooser.medians == [None, None]


# -- feed.py ------------------------------------------------------------------------------
def test_set_values_refuses_values_it_cannot_give_as_they_are():
    """FD5 (complex values past the dtype check), FD6 (more values than inputs: the extra
    ones dropped, or NumPy's reshape error), FD7 (a (T, B, rows) array for a matrix input
    taken as a batch of columns: NumPy's reshape error instead of set_value's words)."""
    graph = fg.Graph(dtype=np.float64)
    x = fg.Variable((2, 3), trainable=False, graph=graph, name="x")
    column = fg.Variable((3, 1), trainable=False, graph=graph, name="column")
    with pytest.raises(TypeError, match="set_values: expected numeric values, got dtype "
                                        "complex128"):
        fg.set_values([column], np.ones((1, 4, 3), complex))
    for values in (np.ones((2, 4, 3)), np.ones((2, 1, 3))):
        with pytest.raises(ValueError, match=r"set_values: 1 inputs but values of shape"):
            fg.set_values([column], values)
    with pytest.raises(ValueError, match=r"x: expected a batch of shape \(B, 2, 3\) or one "
                                         r"sample of shape \(2, 3\), got \(4, 2\)"):
        fg.set_values([x], np.ones((1, 4, 2)))


def test_set_values_twice_gives_the_second_values():
    """FD11 (``graph.passes`` not advanced by set_values: a value read after the first call
    was its snapshot after the second, the old numbers)."""
    graph = fg.Graph(dtype=np.float64)
    x = fg.Variable((3, 1), trainable=False, graph=graph, name="x")
    fg.set_values([x], np.zeros((1, 2, 3, 1)))
    np.testing.assert_array_equal(x.value, np.zeros((2, 3, 1)))
    fg.set_values([x], np.ones((1, 2, 3, 1)))
    np.testing.assert_array_equal(x.value, np.ones((2, 3, 1)))


def test_set_values_checks_inputs_it_has_not_seen_in_a_graph_that_has_blocks():
    """FD12 (the check skipped for any inputs once the graph kept a block for others: a
    parameter was set as an input)."""
    graph = fg.Graph(dtype=np.float64)
    x = fg.Variable((3, 1), trainable=False, graph=graph, name="x")
    w = fg.Variable((3, 1), trainable=True, graph=graph, name="w")
    fg.set_values([x], np.zeros((1, 2, 3, 1)))
    with pytest.raises(ValueError, match="set_values: 'w' is not an input"):
        fg.set_values([w], np.ones((1, 2, 3, 1)))
