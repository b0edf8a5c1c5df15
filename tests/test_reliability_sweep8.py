"""Sweep 8 (helper h1): the state left behind by a call that failed or changed things
half-way, and inputs that the trainers' checks accept but their feeding refuses."""

import os
import signal

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import cli
from fastgraph.profiler import profile_steps
from fastgraph.trainer import SimpleTrainer, TrainingDiverged

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def _softmax_regression(inputs, classes, engine="vjp", lr=0.1, dtype="float64"):
    with fg.Graph(dtype=dtype, seed=0) as graph:
        x = fg.Variable((inputs, 1), init=False, trainable=False)
        y = fg.Variable((classes, 1), init=False, trainable=False)
        out = fg.layer.fc(x, inputs, classes, None)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(out, y)
        opt = fg.optimizer.GradientDescent(graph, loss, lr, engine=engine)
    weights, bias = out.parents[0].parents[0], out.parents[1]
    return graph, x, y, out, opt, weights, bias


def test_a_one_step_of_the_dense_engine_that_fails_on_a_sample_adds_nothing():
    rng = np.random.default_rng(0)
    xa, ya = rng.standard_normal((3, 4, 1)), np.eye(3)[[0, 1, 2]][:, :, None]
    xb, yb = rng.standard_normal((3, 4, 1)), np.eye(3)[[2, 2, 0]][:, :, None]
    yb[2, :, 0] = [1.5, -0.5, 0]  # sample 2 is no distribution
    _, x, y, _, opt, weights, _ = _softmax_regression(4, 3, engine="jacobian")
    x.set_value(xa)
    y.set_value(ya)
    opt.one_step()
    want = opt.get_gradient(weights)
    x.set_value(xb)
    y.set_value(yb)
    with pytest.raises(ValueError, match="sample 2"):  # of the batch, not of a batch of one
        opt.one_step()
    assert opt.samples == 3
    np.testing.assert_allclose(opt.get_gradient(weights), want)


@pytest.mark.compiled
@pytest.mark.parametrize("frozen_before", [2, 5])
def test_a_parameter_frozen_during_an_accumulation_loses_no_deferred_sample(frozen_before):
    """One sample a one_step() (the article's loop), a weight large enough for its
    one-sample gradients to be staged (kernels.blas.outer_staged): the bias frozen between
    two one_step()s; the update still applies the weight gradient of all 8 samples."""
    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((8, 80)), np.eye(30)[rng.integers(0, 30, 8)]

    def step_of_the_weights(frozen_before):
        _, x, y, _, opt, weights, bias = _softmax_regression(80, 30, lr=1.0)
        start = np.asarray(weights.value).copy()
        for i in range(8):
            if i == frozen_before:
                bias.trainable = False
            x.set_value(np.asmatrix(features[i]).T)
            y.set_value(np.asmatrix(labels[i]).T)
            opt.one_step()
        opt.update()
        return start - np.asarray(weights.value)

    np.testing.assert_allclose(step_of_the_weights(frozen_before), step_of_the_weights(None),
                               atol=1e-12)


def test_training_that_diverged_leaves_no_gradient_for_the_next_training():
    rng = np.random.default_rng(0)
    features, classes = rng.standard_normal((256, 8)), rng.integers(0, 3, 256)
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((8, 1), init=False, trainable=False)
        y = fg.Variable((3, 1), init=False, trainable=False)
        out = fg.layer.fc(fg.layer.fc(x, 8, 16, "ReLU"), 16, 3, None)
        opt = fg.optimizer.GradientDescent(graph, fg.ops.loss.CrossEntropyWithSoftMax(out, y),
                                           1e30)
    params = [node for node in graph.nodes if isinstance(node, fg.Variable) and node.trainable]
    start = [param.value.copy() for param in params]
    trainer = SimpleTrainer(x, y, out, opt, batch_size=32, seed=1, progress=False,
                            log=lambda line: None)
    with pytest.raises(TrainingDiverged, match="batch 2 of epoch 1"):
        trainer.train(features, classes, epochs=1)
    assert opt.samples == 0
    for param, value in zip(params, start):  # start over, more gently
        param.set_value(value)
    opt.learning_rate = 0.05
    trainer.train(features, classes, epochs=1)  # raised TrainingDiverged at batch 2
    assert all(np.isfinite(param.value).all() for param in params)


@pytest.mark.parametrize("dim", [(4, 4), (1, 16)])
def test_the_trainer_feeds_an_input_that_is_not_a_column_in_its_shape(dim):
    rng = np.random.default_rng(0)
    with fg.Graph(seed=0) as graph:
        x = fg.Variable(dim, init=False, trainable=False)
        y = fg.Variable((3, 1), init=False, trainable=False)
        out = fg.layer.fc(fg.ops.Reshape(x, (16, 1)), 16, 3, None)
        opt = fg.optimizer.Adam(graph, fg.ops.loss.CrossEntropyWithSoftMax(out, y), 0.01)
    features, classes = rng.standard_normal((50, *dim)), rng.integers(0, 3, 50)
    trainer = SimpleTrainer(x, y, out, opt, batch_size=16, progress=False,
                            log=lambda line: None)
    trainer.train(features, classes, epochs=1)
    scores = trainer.scores(features[:5])
    x.set_value(features[:5])
    out.forward()
    np.testing.assert_allclose(scores, out.value.reshape(5, 3), rtol=1e-6)


def test_ctrl_c_after_training_still_writes_what_was_asked(tmp_path, monkeypatch, mnist_dir,
                                                        capsys):
    """A Ctrl-C after training stopped (the test evaluation, the saving) escaped main() with
    a traceback and nothing saved. The last epoch's record holds the test accuracy (no
    second evaluation), and a Ctrl-C during the writing is held until the files are
    written: status 130."""
    real_save = fg.saver.save
    evaluations = []

    def pressed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(fg.saver, "save", pressed)
    monkeypatch.setattr(SimpleTrainer, "scores", lambda self, features: evaluations.append(1))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    model, plot = tmp_path / "model.fgz", tmp_path / "curves.png"
    try:
        status = cli.main(["train", "mnist", "--data", str(mnist_dir), "--train-samples",
                           "200", "--test-samples", "100", "--epochs", "1", "--no-progress",
                           "--save", str(model), "--plot", str(plot)])
    except KeyboardInterrupt:
        pytest.fail("a Ctrl-C while saving escaped main()")
    finally:
        signal.signal(signal.SIGINT, previous)
    out = capsys.readouterr().out
    assert status == 130 and model.is_file() and plot.is_file() and evaluations == []
    assert "interrupted: the model, curves and graph asked for were written first" in out
    history = fg.saver.load(model)[1]["history"]
    assert f"test accuracy: {history[-1]['test_accuracy']:.4f}" in out


@pytest.mark.compiled
def test_profile_steps_times_the_compiled_kernels_of_every_step():
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((20, 1), init=False, trainable=False)
        y = fg.Variable((3, 1), init=False, trainable=False)
        out = fg.layer.fc(fg.layer.fc(x, 20, 16, "ReLU"), 16, 3, None)
        opt = fg.optimizer.Adam(graph, fg.ops.loss.CrossEntropyWithSoftMax(out, y), 0.01)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((64, 20, 1))
    labels = np.eye(3)[rng.integers(0, 3, 64)][:, :, None]

    def profiled_matmuls(sizes, warmup, steps=4):
        def feed(step):
            size = sizes[step % len(sizes)]
            x.set_value(features[:size])
            y.set_value(labels[:size])

        profile = profile_steps(opt, feed, steps=steps, warmup=warmup)
        return {kind: calls for phase, kind, calls, _, _ in profile.rows()
                if phase == "forward"}.get("MatMul")

    # Every run of a pass is timed, those recorded during the profile too.
    assert profiled_matmuls([32], warmup=0) == 2.0  # it was 0.5: the first step's alone
    # A new batch size records a pass during the profile: its runs are timed as well.
    assert profiled_matmuls([32] * 4 + [64] * 4, warmup=2, steps=8) == 2.0


def test_a_reshape_of_a_parameter_keeps_its_value_after_an_update():
    with fg.Graph(dtype="float64") as graph:
        x = fg.Variable((1, 1), init=False, trainable=False)
        weights = fg.Variable((2, 3), init=False, trainable=True)
        weights.set_value(np.arange(6.0).reshape(2, 3))
        column = fg.ops.Reshape(weights, (6, 1))
        loss = fg.ops.MatMul(fg.ops.Reshape(fg.ops.ScalarMultiply(x, column), (1, 6)), column)
        opt = fg.optimizer.GradientDescent(graph, loss, 0.5)
    x.set_value(np.ones((2, 1, 1)))
    opt.one_step()
    opt.update()
    np.testing.assert_array_equal(column.value.ravel(), np.arange(6.0))


def test_discard_drops_the_accumulation_and_applies_nothing():
    _, x, y, _, opt, weights, _ = _softmax_regression(4, 3)
    rng = np.random.default_rng(1)
    x.set_value(rng.standard_normal((3, 4, 1)))
    y.set_value(np.eye(3)[:, :, None])
    before = weights.value.copy()
    opt.one_step()
    opt.discard()
    assert opt.samples == 0
    with pytest.raises(RuntimeError, match="update\\(\\) needs a gradient"):
        opt.update()
    np.testing.assert_array_equal(weights.value, before)
    opt.one_step()
    fresh = fg.optimizer.GradientDescent(x.graph, opt.target, 0.1)
    fresh.one_step()
    np.testing.assert_allclose(opt.get_gradient(weights), fresh.get_gradient(weights))


# -- the LOW findings ---------------------------------------------------------------------
def test_graph_and_plot_paths_of_any_case_and_a_trailing_dot(tmp_path):
    from fastgraph import viz

    with fg.Graph() as graph:
        fg.ops.ReLU(fg.Variable((2, 1), trainable=False))
    written, note = viz.write_graph(graph, tmp_path / "G.DOT")
    assert written == tmp_path / "G.DOT" and note is None
    assert written.read_text().startswith("digraph")
    viz.check_graph_path("g.Svg")  # refused before
    history = [{"epoch": 1, "loss": 1.0, "train_accuracy": 0.5}]
    assert viz.plot_history(history, tmp_path / "c.") == tmp_path / "c.png"  # not c..png
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"c\.v2: matplotlib cannot write this format"):
        viz.plot_history(history, tmp_path / "c.v2")
    assert not (tmp_path / "c.v2").exists()


def test_the_command_lines_quiet_corrections_are_said(tmp_path, mnist_dir, capsys):
    import argparse

    assert cli._sizes("100,20,") == (100, 20)
    with pytest.raises(argparse.ArgumentTypeError, match="got '5,,3'"):
        cli._sizes("5,,3")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(fg.datasets.mnist.DatasetError, match=r"file: not a directory$"):
        cli._check_data(a_file)
    with pytest.raises(fg.datasets.mnist.DatasetError, match=r"nothing: no such directory$"):
        cli._check_data(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"missing\.png: no such file$"):
        cli._read_image(tmp_path / "missing.png", (28, 28))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png: not an image Pillow can read \(no "
                       r"image format it knows: the file is empty\)$"):
        cli._read_image(tmp_path / "empty.png", (28, 28))
    status = cli.main(["train", "mnist", "--data", str(mnist_dir), "--train-samples", "100",
                       "--test-samples", "20000", "--epochs", "1", "--no-progress"])
    assert status == 0
    assert "--test-samples 20,000: MNIST has 10,000, all taken" in capsys.readouterr().out


def test_the_articles_mlp_builder_checks_its_arguments_first():
    with fg.Graph() as graph:
        with pytest.raises(ValueError, match=r"^multilayer_perception: hidden_layers must be "
                           r"a list of layer sizes, such as \[100, 20\] or \[\] for none, "
                           r"got 5$"):
            fg.model.multilayer_perception(4, 3, 5, "ReLU")
        with pytest.raises(ValueError, match="relu"):
            fg.model.multilayer_perception(4, 3, [], "relu")
    assert graph.nodes == []


def test_a_second_train_goes_on_numbering_the_epochs():
    rng = np.random.default_rng(0)
    _, x, y, out, opt, _, _ = _softmax_regression(4, 3)
    lines = []
    trainer = SimpleTrainer(x, y, out, opt, batch_size=8, progress=False, log=lines.append)
    features, classes = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    trainer.train(features, classes, epochs=2)
    history = trainer.train(features, classes, epochs=2)
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]
    assert lines[-1].startswith("epoch 4/4")


def test_roc_auc_ranks_integers_beyond_float64s_as_they_are():
    assert fg.metrics.roc_auc([0, 1], [2**53, 2**53 + 1]) == 1.0
    assert fg.metrics.roc_auc([0, 1], np.array([2**63 - 2, 2**63 - 1], np.uint64)) == 1.0
    assert fg.metrics.roc_auc([1, 0, 1, 0], [0.3, 0.3, 0.8, 0.1]) == 0.875  # ties: halves
