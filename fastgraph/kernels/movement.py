"""Kernels that only move numbers: the transpose of each sample's matrix, or of one matrix."""

from . import kernel


@kernel
def transpose_rows(a, rows, cols, out):
    """Each row of ``a`` holds a ``(rows, cols)`` matrix, row-major; write its transpose."""
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        for r in range(rows):
            for c in range(cols):
                out[i, c * rows + r] = a[ia, r * cols + c]


@kernel
def transpose(a, out):
    """``out = a.T`` for a matrix ``a`` (n, m) and ``out`` (m, n): a product made as its
    transpose (``kernels.blas.flips``) put back the right way round."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[j, i]
