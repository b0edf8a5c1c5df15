"""The fast engine against the article's engine, on the article's network and real MNIST."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.datasets import mnist as dataset
from tests.helpers import mnist_network


def test_mnist_gradients_agree_between_engines(mnist):
    x_train, y_train, _, _ = mnist
    graph, x, one_hot, _, _, loss = mnist_network(np.float64, seed=3)
    fast = fg.optimizer.Adam(graph, loss, 0.001)
    reference = fg.optimizer.Adam(graph, loss, 0.001, engine="jacobian")
    x.set_value(dataset.features(x_train[:32], np.float64))
    one_hot.set_value(dataset.one_hot(y_train[:32], dtype=np.float64))
    fast.one_step()
    reference.one_step()
    assert fast.samples == reference.samples == 32
    for param in fast.params:
        expected = reference.get_gradient(param)
        got = fast.get_gradient(param)
        assert got.shape == param.value.shape
        scale = np.abs(expected).max()
        assert scale > 0
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8 * scale, err_msg=param.name)


def test_one_batch_equals_the_article_feeding_one_sample_per_step(rng):
    """A batch of B in one one_step() == B one_step() calls of one sample each."""
    graph, x, one_hot, _, _, loss = mnist_network(np.float64, seed=1, hidden=(7,))
    features = rng.random((5, 784))
    labels = np.eye(10)[rng.integers(0, 10, 5)]
    batched = fg.optimizer.GradientDescent(graph, loss, 0.1)
    x.set_value(features)
    one_hot.set_value(labels)
    batched.one_step()
    article = fg.optimizer.GradientDescent(graph, loss, 0.1, engine="jacobian")
    for b in range(5):
        x.set_value(features[b].reshape(784, 1))
        one_hot.set_value(labels[b].reshape(10, 1))
        article.one_step()
    assert article.samples == 5
    for param in batched.params:
        np.testing.assert_allclose(
            batched.get_gradient(param), article.get_gradient(param), rtol=1e-9, atol=1e-14
        )


def test_jacobian_engine_restores_the_batch_it_was_given(rng):
    graph, x, one_hot, _, predict, loss = mnist_network(np.float64, hidden=(4,))
    reference = fg.optimizer.GradientDescent(graph, loss, 0.1, engine="jacobian")
    features = rng.random((3, 784))
    x.set_value(features)
    one_hot.set_value(np.eye(10)[[1, 2, 3]])
    reference.one_step()
    assert x.value.shape == (3, 784, 1)
    np.testing.assert_array_equal(x.value[:, :, 0], features)
    predict.forward()
    assert predict.value.shape == (3, 10, 1)


def test_backward_fills_the_articles_jacobi(rng):
    """node.backward(result): dense, per sample, (B, result dim, node dim)."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((2, 3))
        w.set_value(rng.normal(size=(2, 3)))
        y = fg.ops.Logistic(fg.ops.MatMul(w, x))
    features = rng.normal(size=(4, 3))
    x.set_value(features)
    jacobi = x.backward(y)
    assert jacobi is x.jacobi and jacobi.shape == (4, 2, 3)
    for b in range(4):
        s = 1 / (1 + np.exp(-(w.value @ features[b])))
        np.testing.assert_allclose(jacobi[b], (s * (1 - s))[:, None] * w.value, rtol=1e-12)
    graph.clear_jacobi()
    assert x.jacobi is None


def test_an_unknown_executor_is_named(monkeypatch):
    from fastgraph import engines

    monkeypatch.setenv("FASTGRAPH_EXECUTOR", "fast")
    with pytest.raises(ValueError, match="FASTGRAPH_EXECUTOR='fast': choose compiled or python"):
        engines._executor()
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", " Python ")
    assert engines._executor() is engines.vjp
    monkeypatch.delenv("FASTGRAPH_EXECUTOR")
    assert engines._executor() is (engines.vjp if engines.blas.BACKEND == "numpy"
                                   else engines.compiled)
