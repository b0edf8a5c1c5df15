"""Movement: operators that pass numbers on unchanged, in another place or from another node.

``Transpose`` swaps each sample's rows and columns. ``Welding`` is the article's welding
point: a node whose parent is chosen between steps (``weld(node)``), so that one network on
top can read a different node each sample, such as the last step of a sequence of varying
length. The graph re-wires the edge (``Graph.rewire``), which rebuilds the tapes, plans and
compiled programs that held the old one.
"""

import numpy as np

from ..kernels.elementwise import copy_rows
from ..kernels.movement import transpose_rows
from ..node import Node, _check_dim
from .base import Operator


class Transpose(Operator):
    """The transpose of each sample's matrix: ``(rows, cols)`` becomes ``(cols, rows)``."""

    arity = 1

    def infer_dim(self):
        rows, cols = self.parents[0].dim
        return (cols, rows)

    def compute(self):
        rows, cols = self.parents[0].dim
        transpose_rows(self.parents[0].flat, rows, cols, self.output())

    def vjp(self, slot, upstream):
        rows, cols = self.dim
        out = self.buffer(0, upstream.shape)
        transpose_rows(upstream, rows, cols, out)
        return out

    def dense_jacobian(self, slot):
        rows, cols = self.parents[0].dim
        # Output element (c, r) is input element (r, c): one 1 per row, row-major indices.
        permutation = np.arange(rows * cols).reshape(rows, cols).T.ravel()
        return self.identity()[permutation]


class Welding(Node):
    """The article's welding point: the value of whichever node was last ``weld``-ed to it.

    ``Welding()`` may be built before it has a parent; ``dim`` is then taken from the first
    layer built on it (``layer.fc``), from ``dim=``, or from the first node welded to it;
    until then no other operator can be built on it. It stands for a batched node (the
    article welds the steps of a recurrent network). ``weld(node)`` re-attaches it to
    ``node``, which must have its shape and a batch axis, and must not depend on the
    welding point itself (that would be a cycle).
    """

    arity = 1  # what Graph.rewire checks

    def __init__(self, parent=None, dim=None, graph=None, name=None):
        self._dim = None if dim is None else _check_dim(dim)
        parents = () if parent is None else (parent,)
        if isinstance(parent, Node) and parent.dim is not None:  # else Node says what is wrong
            _check_weld(name or "Welding", self._dim, parent)  # before joining the graph
        super().__init__(*parents, graph=graph, name=name)
        self.batched = True
        self._summed = [False]

    def infer_dim(self):
        if self.parents and not self.parents[0].batched:  # Graph.rewire asks this too
            raise ValueError(f"{getattr(self, 'name', 'Welding')} welds nodes that depend on "
                             f"an input; {self.parents[0].name} does not")
        return self.parents[0].dim if self.parents else self._dim

    def adopt_dim(self, dim):
        """Give a welding point without a parent or shape the shape its first user expects."""
        if self.dim is None:
            self._dim = self._node_dim = _check_dim(dim)

    def weld(self, node):
        """Make ``node`` this welding point's parent (from the next computation on)."""
        if not isinstance(node, Node):
            raise TypeError(f"{self.name} welds to a node, got {type(node).__name__}")
        if self.parents and self.parents[0] is node:
            return
        if node.dim is not None:  # else rewire says it has no shape yet
            _check_weld(self.name, self.dim, node)
        self.graph.rewire(self, [node], "weld")  # rebuilds tapes and plans, empties what follows

    def dimension(self):
        if self.dim is None:
            raise ValueError(f"{self.name} has no shape yet: give Welding(dim=...) or weld "
                             "it first")
        return self.dim[0] * self.dim[1]

    def __repr__(self):
        if self.dim is None:
            return f"<{self.name} dim unknown until welded>"
        return super().__repr__()

    def config(self):
        return {"dim": None if self.dim is None else list(self.dim)}

    def compute(self):
        if not self.parents:
            raise ValueError(f"{self.name} has no parent: call {self.name}.weld(node) first")
        copy_rows(self.parents[0].flat, self.output())

    def vjp(self, slot, upstream):
        return upstream

    def dense_jacobian(self, slot):
        return np.eye(self.dimension(), dtype=self.graph.dtype)


def _check_weld(name, dim, node):
    """Raise unless a welding point of shape ``dim`` (None: any) may take ``node``."""
    if dim is not None and node.dim != dim:
        raise ValueError(f"{name} has shape {dim} and cannot weld {node.name} of shape "
                         f"{node.dim}")
    if not node.batched:
        raise ValueError(f"{name} welds nodes that depend on an input; {node.name} does not")
