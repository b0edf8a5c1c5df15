"""Metrics turn no mistake into a number: labels outside the classes, NaN scores and empty
inputs raise ValueError naming the row; generated inputs either raise or agree with a
reference computed on the same valid data."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastgraph import metrics


def test_a_negative_label_is_an_error_not_the_last_class():
    with pytest.raises(ValueError, match=r"labels: row 1 is -1, expected a class index \(>= 0\)"):
        metrics.confusion_matrix([0, -1, 1], [0, 1, 1])


def test_labels_beyond_the_score_columns_or_classes_are_errors():
    scores = np.eye(3)[[0, 1, 2]]
    with pytest.raises(ValueError, match=r"labels: row 2 is 3, expected in \[0, 3\)"):
        metrics.accuracy([0, 1, 3], scores)
    with pytest.raises(ValueError, match=r"predictions: row 0 is 12, expected in \[0, 10\)"):
        metrics.precision_recall_f1([1, 2], [12, 2], classes=10)
    with pytest.raises(ValueError, match="scores have 3 columns, expected one per class \\(10\\)"):
        metrics.confusion_matrix([0, 1, 2], scores, classes=10)


def test_nan_scores_are_an_error():
    scores = np.array([[0.1, 0.9], [np.nan, 0.2], [0.3, 0.7]])
    with pytest.raises(ValueError, match=r"the scores of row 1 hold NaN"):
        metrics.accuracy([1, 1, 1], scores)
    with pytest.raises(ValueError, match="roc_auc: score 2 is NaN"):
        metrics.roc_auc([1, 0, 1], [0.3, 0.2, np.nan])


def test_no_samples_is_an_error_not_nan():
    with pytest.raises(ValueError, match="no labels and predictions"):
        metrics.accuracy([], np.zeros((0, 3)))


def reference_accuracy(truth, scores):
    return float(np.mean(truth == np.argmax(scores, axis=1)))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data(), samples=st.integers(1, 6), classes=st.integers(1, 4))
def test_generated_labels_and_scores_raise_or_agree_with_a_reference(data, samples, classes):
    truth = np.array(data.draw(st.lists(st.integers(-2, classes + 1), min_size=samples,
                                        max_size=samples)))
    elements = st.one_of(st.floats(-5, 5), st.just(np.nan))
    scores = data.draw(arrays(np.float64, (samples, classes), elements=elements))
    valid = (truth >= 0).all() and (truth < classes).all() and not np.isnan(scores).any()
    if not valid:
        with pytest.raises(ValueError):
            metrics.accuracy(truth, scores)
        with pytest.raises(ValueError):
            metrics.confusion_matrix(truth, scores)
        return
    assert metrics.accuracy(truth, scores) == reference_accuracy(truth, scores)
    matrix = metrics.confusion_matrix(truth, scores)
    assert matrix.shape == (classes, classes) and matrix.sum() == samples
    assert np.trace(matrix) == np.sum(truth == np.argmax(scores, axis=1))
