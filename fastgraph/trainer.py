"""A trainer in the article's spirit: shuffled mini-batches, one_step/update, an evaluation
each epoch, and a history. The command line uses it; so can a user."""

import math
import signal
import threading
import time

import numpy as np

from . import checks, metrics
from .article_trainer import ArticleSimpleTrainer, Saver, Trainer, article_batch
from .datasets import Batches

__all__ = ["ArticleSimpleTrainer", "Saver", "SimpleTrainer", "Trainer", "TrainingDiverged",
           "article_batch"]


class TrainingDiverged(FloatingPointError):
    """The loss or a parameter became NaN or infinite: training stopped there."""


class SimpleTrainer:
    """Train ``optimizer`` (whose target is the loss) on ``(features, labels)`` arrays.

    ``x`` and ``labels`` are the graph's input nodes; ``predict`` is a node whose argmax over
    classes is the prediction (probabilities or logits). Features are ``(N, ...)`` samples of
    ``x.dimension()`` numbers, of any numeric dtype, multiplied by ``scale`` as they are
    batched (MNIST's uint8 pixels with ``scale=1/255``); labels are integer classes or
    one-hot rows. ``log`` receives one line per epoch. ``lr_decay`` multiplies the
    optimizer's learning rate after each epoch.
    Ctrl-C stops training after the batch that is running; ``interrupted`` tells.

    A batch whose loss is NaN or infinite, or an epoch that ends with a non-finite
    parameter, stops training with :class:`TrainingDiverged` (naming the epoch and batch):
    nothing a diverged model computes afterwards means anything.
    """

    def __new__(cls, *args, **kwargs):
        # The article's SimpleTrainer(input_x, input_y, loss_op, optimizer, epoches, ...)
        # passes a list of input nodes first; that form is fastgraph.article_trainer's.
        if cls is SimpleTrainer and args and isinstance(args[0], (list, tuple)):
            return ArticleSimpleTrainer(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, x, labels, predict, optimizer, batch_size=64, seed=None, progress=True,
                 eval_batch_size=10_000, log=print, lr_decay=1.0, scale=1.0):
        for role, node in (("labels", labels), ("predict", predict),
                           ("the optimizer's target", optimizer.target)):
            if getattr(node, "graph", None) is not x.graph:
                raise ValueError(f"SimpleTrainer: {role} {getattr(node, 'name', node)!s:.60} is "
                                 f"not a node of the graph of the input {x.name}")
        batch_size = checks.positive_integer("batch_size", batch_size)
        eval_batch_size = checks.positive_integer("eval_batch_size", eval_batch_size)
        self.lr_decay = checks.fraction("lr_decay", lr_decay, low_open=True, high_closed=True)
        scale = checks.positive_number("scale", scale)
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
        epochs = checks.positive_integer("epochs", epochs)
        self._check_decay(epochs)
        features, truth = self._check_features(features, labels, "training")
        batches = self.batches(features, truth)
        test_truth = None
        if test_features is not None or test_labels is not None:
            test_features, test_truth = self._check_features(test_features, test_labels, "test")
        with _stop_on_interrupt(self):
            for epoch in range(1, epochs + 1):
                record = self._epoch(batches, epoch, epochs)
                self._check_parameters(epoch)
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
        from tqdm.auto import tqdm  # here: importing fastgraph loads no progress bar

        # Each batch is gathered straight into the input nodes (no copy through set_value)
        bar = tqdm(batches.feed(self.x, self.labels), total=len(batches),
                   desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                   disable=not self.progress)
        for number, size in enumerate(bar, 1):
            if size:  # a data-parallel process may have no share of a small last batch
                self.optimizer.one_step()
                self.predict.forward()
                batch_loss = float(self.loss.flat.sum())
                if not math.isfinite(batch_loss):  # checked before update(): nothing applied
                    bar.close()
                    raise TrainingDiverged(
                        f"training stopped: the loss of batch {number} of epoch {epoch} is "
                        f"{batch_loss} ({self._diverged_hint()})")
                loss_sum += batch_loss
                hits += int((self.predict.flat.argmax(axis=1)
                             == self.labels.flat.argmax(axis=1)).sum())
                seen += size
            self.optimizer.update()
            if self.interrupted:
                break
        bar.close()
        seconds = time.perf_counter() - began
        return {"epoch": epoch, "loss": loss_sum / max(seen, 1),
                "train_accuracy": hits / max(seen, 1),
                "samples": seen, "seconds": seconds, "samples_per_second": seen / seconds}

    def _check_decay(self, epochs):
        """Refuse, before any work, a decay that would take the learning rate to 0 in the
        graph's dtype within these epochs (it is multiplied by ``lr_decay`` after each):
        found only at that epoch, the error would end the run and lose what it trained."""
        rate = start = self.optimizer.learning_rate
        dtype = self.x.graph.dtype
        for epoch in range(1, epochs + 1):
            rate *= self.lr_decay
            if not dtype.type(rate) > 0:
                raise ValueError(
                    f"lr_decay {self.lr_decay:g} takes the learning rate from {start:g} to "
                    f"{rate:g} after epoch {epoch} of {epochs}, which is 0 in {dtype.name}: "
                    "use a larger lr_decay or fewer epochs")

    def _diverged_hint(self):
        return (f"the model diverged: try a learning rate below "
                f"{self.optimizer.learning_rate:g}, or the data hold NaN or infinity")

    def _check_parameters(self, epoch):
        for param in self.optimizer.params:
            where = checks.first_non_finite(param.flat)
            if where is not None:
                raise TrainingDiverged(
                    f"training stopped: parameter {param.name} holds {param.flat[where]} after "
                    f"epoch {epoch} ({self._diverged_hint()})")

    def _check_features(self, features, labels, split):
        """``features`` as an array of N samples of the input's size, finite, and their N
        labels as classes of the network's (integers or one-hot rows given)."""
        if features is None or labels is None:
            raise ValueError(f"{split} features and labels go together: got only one of them")
        features = checks.as_array(features, f"{split} features")
        labels = metrics.class_labels(checks.as_array(labels, f"{split} labels"),
                                      f"{split} labels", classes=self.labels.dimension())
        if features.dtype.kind not in "biuf":
            raise ValueError(f"{split} features must be numbers, got dtype {features.dtype}")
        if features.ndim == 0 or len(features) == 0:
            raise ValueError(f"{split} features are empty: no samples to "
                             f"{'train on' if split == 'training' else 'test on'}")
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} {split} samples but {len(labels)} {split} labels")
        per_sample = features.size // len(features)
        if per_sample != self.x.dimension():
            raise ValueError(f"{split} features have {per_sample} numbers per sample, but "
                             f"{self.x.name} takes {self.x.dimension()} {self.x.dim}")
        where = checks.first_non_finite(features)
        if where is not None:
            raise ValueError(f"{split} features hold {features[where]} (sample {where[0]}): "
                             "training needs finite numbers")
        dtype = self.x.graph.dtype
        largest = float(np.finfo(dtype).max) / self.scale
        if features.dtype.kind == "f" and features.dtype.itemsize > dtype.itemsize \
                and np.abs(features).max() > largest:  # finite here, infinite in the model
            where = np.unravel_index(int(np.argmax(np.abs(features) > largest)), features.shape)
            raise ValueError(f"{split} features hold {features[where]} (sample {where[0]}), "
                             f"which scaled by {self.scale:g} is infinite in {dtype.name}")
        return features, labels

    def scores(self, features):
        """The ``predict`` node's output for ``features``, as ``(N, classes)`` rows."""
        features = np.asarray(features)
        if features.ndim == 0 or len(features) == 0:
            raise ValueError("scores: the features are empty (no samples)")
        chunks = []
        dtype = self.x.graph.dtype
        for start in range(0, len(features), self.eval_batch_size):
            chunk = features[start : start + self.eval_batch_size]
            self.x.set_value((chunk.reshape(len(chunk), -1) * dtype.type(self.scale)).astype(dtype))
            self.predict.forward()
            where = checks.first_non_finite(self.predict.flat)
            if where is not None:  # finite weights so large that the outputs are not
                raise TrainingDiverged(
                    f"{self.predict.name} gives {self.predict.flat[where]} for sample "
                    f"{start + where[0]} of the features scored ({self._diverged_hint()})")
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
