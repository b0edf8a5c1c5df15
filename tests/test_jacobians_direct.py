"""Per-sample derivatives written by their last kernel straight into the arrays returned
(``Pass.run_into``): the same bits as the copy out of the engine's buffers and as the
walker's, arrays of their own, and the copy wherever a gradient is not made by one call."""


import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines import compiled
from fastgraph.engines import jacobian as dense
from tests.helpers import mnist_network, with_executor


def _walked(action):
    """``action()`` on the Python walker (every gradient copied out of its buffers)."""
    return with_executor("python", action)


def _written_in_place(graph, result, nodes, seeds, batch):
    """Per node, whether the compiled per-sample pass writes its gradient into the caller's
    array (None: that pass has not been run with arrays to write into)."""
    key = (("per-sample pass", result, tuple(nodes), seeds, batch), graph._version)
    found = graph._cache.get(key)
    assert isinstance(found, compiled.Pass), "no compiled per-sample pass"
    return None if found.outputs is None else [slot is not None for slot in found.outputs]


def _copied(result, nodes, seeds, shape):
    """What the copy path returns: the compiled pass run as before, its buffers copied."""
    return [gradient.reshape(shape(node)).copy()
            for gradient, node in zip(compiled.per_sample(result, nodes, seeds), nodes)]


def _network(dtype, rng, batch=6, hidden=(7, 5)):
    graph, x, one_hot, logits, _, loss = mnist_network(dtype, seed=3, hidden=hidden)
    x.set_value(rng.random((batch, 784)))
    one_hot.set_value(np.eye(10)[rng.integers(0, 10, batch)])
    params = [node for node in graph.nodes if isinstance(node, fg.Variable) and node.trainable]
    return graph, x, logits, loss, params


@pytest.mark.compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_jacobian_written_in_place_has_the_copy_paths_bits(dtype, rng):
    graph, x, logits, _, params = _network(dtype, rng)
    got = fg.jacobian(logits, x)
    assert _written_in_place(graph, logits, [x], 10, 6) == [True]
    assert got.dtype == dtype and got.shape == (6, 10, 784) and got.flags.owndata
    (copied,) = _copied(logits, [x], 10, lambda node: (6, 10, 784))
    np.testing.assert_array_equal(got, copied)
    np.testing.assert_array_equal(got, _walked(lambda: fg.jacobian(logits, x)))
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, dense.jacobian(logits, x), rtol=tolerance, atol=tolerance)
    assert np.abs(got).max() > 0


@pytest.mark.compiled
def test_any_alignment_of_the_callers_array_gives_the_same_bits(rng):
    """A chunk's slice starts anywhere in the result: the kernels (MKL's GEMM, the outer
    products) must not round differently with the address they write to."""
    graph, x, logits, loss, params = _network(np.float32, rng, batch=5, hidden=(33, 5))
    (reference,) = _copied(logits, [x], 10, lambda node: (50, 784))
    weights = [_copied(loss, params, None, lambda node: (5, node.dimension()))[0]]
    memory = np.empty(weights[0].size + 64, np.float32)
    for offset in [0, 1, 2, 3, 4, 8, 16]:
        into = memory[offset:offset + 50 * 784].reshape(50, 784)
        (got,) = compiled.per_sample(logits, [x], 10, [into])
        assert got is into
        np.testing.assert_array_equal(into, reference, err_msg=f"offset {offset}")
        into = memory[offset:offset + weights[0].size].reshape(weights[0].shape)
        got = compiled.per_sample(loss, params, None, [into] + [None] * (len(params) - 1))
        assert got[0] is into and got[1] is not None
        np.testing.assert_array_equal(into, weights[0], err_msg=f"offset {offset}")


def test_earlier_results_keep_their_values_and_the_engine_its_buffers(rng):
    graph, x, logits, loss, params = _network(np.float64, rng)
    first = fg.jacobian(logits, x)
    kept = first.copy()
    gradients = fg.per_sample_gradients(loss, params)
    kept_gradients = [gradient.copy() for gradient in gradients]
    x.set_value(rng.random((6, 784)))
    second = fg.jacobian(logits, x)
    again = fg.per_sample_gradients(loss, params)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(second, first)
    for gradient, copy, newer in zip(gradients, kept_gradients, again):
        np.testing.assert_array_equal(gradient, copy)
        assert not np.shares_memory(gradient, newer)
    # The engine's buffers, which the in-place passes did not write, still serve its others.
    views = fg.per_sample_gradients(loss, params, copy=False)
    for view, copy in zip(views, again):
        np.testing.assert_array_equal(view, copy)
    (buffer,) = compiled.per_sample(logits, [x], 10)
    np.testing.assert_array_equal(buffer.reshape(6, 10, 784), second)
    np.testing.assert_array_equal(fg.jacobian(logits, x), second)


@pytest.mark.compiled
def test_chunks_are_written_in_place_with_the_walkers_bits(rng):
    graph, x, logits, _, _ = _network(np.float64, rng, batch=7)
    chunked = fg.jacobian(logits, x, chunk_size=3)  # passes of 3, 3 and 1 samples
    assert _written_in_place(graph, logits, [x], 10, 3) == [True]
    assert _written_in_place(graph, logits, [x], 10, 1) == [True]
    np.testing.assert_array_equal(chunked, _walked(lambda: fg.jacobian(logits, x, chunk_size=3)))
    np.testing.assert_allclose(chunked, fg.jacobian(logits, x), rtol=1e-12, atol=1e-15)
    assert x.value.shape == (7, 784, 1)  # the batch restored


@pytest.mark.compiled
def test_several_nodes_some_in_place_some_copied(rng):
    graph, x, logits, _, params = _network(np.float64, rng)
    weights, bias = params[0], params[1]
    hidden = next(node for node in graph.nodes if type(node).__name__ == "ReLU")
    nodes = [x, weights, bias, hidden]
    got = fg.jacobian(logits, nodes)
    # The input's and the weights' gradients are made by one call each; the bias's is the
    # upstream the weight's and the input's products read, the hidden layer's is read by
    # its ReLU's VJP: those two are copied.
    assert _written_in_place(graph, logits, nodes, 10, 6) == [True, True, False, False]
    walked = _walked(lambda: fg.jacobian(logits, nodes))
    for node, array, expected in zip(nodes, got, walked):
        assert array.shape == (6, 10, node.dimension())
        np.testing.assert_array_equal(array, expected, err_msg=node.name)
        np.testing.assert_allclose(array, dense.jacobian(logits, node), rtol=1e-12, atol=1e-14,
                                   err_msg=node.name)


@pytest.mark.compiled
def test_gradients_added_up_in_place_are_copied(rng):
    with fg.Graph(dtype=np.float64, seed=1) as graph:
        x = fg.Variable((4, 1), trainable=False, name="x")
        z = fg.Variable((4, 1), trainable=False, name="z")
        products = [fg.ops.MatMul(fg.Variable((3, 4), init=True, name=name), node)
                    for name, node in [("A", x), ("B", x), ("C", z), ("D", z), ("E", z)]]
        total = products[0]
        for product in products[1:]:
            total = fg.ops.Add(total, product)
        squashed = fg.ops.Tanh(total)
        flat = fg.ops.Reshape(squashed, (1, 3))
        result = fg.ops.MatMul(flat, fg.Variable((3, 2), init=True, name="F"))
    x.set_value(rng.random((5, 4)))
    z.set_value(rng.random((5, 4)))
    nodes = [x, z]
    got = fg.jacobian(result, nodes)
    # x's two parts are added by one call, which writes the sum whole: in place. z's three
    # are added into the sum of the first two by a third call: copied.
    assert _written_in_place(graph, result, nodes, 2, 5) == [True, False]
    copied = _copied(result, nodes, 2, lambda node: (5, 2, 4))
    walked = _walked(lambda: fg.jacobian(result, nodes))
    for node, array, copy, walked_array in zip(nodes, got, copied, walked):
        np.testing.assert_array_equal(array, copy, err_msg=node.name)
        # (the compiled pass adds z's third part in its product, beta = 1: last bits differ)
        np.testing.assert_allclose(array, walked_array, rtol=1e-14, atol=1e-20)
        np.testing.assert_allclose(array, dense.jacobian(result, node), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(got[0], walked[0])
    # A reshape's gradient is its parent's memory: one call makes both, so both are copied.
    both = fg.jacobian(result, [squashed, flat])
    assert _written_in_place(graph, result, [squashed, flat], 2, 5) == [False, False]
    np.testing.assert_array_equal(both[0], both[1])
    assert not np.shares_memory(both[0], both[1])
    np.testing.assert_allclose(both[0], dense.jacobian(result, squashed), rtol=1e-12,
                               atol=1e-14)
    alone = fg.jacobian(result, flat)
    assert _written_in_place(graph, result, [flat], 2, 5) == [True]
    np.testing.assert_array_equal(alone, both[1])


@pytest.mark.compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_sample_gradients_copied_or_not_have_the_same_bits(dtype, rng):
    graph, x, _, loss, params = _network(dtype, rng)
    copied = fg.per_sample_gradients(loss, params)
    # Each weight's per-sample outer products are written in place; each bias's gradient
    # is the upstream that the products read: copied.
    assert _written_in_place(graph, loss, params, None, 6) == [True, False] * 3
    walked = _walked(lambda: fg.per_sample_gradients(loss, params))
    chunked = fg.per_sample_gradients(loss, params, chunk_size=4)
    views = fg.per_sample_gradients(loss, params, copy=False)
    for param, array, walked_array, chunk_array, view in zip(params, copied, walked, chunked,
                                                             views):
        assert array.shape == (6, *param.dim) and array.dtype == dtype
        np.testing.assert_array_equal(array, walked_array, err_msg=param.name)
        np.testing.assert_array_equal(array, view, err_msg=param.name)
        np.testing.assert_array_equal(chunk_array, _walked(
            lambda: fg.per_sample_gradients(loss, params, chunk_size=4))[params.index(param)])
        assert np.abs(array).max() > 0


def test_sole_output_is_one_whole_write_in_the_range_and_nothing_else():
    from fastgraph.kernels import program
    from fastgraph.kernels.elementwise import copy_rows, relu, sum_rows

    x = np.random.default_rng(0).random((4, 6))
    made, read, copied, summed, added = (np.empty(shape) for shape in [(4, 6)] * 3 + [(1, 6)] * 2)
    wide = np.empty((8, 6))
    with program.recording(np.float64) as calls:
        relu(x, made)  # 0: made whole, touched by nothing else
        relu(x, read)  # 1: made whole...
        copy_rows(read, copied)  # 2: ...and read
        sum_rows(x, summed, 0.0)  # 3: beta 0: made whole
        sum_rows(x, added, 1.0)  # 4: beta 1: added into
        relu(x, wide[:4])  # 5: half of a buffer
    compiled = program.Program(calls)
    for array, call, argument in [(made, 0, 1), (copied, 2, 1), (summed, 3, 1),
                                  (wide[:4], 5, 1)]:
        slot = compiled.sole_output(array, 0, 6)
        assert slot == compiled.code[call, 1] + program.INTS_PER_ARGUMENT * argument
        assert compiled.ints[slot] == array.ctypes.data
    assert compiled.sole_output(made, 1, 6) is None  # its writer is outside the range
    assert compiled.sole_output(read, 0, 6) is None  # a later call reads it
    assert compiled.sole_output(x, 0, 6) is None  # read, never written
    assert compiled.sole_output(added, 0, 6) is None  # beta 1 reads what was there
    assert compiled.sole_output(wide, 0, 6) is None  # the call writes half of it
    assert compiled.sole_output(np.empty((4, 6)), 0, 6) is None  # never passed
