"""Options that could only give NaN or nothing are refused where they enter, by name: in the
optimizers (also a learning rate set on a live one), the trainer, Batches and the command line
(generated values through the real parser)."""

import contextlib
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgraph as fg
from fastgraph.cli import _parser, main
from fastgraph.datasets import Batches
from fastgraph.trainer import SimpleTrainer


def classifier():
    return fg.models.mlp(4, (3,), 2, "ReLU", dtype=np.float32, seed=0)


@pytest.mark.parametrize("rule", [fg.optimizer.AdaGrad, fg.optimizer.RMSProp, fg.optimizer.Adam])
@pytest.mark.parametrize("eps, note", [(0, ""), (-1e-8, ""), (math.nan, " \\(it must be finite\\)"),
                                       (math.inf, " \\(it must be finite\\)"),
                                       (1e-50, ", which is 0.0 in float32")])
def test_eps_must_be_positive_and_finite_in_the_model_dtype(rule, eps, note):
    model = classifier()
    with pytest.raises(ValueError, match=f"eps must be a positive number, got {eps!r}{note}"):
        rule(model.graph, model.loss, 0.01, eps=eps)


@pytest.mark.parametrize("value", [0, -0.1, math.nan, math.inf, 1e39, "0.1", None, True])
def test_learning_rate_is_checked_when_built_and_when_set_on_a_live_optimizer(value):
    model = classifier()
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        fg.optimizer.Adam(model.graph, model.loss, value)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        optimizer.learning_rate = value
    assert optimizer.learning_rate == 0.01
    optimizer.learning_rate = 0.5
    assert optimizer.learning_rate == 0.5


@pytest.mark.parametrize("option, value, message", [
    ("batch_size", 2.5, "batch_size must be a positive integer, got 2.5"),
    ("batch_size", True, "batch_size must be a positive integer, got True"),
    ("eval_batch_size", 0, "eval_batch_size must be at least 1, got 0"),
    ("scale", math.nan, "scale must be a positive number, got nan"),
    ("scale", 0, "scale must be a positive number, got 0"),
    ("lr_decay", 0, r"lr_decay must be a number in \(0, 1\], got 0"),
])
def test_trainer_options(option, value, message):
    model = classifier()
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    with pytest.raises(ValueError, match=message):
        SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, **{option: value})


def test_trainer_epochs_must_be_positive():
    model = classifier()
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    trainer = SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, progress=False)
    with pytest.raises(ValueError, match="epochs must be at least 1, got 0"):
        trainer.train(np.zeros((4, 4)), np.zeros(4, int), epochs=0)


def test_a_decay_that_takes_the_learning_rate_to_zero_is_refused_before_training():
    """0.01 ** 21 * 1e-3 is 1e-45 (a float32 denormal), ** 22 is 0 in float32: the run used
    to end with that error after training 21 epochs, losing the model."""
    model = classifier()
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 1e-3)
    trainer = SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, progress=False,
                            lr_decay=0.01, log=lambda line: None)
    x, y = np.random.default_rng(0).random((8, 4)), np.arange(8) % 2
    before = [param.flat.copy() for param in optimizer.params]
    with pytest.raises(ValueError, match=r"lr_decay 0.01 takes the learning rate from 0.001 "
                       r"to 1e-47 after epoch 22 of 25, which is 0 in float32: use a larger "
                       r"lr_decay or fewer epochs"):
        trainer.train(x, y, epochs=25)
    assert trainer.history == [] and optimizer.learning_rate == 1e-3
    assert all(np.array_equal(param.flat, value) for param, value in zip(optimizer.params, before))
    history = trainer.train(x, y, epochs=21)  # the rate after the 21st epoch: 1e-45 > 0
    assert len(history) == 21 and optimizer.learning_rate > 0


def test_trainer_nodes_must_share_the_input_graph():
    model, other = classifier(), classifier()
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    with pytest.raises(ValueError, match=r"SimpleTrainer: predict predict is not a node of the "
                                         r"graph of the input x"):  # "x has no value" before
        SimpleTrainer(model.x, model.one_hot, other.predict, optimizer)
    with pytest.raises(ValueError, match=r"SimpleTrainer: labels one_hot is not a node"):
        SimpleTrainer(model.x, other.one_hot, model.predict, optimizer)


@pytest.mark.parametrize("labels, message", [
    (np.eye(12)[np.arange(6) % 2], r"training labels are one-hot rows of 12 classes, "
                                   r"expected 2"),  # accepted before: the classes fitted
    (3, r"training labels must be integer classes \(N,\) or one-hot rows \(N, classes\), got "
        r"shape \(\) and dtype int64"),
    (np.arange(6) % 3, r"training labels: row 2 is 2, expected in \[0, 2\)"),
    ([[1, 0], [0, 1, 0]] + [[1, 0]] * 4, r"training labels are not an array: their samples "
                                         r"differ in shape"),
])
def test_trainer_labels_are_checked_against_the_network(labels, message):
    model = classifier()
    trainer = SimpleTrainer(model.x, model.one_hot, model.predict,
                            fg.optimizer.Adam(model.graph, model.loss, 0.01), progress=False)
    with pytest.raises(ValueError, match=message):
        trainer.train(np.zeros((6, 4)), labels)


def test_ragged_features_are_refused_in_words():
    model = classifier()
    trainer = SimpleTrainer(model.x, model.one_hot, model.predict,
                            fg.optimizer.Adam(model.graph, model.loss, 0.01), progress=False)
    ragged = [[0.0] * 4, [0.0] * 3]
    with pytest.raises(ValueError, match=r"training features are not an array: their samples "
                                         r"differ in shape or are not numbers \(setting an array"):
        trainer.train(ragged, [0, 1])
    with pytest.raises(ValueError, match=r"set_values: the values are not an array"):
        fg.set_values([model.x], [np.zeros((2, 4, 1)), np.zeros((3, 4, 1))])


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"batch_size": 2, "scale": math.inf}, "scale must be a finite number, got inf"),
    ({"batch_size": 2, "classes": 0}, "classes must be at least 1, got 0"),
])
def test_batches_options(options, message):
    with pytest.raises(ValueError, match=message):
        Batches(np.zeros((3, 2)), np.zeros(3, int), **options)


def test_lr_zero_on_the_command_line_is_refused_not_replaced_by_the_default(mnist_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "mnist", "--data", str(mnist_dir), "--lr", "0", "--epochs", "1",
              "--train-samples", "64", "--test-samples", "64", "--no-progress"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "argument --lr: expected a positive number, got '0'" in captured.err
    assert "training" not in captured.out


def _valid_integer(text, minimum):
    try:
        return int(text) >= minimum
    except ValueError:
        return False


def _valid_float(text, accept):
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and accept(value)


OPTIONS = {  # option: (valid(text), what the error says)
    "--lr": (lambda t: _valid_float(t, lambda v: v > 0), "expected a positive number"),
    "--lr-decay": (lambda t: _valid_float(t, lambda v: 0 < v <= 1),
                   r"expected a number in (0, 1]"),
    "--batch-size": (lambda t: _valid_integer(t, 1), "expected a positive integer"),
    "--epochs": (lambda t: _valid_integer(t, 1), "expected a positive integer"),
    "--train-samples": (lambda t: _valid_integer(t, 1), "expected a positive integer"),
    "--seed": (lambda t: _valid_integer(t, 0), "expected a non-negative integer"),
}
numbers_as_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["nan", "inf", "-inf", "0", "-0", "0.0", "1e-400", "1e400", "", " ", "x",
                     "1,5", "0x10", "1.5", "2.0"]),
    st.text(max_size=6),
)


PARSER = _parser()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(option=st.sampled_from(sorted(OPTIONS)), text=numbers_as_text)
def test_generated_option_values_are_accepted_exactly_when_they_make_sense(option, text):
    valid, message = OPTIONS[option]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = PARSER.parse_args(["train", "mnist", f"{option}={text}"])
        except SystemExit as exit_:
            assert exit_.code == 2
            assert not valid(text), f"{option}={text!r} was refused: {stderr.getvalue()}"
            assert f"argument {option}: {message}" in stderr.getvalue()
            assert "Traceback" not in stderr.getvalue()
            return
    assert valid(text), f"{option}={text!r} was accepted"
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    assert math.isfinite(value)


@pytest.mark.parametrize("seed", [-1, "a", 1.5, True])
def test_batches_seed_is_checked_by_name(seed):
    with pytest.raises(ValueError, match="seed must be None or a non-negative integer"):
        Batches(np.zeros((3, 2)), np.zeros(3, int), 2, seed=seed)
