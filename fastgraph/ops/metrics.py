"""The article's metrics as graph nodes: ``Accuracy(output, label)`` and its kin.

A metric node has two parents, the model's output and the label, and accumulates over the
``forward()`` calls made on it (each one computes the parents first and adds the samples
they hold, one or a whole batch) until ``reset()``. ``value`` is the metric over everything
accumulated, ``value_str()`` the article's ``"Accuracy: 0.8123 "``. The numbers come from
``fastgraph.metrics``; these nodes only collect what it needs.

As in the article: an output with several rows is a vector of class scores (the prediction
is its argmax, the label a one-hot column); an output of one row is a binary score whose
prediction is positive when it is at least 0.5 (thresholds for ``ROC``), and a label is
positive when it equals 1 (labels are 1/-1 or 1/0). ``Precision``, ``Recall``, ``F1Score``,
``ROC`` and ``ROC_AUC`` are about the positive class of a binary output.
"""

import numpy as np

from .. import metrics
from ..node import Node


class Metrics(Node):
    """Base of the metric nodes: collects truth and scores over ``forward()`` calls."""

    need_save = False  # the article's flag: a saved graph leaves metric nodes out

    def __init__(self, output, label, graph=None, name=None):
        super().__init__(output, label, graph=graph, name=name)
        self.reset()

    def infer_dim(self):
        return (1, 1)

    def reset(self):
        """Forget every sample accumulated so far."""
        self._truth, self._scores = [], []
        self._result = None

    def forward(self):
        """Compute the output and the label, then add the samples they hold (the article's
        metric nodes accumulate at every forward, even when nothing changed)."""
        for parent in self.parents:
            parent.forward()
        self.compute()

    def compute(self):
        output, label = self.parents
        scores, truth = output.flat, label.flat
        if scores.shape[0] != truth.shape[0]:
            raise ValueError(f"{self.name}: {output.name} holds {scores.shape[0]} samples but "
                             f"{label.name} holds {truth.shape[0]}")
        if scores.shape[1] > 1:  # class scores against one-hot labels
            self._truth.append(metrics.class_labels(truth, f"{self.name}: {label.name}"))
        else:
            self._truth.append((truth[:, 0] == 1).astype(np.int64))
        self._scores.append(np.array(scores, dtype=np.float64))
        self._result = None

    def samples(self):
        """``(truth, scores)`` over every sample accumulated: class indices and score rows."""
        return np.concatenate(self._truth), np.concatenate(self._scores)

    @property
    def value(self):
        """The metric over the samples accumulated (None before the first ``forward()``)."""
        if not self._truth:
            return None
        if self._result is None:
            self._result = self.evaluate(*self.samples())
        return self._result

    def evaluate(self, truth, scores):
        raise NotImplementedError

    def predicted(self, scores):
        """Class indices: the argmax of class scores, or score >= 0.5 for a binary output."""
        if scores.shape[1] > 1:
            return metrics.predicted_classes(scores)
        return (scores[:, 0] >= 0.5).astype(np.int64)

    def binary(self, scores):
        if scores.shape[1] != 1:
            raise ValueError(f"{self.name} is about a binary output of one row; "
                             f"{self.parents[0].name} has {scores.shape[1]}")
        return scores[:, 0]

    def value_str(self):
        value = self.value
        shown = "n/a" if value is None else f"{value:.4f}"
        return f"{type(self).__name__}: {shown} "

    def get_jacobi(self, parent):
        raise NotImplementedError(f"{self.name} is a metric: it has no Jacobian")


class Accuracy(Metrics):
    """The fraction of samples whose predicted class is the label's."""

    def evaluate(self, truth, scores):
        return metrics.accuracy(truth, self.predicted(scores))


class Precision(Metrics):
    """Of the samples predicted positive, the fraction that are positive (0 if none is)."""

    def evaluate(self, truth, scores):
        found = metrics.precision_recall_f1(truth, self.predicted(self.binary(scores)[:, None]),
                                            classes=2)
        return float(found["precision"][1])


class Recall(Metrics):
    """Of the positive samples, the fraction predicted positive (0 if there is none)."""

    def evaluate(self, truth, scores):
        found = metrics.precision_recall_f1(truth, self.predicted(self.binary(scores)[:, None]),
                                            classes=2)
        return float(found["recall"][1])


class F1Score(Metrics):
    """The harmonic mean of precision and recall of the positive class."""

    def evaluate(self, truth, scores):
        found = metrics.precision_recall_f1(truth, self.predicted(self.binary(scores)[:, None]),
                                            classes=2)
        return float(found["f1"][1])


class ROC_AUC(Metrics):  # noqa: N801 -- the article's name
    """The area under the ROC curve: the chance that a positive outscores a negative."""

    def evaluate(self, truth, scores):
        return metrics.roc_auc(truth, self.binary(scores))


class ROC(Metrics):
    """The ROC curve at the article's 99 thresholds 0.01, 0.02, ..., 0.99: ``value`` is
    ``(fpr, tpr)``, two arrays of 99; ``value_str()`` is empty, as in the article."""

    thresholds = np.arange(1, 100) / 100

    def evaluate(self, truth, scores):
        positive = self.binary(scores)[None, :] >= self.thresholds[:, None]  # (99, N)
        actual = truth.astype(bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = (positive & actual).sum(axis=1) / actual.sum()
            fpr = (positive & ~actual).sum(axis=1) / (~actual).sum()
        return fpr, tpr

    @property
    def fpr(self):
        return None if self.value is None else self.value[0]

    @property
    def tpr(self):
        return None if self.value is None else self.value[1]

    def value_str(self):
        return ""
