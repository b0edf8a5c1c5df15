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
    empty = metrics.precision_recall_f1([0, 0], [0, 0], classes=2)
    assert empty["precision"][1] == empty["recall"][1] == empty["f1"][1] == 0


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
