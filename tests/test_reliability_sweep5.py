"""A fifth sweep of bad inputs: each call below raised from inside the library (an
AttributeError, Python's "not iterable", NumPy's words) or was taken by its truth; each now
names what it expected."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import metrics
from fastgraph.ops.convolution import Conv2D


@pytest.fixture
def network():
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w = fg.Variable((2, 3), init=True, name="w")
        out = fg.ops.MatMul(w, x, name="out")
        loss = fg.ops.Dot(out, out, name="loss")
    x.set_value(np.ones((4, 3, 1)))
    return graph, x, w, out, loss


def test_calls_given_the_wrong_kind_of_thing(network):
    graph, x, w, out, loss = network
    optimizer = fg.optimizer.Adam(graph, loss)
    from fastgraph.profiler import profile_steps

    cases = [
        (lambda: out.get_jacobi("x"), ValueError, r"^'x' is not a parent of out$"),
        (lambda: profile_steps(None, lambda step: None), TypeError,
         r"^profile_steps: optimizer must be a fastgraph optimizer, got NoneType None$"),
        (lambda: profile_steps("adam", lambda step: None), TypeError,
         r"^profile_steps: optimizer must be a fastgraph optimizer, got str 'adam'$"),
        (lambda: profile_steps(optimizer, None), TypeError,
         r"^profile_steps: feed must be a function of the step that sets the inputs"),
        (lambda: graph.rewire(out, w), TypeError,
         r"^rewire: the parents of out must be a list of nodes, got Variable$"),
        (lambda: fg.set_values(x, np.ones((1, 4, 3, 1))), TypeError,
         r"^set_values: inputs must be a list of input nodes, got Variable \(one input: "),
        (lambda: graph.get_node(["x"]), TypeError, r"^a node's name is a string, got list"),
        (lambda: fg.optimizer.Adam("g", loss), TypeError,
         r"^Adam: graph must be a fastgraph Graph, got str 'g'$"),
        (lambda: fg.optimizer.GradientDescent(out, loss), TypeError,
         r"^GradientDescent: graph must be a fastgraph Graph, got MatMul .*\(pass its graph: "
         r"node.graph\)$"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()


def test_set_values_of_two_graphs_names_the_first_input():
    """Both graphs number their nodes from 0: "Variable:0 belongs to another graph than
    Variable:0"."""
    a = fg.Variable((2, 1), trainable=False, graph=fg.Graph())
    b = fg.Variable((2, 1), trainable=False, graph=fg.Graph())
    with pytest.raises(ValueError, match=r"^set_values: Variable:0 belongs to another graph "
                                         r"than the first input, Variable:0$"):
        fg.set_values([a, b], np.ones((2, 3, 2, 1)))


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.roc_auc([0, 1], ["a", "b"]), r"roc_auc: scores must be real numbers, "
                                                  r"got dtype <U1"),
    (lambda: metrics.roc_auc([0, 1], [1j, 2j]), r"roc_auc: scores must be real numbers, got "
                                                r"dtype complex128"),
    (lambda: metrics.accuracy([0, 1], [[0.1, 0.9], [0.3]]), r"^predictions are not an array: "
                                                            r"their samples differ in shape"),
    (lambda: metrics.accuracy([[1, 0], [0]], [[0.1, 0.9], [0.3, 0.7]]), r"^labels are not an "
                                                                        r"array"),
    (lambda: metrics.accuracy([], np.zeros((0, 0))), r"scores of shape \(0, 0\) have no column"),
], ids=["string scores", "complex scores", "ragged predictions", "ragged labels", "no column"])
def test_metrics_of_inputs_that_are_not_numbers_say_so(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("value", ["False", "no", None, 2, 0.0, [True]])
def test_flags_are_true_or_false_not_their_truth(value, network):
    """Variable(trainable="False") made a parameter, init="no" initialised, copy=None gave
    views that the next call overwrites, conv2d(bias="no") made a bias."""
    graph, x, w, out, loss = network
    with graph:
        for call, name in [(lambda: fg.Variable((2, 1), trainable=value), "Variable: trainable"),
                           (lambda: fg.Variable((2, 1), init=value), "Variable: init"),
                           (lambda: fg.per_sample_gradients(loss, [w], copy=value),
                            "per_sample_gradients: copy"),
                           (lambda: fg.layer.conv2d(fg.Variable((16, 1), trainable=False), 2, 3,
                                                    image_shape=(4, 4), bias=value),
                            "conv2d: bias")]:
            count = graph.node_count()
            with pytest.raises(ValueError, match=rf"^{name} must be True or False, got "):
                call()
            assert graph.node_count() <= count + 1  # (conv2d's input: built by the test)


@pytest.mark.parametrize("value", [True, False, np.True_, 1, 0])
def test_flags_take_bools_and_their_integers(value):
    with fg.Graph():
        node = fg.Variable((2, 1), trainable=value, init=False)
    assert node.trainable is bool(value)


def test_a_bool_is_no_stride_nor_seed():
    """Conv2D(stride=True) was stride 1, Graph(seed=True) seed 1."""
    with fg.Graph():
        x = fg.Variable((16, 1), trainable=False)
        w = fg.Variable((2, 9))
        with pytest.raises(ValueError, match=r"Conv2D: stride must be an int or a pair of ints, "
                                             r"got True"):
            Conv2D(x, w, image_shape=(4, 4), kernel_size=3, stride=True)
        with pytest.raises(ValueError, match=r"padding must be an int or a pair of ints, got "
                                             r"\(1, False\)"):
            Conv2D(x, w, image_shape=(4, 4), kernel_size=3, padding=(1, False))
    with pytest.raises(ValueError, match=r"Graph seed must be None or a non-negative integer, "
                                         r"got True"):
        fg.Graph(seed=True)


def test_sweep6_small_arguments_named(tmp_path):
    """Python's, NumPy's or matplotlib's words before: features(None), one_hot(classes=2.5),
    a history without its keys, write_graph(g, None) and a NUL in the name; and
    fg.distributed as an attribute (AttributeError, though `from fastgraph import
    distributed` worked)."""
    from fastgraph import viz
    from fastgraph.datasets import mnist as dataset

    graph = fg.models.mlp(4, (3,), 2, seed=0).graph
    cases = [
        (lambda: dataset.features(None), ValueError, r"^features: expected images .*got object"),
        (lambda: dataset.features([]), ValueError, r"^features: expected images"),
        (lambda: dataset.one_hot([0, 1], classes=2.5), ValueError,
         r"^one_hot: classes must be a positive integer, got 2.5$"),
        (lambda: viz.plot_history([{"epoch": 1}], tmp_path / "h.png"), ValueError,
         r"h.png: record 0 of the history has no loss, train_accuracy"),
        (lambda: viz.write_graph(graph, None), TypeError, r"^write_graph: path must be a file"),
        (lambda: viz.write_graph(graph, "a\0b.dot"), TypeError, r"without NUL"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()
    assert fg.distributed.DataParallel is not None
