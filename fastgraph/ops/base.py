"""What every operator shares: a check of its parents, and the sum over the batch."""

import numpy as np

from ..kernels.elementwise import sum_rows
from ..node import Node


class Operator(Node):
    """A node computed from parents. ``arity`` fixes how many (None: one or more)."""

    arity = None

    def __init__(self, *parents, graph=None, name=None):
        kind = type(self).__name__
        if self.arity is not None and len(parents) != self.arity:
            raise TypeError(f"{kind} takes {self.arity} parent node(s), got {len(parents)}")
        if not parents:
            raise TypeError(f"{kind} takes at least one parent node")
        super().__init__(*parents, graph=graph, name=name)
        # Slots whose parent has no batch axis while this node has one: their VJP sums.
        self._summed = [self.batched and not parent.batched for parent in self.parents]

    def unbroadcast(self, slot, gradient):
        """``gradient`` per sample, summed over the batch when the parent has no batch axis.

        A parent without a batch axis was broadcast over the batch in the forward pass, so
        its vector-Jacobian product is the sum of the per-sample ones. During a per-sample
        pass (``graph.per_sample``) the per-sample ones are what is wanted: no sum.
        """
        if not self._summed[slot] or self.graph.per_sample:
            return gradient
        total = self.buffer(("batch sum", slot), (1, gradient.shape[1]))
        sum_rows(gradient, total)
        return total

    def rows_of(self, node, upstream):
        """``node``'s value with one sample per row of ``upstream``.

        In the per-sample passes of ``fastgraph.jacobians`` the upstream holds ``m`` rows per
        sample; a kernel reads the forward values at row ``i * rows // out_rows`` itself,
        but a NumPy product needs them repeated.
        """
        value = node._value
        if node.batched and upstream.shape[0] != node.flat.shape[0]:
            value = np.repeat(value, upstream.shape[0] // node.flat.shape[0], axis=0)
        return value

    def same_dims(self):
        """The common per-sample shape of the parents, or a ValueError naming them."""
        dims = {parent.dim for parent in self.parents}
        if len(dims) > 1:
            shapes = ", ".join(f"{parent.name} {parent.dim}" for parent in self.parents)
            raise ValueError(f"{type(self).__name__} needs parents of one shape, got {shapes}")
        return self.parents[0].dim

    def identity(self, size=None):
        return np.eye(size or self.dimension(), dtype=self.graph.dtype)
