"""Wiring a user can get wrong: welds and re-wirings that would make a cycle, do not fit, or
give parents to a leaf; welding points without a shape; automatic names; the graph's dtype;
the picture of a graph whose welding point was welded to a node built after it.

Each is refused with a message that names the nodes and what was expected, before anything
changes: the graph computes afterwards what it computed before.
"""

import numpy as np
import pytest

import fastgraph as fg

EXECUTORS = ["python", pytest.param("compiled", marks=pytest.mark.compiled)]


def snapshot(graph):
    """What a refused call must leave as it was: every edge, shape and batch axis, and the
    version that keys the cached tapes, plans and passes."""
    return ([(node.name, [p.name for p in node.parents], [c.name for c in node.children],
              node.dim, node.batched, getattr(node._batch_source, "name", None))
             for node in graph.nodes], graph._version, graph.node_count())


def welded_loop():
    """The bad-input sweep's graph: a welding point and an addition built on it."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable(dim=(2, 1), init=False, trainable=False)
        point = fg.ops.Welding(dim=(2, 1))
        total = fg.ops.Add(point, x)
    return graph, x, point, total


# -- 1. cycles --------------------------------------------------------------------------------
def test_a_weld_to_a_node_that_depends_on_the_point_is_refused():
    graph, x, point, total = welded_loop()
    before = snapshot(graph)
    with pytest.raises(ValueError) as error:
        point.weld(total)
    assert str(error.value) == ("weld: Welding:1 cannot take Add:2, which depends on it: "
                                "Welding:1 -> Add:2 -> Welding:1 would be a cycle")
    with pytest.raises(ValueError) as error:
        point.weld(point)
    assert str(error.value) == ("weld: Welding:1 cannot take itself: Welding:1 -> Welding:1 "
                                "would be a cycle")
    with pytest.raises(ValueError) as error:
        graph.rewire(point, [total])
    assert str(error.value) == ("rewire: Welding:1 cannot take Add:2, which depends on it: "
                                "Welding:1 -> Add:2 -> Welding:1 would be a cycle")
    assert snapshot(graph) == before


def test_a_longer_cycle_is_named_node_by_node():
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable(dim=(2, 1), init=False, trainable=False, name="x")
        first = fg.ops.ReLU(x, name="first")
        second = fg.ops.Tanh(first, name="second")
        third = fg.ops.Add(second, x, name="third")
    before = snapshot(graph)
    with pytest.raises(ValueError, match="^rewire: first cannot take third, which depends on "
                                         "it: first -> second -> third -> first would be a "
                                         "cycle$"):
        graph.rewire(first, [third])
    assert snapshot(graph) == before


@pytest.mark.parametrize("how", EXECUTORS)
def test_after_a_refused_cycle_every_computation_still_works(how, monkeypatch):
    # Before, the weld was accepted and forward, one_step, fg.jacobian and the dense
    # backward all failed inside the engines ('NoneType' object has no attribute 'shape').
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", how)
    graph, x, point, total = welded_loop()
    with graph:
        w = fg.Variable(dim=(2, 2), init=True, trainable=True)
        step = fg.ops.MatMul(w, x)
        loss = fg.ops.Dot(total, total)
    for bad in (total, point, fg.ops.ReLU(total)):
        with pytest.raises(ValueError, match="would be a cycle"):
            point.weld(bad)
    point.weld(step)
    x.set_value(np.ones((3, 2, 1)))
    total.forward()
    expected = np.ones((3, 2, 1)) + w.value @ np.ones((2, 1))
    np.testing.assert_allclose(total.value, expected, rtol=1e-12)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    optimizer.one_step()
    assert optimizer.get_gradient(w).shape == (2, 2)
    assert fg.jacobian(total, w).shape == (3, 2, 4)
    x.set_value(np.ones((2, 1)))
    total.forward()
    dense = w.backward(total, engine="jacobian")
    assert dense.shape == (2, 4)
    np.testing.assert_allclose(dense, w.backward(total, engine="vjp"), rtol=1e-12)


def test_a_state_fed_back_from_the_previous_step_is_welded():
    # The article's use: each step's welding point takes the state of the step before,
    # which was built from earlier steps only and does not depend on the point.
    with fg.Graph(dtype=np.float64, seed=3):
        w = fg.Variable(dim=(2, 2), init=True, trainable=True)
        inputs = [fg.Variable(dim=(2, 1), init=False, trainable=False) for _ in range(3)]
        states = [fg.ops.Tanh(inputs[0])]
        points = []
        for x in inputs[1:]:
            points.append(fg.ops.Welding(dim=(2, 1)))
            states.append(fg.ops.Tanh(fg.ops.Add(fg.ops.MatMul(w, points[-1]), x)))
    for point, previous in zip(points, states):
        point.weld(previous)
    values = np.random.default_rng(4).normal(size=(3, 5, 2, 1))
    for x, value in zip(inputs, values):
        x.set_value(value)
    states[-1].forward()
    state = np.tanh(values[0])
    for value in values[1:]:
        state = np.tanh(w.value @ state + value)
    np.testing.assert_allclose(states[-1].value, state, rtol=1e-12)
    with pytest.raises(ValueError, match="^weld: Welding:5 cannot take Tanh:12, which depends "
                                         "on it: Welding:5 -> MatMul:6 -> Add:7 -> Tanh:8 -> "
                                         "Welding:9 -> MatMul:10 -> Add:11 -> Tanh:12 -> "
                                         "Welding:5 would be a cycle$"):
        points[0].weld(states[-1])  # the last step depends on the first point


# -- 2. re-wiring is all or nothing ------------------------------------------------------------
def matmul_graph():
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable(dim=(3, 1), init=False, trainable=False, name="x")
        w = fg.Variable(dim=(2, 3), init=True, trainable=True, name="w")
        z = fg.Variable(dim=(4, 4), init=True, trainable=True, name="z")
        y = fg.ops.MatMul(w, x, name="y")
        relu = fg.ops.ReLU(y, name="relu")
    x.set_value(np.arange(6.0).reshape(2, 3, 1))
    relu.forward()
    return graph, x, w, z, y, relu


def test_a_rewiring_whose_shapes_do_not_fit_changes_nothing():
    graph, x, w, z, y, relu = matmul_graph()
    expected = relu.value
    before = snapshot(graph)
    with pytest.raises(ValueError) as error:
        graph.rewire(y, [w, z])
    assert str(error.value) == ("rewire: y cannot take w, z: MatMul cannot multiply w of shape "
                                "(2, 3) by z of shape (4, 4): 3 columns against 4 rows")
    assert snapshot(graph) == before and y.parents == [w, x] and z.children == []
    assert relu.state == 0  # nothing emptied: the value computed before is still current
    x.set_value(np.arange(6.0).reshape(2, 3, 1))
    relu.forward()  # asked for z's value before
    np.testing.assert_allclose(relu.value, expected)


def test_giving_parents_to_a_leaf_is_refused():
    graph, x, w, z, y, relu = matmul_graph()
    before = snapshot(graph)
    with pytest.raises(ValueError) as error:
        graph.rewire(x, [relu])
    assert str(error.value) == ("rewire: x is an input and takes no parents; re-wire an "
                                "operator or a Welding")
    with pytest.raises(ValueError, match="^rewire: w is a parameter and takes no parents"):
        graph.rewire(w, [z])
    assert snapshot(graph) == before


def test_a_rewiring_that_changes_what_other_nodes_are_built_on_is_refused():
    graph, x, w, z, y, relu = matmul_graph()
    with graph:
        wide = fg.Variable(dim=(5, 3), init=True, trainable=True, name="wide")
        square = fg.Variable(dim=(3, 3), init=True, trainable=True, name="square")
        column = fg.Variable(dim=(3, 1), init=True, trainable=True, name="column")
    before = snapshot(graph)
    with pytest.raises(ValueError) as error:
        graph.rewire(y, [wide, x])
    assert str(error.value) == ("rewire: with wide, x as parents y would go from shape (2, 1) "
                                "to (5, 1), but relu is built on it as it is")
    with pytest.raises(ValueError) as error:
        graph.rewire(y, [w, column])
    assert str(error.value) == ("rewire: with w, column as parents y would go from a batch "
                                "axis to none (none of them depends on an input), but relu is "
                                "built on it as it is")
    assert snapshot(graph) == before
    # A node nothing is built on may take another shape.
    graph.rewire(relu, [fg.ops.MatMul(square, x, graph=graph)])
    assert relu.dim == (3, 1)
    relu.forward()
    np.testing.assert_allclose(relu.value, np.maximum(square.value @ x.value, 0), rtol=1e-12)


def test_a_count_of_parents_the_operator_does_not_take_is_refused():
    graph, x, w, z, y, relu = matmul_graph()
    before = snapshot(graph)
    with pytest.raises(TypeError, match="^rewire: y takes 2 parent node\\(s\\), got 1$"):
        graph.rewire(y, [w])
    with pytest.raises(TypeError, match="^rewire: relu takes 1 parent node\\(s\\), got 2$"):
        graph.rewire(relu, [y, y])
    with pytest.raises(TypeError, match="^rewire: relu takes nodes as parents, got ndarray$"):
        graph.rewire(relu, [np.ones((2, 1))])
    assert snapshot(graph) == before


# -- 3. a welding point without a shape --------------------------------------------------------
def test_a_welding_point_without_a_shape_reads_and_refuses_clearly():
    with fg.Graph(dtype=np.float64) as graph:
        point = fg.ops.Welding()
        weights = fg.Variable(dim=(2, 2), init=True, trainable=True)
    assert repr(point) == "<Welding:0 dim unknown until welded>"
    assert point.config() == {"dim": None}
    with pytest.raises(ValueError, match="^Welding:0 has no shape yet: give Welding\\(dim=...\\) "
                                         "or weld it first$"):
        point.dimension()
    count = graph.node_count()
    with pytest.raises(ValueError) as error:
        fg.ops.MatMul(weights, point)
    assert str(error.value) == ("MatMul: Welding:0 has no shape yet: give Welding(dim=...) or "
                                "weld it first")
    with graph, pytest.raises(ValueError) as error:
        fg.ops.Add(fg.ops.Welding(), fg.ops.Welding())
    assert str(error.value) == ("Add: Welding:2 has no shape yet: give Welding(dim=...) or "
                                "weld it first")
    assert graph.node_count() == count + 2  # the two points, not the addition
    other = fg.ops.Welding(graph=graph)
    with pytest.raises(ValueError, match="^weld: Welding:4 cannot take Welding:0, which has no "
                                         "shape yet"):
        other.weld(point)


def test_a_welding_point_takes_its_shape_from_fc_or_its_first_weld():
    with fg.Graph(dtype=np.float64, seed=1):
        x = fg.Variable(dim=(3, 1), init=False, trainable=False)
        adopted = fg.ops.Welding()
        out = fg.layer.fc(adopted, 3, 2, None)
        welded = fg.ops.Welding()
    assert adopted.dim == (3, 1) and out.dim == (2, 1)
    welded.weld(x)
    assert welded.dim == (3, 1) and repr(welded) == "<Welding:6 3x1 batched>"
    assert fg.ops.ReLU(welded).dim == (3, 1)
    x.set_value(np.ones((3, 1)))
    with pytest.raises(ValueError, match="^Welding:1 has no parent: call Welding:1.weld"):
        out.forward()
    adopted.weld(x)
    out.forward()
    assert out.value.shape == (2, 1)


def test_a_welding_point_built_on_a_parent_checks_it_first():
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable(dim=(2, 1), init=False, trainable=False, name="x")
        w = fg.Variable(dim=(2, 1), init=True, trainable=True, name="w")
    count = graph.node_count()
    with pytest.raises(ValueError, match="^Welding has shape \\(3, 1\\) and cannot weld x of "
                                         "shape \\(2, 1\\)$"):
        fg.ops.Welding(x, dim=(3, 1), graph=graph)
    with pytest.raises(ValueError, match="^end welds nodes that depend on an input; w does "
                                         "not$"):
        fg.ops.Welding(w, graph=graph, name="end")
    assert graph.node_count() == count
    assert fg.ops.Welding(x, dim=(2, 1), graph=graph).dim == (2, 1)


# -- 4. automatic names -------------------------------------------------------------------------
def test_an_automatic_name_skips_the_names_users_took():
    with fg.Graph() as graph:
        taken = fg.Variable(dim=(1, 1), name="Variable:1")
        fg.Variable(dim=(1, 1), name="Variable:2")
        first = fg.Variable(dim=(1, 1))
        second = fg.Variable(dim=(1, 1))
        with fg.name_scope("s"):
            fg.Variable(dim=(1, 1), name="Variable:4")
            scoped = fg.Variable(dim=(1, 1))
    assert taken.name == "Variable:1"
    assert (first.name, second.name, scoped.name) == ("Variable:3", "Variable:4", "s/Variable:5")
    assert graph.get_node("Variable:3") is first
    with pytest.raises(ValueError, match="a node named 'Variable:3' already exists"):
        fg.Variable(dim=(1, 1), name="Variable:3", graph=graph)


# -- 5. the graph's dtype ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype, shown", [(None, "None"), ("nope", "nope"),
                                          (np.float16, "float16"), (int, "int64")])
def test_a_graph_dtype_other_than_float32_or_float64_is_refused(dtype, shown):
    with pytest.raises(ValueError) as error:
        fg.Graph(dtype=dtype)
    assert str(error.value) == f"Graph dtype must be float32 or float64, got {shown}"


def test_the_default_dtype_is_float32():
    assert fg.Graph().dtype == np.float32 and fg.Graph(dtype="float64").dtype == np.float64


# -- 6. the picture of a graph welded forward -------------------------------------------------
def test_draw_places_a_point_welded_to_a_node_built_after_it():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable(dim=(2, 1), init=False, trainable=False)
        point = fg.ops.Welding(dim=(2, 1))
        top = fg.ops.ReLU(point)
        late = fg.ops.Tanh(x)
        unshaped = fg.ops.Welding()
    point.weld(late)  # KeyError: <Tanh:3 ...> before
    ax = graph.draw()
    labels = [text.get_text() for text in ax.texts]
    assert labels == ["Variable\n2x1", "Welding\n2x1", "ReLU\n2x1", "Tanh\n2x1", "Welding"]
    where = {node: text.get_position() for node, text in zip(graph.nodes, ax.texts)}
    assert [where[node][0] for node in (x, late, point, top, unshaped)] == [0, 1, 2, 3, 0]
    matplotlib.pyplot.close(ax.figure)


def test_rewire_gives_a_welding_point_only_what_weld_would():
    """rewire(welding, [param]) was taken and left the welding point without a batch axis,
    where weld refused the same parent."""
    with fg.Graph() as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((2, 1), name="w")
        point = fg.ops.Welding(dim=(2, 1), name="point")
        point.weld(fg.ops.ReLU(x))
        parents = list(point.parents)
    with pytest.raises(ValueError, match="rewire: point cannot take w: point welds nodes that "
                                         "depend on an input; w does not"):
        graph.rewire(point, [w])
    assert point.parents == parents and point.batched
