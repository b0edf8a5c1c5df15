"""Per-sample Jacobians and gradients from batched VJPs, against the dense engine, finite
differences and the batch gradient."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.datasets import mnist as dataset
from fastgraph.engines import jacobian as dense
from tests.helpers import mnist_network, with_executor
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


@pytest.mark.parametrize("name, batched", [case for case in cases()
                                           if not any(case.values[1])])
def test_every_operator_of_no_batch_axis_on_a_per_sample_path(name, batched, rng):
    """Each operator on parameters only, times a batched input: the per-sample derivatives
    with respect to its parents pass through it (they were refused: "no batch axis"), each
    sample's row through the operator's one row of values."""
    op, parents, _ = build(name, batched, rng)
    graph = op.graph
    with graph:
        x = fg.Variable((1, 2), trainable=False, name="x")
        flat = op if op.dim[1] == 1 else fg.ops.Reshape(op, (op.dimension(), 1))
        out = fg.ops.MatMul(flat, x)  # (n, 2) a sample: each sample scales op differently
        loss = fg.ops.Dot(out, out)
    x.set_value(rng.normal(size=(3, 1, 2)))
    trainable = [parent for parent in parents if parent.trainable]
    for parent in trainable:
        expected = dense.jacobian(out, parent)
        np.testing.assert_allclose(fg.jacobian(out, parent), expected, rtol=1e-9, atol=1e-12,
                                   err_msg=parent.name)
        walked = with_executor("python", lambda parent=parent: fg.jacobian(out, parent))
        np.testing.assert_allclose(walked, expected, rtol=1e-9, atol=1e-12, err_msg=parent.name)
    if trainable:
        per_sample = fg.per_sample_gradients(loss, trainable)
        batch = x.value.copy()
        for b in range(3):  # each sample alone, through the dense engine
            x.set_value(batch[b:b + 1])
            for parent, got in zip(trainable, per_sample):
                np.testing.assert_allclose(got[b], dense.jacobian(loss, parent).reshape(
                    parent.dim), rtol=1e-9, atol=1e-12, err_msg=f"{parent.name}, sample {b}")


def test_a_weight_used_by_a_node_of_no_batch_axis_has_per_sample_derivatives(rng):
    """``W @ W @ x``: W reaches the output twice, once through ``W @ W`` (no batch axis).
    The article's ``W.backward(o)`` and ``fg.jacobian`` give the dense engine's numbers, and
    each sample's gradient is the gradient of that sample alone."""
    with fg.Graph(dtype=np.float64):
        x = fg.Variable((3, 1), trainable=False, name="x")
        w = fg.Variable((3, 3), name="W")
        w.set_value(rng.normal(size=(3, 3)))
        o = fg.ops.MatMul(fg.ops.Tanh(fg.ops.MatMul(w, w)), x, name="o")
        loss = fg.ops.Dot(o, o)
    batch = rng.normal(size=(4, 3, 1))
    x.set_value(batch)
    expected = dense.jacobian(o, w)
    np.testing.assert_allclose(w.backward(o), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.backward(o, engine="jacobian"), expected, rtol=1e-10)
    gradients = fg.per_sample_gradients(loss, [w])[0]
    np.testing.assert_allclose(gradients.sum(axis=0), dense.jacobian(loss, w).sum(
        axis=0).reshape(3, 3), rtol=1e-10)
    for b in range(4):
        x.set_value(batch[b])  # the article's one sample: W.jacobi is its (3, 9) matrix
        w.backward(o)
        np.testing.assert_allclose(w.jacobi, expected[b], rtol=1e-10, atol=1e-12)
        assert isinstance(w.jacobi, np.matrix)
        optimizer = fg.optimizer.GradientDescent(w.graph, loss, 0.1)
        optimizer.one_step()
        np.testing.assert_allclose(optimizer.get_gradient(w), gradients[b], rtol=1e-10)


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


@pytest.mark.parametrize("executor", ["compiled", "python"])
def test_mnist_network_jacobian_in_float32(mnist, monkeypatch, executor):
    """In float32 (with MKL), the first layer's product of a per-sample pass skips each
    sample's inactive units (``kernels.blas.grouped_product``, which MatMul takes for 10
    rows a sample and 78,400 weights): the article's dense engine's Jacobian, on either
    executor; a sample whose first layer is all inactive gets zeros. And MatMul takes the
    dense product where the skipping one is not asked for."""
    from fastgraph.kernels import blas
    from fastgraph.ops.arithmetic import MatMul

    x_train, y_train, _, _ = mnist
    graph, x, one_hot, logits, _, _ = mnist_network(np.float32, seed=2)
    features = dataset.features(x_train[:8], np.float32)
    w1, b1 = [n.value for n in graph.nodes if isinstance(n, fg.Variable) and n.trainable][:2]
    solved = np.linalg.lstsq(w1.astype(np.float64), -1 - b1.ravel().astype(np.float64),
                             rcond=None)[0]
    features[3] = solved  # (every unit of layer 1 inactive for sample 3: w1 x + b1 = -1)
    x.set_value(features)
    one_hot.set_value(dataset.one_hot(y_train[:8], dtype=np.float32))
    grouped = []
    real = MatMul._grouped
    monkeypatch.setattr(MatMul, "_grouped", lambda self, upstream: grouped.append(
        real(self, upstream)) or grouped[-1])
    got = with_executor(executor, lambda: fg.jacobian(logits, x))
    assert grouped == [False, False, blas.BACKEND == "mkl"]  # (layers 3, 2, 1)
    wanted = dense.jacobian(logits, x)
    scale = np.abs(wanted).max()
    np.testing.assert_allclose(got, wanted, rtol=0, atol=2e-6 * scale)
    assert (got[3] == 0).all() and np.abs(got).max() > 0


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
