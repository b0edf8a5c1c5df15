"""Differentially private SGD on MNIST: clip each sample's gradient, sum, add noise.

DP-SGD (Abadi et al., 2016) bounds what one sample can change: each sample's gradient is
clipped to norm ``C``, the clipped gradients are summed, Gaussian noise of standard
deviation ``sigma * C`` is added, and the mean is applied. ``fg.per_sample_gradients``
gives every sample's gradient in one backward pass.
    python examples/dp_sgd.py [--quick] [--clip 1.0] [--noise 1.1]
"""
import argparse

import numpy as np

import fastgraph as fg
from fastgraph.datasets import Batches, mnist


def number(least, strictly):
    """An argparse type: a finite float above ``least`` (or at least it, not ``strictly``)."""
    def parse(text):
        value = float(text)  # argparse says "invalid parse value" for what is no number
        if not (np.isfinite(value) and (value > least if strictly else value >= least)):
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a finite number {'above' if strictly else 'of at least'} "
                f"{least:g}")
        return value
    parse.__name__ = "number"
    return parse


parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="a few batches, for CI")
parser.add_argument("--clip", type=number(0, True), default=1.0,
                    help="per-sample gradient norm bound C")
parser.add_argument("--noise", type=number(0, False), default=1.1, help="noise multiplier sigma")
parser.add_argument("--lr", type=number(0, True), default=0.1)
parser.add_argument("--batch-size", type=int, default=256)
args = parser.parse_args()

x_train, y_train, x_test, y_test = mnist.load()
samples = 4096 if args.quick else 60000
model = fg.models.mlp(hidden=(100, 20), seed=0)
params = [n for n in model.graph.nodes if isinstance(n, fg.Variable) and n.trainable]
rng = np.random.default_rng(0)
batches = Batches(x_train[:samples], y_train[:samples], args.batch_size, scale=1 / 255, seed=0)

for epoch in range(1 if args.quick else 5):
    clipped_share = []
    for features, one_hot in batches:
        model.x.set_value(features)
        model.one_hot.set_value(one_hot)
        gradients = fg.per_sample_gradients(model.loss, params, copy=False)  # (B, *shape) each
        batch = len(features)
        norms = np.sqrt(sum((g.reshape(batch, -1) ** 2).sum(axis=1) for g in gradients))
        factors = np.minimum(1.0, args.clip / np.maximum(norms, 1e-12)).astype(np.float32)
        clipped_share.append(float((norms > args.clip).mean()))
        for param, g in zip(params, gradients):
            total = np.tensordot(factors, g, axes=1)  # the sum of the clipped gradients
            total += rng.normal(0.0, args.noise * args.clip, total.shape).astype(np.float32)
            param.set_value(param.value - args.lr * total / batch)
    model.x.set_value(mnist.features(x_test))
    model.predict.forward()
    accuracy = fg.metrics.accuracy(y_test, model.predict.value)
    print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}, "
          f"{np.mean(clipped_share):.0%} of per-sample gradients clipped")
