"""What the builders refuse, by name: the ready-made models (an activation they do not have, a
single class), the layers (a value that is not a node, a list that is not one), the command
line (options the chosen model does not take, a learning rate its dtype cannot hold, a model
file it could not run) and data-parallel training (what is not an optimizer, one wrapped
twice, agree() given something other than (name, value) pairs)."""

import math
import re
import sys

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import distributed
from fastgraph.cli import main

CHOICES = "choose one of 'ReLU', 'Logistic', 'Tanh', None"


# -- models -------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["Sigmoid", "Softmax", "LeakyReLU", "relu", "none",
                                        ["ReLU"]])
def test_mlp_refuses_an_activation_it_does_not_have(activation):
    """"Sigmoid", "Softmax" and "LeakyReLU" built a network without any activation (linear
    throughout), as layer.fc takes the article's "anything else means none"."""
    with pytest.raises(ValueError, match=re.escape(f"mlp: unknown activation {activation!r}: "
                                                   f"{CHOICES}")):
        fg.models.mlp(8, (4,), 3, activation)


@pytest.mark.parametrize("activation, kind", [("ReLU", fg.ops.ReLU), ("Logistic", fg.ops.Logistic),
                                              ("Tanh", fg.ops.Tanh), (None, None),
                                              ("None", None)])  # the article's name for none
def test_mlp_builds_the_activations_it_has(activation, kind):
    model = fg.models.mlp(8, (4, 3), 3, activation, seed=0)
    kinds = [type(node) for node in model.graph.nodes
             if isinstance(node, (fg.ops.ReLU, fg.ops.Logistic, fg.ops.Tanh))]
    assert kinds == ([] if kind is None else [kind, kind])
    with pytest.raises(ValueError, match=r"mlp: unknown activation 'Sigmoid'"):
        fg.models.mlp(8, (4,), 3, "Sigmoid")


@pytest.mark.parametrize("name, build", [("mlp", lambda classes: fg.models.mlp(8, (4,), classes)),
                                         ("lenet5", lambda classes: fg.models.lenet5(classes))])
@pytest.mark.parametrize("classes", [1, 0, 1.0])
def test_models_need_two_classes_at_least(name, build, classes):
    """One class built a network whose cross-entropy is 0 whatever it is fed."""
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: classes must be at least 2, got {classes!r} (a softmax over one class is "
            "always 1: its loss would always be 0)")):
        build(classes)


def test_mlp_input_size_is_checked_by_name():
    with pytest.raises(ValueError, match=r"^mlp: input_size must be at least 1, got 0$"):
        fg.models.mlp(0, (4,), 3)


# -- layers -------------------------------------------------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda value: fg.layer.conv2d(value, 3, 3, image_shape=(28, 28)),
     "conv2d: input must be a node, got ndarray"),  # AttributeError: no attribute 'graph'
    (lambda value: fg.layer.max_pool2d(value, 2),
     "max_pool2d: input must be a node, got ndarray"),  # AttributeError: no attribute 'name'
    (lambda value: fg.layer.fc(value, 784, 10, None),
     "fc: input must be a node, got ndarray"),  # AttributeError: no attribute 'dim'
])
def test_layers_refuse_an_array_for_a_node(build, message):
    with fg.Graph(), pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        build(np.ones((784, 1)))


def test_the_article_conv_layer_takes_an_int_input_shape_as_a_square():
    """As its kernel_shape does, and conv2d's image_shape (a TypeError 'int' object is not
    iterable before); the maps' shapes are still checked against it."""
    with fg.Graph(seed=0):
        x = fg.Variable((4, 4), trainable=False, name="x")
        maps = fg.layer.conv([x], 4, 2, (3, 3), "ReLU")
        assert [m.dim for m in maps] == [(4, 4), (4, 4)]
        y = fg.Variable((4, 5), trainable=False, name="y")
        with pytest.raises(ValueError, match=r"^conv: y has shape \(4, 5\), expected \(4, 4\)$"):
            fg.layer.conv([y], 4, 2, (3, 3), "ReLU")
        with pytest.raises(ValueError, match=r"^conv: input_shape must be an int or a pair of "
                                             r"ints, got 4\.5$"):
            fg.layer.conv([x], 4.5, 2, (3, 3), "ReLU")


@pytest.mark.parametrize("layer", ["conv", "pooling"])
@pytest.mark.parametrize("maps, got", [
    (lambda x: x, "a Variable (for one map, give [x])"),  # pooling: 'Variable' not iterable
    (lambda x: [], "an empty list"),  # pooling: returned [] without a word
    (lambda x: [x, np.ones((4, 4))], "a list holding a ndarray"),
])
def test_the_article_layers_want_a_list_of_feature_maps(layer, maps, got):
    with fg.Graph(seed=0):
        x = fg.Variable((4, 4), trainable=False, name="x")
        build = {"conv": lambda fms: fg.layer.conv(fms, (4, 4), 2, (3, 3), "ReLU"),
                 "pooling": lambda fms: fg.layer.pooling(fms, (2, 2), (2, 2))}[layer]
        with pytest.raises(ValueError, match=f"^{re.escape(layer)}: feature_maps must be a "
                                             f"non-empty list of nodes, got {re.escape(got)}$"):
            build(maps(x))
        assert [m.dim for m in fg.layer.pooling([x], (2, 2), (2, 2))] == [(2, 2)]
        # any iterable of nodes, as the article iterates them
        assert [m.dim for m in fg.layer.pooling(iter([x, x]), (2, 2), (2, 2))] == [(2, 2)] * 2


def test_an_activation_that_is_not_a_name_is_refused_in_words():
    """A list was a TypeError about hashing from inside the layer."""
    with fg.Graph(seed=0):
        x = fg.Variable((784, 1), trainable=False, name="x")
        with pytest.raises(ValueError, match=re.escape(f"unknown activation ['ReLU']: {CHOICES}")):
            fg.layer.fc(x, 784, 10, ["ReLU"])
        with pytest.raises(ValueError, match=re.escape(f"conv2d: unknown activation 'Sigmoid': "
                                                       f"{CHOICES}")):
            fg.layer.conv2d(x, 3, 3, image_shape=(28, 28), activation="Sigmoid")


# -- the command line ---------------------------------------------------------------------
def train_error(capsys, *options, data="none"):
    """``fastgraph train mnist OPTIONS``, refused by the parser: its stderr's last line. The
    data folder does not exist, so a command that the parser passes stops at once too (with
    status 2 but no SystemExit), and the test fails."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "mnist", "--data", data, *options])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fastgraph train") and "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("options, message", [
    (["--hidden", "5"], "--model lenet5 takes no --hidden (its layers are fixed): it is an "
                        "option of --model mlp"),
    (["--activation", "Tanh"], "--model lenet5 takes no --activation (its layers are fixed): it "
                               "is an option of --model mlp"),
    (["--hidden", "5", "--activation", "ReLU"], "--model lenet5 takes no --hidden or --activation "
                                                "(its layers are fixed): they are options of "
                                                "--model mlp"),
])
def test_lenet5_refuses_the_options_of_the_mlp(capsys, options, message):
    """They were ignored, and the banner said "ReLU" whatever --activation was."""
    last = train_error(capsys, "--model", "lenet5", *options)
    assert last == f"fastgraph train: error: {message}"


@pytest.mark.parametrize("options, message", [
    (["--lr", "1e39"], "--lr must be a positive number, got 1e+39, which is inf in float32 "
                       "(--dtype float32)"),  # named learning_rate, after loading MNIST
    (["--lr", "1e-50"], "--lr must be a positive number, got 1e-50, which is 0.0 in float32 "
                        "(--dtype float32)"),
    (["--lr", "1e309"], "argument --lr: expected a positive number, got '1e309'"),
    (["--lr-decay", "0.01", "--epochs", "25"],  # said as lr_decay, once MNIST was read
     "--lr-decay 0.01 takes the learning rate from 0.002 to 2e-47 after epoch 22 of --epochs "
     "25, which is 0 in float32: give a larger --lr-decay or fewer --epochs"),
])
def test_a_learning_rate_the_dtype_cannot_hold_is_refused_as_lr(capsys, options, message):
    assert train_error(capsys, *options) == f"fastgraph train: error: {message}"


def test_lr_in_float64_and_the_mlp_defaults_still_apply(tmp_path, mnist_dir, capsys):
    status = main(["train", "mnist", "--data", str(mnist_dir), "--lr", "1e39", "--dtype",
                   "float64", "--epochs", "1", "--train-samples", "64", "--test-samples", "64",
                   "--no-progress", "--lr-decay", "1"])
    out = capsys.readouterr().out
    assert out.startswith("training 784-100-20-10 (ReLU) on 64 MNIST images: adam, batch 64, "
                          "float64")
    assert status == 0 and "\ntest accuracy: 0." in out  # one batch: one update, after it


def save_model(path, graph):
    fg.saver.save(path, graph, {"input": "x", "output": "predict", "image_shape": [28, 28]})
    return str(path)


def image_model(x_shape):
    """An affine map of the 784 pixels, its input x of ``x_shape``."""
    graph = fg.Graph(seed=0)
    with graph:
        x = fg.Variable(dim=x_shape, init=False, trainable=False, name="x")
        column = x if x_shape == (784, 1) else fg.ops.Reshape(x, (784, 1))
        fg.ops.SoftMax(fg.layer.fc(column, 784, 10, None), name="predict")
    return graph


def test_evaluate_feeds_an_image_input_the_images_in_its_shape(tmp_path, mnist_dir, capsys):
    """x of (28, 28) was taken (784 numbers) and then fed (1000, 784): 'x: expected a batch
    of shape (B, 28, 28)'. Its report, and a row's (1, 784), are those of the same weights
    on MNIST's columns."""
    reports = []
    for shape in ((28, 28), (1, 784), (784, 1)):
        path = save_model(tmp_path / f"{shape[0]}.fgz", image_model(shape))
        assert main(["evaluate", path, "--data", str(mnist_dir)]) == 0
        reports.append(capsys.readouterr().out)
    assert reports[0] == reports[1] == reports[2] and reports[0].startswith("test accuracy: 0.")


def test_a_model_whose_output_needs_another_input_is_refused(tmp_path, capsys):
    """It failed on the first batch: 'z has no value: call z.set_value() before computing
    predict' (a model file keeps no input's value)."""
    graph = fg.Graph(seed=0)
    with graph:
        x = fg.Variable(dim=(784, 1), init=False, trainable=False, name="x")
        z = fg.Variable(dim=(10, 1), init=False, trainable=False, name="z")
        w = fg.Variable(dim=(10, 1), init=False, trainable=False, name="w")
        logits = fg.ops.Add(fg.layer.fc(x, 784, 10, None), z, w)
        fg.ops.SoftMax(logits, name="predict")
    path = save_model(tmp_path / "two.fgz", graph)
    for command in (["evaluate", path], ["predict", path, "digit.png"]):
        assert main(command) == 2
        assert capsys.readouterr().err == (
            f"fastgraph: error: {path}: the output node predict depends on the input nodes z, "
            "w besides x, expected on x alone (the images are all that evaluate and predict "
            "feed)\n")


# -- data-parallel training ---------------------------------------------------------------
class OneRank:
    """A communicator of one rank without MPI, which records what ``agree()`` sent."""

    def __init__(self, others=()):
        self.sent, self.others = [], list(others)

    def Get_rank(self):  # noqa: N802 (MPI's name)
        return 0

    def Get_size(self):  # noqa: N802
        return 1 + len(self.others)

    def allgather(self, mine):
        self.sent.append(mine)
        return [mine, *self.others]

    def Iallreduce(self, send, buffer, op):  # noqa: N802 (DataParallel() first meets: alone,
        return self  # the sum is its own)

    def Wait(self):  # noqa: N802
        """Nothing to wait for: one rank's sum is its own, made at once."""


@pytest.mark.parametrize("optimizer, message", [
    ("adam", "got str"),  # AttributeError: 'str' object has no attribute 'params'
    (fg.optimizer.Adam, "got type"),
])
def test_data_parallel_wants_an_optimizer_and_tells_the_other_ranks(optimizer, message):
    comm = OneRank()
    with pytest.raises(TypeError, match=re.escape(
            "DataParallel: expected an optimizer of fastgraph.optimizer (such as "
            f"fg.optimizer.Adam(graph, loss)), {message}")):
        distributed.DataParallel(optimizer, comm)
    assert comm.sent == [("failed", "TypeError: DataParallel: expected an optimizer of "
                          "fastgraph.optimizer (such as fg.optimizer.Adam(graph, loss)), "
                          f"{message}")]


WRAPPED_TWICE = """
import fastgraph as fg
from fastgraph import distributed
model = fg.models.mlp(4, (3,), 2, seed=0)
once = distributed.DataParallel(fg.optimizer.Adam(model.graph, model.loss, 0.01))
try:
    distributed.DataParallel(once)
except TypeError as error:
    print("refused:", error)
else:  # what it did: one_step, then update (set the samples of a DataParallel: AttributeError)
    import numpy as np
    model.x.set_value(np.ones((2, 4))); model.one_hot.set_value(np.eye(2))
    print("accepted")
"""


def test_a_data_parallel_is_not_wrapped_again(tmp_path):
    """DataParallel(DataParallel(opt)) was taken; its update() then raised AttributeError
    (the inner one's samples cannot be set), and would have all-reduced twice."""
    import subprocess

    try:
        argv, env = distributed.mpiexec_command(1, [sys.executable, "-c", WRAPPED_TWICE])
    except distributed.MPIUnavailable as error:
        pytest.skip(str(error))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == (
        "refused: DataParallel: the optimizer is a DataParallel already: wrap the optimizer "
        "once (DataParallel(fg.optimizer.Adam(graph, loss)))")


PAIRS = 'such as [("epochs", 3), ("batches", 100)]'


@pytest.mark.parametrize("where, items, message", [
    ("loop", "x", f"loop: agree's items must be (name, value) pairs, {PAIRS}, got a str"),
    ("loop", {"epochs": 3}, f"loop: agree's items must be (name, value) pairs, {PAIRS}, got a "
                            "dict"),
    ("loop", 3, f"loop: agree's items must be (name, value) pairs, {PAIRS}, got a int"),
    ("loop", [("epochs",)], f"loop: agree's items must be (name, value) pairs, {PAIRS}; item 1 "
                            "is ('epochs',)"),
    ("loop", [("epochs", 2), (3, 4, 5)], f"loop: agree's items must be (name, value) pairs, "
                                         f"{PAIRS}; item 2 is (3, 4, 5)"),
])
def test_agree_checks_its_arguments_and_tells_the_other_ranks(where, items, message):
    """``dp.agree("loop", "x")`` was a ValueError: not enough values to unpack."""
    comm = OneRank()
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        distributed.agree(comm, where, items)
    assert comm.sent == [("failed", f"TypeError: {message}")]


def test_names_and_places_are_printed_and_equal_dicts_of_arrays_agree():
    """Names and ``where`` are printed (as before the checks); a dict holding an array, equal
    on every rank, 'disagreed' (its == is not one answer)."""
    items = [(1, 5), ("grid", {"k": np.arange(3)})]
    other = ("ok", [("1", 5), ("grid", {"k": [0, 1, 2]})], None)
    assert distributed.agree(OneRank([other]), ("loop", 1), items) is None
    other = ("ok", [("1", 5), ("grid", {"k": [0, 1, 3]})], None)
    with pytest.raises(distributed.RanksDisagree, match=r"^\('loop', 1\): the ranks disagree "
                                                        r"on grid: "):
        distributed.agree(OneRank([other]), ("loop", 1), items)


def test_ranks_given_nan_alike_agree():
    """NaN != NaN: two ranks given NaN 'disagreed' ('rank 0 has nan, rank 1 has nan')."""
    items = [("scale", math.nan), ("shape", (2, math.nan)), ("epochs", 2)]
    other = ("ok", [("scale", math.nan), ("shape", (2, math.nan)), ("epochs", 2)], None)
    assert distributed.agree(OneRank([other]), "loop", items) is None
    other = ("ok", [("scale", math.nan), ("shape", (2, math.nan)), ("epochs", 3)], None)
    with pytest.raises(distributed.RanksDisagree, match=r"^loop: the ranks disagree on epochs: "
                                                        r"rank 0 has 2, rank 1 has 3$"):
        distributed.agree(OneRank([other]), "loop", items)
    other = ("ok", [("scale", 1.0)], None)
    with pytest.raises(distributed.RanksDisagree, match=r"^loop: the ranks disagree on scale: "
                                                        r"rank 0 has nan, rank 1 has 1\.0$"):
        distributed.agree(OneRank([other]), "loop", [("scale", math.nan)])


@pytest.mark.parametrize("settings, message", [
    ({"padding": -1}, r"padding not negative, got \(3, 3\), \(1, 1\), \(-1, -1\)"),
    ({"stride": 0}, r"stride must be positive"),
    ({"image_shape": (3, 3)}, r"x has shape \(16, 1\), expected \(H \* W, channels\) = \(9, "),
    ({"image_shape": (4, 4), "kernel_size": 7}, r"a 7x7 window .* does not fit an image of 4x4"),
])
def test_a_refused_conv2d_leaves_no_parameter_behind(settings, message):
    """Its weights and bias were made before Conv2D's checks: each refused call left two
    parameters in the graph, saved with the model, shifting the names of later nodes."""
    with fg.Graph() as graph:
        x = fg.Variable((16, 1), trainable=False, name="x")
        with pytest.raises(ValueError, match=message):
            fg.layer.conv2d(x, 2, **{"kernel_size": 3, "image_shape": (4, 4), **settings})
        assert [node.name for node in graph.nodes] == ["x"]
        out = fg.layer.conv2d(x, 2, 3, image_shape=(4, 4), padding=1)
    assert out.dim == (16, 2) and graph.node_count() == 4  # x, weights, bias, Conv2D
