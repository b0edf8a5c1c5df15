"""What every operator shares: a check of its parents, and the sum over the batch."""

import numpy as np

from ..kernels.elementwise import sum_rows
from ..node import Node


class Operator(Node):
    """A node computed from parents. ``arity`` fixes how many (None: one or more).

    Beside ``compute`` and ``dense_jacobian``, an operator gives its parents' VJPs twice:

    - ``vjp(slot, upstream)``: per sample, one row for each row of ``upstream``. For a
      parent without a batch axis beside batched samples, row b is sample b's contribution
      (what per-sample gradients are made of).
    - ``vjp_summed(slot, upstream)``: the sum of those rows, ``(1, parent.dimension())``:
      the gradient of a parameter shared by the batch. By default it sums ``vjp``'s rows;
      an operator overrides it where the sum is cheaper made directly (MatMul's weight
      gradient is one GEMM over the batch, not B outer products).

    Which one a pass calls is a fact of its plan (see ``fastgraph.graph.Plan``), not of
    the operator.
    """

    arity = None

    def __init__(self, *parents, graph=None, name=None):
        kind = type(self).__name__
        if self.arity is not None and len(parents) != self.arity:
            raise TypeError(f"{kind} takes {self.arity} parent node(s), got {len(parents)}")
        if not parents:
            raise TypeError(f"{kind} takes at least one parent node")
        super().__init__(*parents, graph=graph, name=name)

    def vjp_summed(self, slot, upstream):
        total = self.buffer(("summed", slot), (1, self.parents[slot].dimension()))
        sum_rows(self.vjp(slot, upstream), total, 0.0)
        return total

    def same_dims(self):
        """The common per-sample shape of the parents, or a ValueError naming them."""
        dims = {parent.dim for parent in self.parents}
        if len(dims) > 1:
            shapes = ", ".join(f"{parent.name} {parent.dim}" for parent in self.parents)
            raise ValueError(f"{type(self).__name__} needs parents of one shape, got {shapes}")
        return self.parents[0].dim

    def identity(self, size=None):
        return np.eye(size or self.dimension(), dtype=self.graph.dtype)
