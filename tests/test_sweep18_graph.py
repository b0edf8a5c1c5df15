"""What a sweep of bad inputs to graphs and feeding found: each is refused by name, with
nothing changed, where it was a silent infinity, an internal error or a misleading message."""

import re

import numpy as np
import pytest

import fastgraph as fg

LONG = np.longdouble
wide_long_double = pytest.mark.skipif(np.finfo(LONG).max <= np.finfo(np.float64).max,
                                       reason="long double is double on this platform")


def _inputs(graph, count=1, dim=(3, 1)):
    return [fg.Variable(dim, trainable=False, graph=graph, name=f"x{i}") for i in range(count)]


@wide_long_double
@pytest.mark.parametrize("dtype, huge", [(np.float32, LONG(1e39)),
                                         (np.float64, LONG(10) ** 400)])
def test_long_double_beyond_the_graphs_range_is_refused_with_nothing_changed(dtype, huge):
    graph = fg.Graph(dtype=dtype)
    x, = _inputs(graph)
    w = fg.Variable((3, 1), graph=graph, name="w")
    x.set_value(np.ones((2, 3, 1)))
    w.set_value(np.ones((3, 1)))
    batch = np.ones((2, 3, 1), LONG)
    batch[1, 2, 0] = huge
    with pytest.raises(ValueError, match=rf"x0: .*\(sample 1\) is beyond the range of "
                                         rf"{np.dtype(dtype).name}"):
        x.set_value(batch)
    with pytest.raises(ValueError, match=rf"w: .* is beyond the range of {np.dtype(dtype).name}"):
        w.set_value(np.full((3, 1), huge, LONG))
    np.testing.assert_array_equal(x.value, np.ones((2, 3, 1)))  # nothing changed
    np.testing.assert_array_equal(w.value, np.ones((3, 1)))
    fresh, = _inputs(fg.Graph(dtype=dtype))  # a first sample (the article's column)
    with pytest.raises(ValueError, match=rf"x0: {re.escape(str(huge))} is beyond the range"):
        fresh.set_value(np.full((3, 1), huge, LONG))  # (its digits, not "np.longdouble(...)")


@wide_long_double
def test_set_values_refuses_a_long_double_beyond_range_naming_the_input_and_sample():
    graph = fg.Graph()
    inputs = _inputs(graph, 2)
    values = np.ones((2, 4, 3, 1), LONG)
    values[1, 3, 0, 0] = 1e39
    with pytest.raises(ValueError, match=r"set_values: x1: .*\(sample 3\) is beyond the range "
                                         r"of float32"):
        fg.set_values(inputs, values)
    assert all(node.flat is None for node in inputs)  # nothing was set
    values[1, 3, 0, 0] = 1e30  # within range: taken, cast
    fg.set_values(inputs, values)
    assert inputs[1].value[3, 0, 0] == np.float32(1e30)


def test_conv2d_on_a_welding_with_no_shape_says_so_and_makes_no_weights():
    graph = fg.Graph()
    with graph:
        weld = fg.ops.Welding()
        before = len(graph.nodes)
        with pytest.raises(ValueError, match=r"conv2d: Welding:0 has no shape yet: give "
                                             r"Welding\(dim=...\) or weld it first"):
            fg.layer.conv2d(weld, 3, 3, image_shape=(4, 4))
    assert len(graph.nodes) == before


REMOVED = r"x was removed from its graph by Graph.clear\(\): build it again"


@pytest.mark.parametrize("use", [
    lambda x, live: fg.layer.fc(x, 4, 2, None),
    lambda x, live: fg.layer.conv2d(x, 2, 1, image_shape=(2, 2)),
    lambda x, live: fg.ops.Add(live, x),
    lambda x, live: fg.Variable((4, 1), graph=x.graph),
    lambda x, live: fg.ops.Welding(graph=live.graph).weld(x),
    lambda x, live: fg.set_values([live, x], np.ones((2, 4, 1))),
], ids=["fc", "conv2d", "Add(live, removed)", "Variable(graph=)", "weld", "set_values"])
def test_a_node_that_clear_removed_says_so_wherever_it_is_used(use):
    graph = fg.Graph()
    x = fg.Variable((4, 1), trainable=False, graph=graph, name="x")
    graph.clear()
    live = fg.Variable((4, 1), trainable=False, graph=graph, name="live")
    with pytest.raises(RuntimeError, match=REMOVED):
        use(x, live)


def test_a_jacobian_with_respect_to_a_removed_node_says_so():
    graph = fg.Graph()
    x = fg.Variable((4, 1), trainable=False, graph=graph, name="x")
    graph.clear()
    live = fg.Variable((4, 1), trainable=False, graph=graph, name="live")
    live.set_value(np.ones((2, 4, 1)))
    with pytest.raises(RuntimeError, match=REMOVED):
        fg.jacobian(fg.ops.ReLU(live), [x])


@pytest.mark.parametrize("trainable", [False, True])
def test_a_ragged_value_is_refused_naming_the_node(trainable):
    node = fg.Variable((3, 1), trainable=trainable, graph=fg.Graph(), name="v")
    with pytest.raises(ValueError, match=r"v: the values are not an array: their samples "
                                         r"differ in shape"):
        node.set_value([[1.0], [2.0, 3.0], [4.0]])


@pytest.mark.parametrize("build", [
    lambda: fg.model.logistic_regression(4, 0),
    lambda: fg.model.logistic_regression(True, 3),
    lambda: fg.model.logistic_regression(4, 10**400),
    lambda: fg.model.logistic_regression(10**10, 10**10),
    lambda: fg.model.multilayer_perception(4, 3, [5, 0], "ReLU"),
    lambda: fg.model.multilayer_perception(4, 0, [5], "ReLU"),
    lambda: fg.model.multilayer_perception(4, 3, [5, "8"], "ReLU"),
], ids=["no classes", "bool size", "huge classes", "too many weights", "empty layer",
        "no classes (mlp)", "a str width"])
def test_the_articles_models_refuse_bad_sizes_before_making_a_node(build):
    with fg.Graph() as graph:
        with pytest.raises(ValueError, match=r"(logistic_regression|multilayer_perception): "
                                             r"[\w,]+(\[\d\])? (must be|inputs by)"):
            build()
    assert len(graph.nodes) == 0


def test_a_variable_too_large_for_an_array_is_refused_by_name():
    with pytest.raises(ValueError, match=r"more numbers than an array can hold"):
        fg.Variable((10**10, 10**10), graph=fg.Graph())


def test_get_gradient_given_a_name_asks_for_the_node():
    graph = fg.Graph()
    x = fg.Variable((3, 1), trainable=False, graph=graph, name="x")
    w = fg.Variable((1, 3), init=True, graph=graph, name="w")
    optimizer = fg.optimizer.GradientDescent(graph, fg.ops.MatMul(w, x), 0.1)
    x.set_value(np.ones((3, 1)))
    optimizer.one_step()
    with pytest.raises(TypeError, match=r"get_gradient takes the parameter node, got the str "
                                        r"'w': give the node \(graph.get_node\('w'\)\)"):
        optimizer.get_gradient("w")
    assert optimizer.get_gradient(graph.get_node("w")).shape == (1, 3)


def test_a_parent_of_another_graph_is_named_with_the_operator_and_the_other_parents():
    with fg.Graph():
        y = fg.ops.MatMul(fg.Variable((1, 3), init=True), fg.Variable((3, 1), trainable=False))
    stranger = fg.Variable((1, 1), init=True)  # the default graph's
    with pytest.raises(ValueError, match=rf"^Add: its parent {stranger.name} belongs to another "
                                         rf"graph than {y.name}$"):
        fg.ops.Add(y, stranger)
