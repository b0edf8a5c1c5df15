"""Every optimizer's 50-step trajectory against a plain NumPy model and update rule."""

import numpy as np
import pytest

import fastgraph as fg
from tests.helpers import RULE_OPTIONS, mnist_network

STEPS = 50


def numpy_rule(name, options):
    """The rules as torch.optim documents them, on plain arrays, with their state."""
    state = {}
    lr = options["learning_rate"]

    def step(key, w, g, t):
        s = state.setdefault(key, {"a": np.zeros_like(w), "b": np.zeros_like(w)})
        if name == "GradientDescent":
            return w - lr * g
        if name == "Momentum":
            s["a"] = options["momentum"] * s["a"] + g
            return w - lr * s["a"]
        if name == "AdaGrad":
            s["a"] = s["a"] + g * g
            return w - lr * g / (np.sqrt(s["a"]) + options["eps"])
        if name == "RMSProp":
            s["a"] = options["beta"] * s["a"] + (1 - options["beta"]) * g * g
            return w - lr * g / (np.sqrt(s["a"]) + options["eps"])
        b1, b2 = options["beta_1"], options["beta_2"]
        s["a"] = b1 * s["a"] + (1 - b1) * g
        s["b"] = b2 * s["b"] + (1 - b2) * g * g
        m_hat, v_hat = s["a"] / (1 - b1**t), s["b"] / (1 - b2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + options["eps"])

    return step


RULES = RULE_OPTIONS


@pytest.mark.parametrize("engine", ["vjp", "jacobian"])
@pytest.mark.parametrize("name", list(RULES))
def test_trajectory_matches_numpy(name, engine, rng):
    """Linear regression, MSE, 50 updates; some updates accumulate two batches."""
    options = RULES[name]
    features, targets = rng.normal(size=(12, 4)), rng.normal(size=(12, 2))
    w0, b0 = rng.normal(size=(2, 4)), rng.normal(size=(2, 1))
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((4, 1), trainable=False)
        t = fg.Variable((2, 1), trainable=False)
        w, b = fg.Variable((2, 4)), fg.Variable((2, 1))
        w.set_value(w0)
        b.set_value(b0)
        loss = fg.ops.loss.MeanSquaredError(fg.ops.Add(fg.ops.MatMul(w, x), b), t)
        optimizer = getattr(fg.optimizer, name)(graph, loss, engine=engine, **options)
    rule = numpy_rule(name, options)
    ref_w, ref_b = w0.copy(), b0.copy()
    for step in range(1, STEPS + 1):
        batches = (
            [slice(0, 6), slice(6, 12)] if step % 3 == 0 else [slice(step % 12, step % 12 + 5)]
        )
        rows = np.concatenate([np.arange(12)[s] for s in batches])
        for s in batches:
            x.set_value(features[s])
            t.set_value(targets[s])
            optimizer.one_step()
        residual = ref_w @ features[rows].T + ref_b - targets[rows].T  # (2, n)
        grad_w = 2 / 2 * residual @ features[rows] / len(rows)
        grad_b = 2 / 2 * residual.sum(axis=1, keepdims=True) / len(rows)
        np.testing.assert_allclose(optimizer.get_gradient(w), grad_w, rtol=1e-10, atol=1e-12)
        optimizer.update()
        ref_w, ref_b = rule("w", ref_w, grad_w, step), rule("b", ref_b, grad_b, step)
        np.testing.assert_allclose(w.value, ref_w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b.value, ref_b, rtol=1e-10, atol=1e-12)
    assert np.abs(w.value - w0).max() > 1e-3  # it moved


def test_defaults_are_torch_defaults():
    with fg.Graph() as graph:
        w = fg.Variable((1, 1), init=True)
        target = fg.ops.Add(w)
        adam = fg.optimizer.Adam(graph, target)
        rms = fg.optimizer.RMSProp(graph, target)
        ada = fg.optimizer.AdaGrad(graph, target)
        mom = fg.optimizer.Momentum(graph, target)
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.eps) == (0.001, 0.9, 0.999, 1e-8)
    assert (rms.learning_rate, rms.beta, rms.eps) == (0.01, 0.99, 1e-8)
    assert (ada.learning_rate, ada.eps) == (0.01, 1e-10)
    assert (mom.learning_rate, mom.momentum) == (0.01, 0.9)


def test_update_invalidates_values_downstream(rng):
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False)
        w = fg.Variable((1, 2))
        w.set_value([[1.0, 2.0]])
        y = fg.ops.MatMul(w, x)
        optimizer = fg.optimizer.GradientDescent(graph, y, 0.5)
    x.set_value(np.array([[1.0, 1.0]]))
    optimizer.one_step()
    assert y.value[0, 0, 0] == 3.0
    optimizer.update()  # w -= 0.5 * x
    assert y.value[0, 0, 0] == 3.0  # still the value the update was computed from
    y.forward()
    assert y.value[0, 0, 0] == 2.0


def test_gradients_survive_another_backward_before_update(rng):
    """The optimizer reads the engine's gradient arrays in place until another backward
    pass on the graph would overwrite them; then it copies them first."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((2, 3))
        w.set_value(rng.normal(size=(2, 3)))
        h = fg.ops.MatMul(w, x)
        first = fg.optimizer.GradientDescent(graph, fg.ops.Logistic(h), 0.1)
        second = fg.optimizer.GradientDescent(graph, fg.ops.Tanh(h), 0.1)
    x.set_value(rng.normal(size=(4, 3)))
    first.one_step()
    expected = first.get_gradient(w).copy()
    second.one_step()  # overwrites the MatMul's gradient buffers
    assert not np.allclose(second.get_gradient(w), expected)
    np.testing.assert_array_equal(first.get_gradient(w), expected)
    first.one_step()  # accumulates onto its own copy now
    np.testing.assert_allclose(first.get_gradient(w), expected, rtol=1e-12)
    before = w.value.copy()
    first.update()
    np.testing.assert_allclose(w.value, before - 0.1 * expected, rtol=1e-12)


def test_gradient_sums_are_views_of_one_contiguous_buffer(rng):
    """What data-parallel training all-reduces in place: every sum, then the spare slots
    (the sample count, the settings' fingerprint, what the rank does: six)."""
    graph, x, one_hot, _, _, loss = mnist_network(np.float64, seed=2, hidden=(5,))
    optimizer = fg.optimizer.Momentum(graph, loss, 0.1)
    x.set_value(rng.random((3, 784)))
    one_hot.set_value(np.eye(10)[[1, 2, 3]])
    optimizer.one_step()
    sums, buffer = optimizer.gradient_sums, optimizer.gradient_buffer
    assert fg.optimizer.SPARE == 6
    assert buffer.size == sum(param.flat.size for param in optimizer.params) + 6
    assert all(np.shares_memory(total, buffer) for total in sums)
    np.testing.assert_array_equal(np.concatenate([total.ravel() for total in sums]),
                                  buffer[:-6])
    before = [optimizer.get_gradient(param) for param in optimizer.params]
    buffer[:-6] *= 2  # the buffer is what get_gradient and update() read
    for param, gradient in zip(optimizer.params, before):
        np.testing.assert_allclose(optimizer.get_gradient(param), 2 * gradient)


@pytest.mark.parametrize("name", list(RULE_OPTIONS))
def test_an_optimizer_is_not_copied_or_pickled(name, rng):
    """copy.copy made a twin that added into the same gradient sums (the two one_step()s of
    a copy and its original summed into one accumulation); deepcopy and pickle failed in the
    graph's words. Each refuses in the optimizer's own, and the original still trains."""
    import copy
    import pickle

    graph, x, one_hot, _, _, loss = mnist_network(hidden=(8,))
    optimizer = getattr(fg.optimizer, name)(graph, loss, 0.01)
    x.set_value(rng.random((4, 784, 1)))
    one_hot.set_value(np.eye(10)[[1, 2, 3, 4]].reshape(4, 10, 1))
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match=rf"^a fastgraph {name} optimizer is not copied or "
                                            rf"pickled \(.*make another with {name}\(graph, "):
            attempt(optimizer)
    optimizer.one_step()
    assert optimizer.samples == 4
    optimizer.update()
