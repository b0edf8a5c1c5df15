"""Shuffled mini-batches, gathered into buffers that are reused from batch to batch."""

import math
import numbers

import numpy as np

from .. import checks
from ..graph import EMPTY
from ..kernels import aligned_empty
from ..kernels.data import gather_batch, gather_inputs
from ..threads import threads


def _fixed(name):
    """Set once, in the constructor: the checks were made on it, and the gathering kernels
    trust it."""
    return checks.set_once(name, lambda batches: (
        f"Batches.{name} is fixed when the batches are made (the gathering kernels trust "
        "what was checked then): make a new Batches for other data"))


class Batches:
    """Iterate over ``(x, one_hot)`` mini-batches of ``features`` and integer ``labels``.

    ``features`` is ``(N, ...)`` of any numeric dtype (MNIST's uint8 images as they load);
    each batch is its rows flattened, times ``scale`` (1/255 for pixels; finite and not 0 in
    ``dtype``, negative allowed; features that are NaN or infinite, or that it takes beyond
    ``dtype``'s range, are refused), as ``dtype``. A ``batch_size`` larger than the data
    gives one batch of all of it.
    ``labels`` are integer classes ``(N,)``; the batch gets them one-hot, ``(b, classes)``.
    A new order is drawn for every pass when ``shuffle`` is true.

    The arrays yielded are views of two buffers that the next batch overwrites: give them
    to ``set_value`` (which copies them) and compute before asking for the next batch, or
    copy them. ``feed(x, one_hot)`` gathers each batch straight into the two input nodes
    instead (no copy, one kernel call a batch).

    ``batch_size`` may be changed between passes (a batch-size schedule): it is checked as
    in the constructor and the buffers follow it. ``features``, ``labels``, ``scale`` and
    ``dtype`` are read-only (the checks above were made on them, and the kernels that
    gather trust them): make a new ``Batches`` for other data.
    """

    def __init__(self, features, labels, batch_size, classes=10, scale=1.0, dtype=np.float32,
                 shuffle=True, seed=None):
        features = np.asarray(features)
        labels = np.asarray(labels)
        batch_size = checks.positive_integer("batch_size", batch_size)
        classes = checks.positive_integer("classes", classes)
        if features.ndim == 0 or len(features) == 0:
            raise ValueError("Batches: the dataset is empty (no samples in features)")
        if features.dtype.kind not in "biuf":
            raise ValueError(f"Batches: features must be numbers, got dtype {features.dtype}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integer classes of shape (N,), got {labels.dtype} "
                             f"{labels.shape}")
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} samples but {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= classes:
            bad = int(np.flatnonzero((labels < 0) | (labels >= classes))[0])
            raise ValueError(f"labels must lie in [0, {classes}), found {labels.min()} to "
                             f"{labels.max()} (label {bad} is {labels[bad]})")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):  # what the models and kernels take
            raise ValueError(f"Batches: dtype must be float32 or float64, got {self.dtype}")
        scale = _scale(scale, self.dtype)
        where = checks.first_non_finite(features)
        if where is not None:  # every batch holding it would train to NaN
            raise ValueError(f"Batches: features hold {features[where]} (sample {where[0]}): "
                             "batches need finite numbers")
        where = checks.first_beyond(features, self.dtype, scale)  # before a cast to the dtype
        if where is not None:
            raise ValueError(f"Batches: features hold {features[where]!s} (sample {where[0]}), "
                             f"which scaled by {scale:g} is infinite in {self.dtype.name}")
        # A copy that NumPy allocates: it asks the kernel for huge pages on large arrays, and
        # gathering random rows from 4 KB pages costs a page walk per row (2x slower here).
        features = checks.kernel_numbers(features, self.dtype)  # float16, long double: cast
        self.features = np.array(features.reshape(len(features), -1), order="C", copy=True)
        self.labels = labels.astype(np.int64)
        self._features.flags.writeable = self._labels.flags.writeable = False  # checked once
        self.shuffle = checks.flag("Batches: shuffle", shuffle)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
        self.rng = np.random.default_rng(seed)
        self.scale = self.dtype.type(scale)
        self._classes = classes
        self.batch_size = batch_size  # lays out the buffers

    features = _fixed("features")
    labels = _fixed("labels")
    scale = _fixed("scale")
    dtype = _fixed("dtype")

    @property
    def batch_size(self):
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value):
        """A new batch size, from the next pass (or the next batch of this one) on."""
        self._batch_size = checks.positive_integer("batch_size", value)
        # No batch holds more rows than the data: a batch_size of 10**9 for 10 samples is
        # one batch of 10 (buffers of 10**9 rows were a MemoryError of terabytes).
        rows = min(self._batch_size, len(self._labels))
        if getattr(self, "_x", None) is None or self._x.shape[0] != rows:
            self._x = aligned_empty((rows, self._features.shape[1]), self._dtype)
            self._y = aligned_empty((rows, self._classes), self._dtype)

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        count = len(self.labels)
        return self.iterate(self.rng.permutation(count) if self.shuffle else np.arange(count))

    def iterate(self, order):
        """The batches of the samples at the indices ``order``, in that order."""
        order = self._checked(order)
        for rows in self._batches(order):
            x, y = self._buffers(len(rows))
            threads.here()  # (a fixed count holds in a thread that claimed no graph yet)
            gather_batch(self._features, self._labels, rows, self._scale, x, y)
            yield x, y

    def _buffers(self, size):
        """The first ``size`` rows of the two buffers, which the kernels that fill them do
        not check: a batch larger than they are (an ``order`` longer than the data, each
        sample more than once) gets larger ones."""
        if size > self._x.shape[0]:
            self._x = aligned_empty((size, self._features.shape[1]), self._dtype)
            self._y = aligned_empty((size, self._classes), self._dtype)
        return self._x[:size], self._y[:size]

    def _batches(self, order):
        """The indices of each batch of ``order`` (a data-parallel subclass takes its share
        of each, which may be empty). The size is read at every batch: one set during a
        pass makes the next batch, which starts where the last ended (a step fixed when the
        pass began skipped or repeated samples)."""
        start = 0
        while start < len(order):
            stop = start + self.batch_size
            yield order[start:stop]
            start = stop

    def _checked(self, order):
        order = np.asarray(order)
        # The gathering kernel does not check bounds: an index outside the data would read
        # other memory, so the order is checked here (once per pass, not per batch).
        if order.ndim != 1 or (order.size and not np.issubdtype(order.dtype, np.integer)):
            raise ValueError(f"order must be a vector of integer sample indices, got "
                             f"{order.dtype} {order.shape}")
        if order.size and (order.min() < 0 or order.max() >= len(self.labels)):
            bad = int(np.flatnonzero((order < 0) | (order >= len(self.labels)))[0])
            raise ValueError(f"order[{bad}] is {order[bad]}: sample indices lie in "
                             f"[0, {len(self.labels)})")
        # As int64 in this machine's byte order: one compiled gather for every integer dtype
        # (an unsigned 32-bit order failed to compile, a big-endian one to type).
        return order.astype(np.int64, copy=False)

    def feed(self, x, one_hot, order=None):
        """Iterate over the batches (of a new order when ``shuffle``, of the indices
        ``order`` if given), each gathered straight into the input nodes ``x`` and
        ``one_hot``, as ``x.set_value(features); one_hot.set_value(labels)`` would leave
        them; yields each batch's size (0 for a data-parallel rank's empty share of a batch,
        the nodes left as they are)."""
        graph = x.graph
        if x is one_hot:  # (the features, then the labels over them, in one node)
            raise ValueError(f"Batches.feed: {getattr(x, 'name', x)!r} is given as both x and "
                             "one_hot: the features and the labels need an input each")
        for node, width, what in ((x, self.features.shape[1], "features"),
                                  (one_hot, self._y.shape[1], "classes")):
            if not getattr(node, "is_input", False) or not hasattr(node, "set_value"):
                raise ValueError(f"Batches.feed: {getattr(node, 'name', node)!r} is not an "
                                 "input (a Variable with trainable=False)")
            if node.graph is not graph:
                raise ValueError(f"Batches.feed: {x.name} and {one_hot.name} belong to "
                                 "different graphs")
            if node.dimension() != width:
                raise ValueError(f"Batches.feed: {node.name} holds {node.dimension()} values "
                                 f"a sample, the batches {width} {what}")
        if order is None:
            count = len(self.labels)
            order = self.rng.permutation(count) if self.shuffle else np.arange(count)
        order = self._checked(order)
        inputs = np.array([x.index, one_hot.index], np.int64)
        for rows in self._batches(order):
            if x.graph is not graph:  # removed by graph.clear() while this feed was paused
                x.graph.claim("Batches.feed")  # says so
            size = len(rows)
            if not size:  # an empty share: the nodes keep what they hold
                yield 0
                continue
            if (x.flat is None or one_hot.flat is None or x.flat.shape[0] != size
                    or one_hot.flat.shape[0] != size):
                features, labels = self._buffers(size)
                threads.here()  # (gathered before the claim below, which would set it)
                gather_batch(self._features, self._labels, rows, self._scale, features, labels)
                graph.claim("Batches.feed")  # both inputs in one use
                try:
                    # lays out the nodes' batches of this size (in their shapes: an input
                    # may be an image, not a column)
                    x.set_value(features.reshape(size, *x.dim))
                    one_hot.set_value(labels.reshape(size, *one_hot.dim))
                finally:
                    graph.release()
            else:
                graph.claim("Batches.feed")
                try:
                    graph.passes += 1
                    gather_inputs(self._features, self._labels, rows, self._scale, x.flat,
                                  one_hot.flat, graph.states, inputs,
                                  graph.downstream_indices(x, one_hot), EMPTY,
                                  graph.computed, graph.passes)
                    graph.single_sample = False
                finally:
                    graph.release()
            yield size


def _scale(scale, dtype):
    """``scale`` as a number that is finite and nonzero in ``dtype`` (negative is allowed:
    it multiplies the features)."""
    try:
        finite = (not isinstance(scale, bool) and isinstance(scale, numbers.Real)
                  and math.isfinite(scale))
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ValueError(f"Batches: scale must be a finite number, got {scale!r}")
    if scale == 0:
        raise ValueError(f"Batches: scale must not be 0, got {scale!r}: every batch would be "
                         "zeros")
    with np.errstate(over="ignore", under="ignore"):  # said below
        rounded = dtype.type(scale)
    if not (np.isfinite(rounded) and rounded != 0):
        raise ValueError(f"Batches: scale must be a finite number other than 0 in "
                         f"{dtype.name}, got {scale!r}, which is {rounded} in {dtype.name}")
    return float(scale)

