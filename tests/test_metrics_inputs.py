"""The article's metric nodes (``ops.metrics``) on bad inputs: NaN or infinite scores,
labels that are not the article's (1/-1 or 1/0, or one-hot rows), shapes that do not
match, undefined curves, and a metric used as something to differentiate. Each raises an
error naming the node, and a batch refused adds nothing to what the node accumulated."""

import numpy as np
import pytest
from helpers import with_executor

import fastgraph as fg
from fastgraph.ops import metrics as nodes

BINARY = (nodes.Accuracy, nodes.Precision, nodes.Recall, nodes.F1Score, nodes.ROC_AUC,
          nodes.ROC)


def binary_graph(kind):
    with fg.Graph(dtype=np.float64):
        score = fg.Variable(dim=(1, 1), init=False, trainable=False, name="score")
        label = fg.Variable(dim=(1, 1), init=False, trainable=False, name="label")
        metric = kind(score, label, name="metric")
    return score, label, metric


def feed(score, label, scores, labels):
    score.set_value(np.array(scores, dtype=float).reshape(-1, 1, 1))
    label.set_value(np.array(labels, dtype=float).reshape(-1, 1, 1))


@pytest.mark.parametrize("kind", BINARY)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(kind, bad):
    score, label, metric = binary_graph(kind)
    feed(score, label, [0.2, 0.7], [1, -1])
    metric.forward()
    before = metric.value
    feed(score, label, [0.3, bad, 0.6], [1, 0, 1])
    with pytest.raises(ValueError, match=rf"metric: the score of sample 1 in score is {bad}: "
                                         r"a metric needs finite scores"):
        metric.forward()
    after = metric.value  # the refused batch added nothing
    if kind is nodes.ROC:
        np.testing.assert_array_equal(after, before)
    else:
        assert after == before


@pytest.mark.parametrize("kind", BINARY)
@pytest.mark.parametrize("bad", [2.0, 0.5, np.nan, -2.0])
def test_labels_that_are_not_the_articles_are_refused(kind, bad):
    """Labels of 2 or 0.5 were counted as negatives: [2, 0, 2] gave an accuracy of 1/3."""
    score, label, metric = binary_graph(kind)
    feed(score, label, [0.9, 0.1, 0.6], [1, 0, bad])
    with pytest.raises(ValueError, match=rf"metric: the label of sample 2 in label is {bad}, "
                                         r"expected the article's binary labels: 1 and -1 "
                                         r"\(or 1 and 0\)"):
        metric.forward()
    assert metric.value is None


def test_the_issue_as_reported():
    with fg.Graph():
        p = fg.Variable(dim=(1, 1), init=False, trainable=False)
        lab = fg.Variable(dim=(1, 1), init=False, trainable=False)
        acc = fg.ops.metrics.Accuracy(p, lab)
        precision = fg.ops.metrics.Precision(p, lab)
    p.set_value(np.array([np.nan, .1, .6]).reshape(3, 1, 1))
    lab.set_value(np.array([1., 0, 1]).reshape(3, 1, 1))
    for metric in (acc, precision):
        with pytest.raises(ValueError, match=rf"{metric.name}: the score of sample 0 in "
                                             rf"{p.name} is nan"):
            metric.forward()
        assert metric.value is None and metric.value_str().endswith(": n/a ")


@pytest.mark.parametrize("negative", [-1, 0])
def test_either_negative_label_gives_the_articles_numbers(negative):
    """1/-1 and 1/0 labels give the same metrics (those of the article, one sample at a
    time, in tests/test_article_api.py)."""
    scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1]
    labels = [1 if y == 1 else negative for y in [1, -1, 1, 1, -1, -1]]
    expected = {nodes.Accuracy: 4 / 6, nodes.Precision: 2 / 3, nodes.Recall: 2 / 3,
                nodes.F1Score: 2 / 3, nodes.ROC_AUC: 7 / 9}
    for kind, value in expected.items():
        score, label, metric = binary_graph(kind)
        feed(score, label, scores, labels)
        metric.forward()
        assert metric.value == pytest.approx(value)
    score, label, roc = binary_graph(nodes.ROC)
    feed(score, label, scores, labels)
    roc.forward()
    assert (roc.fpr[49], roc.tpr[49]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


@pytest.mark.parametrize("labels, which", [([1, 1, 1], "negative"), ([-1, 0, -1], "positive")],
                         ids=["all positive", "all negative"])
def test_an_undefined_roc_curve_is_an_error(labels, which):
    """All-positive labels gave a false positive rate of 99 NaNs without a word (the
    article's code left its zeros from before any sample)."""
    score, label, roc = binary_graph(nodes.ROC)
    feed(score, label, [0.2, 0.7, 0.9], labels)
    roc.forward()
    with pytest.raises(ValueError, match=rf"metric: the ROC curve needs positive and negative "
                                         rf"labels; the 3 samples accumulated have no {which} "
                                         r"one"):
        roc.value  # noqa: B018
    assert roc.value_str() == ""  # as in the article: the curve is not printed
    score, label, auc = binary_graph(nodes.ROC_AUC)
    feed(score, label, [0.2, 0.7, 0.9], labels)
    auc.forward()
    with pytest.raises(ValueError, match=r"metric: roc_auc needs at least one positive and one "
                                         r"negative label"):
        auc.value_str()


def test_shapes_must_match_at_construction():
    """3-column scores against 2-column one-hot labels compared their argmaxes (1.0)."""
    with fg.Graph():
        scores = fg.Variable(dim=(3, 1), init=False, trainable=False, name="scores")
        one_hot = fg.Variable(dim=(2, 1), init=False, trainable=False, name="one_hot")
        binary = fg.Variable(dim=(1, 1), init=False, trainable=False, name="binary")
        for kind in BINARY:
            with pytest.raises(ValueError, match=rf"{kind.__name__}: scores \(3, 1\) and "
                                                 r"one_hot \(2, 1\) differ in shape: the output "
                                                 r"and the label must have one"):
                kind(scores, one_hot)
        with pytest.raises(ValueError, match=r"Accuracy: binary \(1, 1\) and scores \(3, 1\)"):
            nodes.Accuracy(binary, scores)


def test_multiclass_scores_and_labels():
    with fg.Graph(dtype=np.float64):
        scores = fg.Variable(dim=(3, 1), init=False, trainable=False, name="scores")
        one_hot = fg.Variable(dim=(3, 1), init=False, trainable=False, name="one_hot")
        accuracy = nodes.Accuracy(scores, one_hot, name="accuracy")
    one_hot.set_value(np.eye(3)[[1, 2]])
    scores.set_value(np.array([[0.1, 0.7, 0.2], [0.5, np.inf, 0.2]]))
    with pytest.raises(ValueError, match=r"accuracy: the scores of sample 1 in scores hold inf"):
        accuracy.forward()
    scores.set_value(np.array([[0.1, 0.7, 0.2], [0.5, 0.3, np.nan]]))
    with pytest.raises(ValueError, match=r"accuracy: the scores of sample 1 in scores hold nan"):
        accuracy.forward()
    scores.set_value(np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]))
    one_hot.set_value(np.array([[0, 1, 0], [np.nan, 0, 1]]))
    with pytest.raises(ValueError, match=r"accuracy: one_hot are not one-hot: row 1"):
        accuracy.forward()
    assert accuracy.value is None
    one_hot.set_value(np.eye(3)[[1, 2]])
    accuracy.forward()
    assert accuracy.value == 0.5


# -- a metric is not differentiable --------------------------------------------------------
def metric_graph():
    graph = fg.Graph(dtype=np.float64, seed=1)
    with graph:
        x = fg.Variable(dim=(2, 1), init=False, trainable=False, name="x")
        y = fg.Variable(dim=(1, 1), init=False, trainable=False, name="y")
        w = fg.Variable(dim=(1, 2), init=True, trainable=True, name="w")
        predict = fg.ops.Logistic(fg.ops.MatMul(w, x))
        accuracy = nodes.Accuracy(predict, y, name="accuracy")
    x.set_value(np.ones((4, 2, 1)))
    y.set_value(np.array([1, -1, 1, 1.0]).reshape(4, 1, 1))
    return graph, w, accuracy


NOT_DIFFERENTIABLE = (r"accuracy is a metric, not differentiable: it cannot be an optimizer's "
                      r"target or a backward target")

USES = {
    "optimizer": lambda graph, w, acc: fg.optimizer.GradientDescent(graph, acc).one_step(),
    "optimizer, jacobian engine": lambda graph, w, acc: fg.optimizer.Adam(
        graph, acc, engine="jacobian").one_step(),
    "optimizer, python engine": lambda graph, w, acc: fg.optimizer.Momentum(
        graph, acc, engine="python").one_step(),
    "backward": lambda graph, w, acc: w.backward(acc),
    "backward, jacobian engine": lambda graph, w, acc: w.backward(acc, engine="jacobian"),
    "jacobian": lambda graph, w, acc: fg.jacobian(acc, w),
    "per-sample gradients": lambda graph, w, acc: fg.per_sample_gradients(acc, [w]),
}


@pytest.mark.parametrize("executor", ["compiled", "python"])
@pytest.mark.parametrize("use", USES)
def test_a_metric_is_no_target(use, executor):
    """It gave "'NoneType' object has no attribute 'ctypes'" (compiled), "'Accuracy' object
    has no attribute 'vjp'" (the walker) or "... 'dense_jacobian'" (the article's engine)."""
    graph, w, accuracy = metric_graph()
    with pytest.raises(TypeError, match=NOT_DIFFERENTIABLE):
        with_executor(executor, lambda: USES[use](graph, w, accuracy))
    assert accuracy.value is None  # the attempt accumulated nothing
    accuracy.forward()  # and the metric still works
    assert accuracy.value in (0.0, 0.25, 0.75, 1.0)


@pytest.mark.parametrize("executor", ["compiled", "python"])
def test_a_metric_is_no_parent(executor):
    graph, w, accuracy = metric_graph()
    with graph:
        total = fg.ops.Add(accuracy, w.graph.get_node("y"))
    with pytest.raises(TypeError, match=r"accuracy is a metric, not differentiable: .* nor a "
                                        r"parent of another node \(Add:"):
        with_executor(executor, total.forward)
    with pytest.raises(TypeError, match=NOT_DIFFERENTIABLE):
        accuracy.get_jacobi(accuracy.parents[0])


@pytest.mark.parametrize("slot", [0, 1])
def test_a_metric_is_no_parent_of_a_metric(slot):
    """Accuracy(acc, acc) was built; its forward made acc count the batch twice more (6 -> 18
    samples, acc's value then wrong), then failed in an AttributeError."""
    graph, w, accuracy = metric_graph()
    accuracy.forward()
    held = accuracy.value
    parents = [accuracy.parents[0], graph.get_node("y")]
    parents[slot] = accuracy
    count = graph.node_count()
    with graph, pytest.raises(TypeError, match=r"^Recall: accuracy is a metric \(Accuracy\); a "
                                               r"metric's parents are the model's output and "
                                               r"the label$"):
        nodes.Recall(*parents)
    assert graph.node_count() == count and accuracy.value == held
