"""Behaviours that a user can reach and that no test ran (found by branch coverage of the
whole suite): errors a user causes, documented options and fallbacks. Each test
names the line it holds and the mutation of it that it was seen to catch."""

import os
import signal
import threading
import warnings

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import metrics
from fastgraph.cli import main
from fastgraph.kernels import blas
from fastgraph.trainer import Saver, SimpleTrainer
from tests.helpers import NumpyDouble


@pytest.fixture
def network():
    with fg.Graph(dtype=np.float64, seed=0) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((2, 2), init=True, name="w")
        out = fg.ops.MatMul(w, x, name="out")
        loss = fg.ops.Dot(out, out, name="loss")
    x.set_value(np.ones((3, 2, 1)))
    return graph, x, w, out, loss


# -- building: the mistakes an operator's constructor names (node.py, ops/) -------------------
def test_an_operator_names_a_parent_that_is_no_node_or_of_another_graph(network):
    """node.py 58 and 64. Mutations caught: either `raise` replaced by `pass` (an
    AttributeError about `graph`/`dim`, or a node joined to two graphs)."""
    graph, x, w, out, loss = network
    with pytest.raises(TypeError, match=r"^Add takes nodes as parents, got int$"):
        fg.ops.Add(out, 3)
    stranger = fg.Variable((2, 1), trainable=False, graph=fg.Graph(), name="stranger")
    local = fg.Variable((2, 1), trainable=False, graph=graph)
    count = graph.node_count()
    with pytest.raises(ValueError, match=rf"^Add: its parent stranger belongs to another graph "
                                         rf"than {out.name}$"):
        fg.ops.Add(out, stranger)
    with pytest.raises(ValueError, match=r"^Add: its parent Variable:\d+ belongs to another "
                                         r"graph than stranger$"):  # (the first parent's graph)
        fg.ops.Add(stranger, local)
    with pytest.raises(ValueError, match=r"^Add: its parent stranger belongs to another graph "
                                         r"than the graph it is built in \(the innermost"):
        fg.ops.Add(stranger, stranger, graph=graph)
    assert graph.node_count() == count


def test_an_operator_of_any_number_of_parents_needs_one():
    """ops/base.py 33. Mutation caught: the check deleted (an IndexError in Node)."""
    with pytest.raises(TypeError, match=r"^Concat takes at least one parent node$"):
        fg.ops.Concat()


def test_a_welding_point_welds_to_nodes_only(network):
    """ops/movement.py 80. Mutation caught: the isinstance check deleted."""
    graph, *_ = network
    point = fg.ops.Welding(graph=graph, name="point")
    with pytest.raises(TypeError, match=r"^point welds to a node, got int$"):
        point.weld(3)


@pytest.mark.parametrize("build, message", [
    (lambda x: fg.ops.MaxPool2D(x, (4, 4), 7),
     r"^MaxPool2D: a 7x7 window with stride \(7, 7\) and padding \(0, 0\) does not fit an "
     r"image of 4x4$"),
    (lambda x: fg.ops.AvgPool2D(x, (4, 4), 0),
     r"^AvgPool2D: kernel_size and stride must be positive, got \(0, 0\), \(0, 0\)$"),
    (lambda x: fg.layer.max_pool2d(x, 2),
     r"^max_pool2d: give image_shape=\(H, W\) for x, which no convolution or pooling layer "
     r"made$"),
    (lambda x: fg.layer.conv2d(x, 2, 3),
     r"^conv2d: give image_shape=\(H, W\) for x, which no convolution or pooling layer made$"),
    (lambda x: fg.ops.AddScalar(x, fg.Variable((2, 1), graph=x.graph, name="b")),
     r"^AddScalar needs a 1x1 scalar second, got b of shape \(2, 1\)$"),
], ids=["pool window larger than the image", "pool of kernel 0", "max_pool2d of no image",
        "conv2d of no image", "AddScalar of a column"])
def test_window_layers_name_what_does_not_fit(build, message):
    """ops/convolution.py 126 (only Conv2D's own `settings` check was tested), 513, 227;
    layer.py 174. Mutations caught: each check deleted (MaxPool2D then built a node of 0
    pixels; kernel 0 a ZeroDivisionError; AddScalar a node whose bias is a column)."""
    with fg.Graph():
        x = fg.Variable((16, 1), trainable=False, name="x")
        with pytest.raises(ValueError, match=message):
            build(x)


def test_conv2d_without_bias_makes_no_bias_parameter():
    """layer.py 153->157 (bias=False, an option no test gave). Mutation caught: `if bias:`
    made `if True:` (a bias made anyway)."""
    with fg.Graph() as graph:
        x = fg.Variable((16, 1), trainable=False, name="x")
        count = graph.node_count()
        conv = fg.layer.conv2d(x, 2, 3, image_shape=(4, 4), padding=1, bias=False)
    assert [node.dim for node in graph.nodes[count:] if isinstance(node, fg.Variable)] == [(2, 9)]
    assert len(conv.parents) == 2 and conv.dim == (16, 2)


# -- derivatives and optimizers ---------------------------------------------------------------
def test_jacobians_need_nodes_of_the_result_graph(network):
    """jacobians.py 164 and 171. Mutations caught: each check deleted (an empty list gave
    []; a node of another graph "out does not depend on stranger", which is not the
    reason)."""
    graph, x, w, out, loss = network
    with pytest.raises(ValueError, match=r"^jacobian: no nodes to take derivatives with "
                                         r"respect to$"):
        fg.jacobian(out, [])
    stranger = fg.Variable((2, 1), trainable=False, graph=fg.Graph(), name="stranger")
    with pytest.raises(ValueError, match=r"^per_sample_gradients: stranger belongs to another "
                                         r"graph than loss$"):
        fg.per_sample_gradients(loss, [stranger])


def test_dense_jacobians_need_one_sample_and_a_value():
    """node.py 219 and 223 (get_jacobi before the input is set, and on a batch). Mutations
    caught: either check deleted."""
    with fg.Graph(dtype=np.float64):
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((2, 2), init=True, name="w")
        out = fg.ops.MatMul(w, x, name="out")
    with pytest.raises(ValueError, match=r"^x has no value: run forward\(\) first$"):
        out.get_jacobi(w)
    x.set_value(np.ones((3, 2, 1)))
    out.forward()
    with pytest.raises(ValueError, match=r"^dense Jacobians work on one sample; x holds a "
                                         r"batch of 3$"):
        out.get_jacobi(w)


def test_optimizer_calls_name_what_is_not_theirs(network):
    """optimizer.py 44 and 213, profiler.py 79. Mutations caught: each check deleted."""
    graph, x, w, out, loss = network
    with pytest.raises(TypeError, match=r"^the target must be a node of the optimizer's "
                                         r"graph, got 'loss'$"):
        fg.optimizer.Adam(graph, "loss")
    optimizer = fg.optimizer.Adam(graph, loss)
    optimizer.one_step()
    with pytest.raises(KeyError, match=r"x is not a parameter of this optimizer"):
        optimizer.get_gradient(x)
    from fastgraph.profiler import profile_steps

    with pytest.raises(ValueError, match=r"^profile_steps: warmup must be a non-negative "
                                         r"integer, got -1$"):
        profile_steps(optimizer, lambda step: None, warmup=-1)


@pytest.mark.compiled
def test_forward_and_jacobians_of_an_operator_without_kernels_run_on_the_walker(rng):
    """engines/compiled.py 363 and 380: the walker's fallback when a pass cannot be
    recorded, tested for training only (test_compiled.py). A chain of 20 nodes, so that
    forward() records a pass (16 stale nodes or fewer are computed without one), and a node
    after the NumPy one (the failed recording computed those before it). Mutations caught:
    `tape.forward()` deleted (value None); `return vjp.per_sample(...)` made
    `return None`."""
    with fg.Graph(dtype=np.float64):
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((2, 2), name="w")
        w.set_value(rng.normal(size=(2, 2)))
        node = fg.ops.MatMul(w, x)
        for _ in range(19):
            node = fg.ops.Add(node, x)
        result = fg.ops.Add(NumpyDouble(node, name="double"), x)
    weights = w.value
    for round in range(2):  # the second forward: the pass known to be unrecordable
        x.set_value(rng.normal(size=(3, 2, 1)))
        if round == 0:
            with pytest.warns(UserWarning, match=r"running this graph in Python, not "
                                                 r"compiled: double \(NumpyDouble\)"):
                result.forward()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # said once
                result.forward()
        samples = x.value[:, :, 0]
        np.testing.assert_allclose(result.value[:, :, 0],
                                   2 * (samples @ weights.T + 19 * samples) + samples,
                                   rtol=1e-12)
    with pytest.warns(UserWarning, match=r"running this graph in Python, not compiled"):
        jacobian = fg.jacobian(result, x)
    np.testing.assert_allclose(jacobian, np.broadcast_to(2 * (weights + 19 * np.eye(2))
                                                         + np.eye(2), (3, 2, 2)), rtol=1e-12)


def _two_parameters_added(engine):
    """Three steps of Adam on (w1 + w2 + x)^2: the gradients of w1 and w2 are one buffer
    (Add passes its upstream to both)."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        w1, w2 = fg.Variable((2, 1), name="w1"), fg.Variable((2, 1), name="w2")
        w1.set_value(np.array([[1.0], [2.0]]))
        w2.set_value(np.array([[3.0], [-1.0]]))
        total = fg.ops.Add(fg.ops.Add(w1, w2), x)
        loss = fg.ops.Dot(total, total)
    x.set_value(np.arange(6.0).reshape(3, 2, 1))
    optimizer = fg.optimizer.Adam(graph, loss, 0.01, engine=engine)
    gradients = []
    for _ in range(3):
        optimizer.one_step()
        optimizer.one_step()
        gradients.append([optimizer.get_gradient(w).copy() for w in (w1, w2)])
        optimizer.update()
    return np.array(gradients), np.array([w1.value, w2.value])


@pytest.mark.compiled
def test_two_parameters_that_share_a_gradient_buffer_train_as_on_the_walker():
    """engines/compiled.py 102: the first step after an update when two parameters' gradients
    are one buffer (cannot both be moved onto their sums). Mutation caught: `if unique and`
    made `if True and` (both sums written at one address)."""
    gradients, weights = _two_parameters_added("vjp")
    expected_gradients, expected_weights = _two_parameters_added("python")
    np.testing.assert_allclose(gradients, expected_gradients, rtol=1e-12)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-12)


@pytest.mark.compiled
def test_per_sample_gradients_of_labels_a_kernel_refuses_name_them():
    """engines/compiled.py 205: the compiled per-sample pass (run_into) replayed on labels
    that its loss kernel refuses. Mutation caught: `if failed >= 0: self._explain(failed)`
    deleted (gradients of a loss never computed, returned without a word)."""
    with fg.Graph(dtype=np.float64, seed=0):
        x = fg.Variable((3, 1), trainable=False, name="x")
        y = fg.Variable((2, 1), trainable=False, name="y")
        w = fg.Variable((2, 3), init=True, name="w")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(fg.ops.MatMul(w, x), y, name="loss")
    x.set_value(np.ones((4, 3, 1)))
    y.set_value(np.tile([[1.0], [0.0]], (4, 1, 1)))
    assert fg.per_sample_gradients(loss, [w])[0].shape == (4, 2, 3)  # the pass recorded
    y.set_value(np.tile([[0.7], [0.7]], (4, 1, 1)))
    with pytest.raises(ValueError, match=r"^loss: the labels of sample 0 in y are not one-hot"):
        fg.per_sample_gradients(loss, [w])


def _welded_among_six_steps(engine):
    """40 steps of a weld moved among six time steps (the article's RNN): w's gradients and
    u's final value, and how many entries the graph's cache holds."""
    rng = np.random.default_rng(0)
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        u = fg.Variable((2, 2), name="u")
        u.set_value(rng.normal(size=(2, 2)))
        steps = [fg.ops.Tanh(x)]
        for _ in range(5):
            steps.append(fg.ops.Tanh(fg.ops.MatMul(u, steps[-1])))
        weld = fg.ops.Welding(steps[0])
        w = fg.Variable((1, 2), name="w")
        w.set_value(rng.normal(size=(1, 2)))
        loss = fg.ops.Dot(fg.ops.MatMul(w, weld), fg.ops.MatMul(w, weld))
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1, engine=engine)
    gradients = []
    for i in range(40):
        x.set_value(rng.normal(size=(3, 2, 1)))
        weld.weld(steps[(i * 7) % 6])
        optimizer.one_step()
        gradients.append(optimizer.get_gradient(w).copy())
        optimizer.update()
    return np.array(gradients), u.value, len(graph._cache)


@pytest.mark.compiled
def test_a_graph_whose_caches_overflow_trains_as_the_walker(monkeypatch):
    """graph.py 241, 313, 327, 398 and engines/compiled.py 349: the bounds of the
    caches (CACHE_SIZE, 256 entries: an RNN re-welded among more wirings than that), here
    made 2, so that passes, tapes and reach sets are evicted and rebuilt every few steps.
    Mutation caught: the eviction in Graph.cached deleted (the cache grows past its bound)."""
    from fastgraph import graph as graph_module
    from fastgraph.engines import compiled

    monkeypatch.setattr(graph_module, "CACHE_SIZE", 2)
    monkeypatch.setattr(compiled, "CACHE_SIZE", 2)
    gradients, u, entries = _welded_among_six_steps("vjp")
    expected_gradients, expected_u, _ = _welded_among_six_steps("python")
    np.testing.assert_allclose(gradients, expected_gradients, rtol=1e-10)
    np.testing.assert_allclose(u, expected_u, rtol=1e-10)
    assert entries <= 2


# -- metrics ----------------------------------------------------------------------------------
def test_metrics_take_the_scores_a_column_output_gives():
    """metrics.py 79: scores (N, classes, 1), the shape of `predict.value` for the README's
    (10, 1) output. Mutation caught: the squeeze deleted (a ValueError: not class indices)."""
    labels = np.array([0, 1, 2])
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    assert metrics.accuracy(labels, scores[:, :, None]) == metrics.accuracy(labels, scores)
    assert metrics.accuracy(labels, scores[:, :, None]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.accuracy([0, 1], np.array([["a", "b"], ["c", "d"]])),
     r"^scores must be numbers, got dtype <U1$"),
    (lambda: metrics.roc_auc([0, 1, 1], [0.1, 0.2]), r"^3 labels but 2 scores$"),
], ids=["string scores", "roc_auc of more labels than scores"])
def test_metrics_of_mismatched_inputs_say_so(call, message):
    """metrics.py 82 and 172. Mutations caught: each check deleted (NumPy's words, or an
    argmax of strings)."""
    with pytest.raises(ValueError, match=message):
        call()


def test_a_metric_node_refuses_an_output_and_label_of_two_batch_sizes():
    """ops/metrics.py 77 (README: a metric node refuses an output and a label that do not
    match). Mutation caught: the check deleted (NumPy's broadcast error, or a count of the
    shorter one)."""
    with fg.Graph(dtype=np.float64):
        output = fg.Variable((2, 1), trainable=False, name="output")
        label = fg.Variable((2, 1), trainable=False, name="label")
        accuracy = fg.ops.metrics.Accuracy(output, label, name="accuracy")
    output.set_value(np.ones((3, 2, 1)))
    label.set_value(np.eye(2)[:, :, None])
    with pytest.raises(ValueError, match=r"^accuracy: output holds 3 samples but label holds "
                                         r"2$"):
        accuracy.forward()
    assert accuracy.value is None  # nothing added


# -- trainers ---------------------------------------------------------------------------------
def _small_trainer(**options):
    model = fg.models.mlp(4, (3,), 2, "ReLU", dtype=np.float64, seed=0)
    optimizer = fg.optimizer.GradientDescent(model.graph, model.loss, 0.1)
    trainer = SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, batch_size=4,
                            progress=False, **options)
    features = np.random.default_rng(0).normal(size=(32, 4))
    return trainer, features, np.arange(32) % 2


def test_simple_trainer_trains_in_a_thread_that_is_not_the_main_one():
    """trainer.py 287->exit and 294->exit: Ctrl-C is caught in the main thread only
    (signal.signal raises ValueError in any other). Mutation caught: the main-thread test
    made `if True:`."""
    trainer, features, labels = _small_trainer(log=lambda line: None)
    handler, outcome = signal.getsignal(signal.SIGINT), {}

    def train():
        try:
            outcome["history"] = trainer.train(features, labels, epochs=2)
        except Exception as error:  # seen by the main thread
            outcome["error"] = error

    worker = threading.Thread(target=train)
    worker.start()
    worker.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert len(outcome["history"]) == 2
    assert signal.getsignal(signal.SIGINT) is handler


def test_ctrl_c_stops_training_after_the_batch_in_the_process(monkeypatch):
    """trainer.py 116-118 and 150-151 (the CLI's subprocess test runs them where coverage
    does not look): SIGINT during a batch ends the epoch after it, logs it, keeps the
    epoch's record and gives the handler back. Mutations caught: the `break` after the log
    deleted (3 epochs trained), and the handler not restored."""
    lines = []
    trainer, features, labels = _small_trainer(log=lines.append)
    handler = signal.getsignal(signal.SIGINT)
    one_step, steps = trainer.optimizer.one_step, []

    def interrupted_at_the_second():
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        one_step()

    monkeypatch.setattr(trainer.optimizer, "one_step", interrupted_at_the_second)
    history = trainer.train(features, labels, epochs=3)
    assert trainer.interrupted and len(history) == 1 and len(steps) in (2, 3)
    assert history[0]["samples"] == 4 * len(steps)
    assert lines[-1] == f"interrupted: stopped after {4 * len(steps)} samples of epoch 1"
    assert signal.getsignal(signal.SIGINT) is handler


def test_simple_trainer_takes_test_features_with_their_labels():
    """trainer.py 213. Mutation caught: the check deleted (a TypeError from None)."""
    trainer, features, labels = _small_trainer(log=lambda line: None)
    with pytest.raises(ValueError, match=r"^test features and labels go together: got only "
                                         r"one of them$"):
        trainer.train(features, labels, test_features=features)


@pytest.fixture
def article_trainer():
    with fg.Graph(dtype=np.float64, seed=0) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        y = fg.Variable((2, 1), trainable=False, name="y")
        out = fg.layer.fc(x, 2, 2, None)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(out, y)
        accuracy = fg.ops.metrics.Accuracy(out, y)
    optimizer = fg.optimizer.Adam(graph, loss)
    return SimpleTrainer([x], y, loss, optimizer, epoches=1, batch_size=2,
                         metrics_ops=[accuracy])


def test_the_article_trainer_names_data_it_cannot_feed(article_trainer, capsys):
    """article_trainer.py 195 and 264. Mutations caught: the empty check deleted (an epoch
    of nothing, silently); the 4-D case made to return the array (a shape error from
    set_value that names no data)."""
    with pytest.raises(ValueError, match=r"^train data hold no samples$"):
        article_trainer.train_and_eval({"x": np.zeros((0, 2))}, np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"^samples must be numbers, rows or matrices; got "
                                         r"shape \(2, 2, 1, 1\)$"):
        article_trainer.train_and_eval({"x": np.zeros((4, 2, 1, 1))}, np.eye(2)[[0, 1, 0, 1]])


def test_the_article_trainer_without_test_data_evaluates_nothing(article_trainer, capsys):
    """article_trainer.py 111->113 and 121->118 (train_and_eval without test data, and
    eval_on_train False, its default). Mutation caught: `if self.eval_on_train and ...`
    made `if True:` (eval() of None)."""
    article_trainer.eval_on_train = True
    article_trainer.train_and_eval({"x": np.ones((4, 2))}, np.eye(2)[[0, 1, 0, 1]])
    article_trainer.eval_on_train = False
    article_trainer.train_and_eval({"x": np.ones((4, 2))}, np.eye(2)[[0, 1, 0, 1]],
                                   {"x": np.ones((2, 2))}, np.eye(2))
    assert "evaluation metrics" not in capsys.readouterr().out


# -- saving -----------------------------------------------------------------------------------
def test_the_article_saver_refuses_what_it_cannot_save_or_load(tmp_path):
    """saver.py 449, 420, 541. Mutations caught: each check deleted (a parameter without a
    value saved as None and a TypeError from NumPy; an empty file name the folder itself;
    the missing weights file reported as "not a readable .npz" by the OSError branch)."""
    saver = Saver(tmp_path / "saved")
    with fg.Graph() as graph:
        fg.Variable((2, 1), name="p")
    with pytest.raises(ValueError, match=r"^cannot save the graph: parameter p has no value"):
        saver.save(graph)
    with fg.Graph() as graph:
        fg.Variable((2, 1), init=True, name="p")
    with pytest.raises(ValueError, match=r"^Saver.save: model_file_name is empty, expected a "
                                         r"file name$"):
        saver.save(graph, model_file_name="")
    saver.save(graph)
    (tmp_path / "saved" / "weights.npz").unlink()
    with pytest.raises(fg.saver.ModelFileError, match=r"weights.npz: no such file$"):
        saver.load(fg.Graph())


def test_the_article_saver_writes_in_the_current_folder_by_default(tmp_path, monkeypatch):
    """saver.py 400->exit: Saver() (root_dir "", the article's default). Mutation caught:
    `if os.fspath(root_dir):` made `if True:` (os.makedirs("") raises)."""
    monkeypatch.chdir(tmp_path)
    with fg.Graph() as graph:
        fg.Variable((2, 1), init=True, name="p")
    Saver().save(graph)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "weights.npz"]
    restored = fg.Graph()
    Saver().load(restored)
    np.testing.assert_array_equal(restored.get_node("p").value, graph.get_node("p").value)


def test_a_node_of_a_type_the_savers_do_not_know_is_refused_before_writing(tmp_path):
    """saver.py 377: a user's own operator. Mutation caught: the check deleted (the model
    file written, then unloadable)."""
    with fg.Graph() as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        NumpyDouble(x, name="double")
    with pytest.raises(TypeError, match=r"^double: cannot save a node of type NumpyDouble$"):
        fg.saver.save(tmp_path / "model.fgz", graph)
    assert not (tmp_path / "model.fgz").exists()


# -- the command line -------------------------------------------------------------------------
def test_hidden_sizes_that_are_no_numbers_are_an_option_error(capsys):
    """cli.py 142-143. Mutation caught: the except clause deleted (a traceback)."""
    with pytest.raises(SystemExit) as stopped:
        main(["train", "mnist", "--hidden", "a,b"])
    assert stopped.value.code == 2
    assert "expected sizes like 100,20, got 'a,b'" in capsys.readouterr().err


def test_a_float_image_holding_nan_is_refused_by_name(tmp_path, capsys):
    """cli.py 419. Mutation caught: the check deleted (refused, but as "F pixels from nan
    to nan are not grey levels")."""
    image = pytest.importorskip("PIL.Image")
    model = fg.models.mlp(784, (4,), 10, "ReLU", seed=0)
    fg.saver.save(tmp_path / "model.fgz", model.graph, {"input": "x", "output": "predict"})
    pixels = np.zeros((28, 28), np.float32)
    pixels[3, 4] = np.nan
    image.fromarray(pixels).save(tmp_path / "nan.tiff")
    assert main(["predict", str(tmp_path / "model.fgz"), str(tmp_path / "nan.tiff")]) == 2
    assert capsys.readouterr().err == (f"fastgraph: error: {tmp_path / 'nan.tiff'}: the image "
                                       "holds NaN or infinite pixels\n")


# -- the BLAS chosen at import ----------------------------------------------------------------
def test_without_mkl_or_openblas_the_blas_falls_back_to_numpy(monkeypatch):
    """kernels/blas.py 341-351 (the subprocess tests cover a backend asked for by name,
    never the search falling through). Mutations caught: `if requested: raise` deleted
    (FASTGRAPH_BLAS=mkl silently NumPy's); the final `return "numpy", ...` deleted."""
    def missing():
        raise blas.BlasUnavailable("not here")

    monkeypatch.setattr(blas, "_find_mkl", missing)
    monkeypatch.setattr(blas, "_find_openblas", lambda: "/lib/openblas.so")
    assert blas._choose("")[:2] == ("openblas", "/lib/openblas.so")
    monkeypatch.setattr(blas, "_find_openblas", missing)
    assert blas._choose("") == ("numpy", None, blas.gemm_owned_numpy)
    with pytest.raises(blas.BlasUnavailable, match="not here"):
        blas._choose("mkl")


def test_mkl_keeps_a_threading_layer_the_user_chose(monkeypatch):
    """kernels/blas.py 80 (README: MKL runs on GNU OpenMP "unless MKL_THREADING_LAYER is
    set"). Mutation caught: the environment test deleted."""
    calls = []

    class FakeMkl:
        def MKL_Set_Threading_Layer(self, layer):
            calls.append(layer.value)

    monkeypatch.setenv("MKL_THREADING_LAYER", "INTEL")
    blas._share_threads(FakeMkl())
    assert calls == []
    monkeypatch.delenv("MKL_THREADING_LAYER")
    with warnings.catch_warnings():
        blas._share_threads(FakeMkl())
    assert calls in ([], [blas.MKL_THREADING_GNU])  # [] where libgomp is missing


# -- the environment and the machine ----------------------------------------------------------
@pytest.mark.parametrize("text", ["auto", " AUTO ", ""])
def test_threads_auto_is_the_chooser(monkeypatch, text):
    """threads.py 57: the default, FASTGRAPH_THREADS=auto, which no test parsed (conftest
    sets 1 for the whole run, subprocesses included). Mutation caught: the `auto` test
    deleted (ValueError at import for every user who leaves the default)."""
    from fastgraph import threads as threads_module

    monkeypatch.setenv("FASTGRAPH_THREADS", text)
    assert threads_module._requested() is None


def test_without_mpiexec_data_parallel_training_says_what_to_install(tmp_path, monkeypatch):
    """distributed.py 677-679. Mutation caught: the None check deleted (a TypeError from
    subprocess later)."""
    from fastgraph import distributed

    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(distributed.MPIUnavailable, match=r"pip install 'fastgraph\[mpi\]'.*: no "
                                                         r"mpiexec found beside"):
        distributed.find_mpiexec()


def test_a_folder_where_the_dot_fallback_would_go_is_refused(tmp_path, monkeypatch):
    """viz.py 98-99: Graphviz missing, and graph.dot a folder. Mutation caught: the OSError
    clause deleted (IsADirectoryError)."""
    monkeypatch.setattr("shutil.which", lambda name: None)
    (tmp_path / "graph.dot").mkdir()
    with fg.Graph() as graph:
        fg.Variable((2, 1), trainable=False, name="x")
    with pytest.raises(ValueError, match=r"graph.svg: .*graph.dot, where its DOT source would "
                                         r"go \(Graphviz 'dot' is not installed\), cannot be "
                                         r"read"):
        fg.viz.write_graph(graph, tmp_path / "graph.svg")
