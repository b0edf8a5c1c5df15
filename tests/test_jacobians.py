"""Per-sample Jacobians and gradients from batched VJPs, against the dense engine, finite
differences and the batch gradient."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.datasets import mnist as dataset
from fastgraph.engines import jacobian as dense
from tests.helpers import mnist_network
from tests.test_operators import build, cases


@pytest.mark.parametrize("name, batched", list(cases()))
def test_every_operator_agrees_with_the_dense_engine(name, batched, rng):
    op, parents, _ = build(name, batched, rng)
    for parent in parents:
        expected = dense.jacobian(op, parent)
        got = fg.jacobian(op, parent)
        assert got.shape == expected.shape
        shape = (op.dimension(), parent.dimension())
        assert got.shape == ((3, *shape) if op.batched else shape)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_mnist_network_inputs_and_parameters(mnist):
    x_train, y_train, _, _ = mnist
    graph, x, one_hot, logits, _, loss = mnist_network(np.float64, seed=2)
    x.set_value(dataset.features(x_train[:4], np.float64))
    one_hot.set_value(dataset.one_hot(y_train[:4], dtype=np.float64))
    params = [n for n in graph.nodes if isinstance(n, fg.Variable) and n.trainable]
    got = fg.jacobian(logits, [x, *params])
    for node, jacobian in zip([x, *params], got):
        assert jacobian.shape == (4, 10, node.dimension())
        np.testing.assert_allclose(jacobian, dense.jacobian(logits, node), rtol=1e-10,
                                   atol=1e-12, err_msg=node.name)
    assert np.abs(got[0]).max() > 0


def test_finite_differences(rng):
    graph, x, _, logits, _, _ = mnist_network(np.float64, seed=5, hidden=(6,), activation="Tanh")
    features = rng.random((3, 784))
    x.set_value(features)
    jacobian = fg.jacobian(logits, x)
    for b, column in [(0, 100), (2, 400), (1, 783)]:
        moved = []
        for step in (1e-6, -1e-6):
            shifted = features.copy()
            shifted[b, column] += step
            x.set_value(shifted)
            logits.forward()
            moved.append(logits.value[b, :, 0].copy())
        np.testing.assert_allclose(jacobian[b, :, column], (moved[0] - moved[1]) / 2e-6,
                                   rtol=1e-6, atol=1e-9)


def test_per_sample_gradients_sum_to_the_batch_gradient(mnist):
    x_train, y_train, _, _ = mnist
    graph, x, one_hot, _, _, loss = mnist_network(np.float64, seed=3)
    x.set_value(dataset.features(x_train[:16], np.float64))
    one_hot.set_value(dataset.one_hot(y_train[:16], dtype=np.float64))
    params = [n for n in graph.nodes if isinstance(n, fg.Variable) and n.trainable]
    per_sample = fg.per_sample_gradients(loss, params)
    before = loss.value.copy()
    chunked = fg.per_sample_gradients(loss, params, chunk_size=5)
    np.testing.assert_array_equal(loss.value, before)  # the batch's values back
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    optimizer.one_step()
    for param, gradients, again in zip(params, per_sample, chunked):
        assert gradients.shape == (16, *param.dim)
        np.testing.assert_allclose(gradients.mean(axis=0), optimizer.get_gradient(param),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(gradients, again, rtol=1e-12, atol=1e-15)  # GEMM blocking
    # sample 7's gradient is the gradient of a batch holding sample 7 alone
    x.set_value(dataset.features(x_train[7:8], np.float64))
    one_hot.set_value(dataset.one_hot(y_train[7:8], dtype=np.float64))
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    optimizer.one_step()
    np.testing.assert_allclose(per_sample[0][7], optimizer.get_gradient(params[0]), rtol=1e-10,
                               atol=1e-14)


def test_backward_under_both_engines(rng):
    graph, x, _, logits, predict, _ = mnist_network(np.float64, seed=1, hidden=(5,))
    x.set_value(rng.random((3, 784)))
    w = graph.nodes[2]
    fast = w.backward(predict).copy()
    assert w.jacobi.shape == (3, 10, w.dimension())
    np.testing.assert_allclose(fast, w.backward(predict, engine="jacobian"), rtol=1e-10,
                               atol=1e-13)
    with pytest.raises(ValueError, match="unknown engine 'dense'"):
        w.backward(predict, engine="dense")


def test_chunks_and_lists_give_the_same_numbers(rng):
    graph, x, _, logits, _, _ = mnist_network(np.float64, seed=1, hidden=(5,))
    x.set_value(rng.random((7, 784)))
    logits.forward()
    before = logits.value.copy()
    whole = fg.jacobian(logits, x)
    np.testing.assert_allclose(fg.jacobian(logits, x, chunk_size=3), whole, rtol=1e-12)
    # after passes over chunks, the batch and the values computed on it are back
    assert x.value.shape == (7, 784, 1) and logits.value.shape == (7, 10, 1)
    np.testing.assert_array_equal(logits.value, before)
    (listed,) = fg.jacobian(logits, [x], chunk_size=7)
    np.testing.assert_allclose(listed, whole, rtol=1e-12)


def test_clear_errors():
    graph, x, one_hot, logits, predict, loss = mnist_network(np.float64, hidden=(3,))
    with pytest.raises(ValueError, match=r"x has no value: call x.set_value\(\)"):
        fg.jacobian(logits, x)
    x.set_value(np.zeros((2, 784)))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        fg.jacobian(logits, x, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        fg.per_sample_gradients(loss, [x], chunk_size=-1)
    with graph:
        stray = fg.Variable((2, 1), trainable=False, name="stray")
    with pytest.raises(ValueError, match="jacobian: Add:10 does not depend on stray"):
        fg.jacobian(logits, stray)
    with pytest.raises(ValueError, match="does not depend on one_hot"):
        fg.jacobian(predict, one_hot)
    with fg.Graph(dtype=np.float64):
        w = fg.Variable((2, 2), name="W")
        w.set_value(np.eye(2))
        constant = fg.ops.Tanh(w, name="squashed")
        with pytest.raises(ValueError, match="has no batch axis"):
            fg.per_sample_gradients(constant, [w])
        v = fg.Variable((2, 1), trainable=False, name="v")
        product = fg.ops.MatMul(constant, v)
    v.set_value(np.ones((3, 2)))
    with pytest.raises(ValueError, match="would pass through squashed, which has no batch"):
        fg.jacobian(product, w)
    np.testing.assert_allclose(fg.jacobian(product, constant), dense.jacobian(product, constant))


def test_per_sample_gradients_without_copy_are_the_same_numbers(rng):
    graph, x, one_hot, _, _, loss = mnist_network(np.float64, seed=4, hidden=(6,))
    x.set_value(rng.random((5, 784)))
    one_hot.set_value(np.eye(10)[[1, 2, 3, 4, 5]])
    params = [n for n in graph.nodes if isinstance(n, fg.Variable) and n.trainable]
    copied = fg.per_sample_gradients(loss, params)
    views = fg.per_sample_gradients(loss, params, copy=False)
    for a, b in zip(copied, views):
        np.testing.assert_array_equal(a, b)
