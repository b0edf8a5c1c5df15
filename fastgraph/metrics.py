"""Classification metrics on plain arrays.

Labels may be integer class indices ``(N,)`` or ``(N, 1)`` (a column, as the article's
``(N, 1, 1)`` batch of a one-row label node reads; never one-hot rows of a single class), or
one-hot rows ``(N, classes)`` of two classes or more; one-hot rows are checked (exactly one 1
per row, zeros elsewhere). Predictions may be integer class indices (``(N,)``, or a column
``(N, 1)`` as labels may be) or float scores ``(N, classes)`` (or the article's
``(N, classes, 1)``), whose argmax is taken: a float column ``(N, 1)`` is the scores of one
class, so every prediction is class 0 (to score a binary output, threshold it first).
A metric never turns a mistake into a number: a label outside the classes (negative, or
not below the number of score columns or ``classes``), a NaN score, or no samples at all
raise ValueError naming the row. Without ``classes`` or scores to say how many classes
there are, ``confusion_matrix`` (and ``precision_recall_f1``) take the largest class seen
plus one, up to ``INFERRED_CLASSES``; beyond, ``classes=`` must say so.
"""

import math

import numpy as np

from .checks import as_array, positive_integer, shown

#: The most classes ``confusion_matrix`` infers from class indices (the largest seen plus
#: one) without being given ``classes=``: a stray label of 10**6 is an error naming it, not
#: a request for a matrix of 10**12 counts.
INFERRED_CLASSES = 1024

#: The most classes ``confusion_matrix`` counts, even when given ``classes=``: its matrix
#: holds classes x classes int64 counts, 2 GiB at 16,384 (ImageNet-21k's 21,841 would be
#: 3.6 GiB; 10**6 classes asked NumPy for 7.28 TiB and raised its MemoryError).
MOST_CLASSES = 2**14


def class_labels(labels, name="labels", classes=None):
    """Integer labels from integer or one-hot labels; ValueError for anything else.

    ``(N,)`` and ``(N, 1)`` (and ``(N, 1, 1)``) arrays are integer class indices; ``(N, k)``
    with k >= 2 (and ``(N, k, 1)``) are one-hot rows. With ``classes``, every label must lie
    in ``[0, classes)``; negative labels never pass.
    """
    return _class_labels(labels, name, _classes(classes))


def _class_labels(labels, name, classes):
    labels = as_array(labels, name)
    shape = labels.shape
    if labels.ndim == 3 and labels.shape[2] == 1:
        labels = labels[:, :, 0]
    column = labels.ndim == 2 and labels.shape[1] == 1
    if column:  # a column of class indices, not one-hot rows of a single class
        labels = labels[:, 0]
    if labels.ndim == 2:
        hot = labels == 1
        valid = ((labels == 0) | hot).all(axis=1) & (hot.sum(axis=1) == 1)
        if not valid.all():
            bad = int(np.flatnonzero(~valid)[0])
            raise ValueError(f"{name} are not one-hot: row {bad} is {labels[bad].tolist()}")
        if classes is not None and labels.shape[1] != classes:
            raise ValueError(f"{name} are one-hot rows of {labels.shape[1]} classes, "
                             f"expected {classes}")
        return hot.argmax(axis=1)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{name} must be integer classes (N,) or one-hot rows (N, classes), "
                         f"got shape {shape} and dtype {labels.dtype}"
                         + ("; a column (N, 1) is integer classes too, never one-hot rows of "
                            "one class" if column else ""))
    outside = labels < 0 if classes is None else (labels < 0) | (labels >= classes)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        expected = "a class index (>= 0)" if classes is None else f"in [0, {classes})"
        raise ValueError(f"{name}: row {bad} is {labels[bad]}, expected {expected}")
    return labels


def _index_column(predictions):
    """An integer ``(N, 1)`` or ``(N, 1, 1)`` array: a column of class indices (as labels of
    that shape are), not the scores of a single class (whose argmax is always 0)."""
    return np.issubdtype(predictions.dtype, np.integer) and (
        (predictions.ndim == 2 and predictions.shape[1] == 1)
        or predictions.shape[1:] == (1, 1))


def predicted_classes(predictions, classes=None):
    """Class indices from integer indices (``(N,)``, or a column ``(N, 1)``) or from
    per-class scores (argmax); NaN scores raise. With ``classes`` (a positive integer),
    indices must lie in ``[0, classes)`` and scores have one column per class."""
    return _predicted_classes(predictions, _classes(classes))


def _predicted_classes(predictions, classes):
    predictions = as_array(predictions, "predictions")
    if _index_column(predictions):
        return _class_labels(predictions, "predictions", classes)
    if predictions.ndim == 3 and predictions.shape[2] == 1:
        predictions = predictions[:, :, 0]
    if predictions.ndim == 2:
        if predictions.dtype.kind not in "biuf":
            raise ValueError(f"scores must be numbers, got dtype {predictions.dtype}")
        if predictions.shape[1] == 0:
            raise ValueError(f"scores of shape {predictions.shape} have no column: no class "
                             "to predict")
        if classes is not None and predictions.shape[1] != classes:
            raise ValueError(f"scores have {predictions.shape[1]} columns, expected one per "
                             f"class ({classes})")
        if predictions.dtype.kind == "f":
            nan = np.isnan(predictions).any(axis=1)
            if nan.any():
                bad = int(np.flatnonzero(nan)[0])
                raise ValueError(f"the scores of row {bad} hold NaN: no class can be predicted "
                                 f"({predictions[bad].tolist()})")
        return predictions.argmax(axis=1)
    return _class_labels(predictions, "predictions", classes)


def _classes(classes):
    """``classes`` as an int >= 1, or None (ValueError naming it: "3" met NumPy's
    comparison, -1 asked for labels in [0, -1))."""
    return None if classes is None else positive_integer("classes", classes)


def _pair(labels, predictions, classes=None):
    """(``classes`` checked, or None; the number of score columns, 0 too, taken as it is:
    no column is said by ``_predicted_classes``.)"""
    predictions = as_array(predictions, "predictions")
    if classes is None and predictions.ndim >= 2 and not _index_column(predictions):
        classes = predictions.shape[1]  # scores: one column per class
    truth = _class_labels(labels, "labels", classes)
    predicted = _predicted_classes(predictions, classes)
    if truth.shape != predicted.shape:
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    if len(truth) == 0:
        raise ValueError("no labels and predictions: a metric of nothing is undefined")
    return truth, predicted, classes


def accuracy(labels, predictions):
    truth, predicted, _ = _pair(labels, predictions)
    return float((truth == predicted).mean())


def confusion_matrix(labels, predictions, classes=None):
    """``matrix[true, predicted]`` counts, ``classes x classes``: ``classes`` given, or one per
    score column, or the largest class seen plus one. Labels and predictions must lie in
    ``[0, classes)``."""
    classes = _classes(classes)
    if classes is not None and classes > MOST_CLASSES:  # before any array is made
        matrix = f" ({_bytes(8 * classes**2)})" if classes < 10**15 else ""
        raise ValueError(f"confusion_matrix: classes must be at most {MOST_CLASSES:,} (a "
                         f"matrix of {_bytes(8 * MOST_CLASSES**2)} of counts), got "
                         f"{f'{classes:,}' if matrix else shown(classes)}{matrix}")
    truth, predicted, classes = _pair(labels, predictions, classes)
    if classes is None:
        classes = _inferred_classes(truth, predicted)
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def _bytes(size):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.2f} {unit}"
        size /= 1024


def _inferred_classes(truth, predicted):
    """The largest class seen plus one, or ValueError naming it past ``INFERRED_CLASSES``."""
    classes = int(max(truth.max(), predicted.max())) + 1
    if classes > INFERRED_CLASSES:
        name, found = ("labels", truth) if truth.max() + 1 == classes else \
            ("predictions", predicted)
        row = int(np.argmax(found))
        raise ValueError(f"confusion_matrix: {name}: row {row} is {found[row]}, so the classes "
                         f"would be {classes} (more than {INFERRED_CLASSES}, a matrix of "
                         f"{classes * classes:,} counts); pass classes= to count that many")
    return classes


def precision_recall_f1(labels, predictions, classes=None):
    """Per-class precision, recall and F1 (0 where undefined), and their macro averages.

    Returns ``{"precision": (C,), "recall": (C,), "f1": (C,), "support": (C,),
    "macro": {"precision": p, "recall": r, "f1": f}}``. The macro averages are over every
    class when ``classes`` is given, else over the classes that occur in the labels or the
    predictions (as scikit-learn's, which averages over the labels it sees: a class that
    occurs nowhere is no zero in them, whether the predictions are classes or scores).
    """
    matrix = confusion_matrix(labels, predictions, classes)
    hits = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(actual > 0, hits / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    seen = (predicted + actual > 0) if classes is None else slice(None)
    macro = {"precision": precision[seen].mean(), "recall": recall[seen].mean(),
             "f1": f1[seen].mean()}
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual, "macro": macro}


def roc_auc(labels, scores):
    """Area under the ROC curve of a binary problem: P(score of a positive > a negative).

    ``labels`` are 0/1 (or booleans) and ``scores`` one number per sample: ``(N,)``, or
    ``(N, 1)`` columns; ties count one half (the Mann-Whitney statistic). Rows of two or
    more classes (one-hot labels, softmax scores) are refused: give the positive class's
    column.
    """
    labels = _one_per_sample(as_array(labels, "roc_auc: labels"), "labels")
    scores = _one_per_sample(as_array(scores, "roc_auc: scores"), "scores")
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"roc_auc: scores must be real numbers, got dtype {scores.dtype}")
    if scores.dtype.kind == "f" or scores.dtype.kind == "b":  # integers ranked as they are:
        scores = scores.astype(float)  # 2**53 and 2**53 + 1 are one float64
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("roc_auc needs binary labels (0 or 1)")
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        bad = int(np.flatnonzero(np.isnan(scores))[0])
        raise ValueError(f"roc_auc: score {bad} is NaN, which ranks against nothing")
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


def _one_per_sample(array, what):
    """``array`` flattened, when it holds one number per sample (``(N,)``, ``(N, 1)``, ...):
    rows of two or more classes, flattened, gave a micro-average of every class's column,
    neither the binary AUC nor a per-class one."""
    per_sample = math.prod(array.shape[1:])
    if array.ndim >= 2 and per_sample != 1:
        column = "scores[:, 1]" if what == "scores" else "labels[:, 1] of one-hot labels"
        raise ValueError(f"roc_auc: {what} of shape {array.shape} hold "
                         f"{per_sample} numbers per sample; roc_auc takes "
                         f"one per sample (a binary problem): give the positive class's column "
                         f"({column})")
    return array.ravel()
