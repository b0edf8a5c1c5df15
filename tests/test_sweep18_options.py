"""Sweep 18 (options and inputs): what a user can pass that gave a hang, a raw Python or
NumPy error, a NumPy warning and infinite weights, or was taken and ignored, now refused by
name (repros: notes/s18/sweep-io)."""

import math
import os
import subprocess
import sys
import textwrap
import time
import warnings
from fractions import Fraction

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import checks, metrics
from fastgraph.datasets import mnist as dataset
from fastgraph.datasets.mnist import DatasetError
from fastgraph.trainer import SimpleTrainer

HUGE = 10**400  # beyond float64: math.isfinite and int -> float raised OverflowError


def classifier(dtype=np.float32):
    return fg.models.mlp(4, (3,), 2, "ReLU", dtype=dtype, seed=0)


def data():
    rng = np.random.default_rng(0)
    return rng.random((8, 4)), np.arange(8) % 2


def trainer_of(model, **options):
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    options = {"progress": False, "log": lambda line: None, **options}
    return SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, **options)


def run_python(code, timeout=120, env=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)


# -- 1. the decay check, in constant time ---------------------------------------------------
def _decayed_by_loop(rate, decay, epochs, dtype):
    """The check as it was: one multiplication per epoch (the reference)."""
    for epoch in range(1, epochs + 1):
        rate *= decay
        if not np.dtype(dtype).type(rate) > 0:
            return epoch, rate
    return None


#: (rate, decay, epochs, dtype): the existing tests' cases, and float64's subnormals (where
#: a decay above 1/2 leaves 5e-324 as it is).
DECAY_CASES = [
    (1e-3, 0.01, 25, "float32"), (0.002, 0.01, 25, "float32"), (1e-45, 0.1, 1, "float32"),
    (1e-3, 0.01, 21, "float32"), (0.002, 0.8, 500, "float32"), (0.1, 0.999, 100_000, "float32"),
    (0.1, 0.5, 2000, "float64"), (0.1, 0.3, 700, "float64"), (1e-300, 0.8, 5000, "float64"),
    (0.01, 0.9, 8000, "float64"), (1e-3, 1.0, 1000, "float32"), (3e38, 0.5, 300, "float32"),
]


def test_the_decay_check_gives_the_loops_epoch_in_constant_time():
    began = time.perf_counter()
    assert checks.decayed_to_zero(0.002, 1.0, 3 * 10**6, "float32") is None  # (the loop: 3 s)
    assert time.perf_counter() - began < 0.5
    rng = np.random.default_rng(18)
    generated = []
    for _ in range(300):
        dtype = ("float32", "float64")[int(rng.integers(2))]
        rate = 10 ** rng.uniform(-44 if dtype == "float32" else -320, 10)
        decay = float(rng.choice([rng.uniform(0.01, 1), 1 - 10 ** rng.uniform(-4, -1), 0.5]))
        generated.append((rate, decay, int(rng.integers(1, 2000)), dtype))
    for case in DECAY_CASES + generated:
        found, expected = checks.decayed_to_zero(*case), _decayed_by_loop(*case)
        assert (found is None) == (expected is None), case
        if expected is not None:
            assert found[0] == expected[0], case
            assert found[1] == pytest.approx(expected[1], rel=1e-9, abs=1e-323), case


def test_the_decay_check_takes_constant_time_in_a_subprocess(mnist_dir):
    """A billion epochs took a microsecond each: ``--epochs 1000000000 --lr-decay 1`` hung
    without a line, and one that reaches 0 late was said after a quarter of an hour."""
    probe = run_python("""
        import time
        import numpy as np
        import fastgraph as fg
        from fastgraph import checks
        from fastgraph.trainer import SimpleTrainer
        began = time.perf_counter()
        assert checks.decayed_to_zero(0.002, 1.0, 10**9, "float32") is None
        assert checks.decayed_to_zero(0.002, 0.8, 10**18, "float64") is None  # 5e-324 stays
        assert checks.decayed_to_zero(0.002, 0.5, 10**18, "float64")[0] == 1066  # the loop's
        epoch, rate = checks.decayed_to_zero(0.002, 0.9999999, 10**9, "float32")
        assert 977_000_000 < epoch < 978_000_000 and 0 < rate < 1e-45, (epoch, rate)
        model = fg.models.mlp(4, (3,), 2, "ReLU", dtype=np.float32, seed=0)
        optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.002)
        trainer = SimpleTrainer(model.x, model.one_hot, model.predict, optimizer,
                                progress=False, lr_decay=0.9999999)
        try:
            trainer.train(np.zeros((4, 4)), np.arange(4) % 2, epochs=10**9)
        except ValueError as error:
            assert "after epoch 977" in str(error), error
        else:
            raise AssertionError("not refused")
        assert trainer.history == []
        print(f"{time.perf_counter() - began:.3f}")
    """, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert float(probe.stdout.split()[-1]) < 5
    command = subprocess.run(
        [sys.executable, "-m", "fastgraph.cli", "train", "mnist", "--data", str(mnist_dir),
         "--epochs", "1000000000", "--lr-decay", "0.9999999", "--train-samples", "10"],
        capture_output=True, text=True, timeout=60)
    assert command.returncode == 2
    assert "--lr-decay 0.9999999 takes the learning rate from 0.002 to" in command.stderr
    assert "after epoch 977" in command.stderr and "of --epochs 1000000000" in command.stderr
    assert "Traceback" not in command.stderr


def test_epochs_beyond_what_a_run_can_count_are_refused_by_name(capsys):
    model = classifier()
    trainer = trainer_of(model)
    with pytest.raises(ValueError, match=r"^epochs must be at most 9,223,372,036,854,775,807, "
                                         r"got an integer of about 10\*\*400$"):
        trainer.train(*data(), epochs=HUGE)
    assert trainer.history == []
    with pytest.raises(SystemExit) as stop:
        from fastgraph.cli import main
        main(["train", "mnist", "--epochs", str(HUGE), "--lr-decay", "1"])
    assert stop.value.code == 2
    assert "--epochs must be at most" in capsys.readouterr().err


# -- 2. integers beyond float64 -------------------------------------------------------------
@pytest.mark.parametrize("rule, options", [
    (fg.optimizer.Adam, {}), (fg.optimizer.GradientDescent, {}), (fg.optimizer.RMSProp, {}),
])
def test_a_huge_integer_learning_rate_is_refused_by_name(rule, options):
    model = classifier()
    message = (r"^learning_rate must be a positive number, got an integer of about 10\*\*400 "
               r"\(beyond the range of float64\)$")
    with pytest.raises(ValueError, match=message):
        rule(model.graph, model.loss, HUGE, **options)
    optimizer = rule(model.graph, model.loss, 0.01, **options)
    with pytest.raises(ValueError, match=message):
        optimizer.learning_rate = HUGE
    assert optimizer.learning_rate == 0.01
    with pytest.raises(ValueError, match=r"^learning_rate must be a positive number, got "
                                         r"-an integer of about 10\*\*400$"):
        optimizer.learning_rate = -HUGE


@pytest.mark.parametrize("rule", [fg.optimizer.AdaGrad, fg.optimizer.RMSProp, fg.optimizer.Adam])
def test_a_huge_integer_eps_is_refused_by_name(rule):
    model = classifier()
    with pytest.raises(ValueError, match=r"^eps must be a positive number, got an integer of "
                                         r"about 10\*\*400"):
        rule(model.graph, model.loss, 0.01, eps=HUGE)


def test_the_integer_checks_take_integers_of_any_size():
    assert checks.positive_integer("n", Fraction(HUGE)) == HUGE
    assert checks.positive_integer("n", 64.0) == 64
    for value, message in [(Fraction(3, 2), "a positive integer, got Fraction"),
                           (math.inf, "a positive integer, got inf"),
                           (-HUGE, "at least 1, got -an integer of about 10\\*\\*400")]:
        with pytest.raises(ValueError, match=f"^n must be {message}"):
            checks.positive_integer("n", value)
    with pytest.raises(ValueError, match="^n must be at most 5, got 6$"):
        checks.positive_integer("n", 6, most=5)
    with pytest.raises(ValueError, match=r"^beta must be a number in \[0, 1\), got an integer "
                                         r"of about 10\*\*400$"):
        checks.fraction("beta", HUGE)


@pytest.mark.parametrize("classes, shown", [(HUGE, r"an integer of about 10\*\*400"),
                                            (10**6, r"1,000,000 \(7.28 TiB\)")])
def test_confusion_matrix_classes_are_bounded_before_any_matrix(classes, shown):
    """10**6 classes asked NumPy for a matrix of 7.28 TiB (its MemoryError); 10**400 gave
    Python's OverflowError."""
    with pytest.raises(ValueError, match=rf"^confusion_matrix: classes must be at most 16,384 "
                                         rf"\(a matrix of 2.00 GiB of counts\), got {shown}$"):
        metrics.confusion_matrix([0, 1, 2, 1], [0, 1, 1, 1], classes=classes)
    with pytest.raises(ValueError, match="classes must be at most 16,384"):
        metrics.precision_recall_f1([0, 1, 2, 1], [0, 1, 1, 1], classes=classes)
    matrix = metrics.confusion_matrix([0, 1, 2, 1], [0, 1, 1, 1], classes=metrics.MOST_CLASSES)
    assert matrix.shape == (16_384, 16_384) and matrix.sum() == 4


# -- 3. SimpleTrainer's optimizer, log and progress -----------------------------------------
@pytest.mark.parametrize("optimizer", [None, "adam", 0.01])
def test_the_trainer_refuses_what_is_not_an_optimizer(optimizer):
    model = classifier()
    with pytest.raises(TypeError, match=r"^SimpleTrainer: optimizer must be a fastgraph "
                                        r"optimizer made on the loss \(fastgraph.optimizer.Adam"
                                        rf"\(graph, loss\), ...\), got {type(optimizer).__name__}"):
        SimpleTrainer(model.x, model.one_hot, model.predict, optimizer)


@pytest.mark.parametrize("log", [5, "print", [print]])
def test_a_log_that_cannot_be_called_is_refused_before_an_epoch(log):
    model = classifier()
    with pytest.raises(TypeError, match=r"^SimpleTrainer: log must be a function that takes a "
                                        rf"line \(print\), or None for no lines, got "
                                        rf"{type(log).__name__}"):
        trainer_of(model, log=log)


def test_log_none_trains_without_lines(capsys):
    model = classifier()
    history = trainer_of(model, log=None).train(*data(), epochs=2)
    assert len(history) == 2 and capsys.readouterr().out == ""
    lines = []
    trainer_of(classifier(), log=lines.append).train(*data())
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1: loss ")


@pytest.mark.parametrize("progress", ["no", "False", None, 2])
def test_progress_is_a_flag(progress):
    with pytest.raises(ValueError, match="^progress must be True or False, got"):
        trainer_of(classifier(), progress=progress)
    assert trainer_of(classifier(), progress=np.bool_(False)).progress is False


# -- 4. metrics.class_labels and predicted_classes: classes ---------------------------------
@pytest.mark.parametrize("classes, message", [
    ("3", "classes must be a positive integer, got '3'"),
    (2.5, "classes must be a positive integer, got 2.5"),
    (-1, "classes must be at least 1, got -1"),
    (0, "classes must be at least 1, got 0"),
    (True, "classes must be a positive integer, got True"),
])
def test_class_labels_and_predicted_classes_check_classes(classes, message):
    labels, scores = np.array([0, 1, 2, 1]), np.eye(3)[[0, 1, 1, 1]]
    for call in (lambda: metrics.class_labels(labels, classes=classes),
                 lambda: metrics.predicted_classes(scores, classes=classes),
                 lambda: metrics.predicted_classes(labels, classes=classes)):
        with pytest.raises(ValueError, match=f"^{message}$"):
            call()
    assert metrics.class_labels(labels, classes=3.0).tolist() == [0, 1, 2, 1]
    assert metrics.predicted_classes(scores, classes=np.int8(3)).tolist() == [0, 1, 1, 1]


# -- 5. a learning rate whose step coefficients are infinite in the dtype -------------------
def _one_update(optimizer, model):
    x, y = data()
    model.x.set_value(x.astype(np.float32).reshape(-1, 4, 1))
    model.one_hot.set_value(np.eye(2, dtype=np.float32)[y].reshape(-1, 2, 1))
    optimizer.one_step()
    optimizer.update()


def test_adam_refuses_a_rate_whose_bias_corrected_step_is_infinite():
    """lr / (1 - beta_1) = 1e39 is infinite in float32: the cast warned ("overflow
    encountered in cast") and the update made every weight infinite."""
    model = classifier()
    message = (r"^Adam: learning_rate 1e\+38 with beta_1 0.9 makes the coefficient of a "
               r"parameter's first step, lr / \(1 - beta_1\), 1e\+39, which is infinite in "
               r"float32: give a learning rate below 3.4e\+37$")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=message):
            fg.optimizer.Adam(model.graph, model.loss, 1e38)
        optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
        with pytest.raises(ValueError, match=message):
            optimizer.learning_rate = 1e38  # set later (a decay only lowers it)
        assert optimizer.learning_rate == 0.01
        optimizer.learning_rate = 1e30
        with pytest.raises(ValueError, match=r"learning_rate 1e\+30 with beta_1 "
                                             r"0.9999999999999999 makes .* 9.0072e\+45, which "
                                             r"is infinite in float32"):
            optimizer.beta_1 = 1 - 1e-16  # the setting that scales it, set later
        assert optimizer.beta_1 == 0.9 and optimizer.learning_rate == 1e30
        optimizer.learning_rate = 1e-3
        _one_update(optimizer, model)
    assert all(np.isfinite(param.flat).all() for param in optimizer.params)
    # What does not scale the rate takes it as it is: the article's Adam, plain descent,
    # float64.
    fg.optimizer.Adam(model.graph, model.loss, 1e38, conventions="article")
    fg.optimizer.GradientDescent(model.graph, model.loss, 3e38)
    wide = classifier(np.float64)
    fg.optimizer.Adam(wide.graph, wide.loss, 1e38)


def test_an_update_coefficient_beyond_the_dtype_is_refused_without_a_numpy_warning():
    """A rule of one's own, checked where the coefficients are made."""

    class Doubled(fg.optimizer.GradientDescent):
        def apply(self, table, gradients, scale):
            fg.optimizer.kernels.gradient_descent(
                table, gradients, self.coefficients(scale, self.learning_rate * 1e10))

    model = classifier()
    optimizer = Doubled(model.graph, model.loss, 1e30)
    before = [param.flat.copy() for param in optimizer.params]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^Doubled: coefficient 1 of the update is 1e\+40, "
                                             r"which is infinite in float32 \(learning_rate "
                                             r"1e\+30\): nothing was applied"):
            _one_update(optimizer, model)
    assert all(np.array_equal(param.flat, value)
               for param, value in zip(optimizer.params, before))


def test_lr_1e38_on_the_command_line_is_one_line(mnist_dir):
    result = subprocess.run(
        [sys.executable, "-m", "fastgraph.cli", "train", "mnist", "--data", str(mnist_dir),
         "--lr", "1e38", "--train-samples", "200", "--epochs", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("fastgraph: error: Adam: learning_rate 1e+38 with beta_1 "
                                    "0.9 makes the coefficient")
    assert len(result.stderr.splitlines()) == 1  # no RuntimeWarning, no "diverged"


# -- 6. a bad environment variable read at import -------------------------------------------
@pytest.mark.parametrize("variable, value", [("FASTGRAPH_COMPILE_WORKER", "garbage"),
                                             ("FASTGRAPH_BLAS", "garbage"),
                                             ("FASTGRAPH_THREADS", "0")])
@pytest.mark.parametrize("command", [[sys.executable, "-m", "fastgraph.cli"],
                                     [os.path.join(os.path.dirname(sys.executable), "fastgraph")]],
                         ids=["-m fastgraph.cli", "script"])
def test_a_bad_variable_read_at_import_is_one_line_on_the_command_line(variable, value, command):
    result = subprocess.run([*command, "predict", "m.fgz", "x.png"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, variable: value})
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"fastgraph: error: {variable}=")


def test_a_bad_variable_read_at_import_is_still_a_valueerror_in_a_program():
    result = subprocess.run([sys.executable, "-c", "import fastgraph"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "FASTGRAPH_THREADS": "0"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("ValueError: FASTGRAPH_THREADS='0'")


# -- 7. small ones --------------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["FASTGRAPH_DATA", "FASTGRAPH_CACHE"])
def test_a_directory_variable_too_long_is_named(variable, monkeypatch, mnist_dir):
    monkeypatch.delenv("FASTGRAPH_DATA", raising=False)
    monkeypatch.setenv(variable, "a" * 5000)
    with pytest.raises(DatasetError, match=rf"^\${variable} does not name a directory that can "
                                           r"be looked in: File name too long \(a{60}\.\.\. "
                                           r"\(5,000 characters\)\)$"):
        dataset.load(download=False)
    assert dataset.load(mnist_dir, download=False)[0].shape == (60000, 28, 28)  # not looked in


@pytest.mark.parametrize("dtype, shown", [("foo", "'foo'"), (np.float16, "float16"),
                                          (np.int64, "int64")])
def test_mnist_features_dtype_is_named(dtype, shown):
    with pytest.raises(ValueError, match=rf"^features: dtype must be a float type, got {shown} "
                                         r"\(float32 or float64\)$"):
        dataset.features(np.zeros((2, 28, 28), np.uint8), dtype=dtype)
    assert dataset.features(np.zeros((2, 28, 28), np.uint8), "float64").dtype == np.float64


def test_an_optimizers_engine_and_params_are_fixed():
    model = classifier()
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    params = optimizer.params
    with pytest.raises(AttributeError, match=r"^Adam.engine is fixed when the optimizer is "
                                             r"made .*make a new optimizer with engine=..."):
        optimizer.engine = "garbage"  # was taken, and ignored
    assert optimizer.engine == "vjp"
    with pytest.raises(AttributeError, match=r"^Adam.params are the trainable parameters its "
                                             r"target depends on"):
        optimizer.params = ()  # update() then failed with an IndexError
    assert optimizer.params is params
    _one_update(optimizer, model)
    assert optimizer.steps == 1
