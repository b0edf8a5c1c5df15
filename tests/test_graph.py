"""The graph: tapes, deep chains without recursion, diamonds, names, invalidation."""

import sys

import numpy as np

import fastgraph as fg


def chain(length):
    """x + c + c + ... (``length`` Adds) in a float64 graph: ``(graph, x, c, last node)``,
    longer than the recursion limit allows a recursive walk to go."""
    assert sys.getrecursionlimit() <= 10_000
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False)
        c = fg.Variable((2, 1))
        c.set_value([[0.5], [-1.0]])
        node = x
        for _ in range(length):
            node = fg.ops.Add(node, c)
    return graph, x, c, node


def test_chain_of_100000_adds_runs_forward_and_backward():
    graph, x, c, node = chain(100_000)
    optimizer = fg.optimizer.GradientDescent(graph, node, 1e-9)
    x.set_value(np.ones((3, 2)))
    optimizer.one_step()
    np.testing.assert_allclose(node.value[:, :, 0], [[50_001, -99_999]] * 3)
    np.testing.assert_allclose(optimizer.get_gradient(c), [[100_000], [100_000]])


def test_a_chain_longer_than_the_recursion_limit_has_its_jacobians():
    """backward() and the article's dense engine walk plans too: no recursion (a chain of
    12,000, beyond the limit, where the 100,000 one above took 6 s more to record)."""
    _, x, c, node = chain(12_000)
    x.set_value(np.ones((3, 2)))
    np.testing.assert_allclose(c.backward(node), np.broadcast_to(12_000 * np.eye(2), (3, 2, 2)))
    x.set_value(np.ones((2, 1)))  # one sample: the article's dense algorithm
    np.testing.assert_allclose(c.backward(node, engine="jacobian"), 12_000 * np.eye(2))


def test_diamond_gets_the_summed_gradient(rng):
    """h feeds two branches: d/dw [ (w x)^2 + 3 (w x) ] = (2 w x + 3) x."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((1, 1), trainable=False)
        w = fg.Variable((1, 1))
        three = fg.Variable((1, 1))
        w.set_value([[0.7]])
        three.set_value([[3.0]])
        h = fg.ops.MatMul(w, x)
        target = fg.ops.Add(fg.ops.Multiply(h, h), fg.ops.ScalarMultiply(three, h))
        optimizer = fg.optimizer.GradientDescent(graph, target, 0.1)
        reference = fg.optimizer.GradientDescent(graph, target, 0.1, engine="jacobian")
    values = rng.normal(size=(6, 1, 1))
    x.set_value(values)
    optimizer.one_step()
    reference.one_step()
    expected = np.mean((2 * 0.7 * values + 3) * values)
    np.testing.assert_allclose(optimizer.get_gradient(w), [[expected]], rtol=1e-12)
    np.testing.assert_allclose(reference.get_gradient(w), [[expected]], rtol=1e-12)
    np.testing.assert_allclose(optimizer.get_gradient(three), [[np.mean(0.7 * values)]], rtol=1e-12)


def test_tape_is_topological_and_cached():
    with fg.Graph() as graph:
        a = fg.Variable((2, 1), trainable=False)
        b = fg.ops.ReLU(a)
        c = fg.ops.Add(b, a)
        tape = graph.tape(c)
        assert graph.tape(c) is tape
        assert tape.nodes == [a, b, c]
        assert tape.inputs == [a]
        d = fg.ops.Tanh(c)
        assert graph.tape(c) is not tape  # the graph changed
        assert graph.tape(d).nodes == [a, b, c, d]


def test_names_scopes_and_lookup():
    with fg.Graph() as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        with fg.name_scope("hidden"):
            w = fg.Variable((2, 3), init=True)
            product = fg.ops.MatMul(w, x)
            with fg.name_scope("inner"):
                relu = fg.ops.ReLU(product)
        assert fg.default_graph is graph
        assert product.name == "hidden/MatMul:2"
        assert relu.name == "hidden/inner/ReLU:3"
        assert fg.get_node_from_graph("hidden/MatMul:2") is product
        assert graph.get_node("x") is x
        assert graph.node_count() == 4 and graph.nodes == [x, w, product, relu]
        assert x.children == [product] and product.parents == [w, x]
    assert fg.default_graph is not graph
    other = fg.Graph()
    node = fg.Variable((1, 1), graph=other, name="alone")
    assert other.nodes == [node]


def test_setting_an_input_invalidates_downstream_only(rng):
    with fg.Graph() as graph:
        x = fg.Variable((2, 1), trainable=False)
        w = fg.Variable((2, 2), init=True)
        wide = fg.ops.Tanh(w)  # depends on the parameter only
        y = fg.ops.MatMul(wide, x)
        z = fg.ops.ReLU(y)
    x.set_value(rng.random((4, 2)))
    z.forward()
    assert y.value.shape == (4, 2, 1) and z.value is not None
    assert wide.value.shape == (2, 2)  # no batch axis: it depends on no input
    x.set_value(rng.random((5, 2)))
    assert y.value is None and z.value is None and wide.value is not None
    z.forward()
    assert z.value.shape == (5, 2, 1)
    graph.reset_value()
    assert z.value is None and wide.value is None and x.value is not None


def test_one_sample_input_and_shapes(rng):
    with fg.Graph():
        x = fg.Variable((3, 1), trainable=False)
        y = fg.ops.SoftMax(x)
        x.set_value(np.arange(3.0).reshape(3, 1))  # exactly dim: one sample
        y.forward()
        assert y.value.shape == (3, 1) and y.shape() == (3, 1) and y.dimension() == 3
        assert isinstance(y.value, np.matrix)  # the article's single-sample values
        assert y.value.dtype == np.float32
        x.set_value(np.arange(6).reshape(2, 3))  # (B, rows) with cols == 1; ints convert
        y.forward()
        np.testing.assert_allclose(y.value.sum(axis=(1, 2)), [1, 1], rtol=1e-6)


def test_input_copies_into_a_buffer_it_keeps():
    with fg.Graph():
        x = fg.Variable((3, 1), trainable=False)
        batch = np.ones((4, 3), np.float32)
        x.set_value(batch)
        buffer = x.flat
        assert not np.shares_memory(buffer, batch)
        batch[:] = 7  # the caller refills its array at once: the input keeps what it was given
        np.testing.assert_array_equal(x.flat, 1)
        x.set_value(batch.astype(np.float64))
        assert x.flat is buffer and x.value.dtype == np.float32  # same batch size: same buffer
