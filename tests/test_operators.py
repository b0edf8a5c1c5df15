"""Every operator, every parent: batched VJP == sum of upstream_b @ dense Jacobian_b == finite
differences, in float64, on random shapes and values, with batched and unbatched parents."""

import itertools

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.ops import loss

BATCH = 3
EPS = 1e-6


def away_from_kinks(rng, shape):
    """Values at least 0.1 away from 0, where ReLU, Step and the perceptron loss bend."""
    u = rng.normal(size=shape)
    return np.sign(u) * (0.1 + np.abs(u))


def distribution(rng, shape):
    """Per-sample label distributions (CrossEntropyWithSoftMax takes one-hot or these)."""
    z = rng.random(shape)
    axes = tuple(range(len(shape) - 2, len(shape)))
    return z / z.sum(axis=axes, keepdims=True)


# name: (constructor, dims(rng) -> per-parent (rows, cols), value generators or None)
def _dims(*fixed):
    return lambda rng: fixed


def _square(rng):
    n = int(rng.integers(2, 5))
    return ((n, int(rng.integers(1, 3))),)


def _matmul_dims(rng):
    m, k, n = (int(v) for v in rng.integers(1, 5, size=3))
    return ((m, k), (k, n))


def _matvec_dims(rng):
    m, k = (int(v) for v in rng.integers(1, 6, size=2))
    return ((m, k), (k, 1))


def _conv_dims(rng):
    image = tuple(int(v) for v in rng.integers(3, 6, size=2))
    return (image, tuple(int(v) for v in rng.integers(1, 4, size=2)))


def _matmul_dims_first(rng):
    return _matmul_dims(rng)[:1]


def distinct(rng, shape):
    """Values without ties, so a max pooling's arg max stays put under finite differences."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)


def _pair(rng):
    shape = (int(rng.integers(1, 5)), int(rng.integers(1, 3)))
    return (shape, shape)


OPERATORS = {
    "Add": (fg.ops.Add, _pair, None),
    "Add3": (fg.ops.Add, lambda rng: _pair(rng)[:1] * 3, None),
    "MatMul": (fg.ops.MatMul, _matmul_dims, None),
    "MatMul-vectors": (fg.ops.MatMul, _matvec_dims, None),
    "Dot": (fg.ops.Dot, _pair, None),
    "Multiply": (fg.ops.Multiply, _pair, None),
    "ScalarMultiply": (fg.ops.ScalarMultiply, lambda rng: ((1, 1), _pair(rng)[0]), None),
    "Reshape": (lambda a: fg.ops.Reshape(a, shape=(3, 2)), _dims((2, 3)), None),
    "Reshape-column": (lambda a: fg.ops.Reshape(a, shape=(6, 1)), _dims((3, 2)), None),
    "Concat": (fg.ops.Concat, _dims((3, 1), (2, 2)), None),
    "Convolve": (fg.ops.Convolve, _conv_dims, None),
    "MaxPooling": (lambda a: fg.ops.MaxPooling(a, size=(3, 2), stride=(2, 2)), _dims((5, 4)),
                   (distinct,)),
    "Conv2D": (lambda x, w, b: fg.ops.Conv2D(x, w, b, image_shape=(4, 5), kernel_size=3,
                                             stride=(1, 2), padding=1),
               _dims((20, 2), (3, 18), (3, 1)), None),
    "MaxPool2D": (lambda a: fg.ops.MaxPool2D(a, (5, 4), 2, padding=1), _dims((20, 2)),
                  (distinct,)),
    "AvgPool2D": (lambda a: fg.ops.AvgPool2D(a, (5, 4), 3, stride=2, padding=1),
                  _dims((20, 2)), None),
    "Transpose": (fg.ops.Transpose, _matmul_dims_first, None),
    "Welding": (fg.ops.Welding, _square, None),
    "AddScalar": (fg.ops.AddScalar, lambda rng: ((int(rng.integers(1, 4)), 2), (1, 1)), None),
    "Logistic": (fg.ops.Logistic, _square, None),
    "ReLU": (fg.ops.ReLU, _square, None),
    "LeakyReLU": (lambda a: fg.ops.LeakyReLU(a, slope=0.2), _square, None),
    "Tanh": (fg.ops.Tanh, _square, None),
    "SoftMax": (fg.ops.SoftMax, _square, None),
    "Step": (fg.ops.Step, _square, None),
    "CrossEntropyWithSoftMax": (
        loss.CrossEntropyWithSoftMax,
        lambda rng: ((5, 1), (5, 1)),
        (None, distribution),
    ),
    "LogLoss": (loss.LogLoss, _square, None),
    "PerceptionLoss": (loss.PerceptionLoss, _square, None),
    "MeanSquaredError": (loss.MeanSquaredError, _pair, None),
}


# Slots that take parameters only (no batch axis): Conv2D's weights and bias.
PARAMETER_SLOTS = {"Conv2D": (1, 2)}
# Slots that take batched nodes only: the article welds the steps of a sequence.
BATCHED_SLOTS = {"Welding": (0,)}


def cases():
    for name, (_make, dims, _generators) in OPERATORS.items():
        arity = len(dims(np.random.default_rng(0)))
        for batched in itertools.product([True, False], repeat=arity):
            if any(batched[slot] for slot in PARAMETER_SLOTS.get(name, ())) or not all(
                    batched[slot] for slot in BATCHED_SLOTS.get(name, ())):
                continue
            yield pytest.param(
                name, batched, id=f"{name}-{''.join('B' if b else 'P' for b in batched)}"
            )


def build(name, batched, rng):
    make, dims, generators = OPERATORS[name]
    generators = generators or (None,) * len(batched)
    graph = fg.Graph(dtype=np.float64)
    parents, values = [], []
    for dim, is_batched, generate in zip(dims(rng), batched, generators):
        node = fg.Variable(dim, trainable=not is_batched, graph=graph)
        shape = (BATCH, *dim) if is_batched else dim
        value = (generate or away_from_kinks)(rng, shape)
        node.set_value(value)
        parents.append(node)
        values.append(value)
    with graph:
        op = make(*parents)
    return op, parents, values


def objective(op, upstream):
    op.forward()
    return float((op.flat * upstream).sum())


def set_sample(parents, values, b):
    for node, value in zip(parents, values):
        node.set_value(value[b : b + 1] if node.batched else value)


def set_all(parents, values):
    for node, value in zip(parents, values):
        node.set_value(value)


@pytest.mark.parametrize("name, batched", list(cases()))
def test_vjp_equals_dense_jacobian_and_finite_differences(name, batched, rng):
    """Per sample, ``vjp`` row b == upstream_b @ dense Jacobian_b; for a parent shared by the
    batch, ``vjp_summed`` == the sum of those rows; and the gradient of the parent's value
    == central differences."""
    for _ in range(3):  # three random shapes and values per case
        op, parents, values = build(name, batched, rng)
        op.forward()
        upstream = rng.normal(size=op.flat.shape)
        for slot, parent in enumerate(parents):
            set_all(parents, values)
            op.forward()
            per_sample = op.vjp(slot, upstream).copy()
            assert per_sample.shape == (op.flat.shape[0], parent.dimension())
            summed = op.batched and not parent.batched
            vjp = op.vjp_summed(slot, upstream).copy() if summed else per_sample
            assert vjp.shape == parent.flat.shape

            dense = np.zeros(per_sample.shape)
            for b in range(BATCH if op.batched else 1):
                set_sample(parents, values, b)
                op.forward()
                dense[b] = upstream[b] @ op.get_jacobi(parent)

            set_all(parents, values)
            numeric = np.zeros(vjp.shape)
            for index in np.ndindex(*vjp.shape):
                sides = []
                for step in (EPS, -EPS):
                    set_all(parents, values)
                    moved = parent.flat.copy()
                    moved[index] += step
                    parent.set_value(moved.reshape(parent.value.shape))
                    sides.append(objective(op, upstream))
                numeric[index] = (sides[0] - sides[1]) / (2 * EPS)

            message = f"{name} slot {slot}"
            np.testing.assert_allclose(per_sample, dense, rtol=1e-10, atol=1e-12,
                                       err_msg=message)
            if summed:
                np.testing.assert_allclose(vjp, dense.sum(axis=0, keepdims=True), rtol=1e-10,
                                           atol=1e-12, err_msg=message)
            np.testing.assert_allclose(vjp, numeric, rtol=1e-5, atol=1e-7, err_msg=message)


def test_every_public_operator_is_checked():
    public = set(fg.ops.__all__) - {"loss", "metrics", "Operator"} | {  # (the base class)
        "CrossEntropyWithSoftMax",
        "LogLoss",
        "PerceptionLoss",
        "MeanSquaredError",
    }
    checked = {name.split("-")[0].rstrip("3") for name in OPERATORS}
    assert public <= checked, public - checked


def test_a_parent_in_two_slots_gets_both_contributions(rng):
    """MatMul(a, a): d sum(a @ a) / da is not twice either slot's VJP."""
    with fg.Graph(dtype=np.float64) as g:
        a = fg.Variable((3, 3))
        a.set_value(rng.normal(size=(3, 3)))
        target = fg.ops.MatMul(a, a)
        opt = fg.optimizer.GradientDescent(g, target, 0.1)
        ref = fg.optimizer.GradientDescent(g, target, 0.1, engine="jacobian")
    opt.one_step()
    ref.one_step()
    value = a.value.copy()
    ones = np.ones((3, 3))
    expected = ones @ value.T + value.T @ ones  # d sum(A A) / dA
    np.testing.assert_allclose(opt.get_gradient(a), expected, rtol=1e-12)
    np.testing.assert_allclose(ref.get_gradient(a), expected, rtol=1e-12)


@pytest.mark.parametrize("make, values, derivative", [
    (fg.ops.Step, [1, 1, 0], [0, 0, 0]),
    (fg.ops.ReLU, [0.5, 0, 0], [1, 0, 0]),
    (lambda x: fg.ops.LeakyReLU(x, 0.1), [0.5, 0, -0.05], [1, 0.1, 0.1]),
    (loss.PerceptionLoss, [0, 0, 0.5], [0, 0, -1]),
])
def test_piecewise_operators_at_their_kinks(make, values, derivative):
    """At exactly 0 each takes the side that the article's operator takes (Step(0) = 1,
    ReLU's and the perceptron loss's derivatives 0), on every path: forward, VJP and dense
    Jacobian. The derivative tests keep away from the kinks, so only this one pins them."""
    graph = fg.Graph(dtype=np.float64)
    x = fg.Variable((3, 1), trainable=False, graph=graph)
    x.set_value(np.array([[0.5], [0.0], [-0.5]]))
    with graph:
        op = make(x)
    op.forward()
    np.testing.assert_array_equal(op.flat, [values])
    np.testing.assert_array_equal(op.vjp(0, np.ones((1, 3))), [derivative])
    np.testing.assert_array_equal(np.diag(op.get_jacobi(x)), derivative)


@pytest.mark.parametrize("engine", ["vjp", "python", "jacobian"])
def test_cross_entropys_gradient_has_the_labels_sum(engine):
    """Labels are accepted when they sum to 1 within 1e-3; the gradient was softmax - y on
    every path (they agreed with each other), where the loss computed has softmax * sum(y)
    - y, as torch and finite differences give (helper hB's check against PyTorch)."""
    z, y = np.array([2.0, -1.0, 0.5]), np.array([0.3, 0.3, 0.4009])
    with fg.Graph(dtype=np.float64) as graph:
        logits = fg.Variable((3, 1))
        labels = fg.Variable((3, 1), trainable=False)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, labels)
    logits.set_value(z.reshape(3, 1))
    labels.set_value(y.reshape(1, 3, 1))
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1, engine=engine)
    optimizer.one_step()
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(optimizer.get_gradient(logits).ravel(), probs * y.sum() - y,
                               rtol=1e-12)
    step = 1e-6  # and finite differences of the loss itself
    numeric = [(_loss_at(loss, logits, z + step * e) - _loss_at(loss, logits, z - step * e))
               / (2 * step) for e in np.eye(3)]
    np.testing.assert_allclose(probs * y.sum() - y, numeric, rtol=1e-6)


def _loss_at(loss, logits, z):
    logits.set_value(z.reshape(3, 1))
    loss.forward()
    return float(np.asarray(loss.value).sum())
