"""Softmax and the losses, each with its VJP. Rows are samples; every row is reduced whole.

Softmax and cross-entropy work from the log-sum-exp with the row maximum taken out, so
logits of +-1e4 give finite values and gradients.
"""

import numpy as np

from . import inline, kernel


@inline
def _softmax_row(x, i, out, o):
    """out[o, :] = softmax(x[i, :]); returns the row's log-sum-exp. One exp per element.
    Inlined into its callers: compiled as a kernel of its own it was a second compilation
    in the MLP's first step (about 0.1 s of CPU with an empty cache), for the same bits."""
    top = x[i, 0]
    for j in range(1, x.shape[1]):
        if x[i, j] > top:  # max(top, x[i, j]) as Python takes it (Numba's max is one more
            top = x[i, j]  # function to compile: 0.07 s of CPU)
    total = 0.0
    for j in range(x.shape[1]):
        e = np.exp(x[i, j] - top)
        out[o, j] = e
        total += e
    scale = 1.0 / total
    for j in range(x.shape[1]):
        out[o, j] *= scale
    return top + np.log(total)


@kernel
def softmax(x, out):
    for i in range(x.shape[0]):
        _softmax_row(x, i, out, i)


@kernel
def softmax_vjp(y, upstream, out):
    for i in range(out.shape[0]):
        r = i * y.shape[0] // out.shape[0]
        inner = 0.0
        for j in range(y.shape[1]):
            inner += upstream[i, j] * y[r, j]
        for j in range(y.shape[1]):
            out[i, j] = y[r, j] * (upstream[i, j] - inner)


@kernel
def cross_entropy_with_softmax(logits, labels, probs, lse, loss):
    """Per-sample -sum(labels * log softmax(logits)); keeps probs and lse for the VJPs.

    Returns -1, or the index of the first sample whose labels are not a distribution
    (an entry that is negative or NaN, or a sum away from 1), which the caller reports.
    """
    for i in range(loss.shape[0]):
        il = i * logits.shape[0] // loss.shape[0]
        iy = i * labels.shape[0] // loss.shape[0]
        row_lse = _softmax_row(logits, il, probs, i)
        lse[i, 0] = row_lse
        total = 0.0
        label_sum = 0.0
        for j in range(logits.shape[1]):
            y = labels[iy, j]
            if not y >= 0:  # negative, or NaN (which fails every comparison)
                return i
            label_sum += y
            total -= y * (logits[il, j] - row_lse)
        if not abs(label_sum - 1.0) <= 1e-3:
            return i
        loss[i, 0] = total
    return -1


@kernel
def cross_entropy_vjp_logits(probs, labels, upstream, out):
    """``upstream * (probs * sum(labels) - labels)``: the labels of a sample sum to 1 only
    within the forward's tolerance (1e-3), and the loss's gradient has their sum."""
    for i in range(out.shape[0]):
        ip = i * probs.shape[0] // out.shape[0]
        iy = i * labels.shape[0] // out.shape[0]
        u = upstream[i, 0]
        total = labels.dtype.type(0)
        for j in range(out.shape[1]):
            total += labels[iy, j]
        for j in range(out.shape[1]):
            out[i, j] = u * (probs[ip, j] * total - labels[iy, j])


@kernel
def cross_entropy_vjp_labels(logits, lse, upstream, out):
    for i in range(out.shape[0]):
        il = i * logits.shape[0] // out.shape[0]
        ie = i * lse.shape[0] // out.shape[0]
        u = upstream[i, 0]
        for j in range(out.shape[1]):
            out[i, j] = -u * (logits[il, j] - lse[ie, 0])


@kernel
def log_loss(x, out):
    """log(1 + exp(-x)), without overflow for large |x|."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            if v >= 0:
                out[i, j] = np.log1p(np.exp(-v))
            else:
                out[i, j] = -v + np.log1p(np.exp(v))


@kernel
def log_loss_vjp(x, upstream, out):
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            v = x[r, j]
            if v >= 0:
                e = np.exp(-v)
                out[i, j] = -upstream[i, j] * e / (1.0 + e)
            else:
                out[i, j] = -upstream[i, j] / (1.0 + np.exp(v))


@kernel
def perception_loss(x, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            out[i, j] = 0 if v >= 0 else -v


@kernel
def perception_loss_vjp(x, upstream, out):
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            v = x[r, j]
            out[i, j] = 0 if v >= 0 else (-upstream[i, j] if v < 0 else v)  # NaN x: NaN


@kernel
def mean_squared_error(prediction, target, out):
    for i in range(out.shape[0]):
        ip = i * prediction.shape[0] // out.shape[0]
        it = i * target.shape[0] // out.shape[0]
        total = 0.0
        for j in range(prediction.shape[1]):
            d = prediction[ip, j] - target[it, j]
            total += d * d
        out[i, 0] = total / prediction.shape[1]


@kernel
def mean_squared_error_vjp(prediction, target, sign, upstream, out):
    """sign * d(loss)/d(prediction) per sample; sign -1 gives the VJP for the target."""
    scale = 2.0 * sign / prediction.shape[1]
    for i in range(out.shape[0]):
        ip = i * prediction.shape[0] // out.shape[0]
        it = i * target.shape[0] // out.shape[0]
        u = upstream[i, 0] * scale
        for j in range(out.shape[1]):
            out[i, j] = u * (prediction[ip, j] - target[it, j])
