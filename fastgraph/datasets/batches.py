"""Shuffled mini-batches, gathered into buffers that are reused from batch to batch."""

import numpy as np

from ..kernels.data import gather_batch


class Batches:
    """Iterate over ``(x, one_hot)`` mini-batches of ``features`` and integer ``labels``.

    ``features`` is ``(N, ...)`` of any numeric dtype (MNIST's uint8 images as they load);
    each batch is its rows flattened, times ``scale`` (1/255 for pixels), as ``dtype``.
    ``labels`` are integer classes ``(N,)``; the batch gets them one-hot, ``(b, classes)``.
    A new order is drawn for every pass when ``shuffle`` is true.

    The arrays yielded are views of two buffers that the next batch overwrites: give them
    to ``set_value`` (which keeps them without a copy) and compute before asking for the
    next batch, or copy them.
    """

    def __init__(self, features, labels, batch_size, classes=10, scale=1.0, dtype=np.float32,
                 shuffle=True, seed=None):
        features = np.asarray(features)
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integer classes of shape (N,), got {labels.dtype} "
                             f"{labels.shape}")
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} samples but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"labels must lie in [0, {classes}), found {labels.min()} to "
                             f"{labels.max()}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        # A copy that NumPy allocates: it asks the kernel for huge pages on large arrays, and
        # gathering random rows from 4 KB pages costs a page walk per row (2x slower here).
        self.features = np.array(features.reshape(len(features), -1), order="C", copy=True)
        self.labels = labels.astype(np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.scale = self.dtype.type(scale)
        self._x = np.empty((self.batch_size, self.features.shape[1]), self.dtype)
        self._y = np.empty((self.batch_size, classes), self.dtype)

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        count = len(self.labels)
        return self.iterate(self.rng.permutation(count) if self.shuffle else np.arange(count))

    def iterate(self, order):
        """The batches of the samples at the indices ``order``, in that order."""
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            x, y = self._x[: len(rows)], self._y[: len(rows)]
            gather_batch(self.features, self.labels, rows, self.scale, x, y)
            yield x, y
