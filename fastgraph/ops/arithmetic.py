"""Arithmetic: sums, products, reshapes. Matrix products go to BLAS through NumPy."""

import numpy as np

from ..kernels.blas import gemm
from ..kernels.elementwise import (
    add_into,
    add_rows,
    copy_rows,
    dot_rows,
    multiply_rows,
    outer_rows,
    scale_rows,
)
from .base import Operator


class Add(Operator):
    """Element-wise sum of one or more nodes of one shape."""

    def infer_dim(self):
        return self.same_dims()

    def compute(self):
        first, *rest = self.parents
        out = self.output()
        if not rest:
            copy_rows(first.flat, out)
            return
        add_rows(first.flat, rest[0].flat, out)
        for parent in rest[1:]:
            add_into(out, parent.flat)

    def vjp(self, slot, upstream):
        return self.unbroadcast(slot, upstream)

    def dense_jacobian(self, slot):
        return self.identity()


class MatMul(Operator):
    """Matrix product ``a @ b`` of each sample's matrices.

    The network case, a parameter ``W (m, k)`` times a batch of column vectors, is one GEMM
    on the ``(B, k)`` batch: ``flat = x.flat @ W.T``. A batch of matrices times a parameter
    is one GEMM on the ``(B * m, k)`` stack. Both call BLAS directly (``kernels.blas``),
    transposes as flags, no copies. Other cases use NumPy's batched matmul.
    """

    arity = 2

    def infer_dim(self):
        a, b = self.parents
        if a.dim[1] != b.dim[0]:
            raise ValueError(
                f"MatMul cannot multiply {a.name} of shape {a.dim} by {b.name} of shape "
                f"{b.dim}: {a.dim[1]} columns against {b.dim[0]} rows"
            )
        self._vectors = not a.batched and b.batched and b.dim[1] == 1
        self._stacked = a.batched and not b.batched
        self._weight_gradient = None  # (matrix, flat) views of one array, made once
        return (a.dim[0], b.dim[1])

    def compute(self):
        a, b = self.parents
        out = self.output()
        if self._vectors:
            gemm(b.flat, a._value.T, out, 0.0)
        elif self._stacked:
            gemm(a._value.reshape(-1, a.dim[1]), b._value, out.reshape(-1, self.dim[1]), 0.0)
        else:
            np.matmul(a._value, b._value, out=self._value)

    def vjp(self, slot, upstream):
        if self._vectors:
            return self._vectors_vjp(slot, upstream)
        a, b = self.parents
        rows, cols = self.dim
        if self._stacked and not (slot == 1 and self.graph.per_sample):
            stacked = upstream.reshape(-1, cols)
            if slot == 0:
                out = self.buffer(0, (stacked.shape[0], a.dim[1]))
                gemm(stacked, b._value.T, out, 0.0)
                return out.reshape(upstream.shape[0], -1)
            out = self.buffer(1, b.dim)
            gemm(self.rows_of(a, upstream).reshape(-1, a.dim[1]).T, stacked, out, 0.0)
            return out.reshape(1, -1)
        upstream = upstream.reshape((-1, rows, cols) if self.batched else (rows, cols))
        if slot == 0:
            per_sample = np.matmul(upstream, np.swapaxes(self.rows_of(b, upstream), -1, -2))
        else:
            per_sample = np.matmul(np.swapaxes(self.rows_of(a, upstream), -1, -2), upstream)
        flat = np.ascontiguousarray(per_sample).reshape(-1, self.parents[slot].dimension())
        return self.unbroadcast(slot, flat)

    def _vectors_vjp(self, slot, upstream):
        """W @ x for a batch of columns x: each VJP is one GEMM on the (B, k) batch."""
        weights, x = self.parents
        if slot == 1:  # upstream @ W
            out = self.buffer(1, (upstream.shape[0], x.dim[0]))
            gemm(upstream, weights._value, out, 0.0)
            return out
        if self.graph.per_sample:  # each sample's outer product
            out = self.buffer("per sample", (upstream.shape[0], weights.dimension()))
            outer_rows(upstream, x.flat, out)
            return out
        if self._weight_gradient is None:  # the sum over the batch of outer products
            matrix = np.empty(weights.dim, self.graph.dtype)
            self._weight_gradient = (matrix, matrix.reshape(1, -1))
        matrix, flat = self._weight_gradient
        columns = x.flat
        if upstream.shape[0] != columns.shape[0]:
            columns = self.rows_of(x, upstream).reshape(upstream.shape[0], -1)
        gemm(upstream.T, columns, matrix, 0.0)
        return flat

    def dense_jacobian(self, slot):
        a, b = self.parents
        if slot == 0:  # d vec(AB) / d vec(A) = I_m (x) B^T, row-major vec
            return np.kron(self.identity(self.dim[0]), b.sample().T)
        return np.kron(a.sample(), self.identity(self.dim[1]))


class Dot(Operator):
    """Inner product of two nodes of one shape (the article's vectors): a 1x1 result."""

    arity = 2

    def infer_dim(self):
        self.same_dims()
        return (1, 1)

    def compute(self):
        a, b = self.parents
        dot_rows(a.flat, b.flat, self.output())

    def vjp(self, slot, upstream):
        other = self.parents[1 - slot]
        out = self.buffer(slot, (upstream.shape[0], other.dimension()))
        scale_rows(other.flat, upstream, out)
        return self.unbroadcast(slot, out)

    def dense_jacobian(self, slot):
        return self.parents[1 - slot].sample().reshape(1, -1).copy()


class Multiply(Operator):
    """Element-wise (Hadamard) product of two nodes of one shape."""

    arity = 2

    def infer_dim(self):
        return self.same_dims()

    def compute(self):
        a, b = self.parents
        multiply_rows(a.flat, b.flat, self.output())

    def vjp(self, slot, upstream):
        out = self.buffer(slot, upstream.shape)
        multiply_rows(upstream, self.parents[1 - slot].flat, out)
        return self.unbroadcast(slot, out)

    def dense_jacobian(self, slot):
        return np.diag(self.parents[1 - slot].sample().ravel())


class ScalarMultiply(Operator):
    """``s * a`` for a 1x1 node ``s`` and any node ``a``."""

    arity = 2

    def infer_dim(self):
        scalar, operand = self.parents
        if scalar.dim != (1, 1):
            raise ValueError(
                f"ScalarMultiply needs a 1x1 scalar first, got {scalar.name} of shape {scalar.dim}"
            )
        return operand.dim

    def compute(self):
        scalar, operand = self.parents
        scale_rows(operand.flat, scalar.flat, self.output())

    def vjp(self, slot, upstream):
        scalar, operand = self.parents
        if slot == 0:
            out = self.buffer(0, (upstream.shape[0], 1))
            dot_rows(upstream, operand.flat, out)
        else:
            out = self.buffer(1, upstream.shape)
            scale_rows(upstream, scalar.flat, out)
        return self.unbroadcast(slot, out)

    def dense_jacobian(self, slot):
        scalar, operand = self.parents
        if slot == 0:
            return operand.sample().reshape(-1, 1).copy()
        return scalar.sample()[0, 0] * self.identity()


class Reshape(Operator):
    """The same numbers in another per-sample shape (row-major, as NumPy reshapes)."""

    arity = 1

    def __init__(self, parent, shape, graph=None, name=None):
        self._shape = tuple(int(size) for size in shape)
        super().__init__(parent, graph=graph, name=name)

    def infer_dim(self):
        (parent,) = self.parents
        if len(self._shape) != 2 or self._shape[0] * self._shape[1] != parent.dimension():
            raise ValueError(
                f"Reshape cannot make {parent.name} of shape {parent.dim} into {self._shape}"
            )
        return self._shape

    def config(self):
        return {"shape": list(self._shape)}

    def compute(self):
        self._hold(self.parents[0].flat)  # the flat layout is the same: share it

    def vjp(self, slot, upstream):
        return upstream

    def dense_jacobian(self, slot):
        return self.identity()


class Concat(Operator):
    """The parents flattened and stacked into one column vector, as the article concatenates."""

    def infer_dim(self):
        sizes = [parent.dimension() for parent in self.parents]
        self._segments = [slice(end - size, end) for size, end in zip(sizes, np.cumsum(sizes))]
        return (sum(sizes), 1)

    def compute(self):
        out = self.output()
        for parent, segment in zip(self.parents, self._segments):
            np.copyto(out[:, segment], parent.flat)

    def vjp(self, slot, upstream):
        segment = self._segments[slot]
        out = self.buffer(slot, (upstream.shape[0], segment.stop - segment.start))
        np.copyto(out, upstream[:, segment])
        return self.unbroadcast(slot, out)

    def dense_jacobian(self, slot):
        return self.identity()[:, self._segments[slot]].copy()
