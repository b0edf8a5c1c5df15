"""Arithmetic: sums, products, reshapes. Matrix products go to BLAS (``kernels.blas``)."""

import numbers

import numpy as np

from ..kernels import PARALLEL_MIN
from ..kernels.blas import (
    BACKEND,
    BLOCK_ROWS,
    OUT_COLUMNS,
    OUT_ROWS,
    STAGED_ROWS,
    WHOLE,
    grouped_product,
    matvec,
    outer_staged,
    product,
    vecmat,
)
from ..kernels.elementwise import (
    add_into,
    add_rows,
    copy_columns,
    copy_rows,
    dot_rows,
    matmul_rows,
    multiply_rows,
    outer,
    outer_rows,
    scale_rows,
    take_columns,
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
        return upstream

    def dense_jacobian(self, slot):
        return self.identity()


#: The smallest weight (in numbers) whose one-sample gradient may be deferred: below it, the
#: outer product costs less than copying the sample's rows aside.
DEFERRED_FROM = 2048


class MatMul(Operator):
    """Matrix product ``a @ b`` of each sample's matrices.

    The network case, a parameter ``W (m, k)`` times a batch of column vectors, is one GEMM
    on the ``(B, k)`` batch: ``flat = x.flat @ W.T``. A batch of matrices times a parameter
    is one GEMM on the ``(B * m, k)`` stack. Both call BLAS directly (``kernels.blas``),
    transposes as flags, no copies, through one kernel (``gemm_owned``) that splits the
    products which make or read a parameter by its rows between the threads, as the
    optimizer's update splits it; the others it makes whole. MKL's generated kernels
    make a small one of those (at most ``JIT_MOST`` multiply-adds) and the parts of a
    split one where MKL generates code for them (``kernels.blas.product``). A per-sample
    pass's input gradient, m rows a sample, skips each sample's inactive units
    (``_grouped``). Other cases multiply the small matrices row by row.
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
        return (a.dim[0], b.dim[1])

    def compute(self):
        a, b = self.parents
        out = self.output()
        if self._vectors and b.flat.shape[0] == 1:  # one sample: faster than BLAS's M = 1
            matvec(b.flat, a._value, out)
        elif self._vectors:  # x @ W.T, split between the threads by W's rows (gemm_owned)
            product(OUT_COLUMNS, b.flat, False, a._value, True, out, 0.0, self._turned)
        elif self._stacked:
            product(WHOLE, a._value.reshape(-1, a.dim[1]), False, b._value, False,
                    out.reshape(-1, self.dim[1]), 0.0)
        else:
            matmul_rows(a.flat, b.flat, out, self.dim[0], a.dim[1], self.dim[1], False, False)

    def vjp(self, slot, upstream):
        a, b = self.parents
        (m, n), k = self.dim, a.dim[1]
        out = self.buffer(slot, (upstream.shape[0], self.parents[slot].dimension()))
        if self._vectors and slot == 0:  # each sample's outer product upstream_b x_b^T
            outer_rows(upstream, b.flat, out)
        elif self._vectors and upstream.shape[0] == 1:
            vecmat(upstream, a._value, out)
        elif self._vectors and self._grouped(upstream):  # a per-sample pass: m rows a sample
            grouped_product(upstream, a._value, out, upstream.shape[0] // b.flat.shape[0])
        elif self._vectors:  # upstream @ W for the batch of columns
            product(WHOLE, upstream, False, a._value, False, out, 0.0)
        elif self._stacked and slot == 0:  # the stack of upstream rows times b^T
            product(WHOLE, upstream.reshape(-1, n), False, b._value, True,
                    out.reshape(-1, k), 0.0)
        elif slot == 0:  # dA = U B^T
            matmul_rows(upstream, b.flat, out, m, n, k, False, True)
        else:  # dB = A^T U
            matmul_rows(a.flat, upstream, out, k, m, n, True, False)
        return out

    def _turned(self, shape):
        """Where ``product`` makes the forward product as its transpose (``flips``)."""
        return self.buffer("turned product", shape)

    def _grouped(self, upstream):
        """Whether upstream @ W is a per-sample pass's (``fastgraph.jacobians``: ``m`` rows a
        sample, ``BLOCK_ROWS`` or more) for a weight of ``PARALLEL_MIN`` numbers or more,
        which ``grouped_product`` makes skipping each sample's zero columns (the units a ReLU
        left inactive for it): the MNIST MLP's Jacobian (64, 10, 784), 49% of its first
        layer's units active, took 0.73-0.92 of the dense product's time (medians of 25
        rounds each way, in one process, three runs). MKL, float32."""
        rows, batch = upstream.shape[0], self.parents[1].flat.shape[0]
        return (BACKEND == "mkl" and upstream.dtype == np.float32 and rows % batch == 0
                and rows >= BLOCK_ROWS * batch and self.parents[0]._value.size >= PARALLEL_MIN)

    def vjp_summed(self, slot, upstream):
        """The weight gradient summed over the batch as one GEMM (the other slots: rows)."""
        a, b = self.parents
        if slot == 0 and self._vectors:  # upstream^T @ x: (m, B) by (B, k)
            out = self.buffer("summed", a.dim)
            if upstream.shape[0] == 1 and out.size >= DEFERRED_FROM:  # one sample
                m, k = a.dim  # its outer product, which the executor may defer (see
                outer_staged(upstream, b.flat, self.buffer("staged upstream", (STAGED_ROWS, m)),
                             self.buffer("staged input", (STAGED_ROWS, k)), self._staged(),
                             0, out, 0.0)  # kernels.blas.outer_staged)
            elif upstream.shape[0] == 1:  # MKL's k = 1 GEMM is 4x slower
                outer(upstream, b.flat, out, 0.0)
            else:
                product(OUT_ROWS, upstream, True, b.flat, False, out, 0.0)
        elif slot == 1 and self._stacked:  # the stacked a^T @ the stacked upstream
            out = self.buffer("summed", b.dim)
            product(OUT_ROWS, a._value.reshape(-1, a.dim[1]), True,
                    upstream.reshape(-1, self.dim[1]), False, out, 0.0)
        else:
            return super().vjp_summed(slot, upstream)
        return out.reshape(1, -1)

    def _staged(self):
        """How many samples ``outer_staged`` keeps for this node: state that lasts between
        steps, so it starts at zero when the buffer is made (not a step's work)."""
        fresh = "staged" not in self._buffers
        staged = self.buffer("staged", (1, 1))
        if fresh:
            staged[0, 0] = 0
        return staged

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
        return out

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
        return out

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
        return out

    def dense_jacobian(self, slot):
        scalar, operand = self.parents
        if slot == 0:
            return operand.sample().reshape(-1, 1).copy()
        return scalar.sample()[0, 0] * self.identity()


class Reshape(Operator):
    """The same numbers in another per-sample shape (row-major, as NumPy reshapes)."""

    arity = 1

    def __init__(self, parent, shape, graph=None, name=None):
        try:
            sizes = tuple(shape)
            ok = len(sizes) == 2 and all(  # 6.0 is 6, as a Variable's dim takes it
                isinstance(size, numbers.Real) and not isinstance(size, bool)
                and size == size // 1 and size > 0 for size in sizes)
        except (TypeError, OverflowError):
            ok = False
        if not ok:  # (-3, -4) has the right product; 6.5 truncated; "ab" failed in int()
            raise ValueError(f"Reshape of {getattr(parent, 'name', parent)}: the shape must be "
                             f"two positive integers (rows, cols), got {shape!r}")
        self._shape = tuple(int(size) for size in sizes)
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
        (parent,) = self.parents
        if parent.parents or parent.is_input:  # the flat layout is the same: share it
            self._hold(parent.flat)
        else:  # a parameter, which an update changes in place: this keeps the value computed
            copy_columns(parent.flat, self.output(), 0)  # before it, as every node does

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
            copy_columns(parent.flat, out, segment.start)

    def vjp(self, slot, upstream):
        segment = self._segments[slot]
        out = self.buffer(slot, (upstream.shape[0], segment.stop - segment.start))
        take_columns(upstream, segment.start, out)
        return out

    def dense_jacobian(self, slot):
        return self.identity()[:, self._segments[slot]].copy()
