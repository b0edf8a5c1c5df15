"""Losses: each gives one number per sample (1x1), except the element-wise ones."""

import numpy as np

from ..kernels import softmax as kernels
from .activations import Activation
from .base import Operator


class CrossEntropyWithSoftMax(Operator):
    """-sum(labels * log softmax(logits)) per sample, fused, for one-hot labels.

    ``labels`` must be one-hot, or more generally a probability distribution per sample
    (non-negative, summing to 1 within 1e-3); anything else raises ValueError naming the
    sample. The gradient is that of the loss computed, ``softmax * sum(labels) - labels``.
    """

    arity = 2

    def infer_dim(self):
        self.same_dims()
        return (1, 1)

    def compute(self):
        logits, labels = self.parents
        out = self.output()
        probs = self.buffer("probs", (out.shape[0], logits.dimension()))
        lse = self.buffer("lse", (out.shape[0], 1))
        bad = kernels.cross_entropy_with_softmax(logits.flat, labels.flat, probs, lse, out)
        if bad >= 0:
            row = labels.flat[bad if labels.batched else 0]
            raise ValueError(
                f"{self.name}: the labels of sample {bad} in {labels.name} are not one-hot "
                f"(nor a distribution: non-negative, summing to 1): {np.array2string(row)}"
            )

    def vjp(self, slot, upstream):
        logits, labels = self.parents
        probs, lse = self._buffers["probs"], self._buffers["lse"]
        out = self.buffer(slot, (upstream.shape[0], probs.shape[1]))
        if slot == 0:
            kernels.cross_entropy_vjp_logits(probs, labels.flat, upstream, out)
        else:
            kernels.cross_entropy_vjp_labels(logits.flat, lse, upstream, out)
        return out

    def dense_jacobian(self, slot):
        logits, labels = self.parents
        z = logits.sample().ravel()
        with np.errstate(over="ignore"):  # z - max(z) past the dtype's range is -inf: exp 0
            log_probs = z - z.max() - np.log(np.exp(z - z.max()).sum())
        if slot == 0:  # (the labels sum to 1 within a tolerance: their sum is in it)
            y = labels.sample().ravel()
            return (np.exp(log_probs) * y.sum() - y).reshape(1, -1)
        return -log_probs.reshape(1, -1)


class LogLoss(Activation):
    """log(1 + exp(-x)) element-wise: the logistic loss of a margin ``label * output``."""

    def compute(self):
        kernels.log_loss(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        kernels.log_loss_vjp(self.parents[0].flat, upstream, out)
        return out

    def dense_jacobian(self, slot):
        x = self.parents[0].sample().ravel()
        with np.errstate(over="ignore"):  # exp(x) = inf for a large x: -1 / inf = -0, right
            return np.diag(-1 / (1 + np.exp(x)))


class PerceptionLoss(Activation):
    """max(-x, 0) element-wise: the perceptron loss of a margin ``label * output``."""

    def compute(self):
        kernels.perception_loss(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        out = self.vjp_buffer(upstream)
        kernels.perception_loss_vjp(self.parents[0].flat, upstream, out)
        return out

    def dense_jacobian(self, slot):
        x = self.parents[0].sample().ravel()
        return np.diag(np.where(np.isnan(x), np.nan, np.where(x >= 0, 0.0, -1.0)).astype(
            self.graph.dtype))


class MeanSquaredError(Operator):
    """mean((prediction - target)**2) over the elements of each sample."""

    arity = 2

    def infer_dim(self):
        self.same_dims()
        return (1, 1)

    def compute(self):
        prediction, target = self.parents
        kernels.mean_squared_error(prediction.flat, target.flat, self.output())

    def vjp(self, slot, upstream):
        prediction, target = self.parents
        out = self.buffer(slot, (upstream.shape[0], prediction.dimension()))
        sign = 1.0 if slot == 0 else -1.0
        kernels.mean_squared_error_vjp(prediction.flat, target.flat, sign, upstream, out)
        return out

    def dense_jacobian(self, slot):
        prediction, target = self.parents
        difference = (prediction.sample() - target.sample()).reshape(1, -1)
        return (1 if slot == 0 else -1) * 2 * difference / self.parents[0].dimension()
