"""Classification metrics on plain arrays.

Labels may be integer class indices ``(N,)`` or one-hot rows ``(N, classes)``; one-hot rows
are checked (exactly one 1 per row, zeros elsewhere). Predictions may be class indices or
scores ``(N, classes)`` (or the article's ``(N, classes, 1)``), whose argmax is taken.
"""

import numpy as np


def class_labels(labels, name="labels"):
    """Integer labels from integer or one-hot labels; ValueError for anything else."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[2] == 1:
        labels = labels[:, :, 0]
    if labels.ndim == 2:
        hot = labels == 1
        valid = ((labels == 0) | hot).all(axis=1) & (hot.sum(axis=1) == 1)
        if not valid.all():
            bad = int(np.flatnonzero(~valid)[0])
            raise ValueError(f"{name} are not one-hot: row {bad} is {labels[bad].tolist()}")
        return hot.argmax(axis=1)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{name} must be integer classes (N,) or one-hot rows (N, classes), "
                         f"got shape {labels.shape} and dtype {labels.dtype}")
    return labels


def predicted_classes(predictions):
    """Class indices from indices or from per-class scores (argmax)."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 3 and predictions.shape[2] == 1:
        predictions = predictions[:, :, 0]
    if predictions.ndim == 2:
        return predictions.argmax(axis=1)
    return class_labels(predictions, "predictions")


def _pair(labels, predictions):
    truth, predicted = class_labels(labels), predicted_classes(predictions)
    if truth.shape != predicted.shape:
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    return truth, predicted


def accuracy(labels, predictions):
    truth, predicted = _pair(labels, predictions)
    return float((truth == predicted).mean()) if len(truth) else float("nan")


def confusion_matrix(labels, predictions, classes=None):
    """``matrix[true, predicted]`` counts."""
    truth, predicted = _pair(labels, predictions)
    classes = classes or int(max(truth.max(initial=-1), predicted.max(initial=-1)) + 1)
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def precision_recall_f1(labels, predictions, classes=None):
    """Per-class precision, recall and F1 (0 where undefined), and their macro averages.

    Returns ``{"precision": (C,), "recall": (C,), "f1": (C,), "support": (C,),
    "macro": {"precision": p, "recall": r, "f1": f}}``.
    """
    matrix = confusion_matrix(labels, predictions, classes)
    hits = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(actual > 0, hits / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    macro = {"precision": precision.mean(), "recall": recall.mean(), "f1": f1.mean()}
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual, "macro": macro}


def roc_auc(labels, scores):
    """Area under the ROC curve of a binary problem: P(score of a positive > a negative).

    ``labels`` are 0/1 (or booleans); ties count one half (the Mann-Whitney statistic).
    """
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("roc_auc needs binary labels (0 or 1)")
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):  # average ranks over ties
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    wins = ranks[labels == 1].sum() - positives * (positives + 1) / 2
    return float(wins / (positives * negatives))
