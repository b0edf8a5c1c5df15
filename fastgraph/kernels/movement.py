"""Kernels that only move numbers: the transpose of each sample's matrix."""

from . import kernel


@kernel
def transpose_rows(a, rows, cols, out):
    """Each row of ``a`` holds a ``(rows, cols)`` matrix, row-major; write its transpose."""
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        for r in range(rows):
            for c in range(cols):
                out[i, c * rows + r] = a[ia, r * cols + c]
