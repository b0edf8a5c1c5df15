"""Matrix products: ``gemm(a, ta, b, tb, out, beta)`` computes ``out = op(a) @ op(b) + beta *
out``, ``op(x)`` being ``x.T`` when its flag ``ta``/``tb`` is true.

The operands are 2-D C-contiguous storage; the flags say which to transpose, so BLAS takes
them as they are, with no copy, and one compiled kernel per dtype serves every product
(compiling one per layout of the operands cost about 0.9 s more at start-up). The product
is one CBLAS call made from Numba-compiled code: it costs the BLAS routine plus about half
a microsecond, where ``np.matmul`` adds one or two, and ``beta=1`` accumulates in place.

The backend is chosen once, at import, from the first that is found (``FASTGRAPH_BLAS`` set
to ``mkl``, ``openblas`` or ``numpy`` forces one):

- ``mkl``: Intel MKL from PyPI (a dependency of fastgraph on x86-64). On the products of a small
  network it is the fastest here: 64x784 by 784x100 in 57 us against OpenBLAS's 94.
- ``openblas``: the OpenBLAS that NumPy's wheels bundle, called through its CBLAS symbols.
- ``numpy``: ``np.matmul``, for NumPy builds whose BLAS cannot be found.

Each backend has its own kernel, so Numba's cache never mixes code for different libraries.

Every product is made by one kernel, ``gemm_owned(along, a, ta, b, tb, out, beta)``;
``gemm`` calls it with ``along`` = ``WHOLE``. An operator whose product makes or reads a
parameter by its rows (MatMul's forward ``x @ W.T`` and weight gradient) says so with
``along``: with MKL on several threads the product is then split by the parameter's rows
into one product per thread, made on the thread that the optimizer's update gives those
rows (``kernels.owned_rows``), so that a core's weights, gradient sums and optimizer
states stay in its cache from one step to the next. The operators call ``product``, which
hands a small product, and the parts of a split one, to kernels that MKL generates for
their shapes where it can (``gemm_generated``, ``gemm_split_generated``).
"""

import ctypes
import functools
import glob
import os
import sys
import threading
from pathlib import Path
from types import FunctionType

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import cfunc, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import (
    BOARD_BYTES,
    PARALLEL_MIN,
    Kernel,
    _threads,
    array_at,
    inline,
    kernel,
    owned_rows,
    parallel_kernel,
    reducing_kernel,
    share_out,
    stack_bytes,
    take,
)
from .elementwise import outer
from .movement import transpose_rows

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

#: Products with fewer rows than this (but more than one) run on one thread. MKL splits a
#: product of 5 to 11 rows (and 16 or more columns) between two threads in a way that
#: changes its last bits (a 10-class layer's weight gradient, 10x64 by 64x20, in rows 8
#: and 9), where a training run must give the same numbers on one thread and on every core
#: (``fastgraph.threads``). On so few rows a second thread costs more than it gains: the
#: MLP's 2-thread step took 263-270 us with this, 272-280 without (alternating, one process).
SERIAL_ROWS = 16

#: Small products (at most ``JIT_MOST`` multiply-adds) of at least this many run on one
#: thread where MKL generates no code for them (see ``_kernels_for``): a second thread
#: costs them more than it gains (the MNIST MLP's two-thread step 0.957-0.980 of its time
#: with them on MKL's threads, on a Zen 4). Fewer are left to MKL: setting the thread's
#: count around each costs the recurrent net, 576 products of 3,072 a step, 2-3%.
SERIAL_MACS = 8192

#: ``MKL_Set_Num_Threads_Local(n)``: this thread's MKL calls on n threads (0: the process's
#: count again); returns the previous setting.
_mkl_local_threads = types.ExternalFunction("MKL_Set_Num_Threads_Local",
                                            types.int32(types.int32))


#: ``MKL_Get_Max_Threads()``: the threads MKL runs a call on, the calling thread's own count
#: where it set one (``MKL_Set_Num_Threads_Local``), else the process's.
_mkl_threads = types.ExternalFunction("MKL_Get_Max_Threads", types.int32())


@njit(inline="always")
def _mkl_most():
    """The process's thread count, ``fastgraph.threads``' ``most``, which it sets as MKL's
    own (``MKL_Set_Num_Threads``), the calling thread's count (``threads.use``, set as its
    local count) set aside for the question. Read in compiled code where Numba's
    ``get_num_threads`` would be, because a function that calls that one cannot be
    cached."""
    mine = _mkl_local_threads(0)  # (0: the process's count; returns the thread's own)
    most = _mkl_threads()
    _mkl_local_threads(mine)
    return most


@njit(inline="always")
def _threads_kept(count):
    """For OpenBLAS, whose thread count fastgraph leaves alone: nothing to do."""
    return count


@njit(inline="always")
def _one_thread():
    """For OpenBLAS, whose products ``gemm_owned`` never splits: one part."""
    return 1


def _vectors(builder, units, quads):
    """What the blocks written out as LLVM IR share (``_dot_block``, ``_outer_block``,
    ``_vector_block``): ``(word, single, vector, fma, sums)``: the int64, float32 and
    16-float vector types, ``llvm.fma.v16f32``, and ``units`` by ``quads`` zeroed vector
    sums (stack slots, which LLVM keeps in registers)."""
    word, single = ir.IntType(64), ir.FloatType()
    vector = ir.VectorType(single, 16)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector] * 3), "llvm.fma.v16f32")
    sums = [[cgutils.alloca_once_value(builder, ir.Constant(vector, [0.0] * 16))
             for _ in range(quads)] for _ in range(units)]
    return word, single, vector, fma, sums


def _spread(builder, scalar, vector):
    """``scalar`` in every lane of a ``vector``."""
    undefined = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undefined, scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, undefined,
                                  ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))


def _dot_block(rows, columns):
    """An intrinsic ``block(out, ldo, a, lda, b, ldb, k)`` that sets the ``rows`` by
    ``columns`` numbers of ``out`` (float32, at address ``out``, rows ``ldo`` numbers apart)
    to the dot products of ``rows`` rows of ``a`` with ``columns`` rows of ``b`` (``k``
    numbers each, rows ``lda`` and ``ldb`` apart): explicit 16-float vectors, one sum a
    product held in a register along k, each row's vector read once per block; then each
    sum's 16 lanes added in a fixed tree, and the last ``k % 16`` numbers in order. Written
    out rather than left to LLVM's vectoriser, which took a second to compile the same
    block of sixteen sums (the MNIST MLP's start on an empty cache, 1.9 s of CPU in all)."""

    @intrinsic
    def block(typingctx, out, ldo, a, lda, b, ldb, k):
        signature = types.void(*[types.int64] * 7)

        def codegen(context, builder, signature, args):
            out, ldo, a, lda, b, ldb, k = args
            word, single, vector, fma, sums = _vectors(builder, rows, columns)
            scalar_fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(single, [single] * 3), "llvm.fma.f32")

            def at(address, kind):
                return builder.inttoptr(address, kind.as_pointer())

            def row(base, stride, r, q):  # the address of number q of row r
                index = builder.add(builder.mul(ir.Constant(word, r), stride), q)
                return builder.add(base, builder.shl(index, ir.Constant(word, 2)))

            whole = builder.mul(builder.udiv(k, ir.Constant(word, 16)), ir.Constant(word, 16))
            with cgutils.for_range_slice(builder, ir.Constant(word, 0), whole,
                                         ir.Constant(word, 16)) as (q, _):
                xs = [builder.load(at(row(a, lda, r, q), vector), align=4) for r in range(rows)]
                ws = [builder.load(at(row(b, ldb, c, q), vector), align=4)
                      for c in range(columns)]
                for r in range(rows):
                    for c in range(columns):
                        builder.store(builder.call(fma, [xs[r], ws[c], builder.load(sums[r][c])]),
                                      sums[r][c])
            # The sixteen lanes of every sum added in one tree for all the block's sums:
            # two vectors' halves side by side, then added, until each lane is one sum
            # (a vector's ``owners``: the sum each lane holds part of, in groups).
            index = ir.IntType(32)
            vectors = [(builder.load(sums[r][c]), [r * columns + c] * 16)
                       for r in range(rows) for c in range(columns)]
            while len(vectors) > 1 or len(vectors[0][1]) > len(set(vectors[0][1])):
                if len(vectors) > 1:
                    (x, xs), (y, ys) = vectors[0], vectors[1]
                    pairs, vectors = list(zip(xs, range(16))) + list(zip(ys, range(16, 32))), \
                        vectors[2:]
                    value = (x, y)
                else:
                    (x, xs), vectors = vectors[0], []
                    pairs, value = list(zip(xs, range(len(xs)))), (x, x)
                groups = {}
                for owner, lane in pairs:
                    groups.setdefault(owner, []).append(lane)
                low = [lane for lanes in groups.values() for lane in lanes[:len(lanes) // 2]]
                high = [lane for lanes in groups.values() for lane in lanes[len(lanes) // 2:]]
                owners = [owner for owner, lanes in groups.items()
                          for _ in range(len(lanes) // 2)]
                added = builder.fadd(
                    builder.shuffle_vector(*value, ir.Constant(ir.VectorType(index, len(low)),
                                                               low)),
                    builder.shuffle_vector(*value, ir.Constant(ir.VectorType(index, len(high)),
                                                               high)))
                vectors.append((added, owners))
            value, owners = vectors[0]
            totals = [None] * (rows * columns)
            for lane, owner in enumerate(owners):
                totals[owner] = cgutils.alloca_once_value(
                    builder, builder.extract_element(value, ir.Constant(index, lane)))
            with cgutils.for_range_slice(builder, whole, k, ir.Constant(word, 1)) as (q, _):
                for r in range(rows):
                    x = builder.load(at(row(a, lda, r, q), single), align=4)
                    for c in range(columns):
                        w = builder.load(at(row(b, ldb, c, q), single), align=4)
                        total = totals[r * columns + c]
                        builder.store(builder.call(scalar_fma, [x, w, builder.load(total)]),
                                      total)
            for r in range(rows):
                for c in range(columns):
                    builder.store(builder.load(totals[r * columns + c]),
                                  at(row(out, ldo, r, ir.Constant(word, c)), single), align=4)
            return context.get_dummy_value()

        return signature, codegen

    return block


_dots_4x4, _dots_1x1 = _dot_block(4, 4), _dot_block(1, 1)


def _outer_block(units, quads):
    """An intrinsic ``block(out, ldo, a, lda, step, x, ldx, batch, add)`` that sets ``units``
    rows by ``16 * quads`` columns of ``out`` (float32, at address ``out``, rows ``ldo``
    apart) to ``sum_b a[b, r] * x[b, :]`` over the ``batch`` rows of ``x`` (``a[b, r]`` at
    ``a + 4 * (b * lda + r * step)``, ``a`` at the block's first unit; ``x`` at its first
    column, rows ``ldx`` apart), added to what ``out`` holds where ``add`` is not 0: a
    weight gradient's block (``step`` 1: ``a`` is the upstream, a sample a row), or a block
    of rows of ``a @ x`` (``lda`` 1, ``step`` a's row length: an input gradient), its sums
    held in 16-float vectors along the batch, each summed in the batch's order (so a
    number has the same bits whichever block makes it)."""

    @intrinsic
    def block(typingctx, out, ldo, a, lda, step, x, ldx, batch, add):
        signature = types.void(*[types.int64] * 9)

        def codegen(context, builder, signature, args):
            out, ldo, a, lda, step, x, ldx, batch, add = args
            word, single, vector, fma, sums = _vectors(builder, units, quads)

            def at(base, row, stride, column, kind):  # number ``column`` of row ``row``
                index = builder.add(builder.mul(row, stride), ir.Constant(word, column))
                return builder.inttoptr(builder.add(base, builder.shl(index, ir.Constant(
                    word, 2))), kind.as_pointer())

            with cgutils.for_range(builder, batch) as loop:
                xs = [builder.load(at(x, loop.index, ldx, 16 * q, vector), align=4)
                      for q in range(quads)]
                for r in range(units):
                    place = builder.add(builder.mul(loop.index, lda),
                                        builder.mul(ir.Constant(word, r), step))
                    spread = _spread(builder, builder.load(builder.inttoptr(builder.add(
                        a, builder.shl(place, ir.Constant(word, 2))), single.as_pointer()),
                        align=4), vector)
                    for q in range(quads):
                        builder.store(builder.call(fma, [spread, xs[q],
                                                         builder.load(sums[r][q])]), sums[r][q])
            adding = builder.icmp_unsigned("!=", add, ir.Constant(word, 0))
            for r in range(units):
                for q in range(quads):
                    place = at(out, ir.Constant(word, r), ldo, 16 * q, vector)
                    value = builder.load(sums[r][q])
                    builder.store(builder.select(adding, builder.fadd(builder.load(
                        place, align=4), value), value), place, align=4)
            return context.get_dummy_value()

        return signature, codegen

    return block


_outers_4x4, _outers_1x1 = _outer_block(4, 4), _outer_block(1, 1)


def _own_products(kind, po, ldo, pa, lda, pb, ldb, m, k, start, stop, add):
    """A part of a product by fastgraph's own kernels (float32; addresses ``po``, ``pa`` and
    ``pb``, rows ``ldo``, ``lda`` and ``ldb`` numbers apart). ``kind`` 0 (DOTS):
    ``out[:, start:stop] = a @ b[start:stop].T``, ``a (m, k)``: blocks of four rows of ``a``
    by four of ``b`` (``_dot_block``), then each number left over one at a time. ``kind`` 1
    (OUTERS): ``out[start:stop, :] = a[:, start:stop].T @ b`` (``add``: plus what ``out``
    holds), ``a (k, .)``, ``b (k, m)``, ``k`` the batch: blocks of four rows of ``out`` by
    64 columns (``_outer_block``), then single rows by 16 columns, the last ``m % 16``
    columns one number at a time. ``kind`` 2 (COMBINATIONS): ``out[start:stop, :] =
    a[start:stop, :] @ b``, ``a (., k)``: the same blocks, reading ``a`` along its rows
    (each row of ``out`` a combination of ``b``'s rows). One call of each block kind: a
    block's code is written out where it is called (each kind about 0.1 s more of
    compiling)."""
    if kind == 0:
        blocks, rows = start + (stop - start) // 4 * 4, m // 4 * 4
        for j in range(start, blocks, 4):
            for i in range(0, rows, 4):
                _dots_4x4(po + (i * ldo + j) * 4, ldo, pa + i * lda * 4, lda, pb + j * ldb * 4,
                          ldb, k)
        for j in range(start, stop):  # the rest: the rows left over, then the columns
            for i in range(rows if j < blocks else 0, m):
                _dots_1x1(po + (i * ldo + j) * 4, ldo, pa + i * lda * 4, lda, pb + j * ldb * 4,
                          ldb, k)
        return
    # a[b, u] (b along k, u a row of out) at pa + 4 * (b * along + u * step)
    along, step = (lda, 1) if kind == 1 else (1, lda)
    blocks, wide, narrow = start + (stop - start) // 4 * 4, m // 64 * 64, m // 16 * 16
    for c in range(0, wide, 64):  # (a block of b's columns kept in L1 for every row of out)
        for u in range(start, blocks, 4):
            _outers_4x4(po + (u * ldo + c) * 4, ldo, pa + u * step * 4, along, step, pb + c * 4,
                        ldb, k, add)
    weights = array_at(pa, k * along + stop * step, np.float32)
    inputs = array_at(pb, k * ldb, np.float32)
    out = array_at(po, stop * ldo, np.float32)
    for u in range(start, stop):
        for c in range(wide if u < blocks else 0, narrow, 16):
            _outers_1x1(po + (u * ldo + c) * 4, ldo, pa + u * step * 4, along, step, pb + c * 4,
                        ldb, k, add)
        for c in range(narrow, m):
            total = np.float32(0)
            for b in range(k):
                total += weights[b * along + u * step] * inputs[b * ldb + c]
            out[u * ldo + c] = total + out[u * ldo + c] if add else total


#: ``_own_products`` compiled as a C function, which ``gemm_owned`` calls through the address
#: that this symbol's slot holds: called as a Numba function from its parallel loop, it took
#: 1.1 s more of compiling there (the MLP's first step on an empty cache), on top of its own
#: 0.5. The slot is filled when a call of ``gemm_owned`` first asks for an own product
#: (``_OwnedKernel.__call__``: also what a compiled pass records), so that a process that
#: never makes an own product (an Intel processor, where MKL generates code; AVX2; the
#: OpenBLAS backend; a network whose products are narrow) never compiles it.
OWN_PRODUCTS_SLOT = "fastgraph_own_products_slot"
_slot = ctypes.c_int64(0)
_own_products_compiled = []
#: Held while the slot is filled: two Python threads making their first own products at once
#: (two graphs trained in two threads) compile it once, and neither calls through the slot
#: before it holds the address (a second thread that found the function compiled but the
#: slot still 0 called address 0: a segmentation fault).
_own_products_lock = threading.Lock()


def _unlock_in_child():
    """A child forked while another thread of its parent filled the slot gets the lock free
    (that thread is not in the child) and fills the slot itself if it is still 0."""
    global _own_products_lock
    _own_products_lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_in_child)


@intrinsic
def own_products(typingctx, kind, po, ldo, pa, lda, pb, ldb, m, k, start, stop, add):
    """``_own_products(...)`` called at the address in the slot ``OWN_PRODUCTS_SLOT``."""
    signature = types.void(*[types.int64] * 12)

    def codegen(context, builder, signature, args):
        word = ir.IntType(64)
        slot = builder.module.globals.get(OWN_PRODUCTS_SLOT)
        if slot is None:  # (declared here, its address given to LLVM: _define_slot)
            slot = ir.GlobalVariable(builder.module, word, OWN_PRODUCTS_SLOT)
        function = builder.inttoptr(builder.load(slot),
                                    ir.FunctionType(ir.VoidType(), [word] * 12).as_pointer())
        builder.call(function, args)
        return context.get_dummy_value()

    return signature, codegen


def _define_slot():
    """Give LLVM the address of the slot, before ``gemm_owned`` is compiled or loaded."""
    llvm.add_symbol(OWN_PRODUCTS_SLOT, ctypes.addressof(_slot))


def _define_own_products():
    """Compile (or load from Numba's cache) ``_own_products`` and put its address in the
    slot that ``gemm_owned``'s code calls it through."""
    with _own_products_lock:
        if _slot.value == 0:
            compiled = cfunc(types.void(*[types.int64] * 12), cache=True,
                             error_model="numpy", nogil=True)(_own_products)
            _own_products_compiled.append(compiled)  # (its code stays with the process)
            _slot.value = compiled.address  # (last: a call finds the address or 0)


class _OwnedKernel(Kernel):
    """``gemm_owned``: a kernel whose code calls ``_own_products`` through a slot that a
    call asking for it fills first."""

    @functools.cached_property
    def dispatcher(self):
        _define_slot()
        return Kernel.dispatcher.func(self)

    def plain(self):
        _define_slot()
        return super().plain()

    def __call__(self, *args):
        if _slot.value == 0 and args and args[0] >= DOTS:
            _define_own_products()
        return super().__call__(*args)


#: ``gemm_owned``'s ``along``: the parameter is the product's output (a weight gradient), or
#: its ``op(b)`` is the parameter's transpose, each of its rows a column of ``out`` (the
#: network's forward product ``x @ W.T``), or the product is not split (``WHOLE``: it is
#: ``gemm``), or ``op(a)`` is the parameter, each of its rows a row of ``out`` (that
#: forward product made as its transpose, ``W @ x.T``: see ``flips``), or ``x @ W.T`` split as
#: OUT_COLUMNS but made by fastgraph's own dot products (``DOTS``: see ``dots``), or a weight
#: gradient ``u.T @ x`` split as OUT_ROWS, by its own outer products (``OUTERS``: ``outers``),
#: or an input gradient ``u @ W`` (a product made whole otherwise) split by ``out``'s rows,
#: the samples, each row made as a combination of W's rows (``COMBINATIONS``: ``combinations``).
OUT_ROWS, OUT_COLUMNS, WHOLE, A_ROWS, DOTS, OUTERS, COMBINATIONS = 0, 1, 2, 3, 4, 5, 6


def _gemm_owned(along, a, ta, b, tb, out, beta):
    """out = op(a) @ op(b) + beta * out, where op(x) is x.T when its flag is true, else x;
    for a product that reads or makes a parameter by its rows, split between the threads
    the way the optimizer's update splits that parameter (``owned_rows``).

    ``a`` and ``b``: 2-D, C-contiguous rows (a row slice of a wider matrix too); an
    F-contiguous one (a ``.T`` view) is read as what it is, but makes a second compiled
    specialization: the operators pass C-contiguous storage and flags, so that one
    specialization per dtype serves every product. ``out``: C-contiguous rows. The CBLAS
    arguments are worked out here, in the one function: helpers, inlined or not, cost the
    MLP's empty-cache start 0.3-0.5 s more of compiling.

    ``along``: ``WHOLE``, one CBLAS call on MKL's threads (on one thread for 2 to
    ``SERIAL_ROWS`` rows); ``OUT_ROWS`` when ``out`` is the parameter (its rows are m);
    ``OUT_COLUMNS`` when ``op(b)`` is its transpose (its rows are n); ``A_ROWS`` when
    ``op(a)`` is the parameter (its rows are m, as ``out``'s). Split, in a process
    that may run several threads (``fastgraph.threads.most``, which it sets as MKL's own
    count) and for a parameter of ``PARALLEL_MIN`` numbers or more, the product is made in
    one part per thread of the process by a ``prange`` loop, part t an MKL call on thread t
    alone: the thread that Numba's static schedule gives the same rows in the update's loop
    (``MKL_VERBOSE`` shows it in a test), so each core works on the same part of the
    weights, their gradient sums and their optimizer states from one step to the next and
    finds it in its own cache (MKL's own split of these products differs from the
    update's). The loop replaced one MKL batch call of the parts (``cblas_sgemm_batch``,
    same bits): on an Intel Xeon (two threads) the MNIST MLP's step took 0.905-0.953 of the
    batch's time (medians of 30 rounds' ratios, three runs, the two kinds of graph taking
    turns in one process; the 784-256-128-10 net's 0.95 and 1.00), the first layer's
    forward product alone about 60 us against 70; its parallel loop costs the MLP's
    empty-cache start 0.2-0.3 s of compiling. The parts are the process's, not the calling
    thread's count now: on one thread the loop runs them one after the other, each the
    product it is on two (no split along k), so the thread count does not change the
    numbers. Made whole on one thread instead, as before, the product summed in
    another order than its parts for 8 of 80 shapes on an Intel Xeon (AVX-512: 784 inputs
    to 256 or more units; the 784-256-128-10 network's first layer trained to other last
    bits on one thread than on two), where on AMD's processors the parts had the whole
    product's bits (160 of 160 shapes); the parts cost a one-thread step of the MNIST MLP
    1-3% (minima and medians of 30 rounds; none on 784-256-128-10). Each part is an MKL
    call on one thread, also a part of more than 256 units, which MKL's batch call had split
    between its threads in another order on the Xeon (784 inputs to 512 units: other bits on
    one thread than on two). A process fixed to one thread (``most`` 1) makes the products
    whole: its bits may differ from a two-thread process's (the 784-256-128-10 network,
    four steps, on the Xeon). MKL's strict reproducible mode (``MKL_CBWR=AUTO,
    STRICT``) makes every product's bits independent of the count, but its products of a
    few rows take 1.3-1.9x longer (16x12 by 12x12: 0.37-0.41 against 0.22-0.27 us), and the
    recurrent net's step, made of them, 25-40% longer on one thread: fastgraph leaves it to
    the user. Double-precision parts made as MKL batches differed from the products made
    whole (60 of 80 blocks of rows, 52 of 80 of columns, in the last bits), so float64
    products are made whole (``tests/test_gemm.py`` holds both to it).

    ``_sgemm``, ``_dgemm``, ``_most`` and ``_local_threads`` are the backend's (see
    ``_gemm_kernel``)."""
    size = out.itemsize
    if a.itemsize != size or b.itemsize != size:
        raise ValueError("gemm: a, b and out must have one dtype")
    # An operand's rows are contiguous (C), or its columns are (F: the transpose of C
    # storage, which BLAS reads with the other flag); lda is its storage's row length.
    if a.shape[1] <= 1 or a.strides[1] == size:
        lda, op_a = max(a.strides[0] // size, a.shape[1], 1), TRANSPOSE if ta else NO_TRANSPOSE
    elif a.shape[0] <= 1 or a.strides[0] == size:
        lda, op_a = max(a.strides[1] // size, a.shape[0], 1), NO_TRANSPOSE if ta else TRANSPOSE
    else:
        raise ValueError("gemm: operand a is neither C- nor F-contiguous (a strided view)")
    if b.shape[1] <= 1 or b.strides[1] == size:
        ldb, op_b = max(b.strides[0] // size, b.shape[1], 1), TRANSPOSE if tb else NO_TRANSPOSE
    elif b.shape[0] <= 1 or b.strides[0] == size:
        ldb, op_b = max(b.strides[1] // size, b.shape[0], 1), NO_TRANSPOSE if tb else TRANSPOSE
    else:
        raise ValueError("gemm: operand b is neither C- nor F-contiguous (a strided view)")
    if out.shape[1] > 1 and out.strides[1] != size:
        raise ValueError("gemm: out must have C-contiguous rows")
    m, k = (a.shape[1], a.shape[0]) if ta else (a.shape[0], a.shape[1])
    rows_b, n = (b.shape[1], b.shape[0]) if tb else (b.shape[0], b.shape[1])
    if rows_b != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("gemm: shapes do not match")
    ldc = max(out.strides[0] // size, n, 1)
    pa, pb, pc = a.ctypes.data, b.ctypes.data, out.ctypes.data
    if along == DOTS and (ta or not tb or beta != 0 or size != 4 or a.strides[1] != 4
                          or b.strides[1] != 4):
        raise ValueError("gemm: DOTS makes out = a @ b.T (ta False, tb True, beta 0), "
                         "float32, a and b with contiguous rows")
    if along == OUTERS and (not ta or tb or (beta != 0 and beta != 1) or size != 4
                            or a.strides[1] != 4 or b.strides[1] != 4):
        raise ValueError("gemm: OUTERS makes out = a.T @ b (ta True, tb False, beta 0 or 1), "
                         "float32, a and b with contiguous rows")
    if along == COMBINATIONS and (ta or tb or (beta != 0 and beta != 1) or size != 4
                                  or a.strides[1] != 4 or b.strides[1] != 4):
        raise ValueError("gemm: COMBINATIONS makes out = a @ b (ta False, tb False, beta 0 "
                         "or 1), float32, a and b with contiguous rows")
    rows = n if along == OUT_COLUMNS or along == DOTS else m
    split = n if along == OUT_ROWS or along >= OUTERS else k
    whole = along == WHOLE or size == 8 or rows * split < PARALLEL_MIN
    parts = 1 if whole else _most()  # noqa: F821  (the process's, not the count now: above)
    if parts == 1 and along < DOTS:
        serial = 1 < m < SERIAL_ROWS
        previous = _local_threads(1) if serial else 0  # noqa: F821
        if size == 4:
            _sgemm(ROW_MAJOR, op_a, op_b, m, n, k, np.float32(1), pa, lda, pb, ldb,  # noqa: F821
                   np.float32(beta), pc, ldc)
        else:
            _dgemm(ROW_MAJOR, op_a, op_b, m, n, k, 1.0, pa, lda, pb, ldb, beta, pc, ldc)  # noqa: F821
        if serial:
            _local_threads(previous)  # noqa: F821
        return
    for part in prange(parts):  # part t on thread t (Numba's static schedule, as the update's)
        start, stop = owned_rows(rows, parts, part)
        if along >= DOTS:  # (in this loop: a second parallel loop took 1.9 s more to compile)
            if along == DOTS:
                own_products(0, pc, ldc, pa, lda, pb, ldb, m, k, start, stop, 0)
            else:  # OUTERS 1, COMBINATIONS 2
                own_products(along - 4, pc, ldc, pa, lda, pb, ldb, n, k, start, stop,
                             int(beta != 0))
        elif stop > start:
            previous = _local_threads(1)  # noqa: F821
            if along != OUT_COLUMNS:  # rows start:stop of op(a) and out
                _sgemm(ROW_MAJOR, op_a, op_b, stop - start, n, k, np.float32(1),  # noqa: F821
                       pa + start * (lda if op_a == NO_TRANSPOSE else 1) * 4, lda, pb, ldb,
                       np.float32(beta), pc + start * ldc * 4, ldc)
            else:  # columns start:stop of op(b) and out
                _sgemm(ROW_MAJOR, op_a, op_b, m, stop - start, k, np.float32(1), pa, lda,  # noqa: F821
                       pb + start * (ldb if op_b == TRANSPOSE else 1) * 4, ldb, np.float32(beta),
                       pc + start * 4, ldc)
            _local_threads(previous)  # noqa: F821


def _gemm_kernel(name, single, double, local_threads, most=None):
    """The kernel ``gemm_owned`` of a backend: ``_gemm_owned`` calling its routines
    ``single`` and ``double``, ``local_threads`` to run a call on one thread, and, where it
    splits products between the threads (MKL), ``most``, the process's thread count (the
    parts of a split): then a kernel of a ``prange`` loop, whose plain twin a process held
    to one thread runs (``kernels.Kernel``). One text, a function per backend (its own
    globals), so that Numba's cache, which files code under the function's name, never
    serves one library's code to another."""
    names = {"_sgemm": single, "_dgemm": double, "_local_threads": local_threads,
             "_most": most or _one_thread}
    function = FunctionType(_gemm_owned.__code__, {**globals(), **names}, name)
    function.__qualname__, function.__doc__ = name, _gemm_owned.__doc__
    if most is None:
        return _OwnedKernel(function, dict(cache=True, error_model="numpy", nogil=True))
    return _OwnedKernel(function, dict(cache=True, error_model="numpy", nogil=True,
                                       parallel=True))


gemm_owned_mkl = _gemm_kernel("gemm_owned_mkl", _mkl_sgemm, _mkl_dgemm, _mkl_local_threads,
                              _mkl_most)
gemm_owned_openblas = _gemm_kernel("gemm_owned_openblas", _openblas_sgemm, _openblas_dgemm,
                                   _threads_kept)


@reducing_kernel
def matvec(x, a, out):
    """``out[0] = a @ x[0]``: one sample's product with an ``(m, k)`` matrix, as m dot
    products of its contiguous rows, four rows at a time (``x`` read once per four).

    For one sample this loop beats BLAS's M = 1 product, called from compiled code, by the
    call and its blocking: 100x784 in 3.1 us against 4.0, 12x16 in 0.024 us against 0.088
    (the article's programs feed one sample at a time; the recurrent one makes 96 such
    products a sample)."""
    m, k = a.shape
    i = 0
    while i + 4 <= m:
        s0 = s1 = s2 = s3 = a.dtype.type(0)
        for j in range(k):
            xj = x[0, j]
            s0 += a[i, j] * xj
            s1 += a[i + 1, j] * xj
            s2 += a[i + 2, j] * xj
            s3 += a[i + 3, j] * xj
        out[0, i], out[0, i + 1], out[0, i + 2], out[0, i + 3] = s0, s1, s2, s3
        i += 4
    for row in range(i, m):
        total = a.dtype.type(0)
        for j in range(k):
            total += a[row, j] * x[0, j]
        out[0, row] = total


@kernel
def vecmat(u, a, out):
    """``out[0] = u[0] @ a``: one sample's row times an ``(m, k)`` matrix, accumulated row
    by row of ``a`` (each a vector multiply-add over k: no reduction to reassociate)."""
    m, k = a.shape
    for j in range(k):
        out[0, j] = 0
    for i in range(m):
        ui = u[0, i]
        for j in range(k):
            out[0, j] += ui * a[i, j]


def gemm_owned_numpy(along, a, ta, b, tb, out, beta):
    a, b = (a.T if ta else a), (b.T if tb else b)
    if beta == 0:
        np.matmul(a, b, out=out)
    else:
        out *= beta
        out += a @ b


def _choose(requested):
    """``(backend, its library, gemm_owned)``: the first backend found, or the one
    requested."""
    finders = {"mkl": (_find_mkl, gemm_owned_mkl),
               "openblas": (_find_openblas, gemm_owned_openblas)}
    if requested == "numpy":
        return "numpy", None, gemm_owned_numpy
    if requested and requested not in finders:
        raise ValueError(f"FASTGRAPH_BLAS={requested!r}: choose mkl, openblas or numpy")
    for name in [requested] if requested else list(finders):
        find, product = finders[name]
        try:
            return name, find(), product
        except BlasUnavailable:
            if requested:
                raise
    return "numpy", None, gemm_owned_numpy


BACKEND, LIBRARY, gemm_owned = _choose(os.environ.get("FASTGRAPH_BLAS", "").strip().lower())
_threads().share_most()  # (MKL's own count: the parts gemm_owned splits a product into)


def gemm(a, ta, b, tb, out, beta):
    """out = op(a) @ op(b) + beta * out, where op(x) is x.T when its flag is true, else x:
    ``gemm_owned`` of a product made whole (what its recording and replay are)."""
    gemm_owned(WHOLE, a, ta, b, tb, out, beta)


# -- products by kernels that MKL generates for one shape ------------------------------------
#: Products of at most this many multiply-adds (m * n * k), which ``gemm_owned`` would make
#: whole, are made by a kernel that MKL generates for their shape, flags and ``beta``
#: (``mkl_cblas_jit_create_sgemm``, its "JIT" GEMM), called by its address: no argument
#: checks, no choice of threads or blocking on each call. The recurrent net's products
#: (16x16 by 16x12, 16x12 by 12x12, 12x16 by 16x16) took 41-100 ns against 330-420 through
#: ``cblas_sgemm`` (called from compiled code, an Intel Xeon, one thread; the same bits); the
#: 47 shapes of at most 2^17 multiply-adds measured took 0.15-0.87 of cblas's time.
JIT_MOST = 1 << 17
#: The most products given generated kernels in a process (each holds a few KB of code for
#: the process's life); the others go through ``gemm_owned``.
JIT_SHAPES_MOST = 4096
#: A generated product's description, int64: the flags and shape it was made for
#: (C-contiguous operands: their leading dimensions follow from these), how it is split
#: (``along``, as ``gemm_owned``'s, and the parts: 1 for a product made whole), whether
#: it runs on one thread (``_SERIAL``: MKL's own GEMM, see ``_kernels_for``),
#: then for each part the kernel and its generator for ``beta`` 0 and the same for ``beta``
#: 1.
_TA, _TB, _M, _N, _K, _ALONG, _PARTS, _SERIAL = range(8)
JIT_HEADER = 8
JIT_PART_SLOTS = 4  # a part's: kernel and generator for beta 0, then for beta 1
_jitted = {}  # (itemsize, ta, tb, m, n, k, along, parts) -> its description (or None)
_part_kernels = {}  # (itemsize, ta, tb, m, n, k, lda, ldb, ldc, own) -> four slots (or None)
_generators = []  # MKL's create and get-pointer routines, by itemsize, once looked up
MKL_JIT_SUCCESS, MKL_NO_JIT, MKL_JIT_ERROR = 0, 1, 2


def _generator(itemsize):
    """``(create, pointer)``: MKL's routines that generate a GEMM of this itemsize (4 or 8)
    and give the generated kernel's address."""
    if not _generators:
        mkl = ctypes.CDLL(LIBRARY)
        found = {}
        for size, kind, real in ((4, "s", ctypes.c_float), (8, "d", ctypes.c_double)):
            create = getattr(mkl, f"mkl_cblas_jit_create_{kind}gemm")  # (mkl.h's C names; the
            create.restype = ctypes.c_int  # plain ones are Fortran's, which read characters)
            create.argtypes = [ctypes.POINTER(ctypes.c_void_p)] + [ctypes.c_int] * 6 + [
                real, ctypes.c_int, ctypes.c_int, real, ctypes.c_int]
            pointer = getattr(mkl, f"mkl_jit_get_{kind}gemm_ptr")
            pointer.restype, pointer.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
            found[size] = (create, pointer)
        _generators.append(found)
    return _generators[0][itemsize]


def _kernels_for(key):
    """The four slots of the kernels MKL generates for one product (``key``: itemsize, flags,
    shape, leading dimensions, and whether it runs as one thread's part) and whether they
    are MKL's own GEMM, or None where it generates none. With ``MKL_NO_JIT`` (every shape on
    the AMD EPYCs here, where MKL generates no code) the kernel's address runs MKL's own
    GEMM: a part must be generated code (``MKL_JIT_SUCCESS``: the standard GEMM ran on MKL's
    threads, inside a thread's part of a split product), a product made whole may be the
    standard GEMM, which ``gemm_generated`` runs on one thread where it has 2 to
    ``SERIAL_ROWS - 1`` rows (as ``gemm_owned`` runs them) or ``SERIAL_MACS`` multiply-adds
    or more (the description's ``_SERIAL``). On MKL's threads it split products of 5 and 10
    rows between two with other last bits (369 of the 6,312 shapes of 1 to 128 rows, columns
    and inner length tried, every one of 5 or 10 rows, from 500 multiply-adds up:
    ``/work/notes/s28/split_sweep.py``), an MLP's last weight gradient (10x64 by 64x20)
    among them, so that the MLP trained to other numbers on two threads than on one. Called
    by its address it skips cblas's argument checks: on an AMD EPYC (Zen 4) the recurrent
    net's step took 0.911-0.917 of its time with ``cblas_sgemm`` with every such product on
    MKL's threads (three runs), 0.927 and 0.935 with those of 2 to 15 rows on one thread
    (two; medians of 20 alternating rounds of 200 steps, three graphs in one process,
    ``rec_ab.py``); the MNIST MLP's two-thread step 0.957 and 0.980 of its time with its
    products of 8192 multiply-adds or more on one thread too (``rule_ab.py``)."""
    found = _part_kernels.get(key, _part_kernels)
    if found is not _part_kernels:
        return found
    itemsize, ta, tb, m, n, k, lda, ldb, ldc, own = key
    create, pointer = _generator(itemsize)
    made, standard = [], False
    for beta in (0.0, 1.0):
        generator = ctypes.c_void_p()
        status = create(ctypes.byref(generator), ROW_MAJOR, TRANSPOSE if ta else NO_TRANSPOSE,
                        TRANSPOSE if tb else NO_TRANSPOSE, m, n, k, 1.0, lda, ldb, beta, ldc)
        if (status == MKL_JIT_ERROR or not generator.value
                or (own and status != MKL_JIT_SUCCESS)):
            made = None  # (a generator made for beta 0 is kept: a few KB, never reused)
            break
        made += [pointer(generator), generator.value]
        standard = standard or status != MKL_JIT_SUCCESS
    return _part_kernels.setdefault(key, None if made is None else (made, standard))


def generates_code():
    """Whether MKL generates code for products on this processor (its JIT GEMM answers
    ``MKL_JIT_SUCCESS`` for a 16x16 by 16x16 product, whose kernels ``_kernels_for`` keeps):
    yes on the Intel Xeon of this project's series, no on its AMD EPYCs, where every
    description's kernel is MKL's own GEMM and a split product's parts take
    ``gemm_owned``."""
    if BACKEND != "mkl":
        return False
    found = _kernels_for((4, False, False, 16, 16, 16, 16, 16, 16, False))
    return found is not None and not found[1]


def _generate(key):
    """The description of the generated kernels for ``key`` (both betas, each part), or
    None where MKL generates none for a part."""
    itemsize, ta, tb, m, n, k, along, parts = key
    lda, ldb, ldc = (m if ta else k), (k if tb else n), n  # (C-contiguous rows)
    rows = m if along == OUT_ROWS else n
    made = [ta, tb, m, n, k, along, parts, 0]
    for part in range(parts):
        start, stop = rows * part // parts, rows * (part + 1) // parts
        if stop == start:  # (fewer rows than parts: gemm_owned skips them too)
            made += [0] * JIT_PART_SLOTS
            continue
        shape = (stop - start, n) if along == OUT_ROWS else (m, stop - start)
        kernels = _kernels_for((itemsize, ta, tb, *shape, k, lda, ldb, ldc, parts > 1))
        if kernels is None:
            return None
        made += kernels[0]
        made[_SERIAL] |= kernels[1] and (1 < shape[0] < SERIAL_ROWS
                                         or shape[0] * shape[1] * k >= SERIAL_MACS)
    return np.array(made, np.int64)


def _described(a, ta, b, tb, out, along, parts, most):
    """The address of the description for this product split so (0: none), generated on
    first need. ``most``: the most multiply-adds it may have."""
    if BACKEND != "mkl" or out.dtype.kind != "f" or out.itemsize not in (4, 8):
        return 0
    if not (a.dtype == b.dtype == out.dtype and a.ndim == b.ndim == out.ndim == 2
            and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
        return 0
    (m, n), (rows_a, cols_a), (rows_b, cols_b) = out.shape, a.shape, b.shape
    k = rows_a if ta else cols_a
    if ((cols_a if ta else rows_a) != m or (cols_b if tb else rows_b) != k
            or (rows_b if tb else cols_b) != n or not 0 < m * n * k <= most):
        return 0
    key = (out.itemsize, bool(ta), bool(tb), m, n, k, along, parts)
    description = _jitted.get(key, _jitted)
    if description is _jitted:  # (not generated yet)
        if len(_jitted) >= JIT_SHAPES_MOST:
            return 0
        # Two Python threads generating one shape at once both get the one kept: its
        # address lives in their programs as long as the process.
        description = _jitted.setdefault(key, _generate(key))
    return 0 if description is None else description.ctypes.data


def small_product(a, ta, b, tb, out):
    """The address of the description of MKL's generated kernels for the product ``out =
    op(a) @ op(b)`` (``+ out``) made whole, or 0 when it takes ``gemm_owned``: another
    backend, more than ``JIT_MOST`` multiply-adds, operands that are not C-contiguous
    arrays of ``out``'s dtype (float32 or float64), shapes that do not match
    (``gemm_owned`` says so), or ``JIT_SHAPES_MOST`` products already generated."""
    return _described(a, ta, b, tb, out, WHOLE, 1, JIT_MOST)


#: The most multiply-adds of a split product whose parts MKL's generated kernels make
#: (MKL generates none for much larger parts; see ``split_product``).
JIT_SPLIT_MOST = 1 << 24


def split_product(along, a, ta, b, tb, out):
    """The description's address (0: none) for a product that ``gemm_owned`` splits by a
    parameter's rows (``along`` ``OUT_ROWS`` or ``OUT_COLUMNS``) into one part per thread
    of the process (``fastgraph.threads.parts``, 2 or more), each part made by a kernel
    generated for its shape, on the thread that owns those rows. float32 only (a float64
    product is made whole), the operands and limits of :func:`small_product`, and only
    where MKL generates code for every part (its ``MKL_JIT_SUCCESS``). On an Intel Xeon
    (one thread, 171 part-like shapes of 2^17 to 2^23 multiply-adds, each timed once
    against ``cblas_sgemm``) the generated kernels took a median 0.88 of cblas's time
    (0.32-1.39, single timings on a noisy machine: one shape 0.68 in one sweep and 1.33 in
    the next; ``/work/notes/s25/sweep_parts.py``). The MNIST MLP's first layer's parts,
    64x784 by 784x50 forward and 50x64 by 64x784 its weight gradient, took 0.67 and 0.93
    of cblas's time, and its two-thread step 0.76-0.93 of its time (medians of 30 rounds
    each way, two graphs in one process, three runs). MKL generates none for
    784-256-128-10's first layer's parts (128x784 by 784x128), which ``gemm_owned``
    makes."""
    parts = _threads().parts
    if along not in (OUT_ROWS, OUT_COLUMNS) or parts < 2 or out.dtype != np.float32:
        return 0
    return _described(a, ta, b, tb, out, along, parts, JIT_SPLIT_MOST)


@intrinsic
def _call_generated(typingctx, function, generator, a, b, out):
    """Call the generated GEMM at address ``function``: ``function(generator, a, b, out)``
    (MKL's ``sgemm_jit_kernel_t``: the generator and the three operands' addresses)."""
    def codegen(context, builder, signature, args):
        pointer = ir.IntType(8).as_pointer()
        kind = ir.FunctionType(ir.VoidType(), [pointer] * 4)
        called = builder.inttoptr(args[0], kind.as_pointer())
        builder.call(called, [builder.inttoptr(value, pointer) for value in args[1:]])
        return context.get_dummy_value()

    return types.void(function, generator, a, b, out), codegen


@inline
def _c_rows(operand):
    """Whether ``operand`` is C-contiguous (rows of ``shape[1]`` numbers, back to back)."""
    rows, cols = operand.shape
    return ((cols <= 1 or operand.strides[1] == operand.itemsize)
            and (rows <= 1 or operand.strides[0] == cols * operand.itemsize))


@inline
def _generated_operands(description, a, b, out, beta):
    """The description at ``description`` (an address), the slot of the kernels for
    ``beta`` in it, and the three operands' addresses, once the operands are checked: those
    the kernels were generated for (C-contiguous, of its shape) and a beta of 0 or 1, else
    ValueError (a kernel made for other arrays would read and write past them). A
    description of 0, what :func:`small_product` and :func:`split_product` return where
    they generate none, is refused too (read, it took the process down)."""
    if description == 0:
        raise ValueError("gemm_generated: no description (0: no kernels were generated for "
                         "this product; product() makes it with gemm_owned)")
    head = array_at(description, JIT_HEADER, np.int64)
    d = array_at(description, JIT_HEADER + JIT_PART_SLOTS * head[_PARTS], np.int64)
    m, n = out.shape
    k = d[_K]
    ta, tb = d[_TA] != 0, d[_TB] != 0
    if not (m == d[_M] and n == d[_N] and a.shape == ((k, m) if ta else (m, k))
            and b.shape == ((n, k) if tb else (k, n)) and _c_rows(a) and _c_rows(b)
            and _c_rows(out)):
        raise ValueError("gemm_generated: operands other than the kernel was generated for")
    if beta != 0 and beta != 1:
        raise ValueError("gemm_generated: beta must be 0 or 1")
    return (d, JIT_HEADER + (0 if beta == 0 else 2), np.int64(a.ctypes.data),
            np.int64(b.ctypes.data), np.int64(out.ctypes.data))


@kernel
def gemm_generated(description, a, b, out, beta):
    """out = op(a) @ op(b) + beta * out by the kernel MKL generated for the product's shape,
    flags and beta (``description``: :func:`small_product`'s address), made whole. Operands
    other than those it was generated for, or a beta other than 0 and 1, are refused
    (``_generated_operands``). Where MKL generated no code for the shape (its
    ``MKL_NO_JIT``) the kernel is MKL's own GEMM, on one thread where the description's
    ``_SERIAL`` says so (see ``_kernels_for``). A plain kernel, apart from the split
    products' (a ``prange`` kernel took the recurrent net's start, whose products are all
    small ones, from 3.30-3.61 s to 4.12-4.68 with an empty cache, 0.57-0.79 s to 0.85-0.94
    warm). (A fallback to ``cblas_?gemm`` here doubled the kernel's compile, 0.42-0.55 s of
    CPU against 0.25-0.33, on an empty cache's first step.)"""
    d, slot, pa, pb, pc = _generated_operands(description, a, b, out, beta)
    if d[_PARTS] != 1:
        raise ValueError("gemm_generated: a split product's description "
                         "(gemm_split_generated makes it)")
    if d[_SERIAL]:  # MKL's own GEMM, on one thread: on MKL's threads it split 10x64 by
        previous = _mkl_local_threads(1)  # 64x20 (an MLP's last weight gradient) in two,
        _call_generated(d[slot], d[slot + 1], pa, pb, pc)  # with other last bits
        _mkl_local_threads(previous)
    else:
        _call_generated(d[slot], d[slot + 1], pa, pb, pc)


@parallel_kernel
def gemm_split_generated(description, a, b, out, beta):
    """out = op(a) @ op(b) + beta * out in the parts of :func:`split_product`'s description,
    each by the kernel MKL generated for it: part t on thread t (the rows ``owned_rows``
    gives it, as ``gemm_owned`` splits), the parts one after the other on fewer threads, so
    the thread count does not change the numbers. Operands other than those they were
    generated for, or a beta other than 0 and 1, are refused (``_generated_operands``)."""
    d, slot, pa, pb, pc = _generated_operands(description, a, b, out, beta)
    m, n = out.shape
    k, parts, size = d[_K], d[_PARTS], out.itemsize
    ta, tb = d[_TA] != 0, d[_TB] != 0
    rows = m if d[_ALONG] == OUT_ROWS else n
    for part in prange(parts):  # part t on thread t (Numba's static schedule, as the update's)
        start, stop = owned_rows(rows, parts, part)
        at = slot + JIT_PART_SLOTS * part
        if stop > start and d[_ALONG] == OUT_ROWS:  # rows start:stop of op(a) and out
            _call_generated(d[at], d[at + 1], pa + start * (1 if ta else k) * size, pb,
                            pc + start * n * size)
        elif stop > start:  # columns start:stop of op(b) and out
            _call_generated(d[at], d[at + 1], pa, pb + start * (k if tb else 1) * size,
                            pc + start * size)


def product(along, a, ta, b, tb, out, beta, turned=None):
    """``gemm_owned(along, a, ta, b, tb, out, beta)``, but by kernels that MKL generates for
    the product's shape where it can: a small product that ``gemm_owned`` would make whole
    (``along`` WHOLE, or a parameter of fewer than ``PARALLEL_MIN`` numbers;
    :func:`small_product`, ``gemm_generated``), or each thread's part of one it splits
    (:func:`split_product`, ``gemm_split_generated``). What the operators call.

    ``turned``: None, or a function of a shape that gives a scratch array of that shape kept
    between steps (the operator's). With it, a product that :func:`flips` says is faster
    as its transpose (``along`` WHOLE or OUT_COLUMNS, ``beta`` 0) is made so, ``op(b).T @
    op(a).T`` into that array (split by the parameter's rows as before: ``A_ROWS``), which
    is then written transposed into ``out`` (``kernels.movement.transpose_rows``, one row).
    A forward product ``x @ W.T`` (``along`` OUT_COLUMNS) that :func:`dots` takes is made by
    fastgraph's own dot products, in the same parts (``gemm_owned``'s DOTS, ``_own_products``);
    a weight gradient that :func:`outers` takes by its outer products (OUTERS), and a product
    made whole that :func:`combinations` takes (a layer's input gradient ``u @ W``) by its
    combinations of rows (COMBINATIONS), split by the samples."""
    if (along == OUT_COLUMNS and beta == 0 and not ta and tb and a.strides[1] == a.itemsize
            and b.strides[1] == b.itemsize and dots(*out.shape, a.shape[1], out.dtype)):
        gemm_owned(DOTS, a, ta, b, tb, out, beta)
        return
    if (along == OUT_ROWS and ta and not tb and (beta == 0 or beta == 1)
            and a.strides[1] == a.itemsize and b.strides[1] == b.itemsize
            and outers(*out.shape, a.shape[0], out.dtype)):
        gemm_owned(OUTERS, a, ta, b, tb, out, beta)
        return
    if (along == WHOLE and not ta and not tb and beta == 0 and a.strides[1] == a.itemsize
            and b.strides[1] == b.itemsize and combinations(*out.shape, a.shape[1], out.dtype)):
        gemm_owned(COMBINATIONS, a, ta, b, tb, out, beta)
        return
    if turned is not None and beta == 0 and along in (WHOLE, OUT_COLUMNS):
        m, n = out.shape
        if flips(m, n, a.shape[0] if ta else a.shape[1], out.dtype):
            turned_product(along, a, ta, b, tb, out, turned((n, m)))
            return
    parameter = (out.shape[0] * out.shape[1] if along == OUT_ROWS
                 else b.shape[0] * b.shape[1] if along == OUT_COLUMNS
                 else a.shape[0] * a.shape[1] if along == A_ROWS else 0)
    if parameter < PARALLEL_MIN:
        description = small_product(a, ta, b, tb, out)
        if description:
            gemm_generated(description, a, b, out, beta)
            return
    else:
        description = split_product(along, a, ta, b, tb, out)
        if description:
            gemm_split_generated(description, a, b, out, beta)
            return
    gemm_owned(along, a, ta, b, tb, out, beta)


def turned_product(along, a, ta, b, tb, out, scratch):
    """``out = op(a) @ op(b)`` (``along`` WHOLE or OUT_COLUMNS) made as its transpose:
    ``scratch = op(b).T @ op(a).T`` (split by op(b)'s rows, the parameter's, where ``along``
    is OUT_COLUMNS: ``A_ROWS``), then ``out = scratch.T``. ``scratch``: (n, m), C-ordered."""
    product(A_ROWS if along == OUT_COLUMNS else WHOLE, b, not tb, a, not ta, scratch, 0.0)
    n, m = scratch.shape
    transpose_rows(scratch.reshape(1, n * m), n, m, out.reshape(1, m * n))


def flips(m, n, k, dtype):
    """Whether ``product`` makes a float32 product ``out (m, n) = op(a) @ op(b)`` (k the
    inner dimension) as its transpose where it may (:func:`turned_product`). Where MKL
    generates no code (AMD's processors, :func:`generates_code`), its GEMM makes an ``out``
    of a row-major width ``n`` that is not a multiple of 16 slowly; the turned product runs
    along its m rows. On a Zen 4 on one thread (``python -m benchmarks.orientation``, three
    runs), the turned way with its copy back took, of the straight way's time: 0.47-0.54 for
    64x10x20 (the MNIST MLP's last layer), 0.31-0.38 for 128x10x128, 0.52-0.63 for other n of
    4 to 15 with k of 20 or more, but 1.10-1.33 for the recurrent benchmark's k of 12 and 16
    (and 1.05 for m 8); 0.94 for 64x100x784 (the MLP's first layer) and 0.84-0.88 for its
    two-thread part 64x50x784, n above 16 with k of 256 or more, but 1.08-1.11 for m of 50
    and 1,000 there, mixed for k below 256 (0.76-1.09); n of 1 to 3 no faster
    (benchmarks/results/performance-notes.md, "Narrow products turned around"). MKL's alone:
    OpenBLAS (``FASTGRAPH_BLAS=openblas``,
    ``OPENBLAS_NUM_THREADS=1``) makes narrow shapes fast as they are (turned, n below 16
    and 64x50x784 took 1.02-1.79 of its time; 64x100x784, made whole, 0.89). The bits are
    the product's except for n below 16, which MKL sums in another order there; the choice
    depends on the shapes alone, never on the thread count."""
    if BACKEND != "mkl" or dtype != np.float32 or n % 16 == 0 or n < 4 or generates_code():
        return False
    return m >= 16 and k >= 20 if n < 16 else m % 16 == 0 and k >= 256


def dots(m, n, k, dtype):
    """Whether ``product`` makes a layer's forward product ``x @ W.T`` (``out (m, n)``: m
    samples, n units, k inputs) by fastgraph's own dot products (``gemm_owned``'s DOTS:
    ``_own_products`` in its parts) rather than MKL's GEMM: float32, where MKL generates
    no code for the parts (AMD's processors, :func:`generates_code`) and the processor has
    AVX-512 (:func:`wide_vectors`: a Zen 4, not a Zen 3), for a parameter split
    between the threads (n k of ``PARALLEL_MIN`` or more) of 256 inputs or more, on a batch
    of 16 or more. On a Zen 4, two threads, the parts of MKL's GEMM took longer side by
    side than alone (64x784 by 784x100, the MNIST MLP's first layer: 74-82 us against 57-70
    for one part alone); the dot products took 0.45-0.83 of its time on the MNIST networks'
    shapes (``python -m benchmarks.orientation --threads 2``), and in a training step, two
    copies of the network in turn (``benchmarks.ab``), the MLP's step 0.79-0.91 of its
    time, 784-256-128-10's 0.85-0.96 (benchmarks/results/performance-notes.md, "Forward
    products by dot products"). The bits
    depend on the parts, as the split GEMM's do, never on the thread count."""
    return (BACKEND == "mkl" and dtype == np.float32 and m >= 16 and k >= 256
            and n * k >= PARALLEL_MIN and not generates_code() and wide_vectors())


def outers(m, n, k, dtype):
    """Whether ``product`` makes a layer's weight gradient ``u.T @ x`` (``out (m, n)``: m
    units, n inputs, k samples) by fastgraph's own outer products (``gemm_owned``'s OUTERS,
    in the parts of the weight's rows) rather than MKL's GEMM: where :func:`dots` would take
    the layer's forward product (float32, MKL with no generated code, AVX-512, a weight of
    ``PARALLEL_MIN`` numbers or more), for 64 inputs or more and 16 samples or more
    (benchmarks/results/performance-notes.md, "Forward products by dot products")."""
    return (BACKEND == "mkl" and dtype == np.float32 and k >= 16 and n >= 64
            and m * n >= PARALLEL_MIN and not generates_code() and wide_vectors())


def combinations(m, n, k, dtype):
    """Whether ``product`` makes ``out (m, n) = a (m, k) @ b (k, n)``, a product it would
    make whole (a layer's input gradient ``u @ W``: m samples, k units, n inputs), by
    fastgraph's own kernels (``gemm_owned``'s COMBINATIONS, each thread a share of the
    samples: every row of ``out`` a combination of ``b``'s rows, the outer products' blocks
    reading ``a`` along its rows) rather than MKL's GEMM: float32, MKL with no generated
    code, AVX-512 (as :func:`dots`), 16 rows or more, ``n`` a multiple of 16 and 64 or more
    (the blocks' 16-float vectors: the numbers of the last ``n % 16`` columns are made one
    at a time), and more than ``JIT_MOST`` multiply-adds. On a Zen 5 on two threads
    (``/work/notes/s34/comb.py``, medians of 9 rounds of 300 calls, each kind's Python call
    included), of MKL's time: 0.47 for 128x128 by 128x256 (784-256-128-10's second layer;
    25.8 us against 54.9), 0.43 for 64x100 by 100x784, 0.25 for 128x32 by 32x128, 0.60 for
    16x128 by 128x256, 0.69 for 128x10 by 10x128, 0.83 for 64x64 by 64x64; but 1.18 for
    128x16 by 16x64, 1.03 for 32x64 by 64x64 (2^17 multiply-adds), 1.82 for 64x20 by 20x100
    (its last 4 columns one number at a time). The bits do not depend on the thread count
    (a row's numbers are made by one thread, in one order)."""
    return (BACKEND == "mkl" and dtype == np.float32 and m >= 16 and n >= 64 and n % 16 == 0
            and m * n * k > JIT_MOST and not generates_code() and wide_vectors())


@functools.cache
def wide_vectors():
    """Whether the processor has 512-bit vector registers (AVX-512), 32 of them: the dot
    products' block holds its sixteen 16-float sums in registers there (measured on a Zen 4);
    with AVX2's sixteen 256-bit ones (a Zen 3) they would not fit, and ``dots`` leaves the
    products to MKL (not measured there)."""
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


# -- a per-sample pass's product: each sample's zero columns skipped ------------------------
#: ``grouped_product``'s register block: this many rows of a group by 64 (or 16) columns.
BLOCK_ROWS = 5
#: The most columns of ``u`` (units of the layer) whose active ones a group lists on the
#: stack; wider layers take the dense product.
GROUPED_MOST = 1024
#: The share of the groups' columns that may be active for the skipping product: above it
#: one dense GEMM is faster (the block made a multiply-add at about 0.65x the rate of MKL's
#: dense product of that layer, 49% active).
SPARSE_AT_MOST = 0.6
#: The groups whose active columns choose between the two (the first ones).
SAMPLED_GROUPS = 8


def _vector_block(quads):
    """An intrinsic ``block(out, ldo, w, ldw, rows, coefficients, n)`` that sets a block of
    ``BLOCK_ROWS`` rows by ``16 * quads`` columns of ``out`` (at address ``out``, rows
    ``ldo`` numbers apart) to ``sum_t coefficients[t, r] * w[rows[t], :]`` over the ``n``
    listed rows of ``w`` (at the block's first column, rows ``ldw`` apart; ``rows`` int64,
    ``coefficients`` float32 ``(n, BLOCK_ROWS)``), in order of t. Explicit 16-float vectors
    held in registers across the loop (zmm where the processor has AVX-512, two ymm
    otherwise): LLVM's own vectoriser prefers 256-bit vectors on AVX-512 processors and
    keeps no block of accumulators in registers."""

    @intrinsic
    def block(typingctx, out, ldo, w, ldw, rows, coefficients, n):
        signature = types.void(*[types.int64] * 7)

        def codegen(context, builder, signature, args):
            out, ldo, w, ldw, rows, coefficients, n = args
            word, single, vector, fma, sums = _vectors(builder, BLOCK_ROWS, quads)

            def at(address, kind):
                return builder.inttoptr(address, kind.as_pointer())

            def plus(address, count):
                return builder.add(address, ir.Constant(word, count))

            with cgutils.for_range(builder, n) as loop:
                t = loop.index
                row = builder.load(at(builder.add(rows, builder.shl(t, ir.Constant(word, 3))),
                                      word))
                start = builder.add(w, builder.shl(builder.mul(row, ldw), ir.Constant(word, 2)))
                parts = [builder.load(at(plus(start, 64 * q), vector), align=4)
                         for q in range(quads)]
                first = builder.add(coefficients, builder.mul(t, ir.Constant(word,
                                                                            4 * BLOCK_ROWS)))
                for r in range(BLOCK_ROWS):
                    spread = _spread(builder, builder.load(at(plus(first, 4 * r), single),
                                                           align=4), vector)
                    for q in range(quads):
                        builder.store(builder.call(fma, [spread, parts[q],
                                                         builder.load(sums[r][q])]), sums[r][q])
            for r in range(BLOCK_ROWS):
                start = builder.add(out, builder.shl(builder.mul(ir.Constant(word, r), ldo),
                                                     ir.Constant(word, 2)))
                for q in range(quads):
                    builder.store(builder.load(sums[r][q]), at(plus(start, 64 * q), vector),
                                  align=4)
            return context.get_dummy_value()

        return signature, codegen

    return block


_block64, _block16 = _vector_block(4), _vector_block(1)


@inline
def _grouped_rows(u, w, out, m, g, first, rows, coefficients, n):
    """Rows ``first:first + 2 * BLOCK_ROWS`` of group ``g`` (fewer at the group's end): their
    coefficients packed, then for 64 columns at a time (then 16) a block of each whole
    ``BLOCK_ROWS`` rows, the two blocks one after the other while those columns of the
    listed rows of ``w`` are in L1; the rest (a short block, the last columns) one by one."""
    k = w.shape[1]
    count = min(2 * BLOCK_ROWS, m - first)
    blocks = count // BLOCK_ROWS
    for b in range(2):
        for t in range(n):
            for r in range(BLOCK_ROWS):
                row = first + b * BLOCK_ROWS + r
                coefficients[(b * n + t) * BLOCK_ROWS + r] = (
                    u[g * m + row, rows[t]] if row < first + count else 0)
    ldo, ldw = out.strides[0] // 4, w.strides[0] // 4
    base, step = out.ctypes.data + (g * m + first) * ldo * 4, BLOCK_ROWS * ldo * 4
    packed, listed, c = coefficients.ctypes.data, rows.ctypes.data, 0
    if blocks:
        while c + 64 <= k:
            for b in range(blocks):
                _block64(base + b * step + c * 4, ldo, w.ctypes.data + c * 4, ldw, listed,
                         packed + b * n * BLOCK_ROWS * 4, n)
            c += 64
        while c + 16 <= k:
            for b in range(blocks):
                _block16(base + b * step + c * 4, ldo, w.ctypes.data + c * 4, ldw, listed,
                         packed + b * n * BLOCK_ROWS * 4, n)
            c += 16
    for r in range(count):  # the last columns; every column of a short block's rows
        start = c if r < blocks * BLOCK_ROWS else 0
        b, within = r // BLOCK_ROWS, r % BLOCK_ROWS
        line = out[g * m + first + r]
        for j in range(start, k):
            line[j] = 0
        for t in range(n):
            a = coefficients[(b * n + t) * BLOCK_ROWS + within]
            source = w[rows[t]]
            for j in range(start, k):
                line[j] += a * source[j]


def _grouped_product(u, w, out, m):
    """out = u @ w, for a per-sample pass: u's rows come in groups of ``m``, a sample's
    (``fastgraph.jacobians``: a result of m numbers), and after a ReLU a group's rows
    share their zero columns (the units that sample left inactive), which take no part
    in its rows of the product. Each group lists its active columns and multiplies only
    those rows of ``w``, ``BLOCK_ROWS`` of its rows at a time in a block of vectors
    (``_vector_block``). Where the first ``SAMPLED_GROUPS`` groups have more than
    ``SPARSE_AT_MOST`` of their columns active (no ReLU before), or the layer is wider
    than ``GROUPED_MOST`` units, or a weight is not finite (skipped, its NaN or infinity
    times 0 would be missing from the product), the product is one dense GEMM, as
    ``gemm`` makes it. float32, rows C-contiguous; MKL's. On the MNIST MLP's first layer
    in its Jacobian (640x100 by 100x784, 49% of the columns active in each group)
    0.23-0.24 ms against MKL's 0.34-0.39 (two threads, an Intel Xeon), and as slow as
    MKL's (0.37-0.44 ms both) at an hour the machine ran slower: both write the 2 MB
    result. Every group's rows are made by one thread, so the thread count does not
    change them. Each thread makes its equal share of the groups, and one that finishes
    first takes over the last groups of a slower one (``kernels.take``): the MNIST MLP's
    Jacobian took 0.86-0.94 of its time with equal shares alone (medians of 240 rounds'
    ratios, 5 calls a round, five runs, in one process; the same bits). Skipping exact
    zeros drops no term of a finite product (a weight that is not finite takes the dense
    one, above); the order of the remaining terms is the columns' own, so the bits may
    differ from MKL's (they were the same on that layer)."""
    rows, units = u.shape
    k = w.shape[1]
    groups = rows // m
    looked, active = min(groups, SAMPLED_GROUPS), 0  # (the first groups, on this thread:
    for g in range(looked):  # no parallel loop of its own for the choice)
        for j in range(units):
            for r in range(m):
                if u[g * m + r, j] != 0:
                    active += 1
                    break
    unusual = 0  # a weight that is not finite: the dense product's 0 * inf is NaN, as it
    for i in range(units):  # is everywhere else (skipped, it would be 0)
        line = w[i]
        for j in range(k):
            unusual |= (line[j] - line[j]) != 0
    if (unusual or units > GROUPED_MOST
            or active > SPARSE_AT_MOST * looked * units):
        previous = _mkl_local_threads(1) if 1 < rows < SERIAL_ROWS else 0
        _mkl_sgemm(ROW_MAJOR, NO_TRANSPOSE, NO_TRANSPOSE, rows, k, units, np.float32(1),
                   u.ctypes.data, u.strides[0] // 4, w.ctypes.data, w.strides[0] // 4,
                   np.float32(0), out.ctypes.data, out.strides[0] // 4)
        if 1 < rows < SERIAL_ROWS:
            _mkl_local_threads(previous)
        return
    parts = _mkl_most()
    board = stack_bytes(BOARD_BYTES)  # each thread's share of the groups
    share_out(board, groups, parts)
    for part in prange(parts):  # part t on thread t (Numba's static schedule)
        space = stack_bytes(50176)  # (8 + 4 * 2 * BLOCK_ROWS + 1) * GROUPED_MOST bytes
        listed = array_at(space, GROUPED_MOST, np.int64)
        coefficients = array_at(space + 8 * GROUPED_MOST, 2 * BLOCK_ROWS * GROUPED_MOST,
                                np.float32)
        seen = array_at(space + (8 + 8 * BLOCK_ROWS) * GROUPED_MOST, GROUPED_MOST, np.int8)
        g = take(board, part, parts)
        while g >= 0:
            for j in range(units):  # the group's active columns, its rows read along
                seen[j] = 0
            for r in range(m):
                line = u[g * m + r]
                for j in range(units):
                    seen[j] |= line[j] != 0
            n = 0
            for j in range(units):
                if seen[j]:
                    listed[n] = j
                    n += 1
            for first in range(0, m, 2 * BLOCK_ROWS):
                _grouped_rows(u, w, out, m, g, first, listed, coefficients, n)
            g = take(board, part, parts)


grouped_product = Kernel(_grouped_product, dict(cache=True, error_model="numpy", nogil=True,
                                                parallel=True))


# -- deferred one-sample weight gradients -----------------------------------------------------
#: Samples whose outer products a deferred weight gradient keeps before adding them to the
#: sum with one GEMM (``outer_staged``).
STAGED_ROWS = 32


def _outer_staged(a, b, stage_a, stage_b, staged, defer, out, beta):
    """out = a^T b (+ out, with ``beta`` 1) for one-row a (1, m) and b (1, n), the weight
    gradient of one sample; with ``defer`` 1 and ``beta`` 1 the addition may wait.

    The article's programs feed one sample per step, and each step's weight gradient is an
    outer product added into the optimizer's sum: a pass over the whole gradient per sample
    (100x784: 7.9 us, bound by the cache). Deferred, the sample's two rows are copied into
    ``stage_a``/``stage_b`` (``staged[0, 0]`` counts them) and every ``STAGED_ROWS`` samples
    one GEMM adds them all (1.6 us a sample). Until :func:`flush_staged` runs, ``out`` lacks
    the staged samples: the compiled executor defers only where ``out`` is an optimizer's
    sum, which it flushes before anything reads the sums. With ``defer`` 0 (the walker and
    every other use) or ``beta`` 0 (a write) the product is made at once and the stage is
    left alone."""
    if defer == 0 or beta == 0:
        outer(a, b, out, beta)
        return
    count = int(staged[0, 0])
    stage_a[count, :] = a[0, :]
    stage_b[count, :] = b[0, :]
    count += 1
    if count == stage_a.shape[0]:
        _add_staged(stage_a, stage_b, count, out)
        count = 0
    staged[0, 0] = count


def _flush_staged(stage_a, stage_b, staged, out):
    """Add the samples that :func:`outer_staged` keeps into ``out`` (one GEMM), and empty
    the stage."""
    count = int(staged[0, 0])
    if count > 0:
        _add_staged(stage_a, stage_b, count, out)
    staged[0, 0] = 0


def _add_staged(stage_a, stage_b, count, out):
    """out += stage_a[:count]^T stage_b[:count]: this backend's CBLAS routine called here,
    not ``gemm`` (a kernel calling the ``gemm`` kernel compiles another specialization of
    it, for the literal flags). Everything C-contiguous, as the stages and sums are."""
    m, n = stage_a.shape[1], stage_b.shape[1]
    pa, pb, pc = stage_a.ctypes.data, stage_b.ctypes.data, out.ctypes.data
    if out.itemsize == 4:
        _sgemm(ROW_MAJOR, TRANSPOSE, NO_TRANSPOSE, m, n, count, np.float32(1), pa, m,  # noqa: F821
               pb, n, np.float32(1), pc, n)
    else:
        _dgemm(ROW_MAJOR, TRANSPOSE, NO_TRANSPOSE, m, n, count, 1.0, pa, m, pb, n,  # noqa: F821
               1.0, pc, n)


def _staged_kernels():
    """``outer_staged`` and ``flush_staged`` calling this backend's CBLAS routines (with the
    ``numpy`` backend nothing defers, as there is no compiled executor, and
    ``outer_staged`` is the immediate product)."""
    if BACKEND == "numpy":
        def immediate(a, b, stage_a, stage_b, staged, defer, out, beta):
            outer(a, b, out, beta)

        def nothing_staged(stage_a, stage_b, staged, out):
            pass

        return immediate, nothing_staged
    single, double = {"mkl": (_mkl_sgemm, _mkl_dgemm),
                      "openblas": (_openblas_sgemm, _openblas_dgemm)}[BACKEND]
    add = FunctionType(_add_staged.__code__, {**globals(), "_sgemm": single, "_dgemm": double},
                       f"add_staged_{BACKEND}")
    names = {"_add_staged": njit(inline="always")(add), "outer": outer}
    made = []
    for function, name in ((_outer_staged, "outer_staged"), (_flush_staged, "flush_staged")):
        compiled = FunctionType(function.__code__, {**globals(), **names}, f"{name}_{BACKEND}")
        compiled.__qualname__, compiled.__doc__ = compiled.__name__, function.__doc__
        made.append(kernel(compiled))
    outer_staged, flush_staged = made
    outer_staged.flush = flush_staged  # what the executor runs to empty the stage
    return outer_staged, flush_staged


outer_staged, flush_staged = _staged_kernels()
