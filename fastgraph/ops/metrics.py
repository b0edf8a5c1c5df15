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

A metric turns no mistake into a number: the output and the label must have one shape (a
ValueError naming both at construction), and ``forward()`` refuses, naming the node, the
parent and the sample, a score that is NaN or infinite, a binary label other than 1, -1
and 0, and a label row that is not one-hot; a batch refused adds nothing to what the node
holds. ``ROC`` and ``ROC_AUC`` of samples that are all positive or all negative are
undefined: reading ``value`` raises ValueError. A metric is not differentiable: an engine
asked to compute it in a pass (as an optimizer's target, a backward target, or the parent
of another node) gets a TypeError saying so.
"""

import numpy as np

from .. import metrics
from ..node import Node


class Metrics(Node):
    """Base of the metric nodes: collects truth and scores over ``forward()`` calls."""

    need_save = False  # the article's flag: a saved graph leaves metric nodes out
    differentiable = False  # no VJP, no Jacobian: see not_differentiable()

    def __init__(self, output, label, graph=None, name=None):
        super().__init__(output, label, graph=graph, name=name)
        self.reset()

    def infer_dim(self):
        output, label = self.parents
        who = getattr(self, "name", None) or type(self).__name__  # unnamed while built
        for parent in self.parents:
            if isinstance(parent, Metrics):  # its forward would count its samples again
                raise TypeError(f"{who}: {parent.name} is a metric ({type(parent).__name__}); "
                                "a metric's parents are the model's output and the label")
        if output.dim != label.dim:
            raise ValueError(
                f"{who}: {output.name} {output.dim} and {label.name} {label.dim} differ in "
                "shape: the output and the label must have one (a binary score (1, 1) and a "
                "label 1/-1 or 1/0, or k class scores (k, 1) and a one-hot label (k, 1))")
        return (1, 1)

    def reset(self):
        """Forget every sample accumulated so far."""
        self._truth, self._scores = [], []
        self._result = None

    def forward(self):
        """Compute the output and the label, then add the samples they hold (the article's
        metric nodes accumulate at every forward, even when nothing changed)."""
        graph = self.graph
        graph.claim("{}.forward", self.name)  # the samples of one feed, counted once
        try:
            for parent in self.parents:
                parent.forward()
            self.collect()
        finally:
            graph.release()

    def collect(self):
        """Check the samples the output and the label hold, then add them (all or none)."""
        output, label = self.parents
        scores, truth = output.flat, label.flat
        if scores.shape[0] != truth.shape[0]:
            raise ValueError(f"{self.name}: {output.name} holds {scores.shape[0]} samples but "
                             f"{label.name} holds {truth.shape[0]}")
        finite = np.isfinite(scores).all(axis=1)
        if scores.shape[1] > 1:  # class scores against one-hot labels
            if not finite.all():
                bad = int(np.flatnonzero(~finite)[0])
                row = scores[bad]
                raise ValueError(f"{self.name}: the scores of sample {bad} in {output.name} "
                                 f"hold {row[~np.isfinite(row)][0]}: a metric needs finite "
                                 f"scores ({row.tolist()})")
            classes = metrics.class_labels(truth, f"{self.name}: {label.name}")
        else:
            if not finite.all():
                bad = int(np.flatnonzero(~finite)[0])
                raise ValueError(f"{self.name}: the score of sample {bad} in {output.name} is "
                                 f"{scores[bad, 0]}: a metric needs finite scores")
            labels = truth[:, 0]
            valid = (labels == 1) | (labels == -1) | (labels == 0)
            if not valid.all():
                bad = int(np.flatnonzero(~valid)[0])
                raise ValueError(f"{self.name}: the label of sample {bad} in {label.name} is "
                                 f"{labels[bad]}, expected the article's binary labels: 1 and "
                                 "-1 (or 1 and 0)")
            classes = (labels == 1).astype(np.int64)
        self._truth.append(classes)
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

    # -- not differentiable: what the engines call on the nodes of a pass refuses --------
    def not_differentiable(self):
        children = ", ".join(child.name for child in self.children)
        return TypeError(
            f"{self.name} is a metric, not differentiable: it cannot be an optimizer's target "
            f"or a backward target, nor a parent of another node"
            f"{f' ({children})' if children else ''}; its own forward() accumulates its value")

    def compute(self):
        """An engine computes the nodes of a pass; a metric is in none (``forward()`` adds
        its samples): this is reached only from a pass that has a metric on its tape."""
        raise self.not_differentiable()

    def vjp(self, slot, upstream):
        raise self.not_differentiable()

    def vjp_summed(self, slot, upstream):
        raise self.not_differentiable()

    def dense_jacobian(self, slot):
        raise self.not_differentiable()

    def get_jacobi(self, parent):
        raise self.not_differentiable()


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
    """The area under the ROC curve: the chance that a positive outscores a negative (ties
    count one half). Undefined, a ValueError, without a positive and a negative sample."""

    def evaluate(self, truth, scores):
        try:
            return metrics.roc_auc(truth, self.binary(scores))
        except ValueError as error:  # no positive or no negative sample: undefined
            raise ValueError(f"{self.name}: {error}") from None


class ROC(Metrics):
    """The ROC curve at the article's 99 thresholds 0.01, 0.02, ..., 0.99: ``value`` is
    ``(fpr, tpr)``, two arrays of 99; ``value_str()`` is empty, as in the article. Samples
    that are all positive or all negative have no curve: ``value`` raises ValueError (the
    article's code kept its arrays of zeros from before the first sample)."""

    thresholds = np.arange(1, 100) / 100

    def evaluate(self, truth, scores):
        positive = self.binary(scores)[None, :] >= self.thresholds[:, None]  # (99, N)
        actual = truth.astype(bool)
        positives = int(actual.sum())
        if positives in (0, len(actual)):  # a rate of nothing: undefined, not NaN or 0
            raise ValueError(
                f"{self.name}: the ROC curve needs positive and negative labels; the "
                f"{len(actual)} samples accumulated have no "
                f"{'positive' if positives == 0 else 'negative'} one, so its "
                f"{'true' if positives == 0 else 'false'} positive rate is undefined")
        tpr = (positive & actual).sum(axis=1) / positives
        fpr = (positive & ~actual).sum(axis=1) / (len(actual) - positives)
        return fpr, tpr

    @property
    def fpr(self):
        return None if self.value is None else self.value[0]

    @property
    def tpr(self):
        return None if self.value is None else self.value[1]

    def value_str(self):
        return ""
