"""Metrics against values computed by hand."""

import numpy as np
import pytest

from fastgraph import metrics

TRUTH = [0, 0, 1, 1, 1, 2]
PREDICTED = [0, 1, 1, 1, 2, 2]


def test_confusion_matrix_and_accuracy():
    np.testing.assert_array_equal(
        metrics.confusion_matrix(TRUTH, PREDICTED), [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    )
    assert metrics.accuracy(TRUTH, PREDICTED) == pytest.approx(4 / 6)
    scores = np.eye(3)[PREDICTED] * 0.9 + 0.01  # argmax of scores is the prediction
    assert metrics.accuracy(np.eye(3)[TRUTH], scores) == pytest.approx(4 / 6)


def test_precision_recall_f1():
    report = metrics.precision_recall_f1(TRUTH, PREDICTED)
    # class 0: P 1/1, R 1/2; class 1: P 2/3, R 2/3; class 2: P 1/2, R 1/1
    np.testing.assert_allclose(report["precision"], [1, 2 / 3, 1 / 2])
    np.testing.assert_allclose(report["recall"], [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(report["f1"], [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_array_equal(report["support"], [2, 3, 1])
    assert report["macro"]["precision"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert report["macro"]["recall"] == pytest.approx(13 / 18)
    assert report["macro"]["f1"] == pytest.approx(2 / 3)  # the mean of the classes' F1s
    # macro precision and recall apart: 5/6 and 2/3; every class's F1 2/3 (a harmonic mean
    # of the macro precision and recall would be 20/27)
    apart = metrics.precision_recall_f1([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 0, 2])
    assert apart["macro"]["precision"] == pytest.approx(5 / 6)
    assert apart["macro"]["recall"] == pytest.approx(2 / 3)
    assert apart["macro"]["f1"] == pytest.approx(2 / 3)
    empty = metrics.precision_recall_f1([0, 0], [0, 0], classes=2)
    assert empty["precision"][1] == empty["recall"][1] == empty["f1"][1] == 0



def test_the_macro_averages_leave_out_classes_that_occur_nowhere():
    """Class 1 of [0, 0, 2, 2] occurs in neither the labels nor the predictions, and its
    zeros made perfect predictions' macro F1 2/3 (scikit-learn's, over the labels it sees:
    1; helper hB). Classes given: every one counts, as scikit-learn's with labels=[0, 1, 2]."""
    inferred = metrics.precision_recall_f1([0, 0, 2, 2], [0, 0, 2, 2])
    assert inferred["f1"].tolist() == [1.0, 0.0, 1.0]  # the per-class rows stay
    assert inferred["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    given = metrics.precision_recall_f1([0, 0, 2, 2], [0, 0, 2, 2], classes=3)
    assert given["macro"]["f1"] == pytest.approx(2 / 3)
    scores = np.eye(3)[[0, 0, 2, 2]]  # score columns: the same classes seen (helper hC)
    assert metrics.precision_recall_f1([0, 0, 2, 2], scores)["macro"]["f1"] == 1.0
    assert metrics.precision_recall_f1(scores, scores)["macro"]["f1"] == 1.0
    predicted_only = metrics.precision_recall_f1([0, 0, 2, 2], [0, 1, 2, 2])  # 1 predicted
    assert predicted_only["macro"]["precision"] == pytest.approx((1 + 0 + 1) / 3)

def test_roc_auc():
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs won 1 + 1 + 0 + 1 of 4
    assert metrics.roc_auc([1, 0, 1, 0], [0.8, 0.5, 0.4, 0.1]) == pytest.approx(0.75)
    assert metrics.roc_auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)  # a tie counts half
    assert metrics.roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        metrics.roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="binary labels"):
        metrics.roc_auc([0, 2], [0.1, 0.2])


def test_labels_that_are_not_one_hot():
    with pytest.raises(ValueError, match=r"labels are not one-hot: row 1 is \[0.5, 0.5\]"):
        metrics.accuracy([[1, 0], [0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="integer classes"):
        metrics.accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        metrics.accuracy([0, 1, 1], [0, 1])


def test_the_classes_of_a_confusion_matrix_are_bounded():
    """Inferred from class indices, the classes are the largest seen plus one, up to
    INFERRED_CLASSES: a stray label of 10**6 asked for a 7 TiB matrix."""
    with pytest.raises(ValueError, match=r"confusion_matrix: labels: row 1 is 1000000, so "
                                         r"the classes would be 1000001 \(more than 1024, a "
                                         r"matrix of 1,000,002,000,001 counts\); pass classes= "
                                         r"to count that many"):
        metrics.confusion_matrix([0, 10**6], [0, 1])
    with pytest.raises(ValueError, match=r"predictions: row 0 is 5000, so the classes would "
                                         r"be 5001 \(more than 1024, a matrix of 25,010,001 "
                                         r"counts\)"):
        metrics.precision_recall_f1([0, 1], [5000, 1])
    with pytest.raises(ValueError, match=r"labels: row 1 is 1000000, expected in \[0, 2\)"):
        metrics.confusion_matrix([0, 10**6], [0, 1], classes=2)
    assert metrics.confusion_matrix([0, 1023], [0, 1]).shape == (1024, 1024)
    assert metrics.confusion_matrix([0, 2000], [0, 1], classes=2001).shape == (2001, 2001)


def test_a_column_of_labels_is_a_column_of_class_indices():
    """(N, 1) labels (and the article's (N, 1, 1)) are integer classes, as (N,) ones: they
    were one-hot rows of one class, so [[1], [1]] against [0, 0] gave 1.0 and [[0], [1]]
    was 'not one-hot'."""
    assert metrics.accuracy(np.array([[1], [1]]), [0, 0]) == 0.0
    assert metrics.accuracy(np.array([[0], [1]]), [0, 1]) == 1.0
    assert metrics.accuracy(np.array([[[0]], [[2]]]), [0, 1]) == 0.5
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert metrics.accuracy(np.array([[1], [1]]), scores) == 0.5
    with pytest.raises(ValueError, match=r"labels must be integer classes \(N,\) or one-hot "
                                         r"rows \(N, classes\), got shape \(2, 1\) and dtype "
                                         r"float64; a column \(N, 1\) is integer classes too, "
                                         r"never one-hot rows of one class"):
        metrics.accuracy(np.array([[1.0], [0.0]]), [0, 0])
    with pytest.raises(ValueError, match=r"labels: row 1 is 2, expected in \[0, 2\)"):
        metrics.accuracy(np.array([[1], [2]]), scores)


def test_a_column_of_predictions_is_a_column_of_class_indices():
    """Integer (N, 1) predictions are class indices too (their argmax was always 0, so
    [[0], [1]] against [0, 0] gave 1.0); float ones stay the scores of one class."""
    assert metrics.accuracy([0, 0], np.array([[0], [1]])) == 0.5
    assert metrics.accuracy([0, 0], np.array([[[0]], [[1]]])) == 0.5
    np.testing.assert_array_equal(metrics.confusion_matrix([0, 1], np.array([[1], [1]])),
                                  [[0, 1], [0, 1]])
    with pytest.raises(ValueError, match=r"predictions: row 1 is 3, expected in \[0, 2\)"):
        metrics.confusion_matrix([0, 1], np.array([[1], [3]]), classes=2)
    assert metrics.accuracy([0, 0], np.array([[0.9], [0.2]])) == 1.0  # one class: class 0
    with pytest.raises(ValueError, match=r"labels: row 1 is 1, expected in \[0, 1\)"):
        metrics.accuracy([0, 1], np.array([[0.9], [0.2]]))
