"""NaN in, NaN out: no operator, kernel, loss, trainer or command turns NaN into a number.

Generated inputs (hypothesis) put NaN at random places in random batches and compare where
NaN comes out with a NumPy reference that propagates it; the trainer and the command line
must say so when a run or a model is not finite.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastgraph as fg
from fastgraph.cli import main
from fastgraph.ops import loss
from fastgraph.trainer import SimpleTrainer, TrainingDiverged

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
finite_or_nan = st.one_of(st.floats(-10, 10), st.just(np.nan))


def batches(shape_strategy):
    """Float64 batches ``(B, rows, cols)`` with NaN sprinkled in."""
    return shape_strategy.flatmap(lambda shape: arrays(np.float64, shape, elements=finite_or_nan))


def sample_shape(rows=(1, 4), cols=(1, 2)):
    return st.tuples(st.integers(1, 3), st.integers(*rows), st.integers(*cols))


def softmax_rows(a):
    z = a.reshape(len(a), -1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def whole_sample(a):
    """NaN for every sample that holds one (a reduction over the sample)."""
    return np.isnan(a.reshape(len(a), -1)).any(axis=1)


# name: (build(inputs) -> node, reference(values) -> array whose NaN are the expected NaN)
ELEMENTWISE = {
    "ReLU": (fg.ops.ReLU, lambda a: np.maximum(a, 0)),
    "LeakyReLU": (lambda a: fg.ops.LeakyReLU(a, slope=0.2), lambda a: np.where(a > 0, a, a / 5)),
    "Logistic": (fg.ops.Logistic, lambda a: 1 / (1 + np.exp(-a))),
    "Tanh": (fg.ops.Tanh, np.tanh),
    "Step": (fg.ops.Step, lambda a: a * 0),
    "LogLoss": (loss.LogLoss, lambda a: np.logaddexp(0, -a)),
    "PerceptionLoss": (loss.PerceptionLoss, lambda a: np.maximum(-a, 0)),
}


def build_inputs(graph, values):
    nodes = []
    for value in values:
        node = fg.Variable(value.shape[1:], trainable=False, graph=graph)
        node.set_value(value)
        nodes.append(node)
    return nodes


def check_elementwise(name, data):
    make, reference = ELEMENTWISE[name]
    a = data.draw(batches(sample_shape()))
    graph = fg.Graph(dtype=np.float64)
    (x,) = build_inputs(graph, [a])
    with graph:
        y = make(x)
    y.forward()
    np.testing.assert_array_equal(np.isnan(y.value), np.isnan(reference(a)))
    jacobian = fg.jacobian(y, x)  # (B, n, n): column j is NaN exactly where x_j is NaN
    flat_nan = np.isnan(a.reshape(len(a), -1))
    expected = np.broadcast_to(flat_nan[:, None, :], jacobian.shape)
    np.testing.assert_array_equal(np.isnan(jacobian), expected)


def check_softmax(data):
    a = data.draw(batches(sample_shape()))
    graph = fg.Graph(dtype=np.float64)
    (x,) = build_inputs(graph, [a])
    with graph:
        y = fg.ops.SoftMax(x)
    y.forward()
    np.testing.assert_array_equal(np.isnan(y.flat), np.isnan(softmax_rows(a)))
    jacobian = fg.jacobian(y, x)
    np.testing.assert_array_equal(np.isnan(jacobian).all(axis=(1, 2)), whole_sample(a))
    np.testing.assert_array_equal(np.isnan(jacobian).any(axis=(1, 2)), whole_sample(a))


PAIRS = {
    "Add": (fg.ops.Add, np.add),
    "Multiply": (fg.ops.Multiply, np.multiply),
    "Dot": (fg.ops.Dot, lambda a, b: (a * b).sum(axis=(1, 2), keepdims=True)),
    "MeanSquaredError": (loss.MeanSquaredError,
                         lambda a, b: ((a - b) ** 2).mean(axis=(1, 2), keepdims=True)),
}


def check_pair(name, data):
    shape = data.draw(sample_shape())
    a = data.draw(arrays(np.float64, shape, elements=finite_or_nan))
    b = data.draw(arrays(np.float64, shape, elements=finite_or_nan))
    make, reference = PAIRS[name]
    graph = fg.Graph(dtype=np.float64)
    nodes = build_inputs(graph, [a, b])
    with graph:
        y = make(*nodes)
    y.forward()
    np.testing.assert_array_equal(np.isnan(y.value), np.isnan(reference(a, b)))


def check_matmul_and_scalar_multiply(data):
    batch, m, k, n = (data.draw(st.integers(1, 4)) for _ in range(4))
    w = data.draw(arrays(np.float64, (m, k), elements=finite_or_nan))
    a = data.draw(arrays(np.float64, (batch, k, n), elements=finite_or_nan))
    s = data.draw(arrays(np.float64, (1, 1), elements=finite_or_nan))
    graph = fg.Graph(dtype=np.float64)
    (x,) = build_inputs(graph, [a])
    weights = fg.Variable((m, k), graph=graph)
    weights.set_value(w)
    scalar = fg.Variable((1, 1), graph=graph)
    scalar.set_value(s)
    with graph:
        product = fg.ops.MatMul(weights, x)
        scaled = fg.ops.ScalarMultiply(scalar, x)
    product.forward()
    scaled.forward()
    # einsum multiplies every pair itself (no BLAS shortcut), so 0 * NaN is NaN here too
    np.testing.assert_array_equal(np.isnan(product.value),
                                  np.isnan(np.einsum("ik,bkj->bij", w, a)))
    np.testing.assert_array_equal(np.isnan(scaled.value), np.isnan(s[0, 0] * a))


def check_cross_entropy(data):
    logits = data.draw(batches(sample_shape(rows=(2, 5), cols=(1, 1))))
    graph = fg.Graph(dtype=np.float64)
    labels = np.zeros_like(logits)
    labels[:, 0] = 1
    x, y = build_inputs(graph, [logits, labels])
    with graph:
        cost = loss.CrossEntropyWithSoftMax(x, y)
    cost.forward()
    np.testing.assert_array_equal(np.isnan(cost.flat[:, 0]), whole_sample(logits))
    gradient = fg.jacobian(cost, x)[:, 0, :]
    np.testing.assert_array_equal(np.isnan(gradient).all(axis=1), whole_sample(logits))


CHECKS = {
    **{name: lambda data, name=name: check_elementwise(name, data) for name in ELEMENTWISE},
    **{name: lambda data, name=name: check_pair(name, data) for name in PAIRS},
    "SoftMax": check_softmax,
    "MatMul and ScalarMultiply": check_matmul_and_scalar_multiply,
    "CrossEntropyWithSoftMax": check_cross_entropy,
}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data(), name=st.sampled_from(sorted(CHECKS)))
def test_every_operator_keeps_nan_forward_and_backward(data, name):
    """Random batches with NaN at random places, through a randomly chosen operator: NaN
    comes out exactly where a NumPy reference that propagates NaN puts it."""
    CHECKS[name](data)


def test_cross_entropy_refuses_a_label_row_with_nan():
    graph = fg.Graph(dtype=np.float64)
    labels = np.eye(3)[[0, 1, 2, 1]].reshape(4, 3, 1)
    labels[2, 1, 0] = np.nan
    x, y = build_inputs(graph, [np.zeros((4, 3, 1)), labels])
    with graph:
        cost = loss.CrossEntropyWithSoftMax(x, y, name="cost")
    with pytest.raises(ValueError, match="cost: the labels of sample 2 in .* are not one-hot"):
        cost.forward()


# -- training that diverges ---------------------------------------------------------------


def small_classifier(seed=0):
    model = fg.models.mlp(4, (3,), 2, "ReLU", dtype=np.float32, seed=seed)
    return model


def small_data(samples=40, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(samples, 4)).astype(np.float32)
    return features, (features[:, 0] > 0).astype(np.int64)


def trainer_for(model, optimizer, **options):
    return SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, batch_size=8,
                         progress=False, log=lambda line: None, seed=0, **options)


def test_training_stops_when_the_loss_is_not_finite():
    model = small_classifier()
    optimizer = fg.optimizer.GradientDescent(model.graph, model.loss, 1e30)
    features, labels = small_data()
    with pytest.raises(TrainingDiverged, match=r"the loss of batch \d+ of epoch 1 is (nan|inf)"):
        trainer_for(model, optimizer).train(features, labels, epochs=3)


def test_training_stops_when_a_parameter_is_not_finite_after_an_epoch():
    model = small_classifier()
    optimizer = fg.optimizer.GradientDescent(model.graph, model.loss, 0.1)
    update = optimizer.update

    def update_then_break_a_weight():  # as an overflow in the last update would
        update()
        optimizer.params[0].flat[0, 0] = np.inf

    optimizer.update = update_then_break_a_weight
    features, labels = small_data(8)
    with pytest.raises(TrainingDiverged, match=r"parameter .* holds inf after epoch 1"):
        trainer_for(model, optimizer).train(features, labels, epochs=2)


def test_weights_finite_but_too_large_to_predict_with_are_a_divergence():
    """One batch an epoch at a learning rate of 1e38: the weights stay finite (about 1e37)
    and the outputs are NaN; the test set's scores raised the metrics' ValueError, which a
    caller of TrainingDiverged does not catch and which did not say the model diverged."""
    model = small_classifier()
    optimizer = fg.optimizer.GradientDescent(model.graph, model.loss, 1e32)
    features, labels = small_data(8)
    trainer = trainer_for(model, optimizer)
    with pytest.raises(TrainingDiverged, match=r"predict gives nan for sample 0 of the "
                                               r"features scored \(the model diverged"):
        trainer.train(features, labels, features, labels)
    assert all(np.isfinite(param.flat).all() for param in optimizer.params)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_training_refuses_non_finite_features(bad):
    model = small_classifier()
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    features, labels = small_data()
    features[7, 2] = bad
    with pytest.raises(ValueError, match=r"training features hold (nan|inf) \(sample 7\)"):
        trainer_for(model, optimizer).train(features, labels)
    test_features = features.copy()
    features[7, 2] = 0
    with pytest.raises(ValueError, match=r"test features hold (nan|inf) \(sample 7\)"):
        trainer_for(model, optimizer).train(features, labels, test_features, labels)


def test_training_refuses_features_that_are_finite_only_in_float64():
    """1e300 passes a finiteness check in float64 and is inf in a float32 model: the run
    then stopped as diverged, with advice about the learning rate."""
    model = small_classifier()
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    features, labels = small_data()
    features = features.astype(np.float64)
    features[5, 1] = -1e300
    with pytest.raises(ValueError, match=r"training features hold -1e\+300 \(sample 5\), which "
                                         r"scaled by 1 is infinite in float32"):
        trainer_for(model, optimizer).train(features, labels)
    features[5, 1] = 3e38  # finite in float32, infinite once scaled by 10
    with pytest.raises(ValueError, match=r"hold 3e\+38 \(sample 5\), which scaled by 10 is "):
        trainer_for(model, optimizer, scale=10).train(features, labels)
    features[5, 1] = 2.0  # float64 features that float32 holds: trained on
    assert len(trainer_for(model, optimizer).train(features, labels)) == 1


# -- evaluate and predict refuse a model that is not finite ---------------------------------


@pytest.fixture
def nan_model(tmp_path):
    model = fg.models.mlp(784, (8,), 10, "ReLU", seed=1)
    weights = next(node for node in model.graph.nodes
                   if isinstance(node, fg.Variable) and node.trainable)
    value = weights.value.copy()
    value[3, 5] = np.nan
    weights.set_value(value)
    path = tmp_path / "nan.fgz"
    fg.saver.save(path, model.graph, {"input": "x", "output": "predict"})
    return path, weights.name


def test_evaluate_refuses_a_model_with_nan_weights(nan_model, mnist_dir, capsys):
    path, name = nan_model
    assert main(["evaluate", str(path), "--data", str(mnist_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"fastgraph: error: {path}: parameter {name} holds nan: the model diverged "
                     "or the file is damaged, so its predictions would mean nothing")


def test_predict_refuses_a_model_with_nan_weights(nan_model, tmp_path, capsys):
    from PIL import Image

    path, name = nan_model
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    assert main(["predict", str(path), str(image)]) == 2
    assert f"parameter {name} holds nan" in capsys.readouterr().err


def test_the_command_line_reports_a_diverged_run_in_one_line(mnist_dir, tmp_path, capsys):
    model = tmp_path / "model.fgz"
    status = main(["train", "mnist", "--data", str(mnist_dir), "--optimizer", "sgd", "--lr",
                   "1e30", "--epochs", "2", "--train-samples", "640", "--test-samples", "64",
                   "--no-progress", "--save", str(model)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("fastgraph: error: training stopped: the loss of batch ")
    assert "try a learning rate below 1e+30" in err and not model.exists()
