"""Matrix products: ``gemm(a, b, out, beta)`` computes ``out = a @ b + beta * out``.

The operands are 2-D; ``a`` and ``b`` may be transposed views (F-contiguous), which BLAS
takes as they are, with no copy. The product is one CBLAS call made from Numba-compiled
code: it costs the BLAS routine plus about half a microsecond, where ``np.matmul`` adds
one or two, and ``beta=1`` accumulates in place.

The backend is chosen once, at import, from the first that is found (``FASTGRAPH_BLAS`` set
to ``mkl``, ``openblas`` or ``numpy`` forces one):

- ``mkl``: Intel MKL from PyPI (``pip install fastgraph[mkl]``). On the products of a small
  network it is the fastest here: 64x784 by 784x100 in 57 us against OpenBLAS's 94.
- ``openblas``: the OpenBLAS that NumPy's wheels bundle, called through its CBLAS symbols.
- ``numpy``: ``np.matmul``, for NumPy builds whose BLAS cannot be found.

Each backend has its own kernel, so Numba's cache never mixes code for different libraries.
"""

import ctypes
import glob
import os
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
from numba import types

from . import kernel

ROW_MAJOR, NO_TRANSPOSE, TRANSPOSE = 101, 111, 112


class BlasUnavailable(Exception):
    pass


def _load(path, symbol):
    try:
        handle = ctypes.CDLL(path)
        getattr(handle, symbol)
    except (OSError, AttributeError) as error:
        raise BlasUnavailable(f"{path}: {error}") from error
    llvm.load_library_permanently(path)  # lets compiled code resolve the symbol by name
    return path


MKL_THREADING_GNU = 3  # mkl_service.h: INTEL, SEQUENTIAL, PGI, GNU, TBB


def _find_mkl():
    candidates = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    for path in candidates:
        try:
            found = _load(path, "cblas_sgemm")
        except BlasUnavailable:
            continue
        _share_threads(ctypes.CDLL(found))
        return found
    raise BlasUnavailable("MKL not found (pip install mkl)")


def _share_threads(mkl):
    """Let MKL run on GNU OpenMP, the runtime of Numba's threads, before its first call: one
    pool of threads in the process instead of Intel's and GNU's spinning side by side (see
    ``fastgraph.threads``). A layer the user chose (``MKL_THREADING_LAYER``) is kept."""
    if os.environ.get("MKL_THREADING_LAYER"):
        return
    try:
        ctypes.CDLL("libgomp.so.1")
    except OSError:
        return  # no GNU OpenMP here: MKL keeps its own threads
    mkl.MKL_Set_Threading_Layer(ctypes.c_int(MKL_THREADING_GNU))


def _find_openblas():
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("libscipy_openblas64_*.so")):
        try:
            return _load(str(path), "scipy_cblas_sgemm64_")
        except BlasUnavailable:
            continue
    raise BlasUnavailable("NumPy's bundled OpenBLAS not found")


# -- the kernels ----------------------------------------------------------------------------
@kernel
def _operand(a):
    """(transpose flag, leading dimension) of a C- or F-contiguous 2-D operand."""
    size = a.itemsize
    rows, cols = a.shape
    if (cols == 1 or a.strides[1] == size) and (rows == 1 or a.strides[0] >= cols * size):
        return NO_TRANSPOSE, max(a.strides[0] // size, cols)
    if (rows == 1 or a.strides[0] == size) and (cols == 1 or a.strides[1] >= rows * size):
        return TRANSPOSE, max(a.strides[1] // size, rows)
    raise ValueError("gemm: an operand is neither C- nor F-contiguous")


@kernel
def _arguments(a, b, out):
    """The CBLAS arguments for out = a @ b, row-major: (ta, tb, m, n, k, lda, ldb, ldc)."""
    if a.shape[1] != b.shape[0] or out.shape[0] != a.shape[0] or out.shape[1] != b.shape[1]:
        raise ValueError("gemm: shapes do not match")
    if out.shape[1] > 1 and out.strides[1] != out.itemsize:
        raise ValueError("gemm: out must be C-contiguous")
    ta, lda = _operand(a)
    tb, ldb = _operand(b)
    ldc = max(out.strides[0] // out.itemsize, out.shape[1])
    return ta, tb, a.shape[0], b.shape[1], a.shape[1], lda, ldb, ldc


def _cblas(name, index):
    """The CBLAS ``name`` routine with ``index`` for its dimension arguments."""
    ip = types.intp
    signatures = [(types.float32, name.format(kind="s")), (types.float64, name.format(kind="d"))]
    return [types.ExternalFunction(symbol, types.void(
        types.int32, types.int32, types.int32, index, index, index, real, ip, index, ip, index,
        real, ip, index)) for real, symbol in signatures]


# Declaring a symbol resolves nothing: only the chosen backend's kernel is ever compiled.
_mkl_sgemm, _mkl_dgemm = _cblas("cblas_{kind}gemm", types.int32)
_openblas_sgemm, _openblas_dgemm = _cblas("scipy_cblas_{kind}gemm64_", types.int64)


@kernel
def gemm_mkl(a, b, out, beta):
    ta, tb, m, n, k, lda, ldb, ldc = _arguments(a, b, out)
    pa, pb, pc = a.ctypes.data, b.ctypes.data, out.ctypes.data
    if out.itemsize == 4:
        _mkl_sgemm(ROW_MAJOR, ta, tb, m, n, k, np.float32(1), pa, lda, pb, ldb, np.float32(beta),
                   pc, ldc)
    else:
        _mkl_dgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, beta, pc, ldc)


@kernel
def gemm_openblas(a, b, out, beta):
    ta, tb, m, n, k, lda, ldb, ldc = _arguments(a, b, out)
    pa, pb, pc = a.ctypes.data, b.ctypes.data, out.ctypes.data
    if out.itemsize == 4:
        _openblas_sgemm(ROW_MAJOR, ta, tb, m, n, k, np.float32(1), pa, lda, pb, ldb,
                        np.float32(beta), pc, ldc)
    else:
        _openblas_dgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, beta, pc, ldc)


def gemm_numpy(a, b, out, beta):
    if beta == 0:
        np.matmul(a, b, out=out)
    else:
        out *= beta
        out += a @ b


def _choose(requested):
    finders = {"mkl": (_find_mkl, gemm_mkl), "openblas": (_find_openblas, gemm_openblas)}
    if requested == "numpy":
        return "numpy", None, gemm_numpy
    if requested and requested not in finders:
        raise ValueError(f"FASTGRAPH_BLAS={requested!r}: choose mkl, openblas or numpy")
    for name in [requested] if requested else list(finders):
        find, kernel_for = finders[name]
        try:
            return name, find(), kernel_for
        except BlasUnavailable:
            if requested:
                raise
    return "numpy", None, gemm_numpy


BACKEND, LIBRARY, gemm = _choose(os.environ.get("FASTGRAPH_BLAS", "").strip().lower())
