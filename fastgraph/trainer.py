"""A trainer in the article's spirit: shuffled mini-batches, one_step/update, an evaluation
each epoch, and a history. The command line uses it; so can a user."""

import signal
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from . import metrics
from .datasets import Batches


class SimpleTrainer:
    """Train ``optimizer`` (whose target is the loss) on ``(features, labels)`` arrays.

    ``x`` and ``labels`` are the graph's input nodes; ``predict`` is a node whose argmax over
    classes is the prediction (probabilities or logits). Features are ``(N, ...)`` samples of
    ``x.dimension()`` numbers, of any numeric dtype, multiplied by ``scale`` as they are
    batched (MNIST's uint8 pixels with ``scale=1/255``); labels are integer classes or
    one-hot rows. ``log`` receives one line per epoch. ``lr_decay`` multiplies the
    optimizer's learning rate after each epoch.
    Ctrl-C stops training after the batch that is running; ``interrupted`` tells.
    """

    def __init__(self, x, labels, predict, optimizer, batch_size=64, seed=None, progress=True,
                 eval_batch_size=10_000, log=print, lr_decay=1.0, scale=1.0):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
        self.lr_decay = lr_decay
        self.x, self.labels, self.predict = x, labels, predict
        self.optimizer = optimizer
        self.loss = optimizer.target
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.seed = seed
        self.scale = scale
        self.progress = progress
        self.log = log
        self.history = []
        self.interrupted = False

    def train(self, features, labels, test_features=None, test_labels=None, epochs=1):
        """Run ``epochs`` epochs; returns the history, one dict per epoch."""
        batches = self.batches(features, metrics.class_labels(labels, "training labels"))
        test_truth = None if test_labels is None else metrics.class_labels(test_labels)
        with _stop_on_interrupt(self):
            for epoch in range(1, epochs + 1):
                record = self._epoch(batches, epoch, epochs)
                if test_features is not None:
                    record["test_accuracy"] = metrics.accuracy(
                        test_truth, self.scores(test_features))
                record["learning_rate"] = self.optimizer.learning_rate
                self.optimizer.learning_rate *= self.lr_decay
                self.history.append(record)
                self.log(_describe(record, epochs))
                if self.interrupted:
                    self.log(f"interrupted: stopped after {record['samples']} samples of epoch "
                             f"{epoch}")
                    break
        return self.history

    def batches(self, features, labels):
        """The shuffled mini-batches of an epoch (a data-parallel trainer takes its share)."""
        return Batches(features, labels, self.batch_size, classes=self.labels.dimension(),
                       scale=self.scale, dtype=self.x.graph.dtype, seed=self.seed)

    def _epoch(self, batches, epoch, epochs):
        loss_sum, hits, seen = 0.0, 0, 0
        began = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                   disable=not self.progress)
        for x, one_hot in bar:
            if len(x):  # a data-parallel process may have no share of a small last batch
                self.x.set_value(x)
                self.labels.set_value(one_hot)
                self.optimizer.one_step()
                self.predict.forward()
                loss_sum += float(self.loss.flat.sum())
                hits += int((self.predict.flat.argmax(axis=1) == one_hot.argmax(axis=1)).sum())
                seen += len(x)
            self.optimizer.update()
            if self.interrupted:
                break
        bar.close()
        seconds = time.perf_counter() - began
        return {"epoch": epoch, "loss": loss_sum / max(seen, 1),
                "train_accuracy": hits / max(seen, 1),
                "samples": seen, "seconds": seconds, "samples_per_second": seen / seconds}

    def scores(self, features):
        """The ``predict`` node's output for ``features``, as ``(N, classes)`` rows."""
        chunks = []
        dtype = self.x.graph.dtype
        for start in range(0, len(features), self.eval_batch_size):
            chunk = features[start : start + self.eval_batch_size]
            self.x.set_value((chunk.reshape(len(chunk), -1) * dtype.type(self.scale)).astype(dtype))
            self.predict.forward()
            chunks.append(self.predict.flat.copy())
        return np.concatenate(chunks)


def _describe(record, epochs):
    line = (f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}, "
            f"train accuracy {record['train_accuracy']:.4f}")
    if "test_accuracy" in record:
        line += f", test accuracy {record['test_accuracy']:.4f}"
    return line + f", {record['samples_per_second']:,.0f} samples/s"


class _stop_on_interrupt:
    """While training, Ctrl-C sets ``trainer.interrupted`` instead of raising mid-step."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.previous = None

    def __enter__(self):
        self.trainer.interrupted = False
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.trainer.interrupted = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
