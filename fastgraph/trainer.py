"""A trainer in the article's spirit: shuffled mini-batches, one_step/update, an evaluation
each epoch, and a history. The command line uses it; so can a user."""

import math
import signal
import sys
import threading
import time

import numpy as np

from . import checks, metrics
from .article_trainer import ArticleSimpleTrainer, Saver, Trainer, article_batch
from .datasets import Batches

__all__ = ["ArticleSimpleTrainer", "Saver", "SimpleTrainer", "Trainer", "TrainingDiverged",
           "article_batch"]


#: The article's distributed trainers (its chapter 11), which fastgraph does not provide.
_NOT_PROVIDED = ("DistTrainerParameterServer", "DistTrainerRingAllReduce")


def __getattr__(name):
    if name in _NOT_PROVIDED:  # (``from fastgraph.trainer import ...`` raises it as it is)
        raise ImportError(
            f"fastgraph.trainer has no {name}: the article's distributed trainers are not "
            "provided; fastgraph.distributed.DataParallel trains data-parallel over MPI "
            "(README: Data-parallel training on MPI)", name=name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# What only the article's SimpleTrainer(input_x, input_y, loss_op, optimizer, epoches, ...)
# takes: given with a node first, the call was meant for it.
_ARTICLE_OPTIONS = ("epoches", "eval_on_train", "metrics_ops", "print_iteration_interval",
                    "input_x", "input_y", "loss_op")


#: The most epochs ``train()`` takes (2**63 - 1): an epoch count is a count a run could
#: reach (a large one, 10**9, trains until Ctrl-C), not a number of hundreds of digits.
MOST_EPOCHS = sys.maxsize

#: What ``SimpleTrainer`` calls on its optimizer: one of ``fastgraph.optimizer``'s, or
#: ``fastgraph.distributed.DataParallel``, which wraps one and is not a subclass.
_OPTIMIZER_NEEDS = ("target", "params", "learning_rate", "one_step", "update", "discard")


def _check_optimizer(optimizer):
    missing = [name for name in _OPTIMIZER_NEEDS if not hasattr(optimizer, name)]
    if missing:  # (None had "no attribute 'target'")
        raise TypeError(f"SimpleTrainer: optimizer must be a fastgraph optimizer made on the "
                        f"loss (fastgraph.optimizer.Adam(graph, loss), ...), got "
                        f"{type(optimizer).__name__} {optimizer!r:.60}")


def _silent(line):
    """``log=None``: the lines go nowhere."""


class TrainingDiverged(FloatingPointError):
    """The loss or a parameter became NaN or infinite: training stopped there."""


class SimpleTrainer:
    """Train ``optimizer`` (whose target is the loss) on ``(features, labels)`` arrays.

    ``x`` and ``labels`` are the graph's input nodes; ``predict`` is a node whose argmax over
    classes is the prediction (probabilities or logits): it must depend on ``x`` and on no
    other input, and give one number per class. Features are ``(N, ...)`` samples of
    ``x.dimension()`` numbers, of any numeric dtype, multiplied by ``scale`` (positive and
    finite in the graph's dtype) as they are batched (MNIST's uint8 pixels with
    ``scale=1/255``); features that are not finite, or not once scaled, are refused before
    training (and by :meth:`scores`). Labels are integer classes or one-hot rows.
    ``optimizer`` is one of ``fastgraph.optimizer``'s (or a ``DataParallel`` of one), made on
    the loss. ``log`` is called with one line per epoch (``print`` unless given; None: no
    lines). ``progress`` (True or False) shows a bar during each epoch. ``lr_decay``
    multiplies the optimizer's learning rate after each epoch.
    Ctrl-C stops training after the batch that is running; ``interrupted`` tells.

    A batch whose loss is NaN or infinite, or an epoch that ends with a non-finite
    parameter, stops training with :class:`TrainingDiverged` (naming the epoch and batch):
    nothing a diverged model computes afterwards means anything.
    """

    def __new__(cls, *args, **kwargs):
        # The article's SimpleTrainer(input_x, input_y, loss_op, optimizer, epoches, ...)
        # passes a list of input nodes first; that form is fastgraph.article_trainer's.
        if cls is SimpleTrainer:
            first = args[0] if args else kwargs.get("input_x")
            if isinstance(first, (list, tuple)):
                return ArticleSimpleTrainer(*args, **kwargs)
            article = [name for name in _ARTICLE_OPTIONS if name in kwargs]
            if article:  # the article's call with a node where its list of inputs goes
                given = getattr(first, "name", None)
                given = f"the node {given}" if given else f"{first!r:.60}"
                raise TypeError(
                    f"SimpleTrainer: {article[0]} is an option of the article's "
                    "SimpleTrainer(input_x, input_y, loss_op, optimizer, epoches, ...), whose "
                    f"input_x must be a list of input nodes ([x]), got {given}; "
                    "SimpleTrainer(x, labels, predict, optimizer, ...) takes no "
                    f"{article[0]}")
        return super().__new__(cls)

    def __init__(self, x, labels, predict, optimizer, batch_size=64, seed=None, progress=True,
                 eval_batch_size=10_000, log=print, lr_decay=1.0, scale=1.0):
        _check_optimizer(optimizer)
        for role, node in (("x", x), ("labels", labels)):
            if not getattr(node, "is_input", False):
                raise ValueError(f"SimpleTrainer: {role} {getattr(node, 'name', node)!s:.60} is "
                                 "not an input node (a Variable with trainable=False)")
        for role, node in (("labels", labels), ("predict", predict),
                           ("the optimizer's target", optimizer.target)):
            if getattr(node, "graph", None) is not x.graph:
                raise ValueError(f"SimpleTrainer: {role} {getattr(node, 'name', node)!s:.60} is "
                                 f"not a node of the graph of the input {x.name}")
        self._check_predict(x, labels, predict, optimizer)
        batch_size = checks.positive_integer("batch_size", batch_size)
        eval_batch_size = checks.positive_integer("eval_batch_size", eval_batch_size)
        self.lr_decay = checks.fraction("lr_decay", lr_decay, low_open=True, high_closed=True)
        scale = checks.positive_number("scale", scale, x.graph.dtype)  # 1e-50 is 0 in float32
        if log is not None and not callable(log):  # found only after a whole epoch, else
            raise TypeError(f"SimpleTrainer: log must be a function that takes a line (print), "
                            f"or None for no lines, got {type(log).__name__} {log!r:.60}")
        self.x, self.labels, self.predict = x, labels, predict
        self.optimizer = optimizer
        self.loss = optimizer.target
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.seed = seed
        self.scale = scale
        self.progress = checks.flag("progress", progress)
        self.log = _silent if log is None else log
        self.history = []
        self.interrupted = False

    def train(self, features, labels, test_features=None, test_labels=None, epochs=1):
        """Run ``epochs`` epochs; returns the history, one dict per epoch."""
        epochs = checks.positive_integer("epochs", epochs, most=MOST_EPOCHS)
        self._check_decay(epochs)
        features, truth = self._check_features(features, labels, "training")
        batches = self.batches(features, truth)
        test_truth = None
        if test_features is not None or test_labels is not None:
            test_features, test_truth = self._check_features(test_features, test_labels, "test")
        done = len(self.history)  # a second train() goes on numbering: its epochs follow
        with _stop_on_interrupt(self):
            for epoch in range(done + 1, done + epochs + 1):
                record = self._epoch(batches, epoch, done + epochs)
                self._check_parameters(epoch)
                if test_features is not None:
                    record["test_accuracy"] = metrics.accuracy(
                        test_truth, self._scores(test_features))  # checked above
                record["learning_rate"] = self.optimizer.learning_rate
                self.optimizer.learning_rate *= self.lr_decay
                self.history.append(record)
                self.log(_describe(record, done + epochs))
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
                    self.optimizer.discard()  # nor left for a training started again
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
        start, dtype = self.optimizer.learning_rate, self.x.graph.dtype
        zero = checks.decayed_to_zero(start, self.lr_decay, epochs, dtype)
        if zero is not None:
            raise ValueError(
                f"lr_decay {self.lr_decay!r} takes the learning rate from {start:g} to "
                f"{zero[1]:g} after epoch {zero[0]} of {epochs}, which is 0 in {dtype.name}: "
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

    @staticmethod
    def _check_predict(x, labels, predict, optimizer):
        """``predict`` must be what the trainer can score: a node of every sample of ``x``
        (of no other input: scoring feeds ``x`` alone) with one number per class; the loss
        (the optimizer's target) must read ``x`` and ``labels``, which the trainer feeds."""
        if predict is optimizer.target:
            raise ValueError(
                f"SimpleTrainer: predict {predict.name} is the optimizer's target (the loss); "
                "SimpleTrainer(x, labels, predict, optimizer) takes the node whose argmax over "
                "the classes is the prediction (the article's SimpleTrainer(input_x, input_y, "
                "loss_op, optimizer, epoches) takes a list of input nodes first: [x])")
        inputs = x.graph.tape(predict).inputs
        if x not in inputs or not predict.batched:
            reads = ", ".join(node.name for node in inputs) or "no input (only parameters)"
            raise ValueError(f"SimpleTrainer: predict {predict.name} does not depend on the "
                             f"input {x.name} (it reads {reads}): it would predict the same "
                             "for every sample")
        others = [node.name for node in inputs if node is not x]
        if others:
            raise ValueError(f"SimpleTrainer: predict {predict.name} depends on the input "
                             f"{others[0]} besides {x.name}: it must depend on {x.name} alone "
                             f"(scoring feeds only {x.name})")
        loss = optimizer.target
        reads = x.graph.tape(loss).inputs
        for role, node in (("x", x), ("labels", labels)):
            if not any(read is node for read in reads):  # trained on a stale value, silently
                names = ", ".join(read.name for read in reads) or "no input"
                raise ValueError(f"SimpleTrainer: {role} {node.name} is not read by the loss "
                                 f"{loss.name}, the optimizer's target (it reads {names}): the "
                                 f"batches fed to {node.name} would go nowhere")
        if predict.dimension() != labels.dimension():
            raise ValueError(f"SimpleTrainer: predict {predict.name} gives "
                             f"{predict.dimension()} numbers per sample {predict.dim}, but the "
                             f"labels {labels.name} have {labels.dimension()} classes: predict "
                             "needs one number per class (its argmax is the predicted class)")

    def _check_features(self, features, labels, split):
        """``features`` as an array of N samples of the input's size, finite, and their N
        labels as classes of the network's (integers or one-hot rows given)."""
        if features is None or labels is None:
            raise ValueError(f"{split} features and labels go together: got only one of them")
        features = checks.as_array(features, f"{split} features")
        labels = metrics.class_labels(checks.as_array(labels, f"{split} labels"),
                                      f"{split} labels", classes=self.labels.dimension())
        return self._check_samples(features, f"{split} features", split, len(labels)), labels

    def _check_samples(self, features, what, split, count=None):
        """``features`` as an array of N samples (``count`` if given) of the input's size,
        numbers that are finite and stay finite in the model's dtype once scaled (``what``
        names them in an error)."""
        features = checks.as_array(features, what)
        if features.dtype.kind not in "biuf":
            raise ValueError(f"{what} must be numbers, got dtype {features.dtype}")
        if features.ndim == 0 or len(features) == 0:
            raise ValueError(f"{what} are empty" + {
                "training": ": no samples to train on", "test": ": no samples to test on",
            }.get(split, " (no samples)"))
        if count is not None and len(features) != count:
            raise ValueError(f"{len(features)} {split} samples but {count} {split} labels")
        per_sample = features.size // len(features)
        if per_sample != self.x.dimension():
            one = (" (one sample? give it as features[None])"
                   if features.ndim == 1 and features.size == self.x.dimension() else "")
            raise ValueError(f"{what} have {per_sample} numbers per sample, but "
                             f"{self.x.name} takes {self.x.dimension()} {self.x.dim}{one}")
        where = checks.first_non_finite(features)
        if where is not None:
            raise ValueError(f"{what} hold {features[where]} (sample {where[0]}): "
                             f"{'scoring' if split == 'scores' else 'training'} needs finite "
                             "numbers")
        dtype = self.x.graph.dtype
        where = checks.first_beyond(features, dtype, self.scale)  # finite here, not in the model
        if where is not None:
            raise ValueError(f"{what} hold {features[where]!s} (sample {where[0]}), "
                             f"which scaled by {self.scale:g} is infinite in {dtype.name}")
        return features

    def scores(self, features):
        """The ``predict`` node's output for ``features``, as ``(N, classes)`` rows."""
        return self._scores(self._check_samples(features, "scores: the features", "scores"))

    def _scores(self, features):
        chunks = []
        dtype = self.x.graph.dtype
        for start in range(0, len(features), self.eval_batch_size):
            chunk = features[start : start + self.eval_batch_size]
            self.x.set_value((chunk.reshape(len(chunk), *self.x.dim)  # its shape: an image too
                              * dtype.type(self.scale)).astype(dtype))
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
