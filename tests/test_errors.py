"""Mistakes a user can make get a clear exception that names what is wrong."""

import os
import re

import numpy as np
import pytest

import fastgraph as fg
from tests.helpers import mnist_network


def test_matmul_shapes_are_checked_when_built():
    with fg.Graph():
        a = fg.Variable((3, 4), name="a")
        b = fg.Variable((5, 1), name="b")
        with pytest.raises(ValueError, match=re.escape("a of shape (3, 4) by b of shape (5, 1)")):
            fg.ops.MatMul(a, b)


@pytest.mark.parametrize(
    "op, dims, message",
    [
        (fg.ops.Add, [(2, 1), (3, 1)], "Add needs parents of one shape, got p0 (2, 1), p1 (3, 1)"),
        (fg.ops.Multiply, [(2, 1), (2, 2)], "Multiply needs parents of one shape"),
        (
            fg.ops.ScalarMultiply,
            [(2, 1), (2, 1)],
            "needs a 1x1 scalar first, got p0 of shape (2, 1)",
        ),
        (
            lambda a: fg.ops.Reshape(a, shape=(4, 1)),
            [(3, 1)],
            "cannot make p0 of shape (3, 1) into (4, 1)",
        ),
        (fg.ops.loss.CrossEntropyWithSoftMax, [(10, 1), (9, 1)], "needs parents of one shape"),
        (fg.ops.ReLU, [(2, 1), (2, 1)], "ReLU takes 1 parent node(s), got 2"),
    ],
)
def test_shape_and_arity_errors(op, dims, message):
    with fg.Graph():
        parents = [fg.Variable(dim, name=f"p{i}") for i, dim in enumerate(dims)]
        with pytest.raises((ValueError, TypeError), match=re.escape(message)):
            op(*parents)


@pytest.mark.parametrize("shape", [(-3, -4), (6.5, 2), "ab", (12,), (2, 3, 2), 12, (0, 12),
                                   (True, 12), (float("inf"), 1), (float("nan"), 1)])
def test_reshape_takes_two_positive_integers(shape):
    """(-3, -4) has the product of (3, 4) and failed in NumPy at forward(); 6.5 became 6."""
    with fg.Graph():
        a = fg.Variable((3, 4), name="a")
        with pytest.raises(ValueError, match=re.escape(
                f"Reshape of a: the shape must be two positive integers (rows, cols), got "
                f"{shape!r}")):
            fg.ops.Reshape(a, shape)
        assert fg.ops.Reshape(a, (np.int64(2), 6.0)).dim == (2, 6)


def test_set_value_names_node_expected_and_got():
    with fg.Graph():
        x = fg.Variable((784, 1), trainable=False, name="x")
        w = fg.Variable((10, 784), name="W")
        with pytest.raises(
            ValueError,
            match=re.escape(
                "x: expected a batch of shape (B, 784, 1), (B, 784) or one sample of shape "
                "(784, 1), got (32, 28, 28)"
            ),
        ):
            x.set_value(np.zeros((32, 28, 28)))
        with pytest.raises(
            ValueError, match=re.escape("W: expected a value of shape (10, 784), got (784, 10)")
        ):
            w.set_value(np.zeros((784, 10)))
        with pytest.raises(TypeError, match="x: expected a numeric array, got dtype <U1"):
            x.set_value(np.array(["a"] * 784).reshape(784, 1))
        with pytest.raises(ValueError, match="x: the batch is empty"):
            x.set_value(np.zeros((0, 784)))
        with pytest.raises(TypeError, match="computed by ReLU; set the inputs"):
            fg.ops.ReLU(x).set_value(np.zeros((784, 1)))


def test_bad_dims_and_duplicate_names():
    with fg.Graph():
        with pytest.raises(ValueError, match=r"dim must be a pair of positive integers"):
            fg.Variable((3,))
        with pytest.raises(ValueError, match=r"dim must be a pair of positive integers"):
            fg.Variable((0, 1))
        fg.Variable((1, 1), name="w")
        with pytest.raises(ValueError, match="a node named 'w' already exists"):
            fg.Variable((1, 1), name="w")


def test_unknown_activation_and_engine():
    graph, x, one_hot, *_, loss = mnist_network(np.float32, hidden=(3,))
    with (
        graph,
        pytest.raises(
            ValueError,
            match="unknown activation 'relu': choose one of 'ReLU', 'Logistic', 'Tanh', None",
        ),
    ):
        fg.layer.fc(x, 784, 10, "relu")
    with pytest.raises(
        ValueError, match="fc: x has shape \\(784, 1\\), expected a column of \\(100, 1\\)"
    ):
        fg.layer.fc(x, 100, 10, "ReLU")
    with pytest.raises(ValueError,
                       match="unknown engine 'fast': choose one of 'vjp', 'python', 'jacobian'"):
        fg.optimizer.Adam(graph, loss, 0.001, engine="fast")


def test_bad_optimizer_options():
    graph, *_, loss = mnist_network(np.float32, hidden=(3,))
    with pytest.raises(ValueError, match="learning_rate must be a positive number, got -1"):
        fg.optimizer.Adam(graph, loss, -1)
    with pytest.raises(ValueError, match="beta_2 must be a number in \\[0, 1\\), got 1.5"):
        fg.optimizer.Adam(graph, loss, 0.1, beta_2=1.5)
    optimizer = fg.optimizer.Adam(graph, loss, 0.1)
    with pytest.raises(RuntimeError, match="call one_step\\(\\) first"):
        optimizer.update()


def test_target_without_trainable_variables():
    with fg.Graph() as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        y = fg.ops.SoftMax(x, name="probabilities")
        with pytest.raises(
            ValueError, match="probabilities does not depend on any trainable Variable"
        ):
            fg.optimizer.GradientDescent(graph, y, 0.1)


def test_labels_that_are_not_one_hot():
    graph, x, one_hot, *_, loss = mnist_network(np.float32, hidden=(3,))
    x.set_value(np.zeros((4, 784)))
    labels = np.eye(10)[[1, 2, 3, 4]]
    labels[2] = [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    one_hot.set_value(labels)
    with pytest.raises(
        ValueError, match=re.escape("the labels of sample 2 in one_hot are not one-hot")
    ):
        loss.forward()
    labels[2] = np.eye(10)[3]
    labels[3, :2] = [-1, 1]
    one_hot.set_value(labels)
    with pytest.raises(ValueError, match="sample 3 in one_hot are not one-hot"):
        loss.forward()


def test_missing_input_and_mismatched_batches():
    graph, x, one_hot, _, predict, loss = mnist_network(np.float32, hidden=(3,))
    with pytest.raises(ValueError, match=r"x has no value: call x.set_value\(\) before computing"):
        predict.forward()
    x.set_value(np.zeros((4, 784)))
    one_hot.set_value(np.eye(10)[:3])
    with pytest.raises(ValueError, match="disagree on the batch size: x holds 4, one_hot holds 3"):
        loss.forward()


def test_parameter_without_value():
    with fg.Graph() as graph:
        w = fg.Variable((2, 2), name="W")
        y = fg.ops.Tanh(w)
        with pytest.raises(ValueError, match="W has no value: give it one"):
            fg.optimizer.Adam(graph, y)
        with pytest.raises(ValueError, match=r"W has no value: call W.set_value\(\) first"):
            y.forward()


@pytest.mark.parametrize("engine", ["vjp", "jacobian"])
def test_softmax_and_cross_entropy_stay_finite_for_huge_logits(engine):
    """On both engines: the dense Jacobian of the loss once took log(sum(exp(z))) without
    the row's largest logit out, and no test ran it on huge logits."""
    with fg.Graph() as graph:
        logits = fg.Variable((3, 1), trainable=False)
        labels = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((3, 3))
        w.set_value(np.eye(3))
        scores = fg.ops.MatMul(w, logits)
        probabilities = fg.ops.SoftMax(scores)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(scores, labels)
        optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1, engine=engine)
    logits.set_value(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]]))
    labels.set_value(np.array([[0, 1, 0], [1, 0, 0]]))
    probabilities.forward()
    assert np.isfinite(probabilities.value).all()
    optimizer.one_step()
    np.testing.assert_allclose(loss.value.ravel(), [2e4, 2e4 + np.log(2)], rtol=1e-6)
    gradient = optimizer.get_gradient(w)
    # d loss / d scores is softmax - labels: [1, -1, 0] and [-1, 0.5, 0.5] (the sum of the
    # samples' gradients, by the logits' outer products)
    upstream = np.array([[1.0, -1.0, 0.0], [-1.0, 0.5, 0.5]])
    expected = sum(np.outer(u, z) for u, z in zip(upstream, [[1e4, -1e4, 0.0],
                                                              [-1e4, 1e4, 1e4]]))
    np.testing.assert_allclose(gradient * optimizer.samples, expected, rtol=1e-6)


@pytest.mark.parametrize("labels, accepted", [
    ([0.3, 0.7, 0.0], True),  # soft labels
    ([0.0, 1.0 + 1e-5, 0.0], True),  # rounding
    ([0.0, 1.01, 0.0], False),
    ([0.5, 0.49, 0.0], False),
])
def test_label_rows_must_sum_to_one(labels, accepted):
    with fg.Graph():
        logits = fg.Variable((3, 1), trainable=False, name="logits")
        one_hot = fg.Variable((3, 1), trainable=False, name="one_hot")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, one_hot)
    logits.set_value(np.zeros((2, 3)))
    one_hot.set_value(np.array([[1.0, 0.0, 0.0], labels]))
    if accepted:
        loss.forward()
        np.testing.assert_allclose(loss.flat[1, 0], np.log(3) * sum(labels), rtol=1e-6)
    else:
        with pytest.raises(ValueError, match="the labels of sample 1 in one_hot are not one-hot"):
            loss.forward()


def test_leaky_relu_slope_must_be_a_finite_number():
    with fg.Graph():
        x = fg.Variable((2, 1), trainable=False)
        for slope in (float("nan"), float("inf"), "abc", True):
            with pytest.raises(ValueError, match="LeakyReLU: slope must be a finite number"):
                fg.ops.LeakyReLU(x, slope=slope)


@pytest.mark.parametrize("op", [fg.ops.ReLU, fg.ops.Step, fg.ops.LeakyReLU,
                                fg.ops.loss.PerceptionLoss])
def test_nan_inputs_give_nan_derivatives_on_every_path(op):
    """A NaN input has NaN derivatives: in the VJP kernels and the article's dense engine."""
    with fg.Graph(dtype=np.float64):
        x = fg.Variable((3, 1), trainable=False)
        node = op(x)
    x.set_value(np.array([[[1.0], [np.nan], [-1.0]]]))
    jacobian = fg.jacobian(node, x)[0]
    dense = x.backward(node, engine="jacobian")[0]
    for result in (jacobian, dense):
        assert np.isnan(result[1, 1]) and not np.isnan(result[0, 0])


@pytest.mark.parametrize("pool", [
    lambda x: fg.ops.MaxPool2D(x, (2, 2), 2),
    lambda x: fg.ops.MaxPooling(x, size=(2, 2), stride=(2, 2)),
])
def test_max_pooling_keeps_nan(pool):
    """A window holding NaN pools to NaN (not to the largest of the others), and its
    gradient goes to the NaN's place, as numpy.argmax picks it."""
    shape = (4, 1) if pool.__code__.co_names[-1] == "MaxPool2D" else (2, 2)
    with fg.Graph(dtype=np.float64):
        x = fg.Variable(shape, trainable=False)
        node = pool(x)
    values = np.array([[[5.0], [np.nan], [7.0], [1.0]]]).reshape(1, *shape)
    x.set_value(values)
    node.forward()
    assert np.isnan(node.flat).all()
    jacobian = fg.jacobian(node, x)[0]
    assert jacobian[0, 1] == 1 and jacobian[0, [0, 2, 3]].sum() == 0


@pytest.mark.parametrize("build, message", [
    (lambda x: fg.layer.conv2d(x, 6, np.int64(5), image_shape=(28, 28)), None),
    (lambda x: fg.layer.conv2d(x, 6, 5.0, image_shape=(28, 28)),
     "conv2d: kernel_size must be an int or a pair of ints, got 5.0"),
    (lambda x: fg.layer.conv2d(x, 6, (5, 5, 5), image_shape=(28, 28)),
     "conv2d: kernel_size must be an int or a pair of ints, got (5, 5, 5)"),
    (lambda x: fg.layer.conv2d(x, 6, 0, image_shape=(28, 28)),
     "conv2d: kernel_size must be positive, got (0, 0)"),
    (lambda x: fg.layer.conv2d(x, 0, 5, image_shape=(28, 28)),
     "conv2d: out_channels must be at least 1, got 0"),
    (lambda x: fg.layer.fc(x, 784, 0, "ReLU"), "fc: size must be at least 1, got 0"),
    (lambda x: fg.layer.fc(x, 784.5, 3, "ReLU"),
     "fc: input_size must be a positive integer, got 784.5"),
])
def test_layer_helpers_name_the_option(build, message):
    """These gave 'cannot unpack non-iterable numpy.int64 object', 'too many values to
    unpack', or the Variable's 'dim must be a pair ...' without the layer's option."""
    with fg.Graph():
        x = fg.Variable((784, 1), trainable=False, name="x")
        if message is None:
            assert build(x).dim == (576, 6)
        else:
            with pytest.raises(ValueError, match=re.escape(message)):
                build(x)


@pytest.mark.parametrize("arguments, message", [
    (lambda maps: (maps, (4, 4), 1, (0, 3), "ReLU"), "conv: kernel_shape must be positive, "
                                                     "got (0, 3)"),  # ZeroDivisionError
    (lambda maps: ([], (4, 4), 2, (3, 3), "ReLU"), "conv: feature_maps must be a non-empty "
                                                   "list of nodes"),  # IndexError
    (lambda maps: (maps, (4, 4), 1, (3, 3), "relu"), "unknown activation 'relu'"),  # none
    (lambda maps: (maps, (4, 4), 0, (3, 3), "ReLU"), "conv: kernels must be at least 1"),
])
def test_the_article_conv_layer_checks_its_options(arguments, message):
    with fg.Graph():
        maps = [fg.Variable((4, 4), trainable=False, name="m")]
        with pytest.raises(ValueError, match=re.escape(message)):
            fg.layer.conv(*arguments(maps))
        outputs = fg.layer.conv(maps, (4, 4), 2, (3, 3), "Logistic")
        assert len(outputs) == 2 and type(outputs[0]).__name__ == "Logistic"


def test_models_graphs_and_names_say_what_they_take():
    with pytest.raises(ValueError, match=re.escape(
            "mlp: hidden must be a list or tuple of layer sizes, such as (100, 20) or () for "
            "none, got 5")):
        fg.models.mlp(784, 5, 10, "ReLU")
    with pytest.raises(ValueError, match=r"Graph seed must be None or a non-negative integer, "
                                         r"got -1 \("):
        fg.models.mlp(784, (5,), 10, seed=-1)
    with fg.Graph():
        with pytest.raises(TypeError, match="a node's name must be a string, got 3"):
            fg.Variable((2, 1), name=3)
    model, other = fg.models.mlp(4, (3,), 2, seed=0), fg.models.mlp(4, (3,), 2, seed=0)
    with pytest.raises(ValueError, match="the target loss is a node of another graph than the "
                                         "optimizer's"):
        fg.optimizer.Adam(model.graph, other.loss, 0.01)


def test_chunk_size_takes_numpy_integers_and_refuses_booleans():
    model = fg.models.mlp(4, (3,), 2, seed=0)
    model.x.set_value(np.ones((4, 4)))
    whole = fg.jacobian(model.logits, model.x)
    np.testing.assert_array_equal(fg.jacobian(model.logits, model.x, chunk_size=np.int64(2)),
                                  whole)
    with pytest.raises(ValueError, match="jacobian: chunk_size must be a positive integer, "
                                         "got True"):
        fg.jacobian(model.logits, model.x, chunk_size=True)


def test_convolution_and_pooling_refuse_a_negative_image_shape():
    """(-6, -6) has the product of (6, 6): Conv2D took it and gave zeros."""
    with fg.Graph():
        column = fg.Variable((36, 1), trainable=False, name="col")
        weights = fg.Variable((1, 1), name="w")
        with pytest.raises(ValueError, match=re.escape(
                "Conv2D: image_shape must be positive, got (-6, -6)")):
            fg.ops.Conv2D(column, weights, image_shape=(-6, -6), kernel_size=1, padding=5)
        with pytest.raises(ValueError, match=re.escape(
                "MaxPool2D: image_shape must be positive, got (-6, -6)")):
            fg.ops.MaxPool2D(column, (-6, -6), 2)
        assert fg.layer.max_pool2d(column, 2, image_shape=6).dim == (9, 1)  # an int: square


def test_leaky_relu_slope_must_be_finite_in_the_graph_dtype():
    with fg.Graph(dtype=np.float32):
        x = fg.Variable((2, 1), trainable=False, name="x")
        with pytest.raises(ValueError, match="LeakyReLU: slope must be a finite number, got "
                                             "1e\\+39, which is infinite in float32"):
            fg.ops.LeakyReLU(x, slope=1e39)
    with fg.Graph(dtype=np.float64):
        x = fg.Variable((2, 1), trainable=False, name="x")
        assert fg.ops.LeakyReLU(x, slope=1e39).slope == 1e39


def test_profile_steps_checks_its_counts():
    model = fg.models.mlp(4, (3,), 2, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    for steps, message in ((0, "profile_steps: steps must be at least 1, got 0"),
                           (True, "profile_steps: steps must be a positive integer, got True"),
                           ("5", "profile_steps: steps must be a positive integer, got '5'")):
        with pytest.raises(ValueError, match=re.escape(message)):  # ZeroDivisionError, ...
            fg.profiler.profile_steps(optimizer, lambda step: None, steps=steps)


def test_article_trainer_metrics_must_be_metric_nodes():
    """A loss among metrics_ops failed after a whole epoch ('no attribute reset')."""
    model = fg.models.mlp(4, (3,), 2, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    with pytest.raises(TypeError, match="metrics_ops: loss is not a metric node"):
        fg.trainer.SimpleTrainer([model.x], model.one_hot, model.loss, optimizer, 1,
                                 metrics_ops=[model.loss])


@pytest.mark.parametrize("value", ["\u00b2", "abc", "0", "-1"])
def test_fastgraph_threads_takes_ascii_digits(value):
    """'²' passed str.isdigit() and failed in int()."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import fastgraph"], capture_output=True,
                          text=True, env={**os.environ, "FASTGRAPH_THREADS": value})
    assert done.returncode != 0
    assert f"FASTGRAPH_THREADS={value!r}: give 'auto' or a positive number of threads" \
        in done.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_dense_engine_is_quiet_and_right_at_extreme_inputs(dtype):
    """LogLoss's and the cross-entropy's dense Jacobians printed NumPy's overflow warnings
    at margins of 100 (float32) and logits of 3e38, with the right numbers."""
    import warnings

    with fg.Graph(dtype=dtype):
        margin = fg.Variable((3, 1), trainable=False, name="margin")
        logits = fg.Variable((3, 1), trainable=False, name="logits")
        labels = fg.Variable((3, 1), trainable=False, name="labels")
        log_loss = fg.ops.loss.LogLoss(margin)
        cross_entropy = fg.ops.loss.CrossEntropyWithSoftMax(logits, labels)
    margin.set_value(np.array([[100.0], [-100.0], [0.0]]))
    big = float(np.finfo(dtype).max) / 1.2
    logits.set_value(np.array([[big], [-big], [0.0]]))
    labels.set_value(np.array([[1.0], [0.0], [0.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_loss.forward()
        jacobian = log_loss.get_jacobi(margin)
        cross_entropy.forward()
        by_logits = cross_entropy.get_jacobi(logits)
    np.testing.assert_allclose(np.diag(jacobian), [-1 / (1 + np.exp(100.0)), -1.0, -0.5],
                               rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(by_logits, [[0.0, 0.0, 0.0]], atol=1e-6)  # softmax = labels
