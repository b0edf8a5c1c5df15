"""Numba kernels, grouped by operator family. They take and fill arrays; none knows a node.

Every kernel is compiled lazily on first use and cached on disk (``cache=True``), so an
import compiles nothing and a second process loads machine code instead of compiling.
Batched arrays are ``(B, n)`` matrices. An operand with fewer rows than the output is read
at row ``i * rows // out_rows``: one row stands for the whole batch (a parameter beside a
batch of samples), and B rows for B * m (the per-sample passes of ``fastgraph.jacobians``,
whose upstream holds m rows per sample).

A kernel decorated here is a :class:`Kernel`: called from Python it runs the compiled code,
and while a program is being recorded (``fastgraph.kernels.program``) it also writes the call
down, so that the compiled tape can replay it without Python. Called from another kernel it
is the plain Numba function (its ``_numba_type_`` tells Numba so).
"""

import functools
import importlib.util
import sys
import threading
import types as types_module

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

#: ``recording.recorder``, set by ``program.recording()`` in the thread that records a
#: pass, receives ``(kernel, args)`` for every kernel call made in that thread.
recording = threading.local()


class Kernel:
    """A compiled kernel that a program recorder can see being called.

    Its Numba dispatcher is made on first use: making one with ``cache=True`` costs about
    0.4 ms (the cache's locator reads the source file), and of the 90-odd kernels a program
    uses a few (the MNIST MLP's first step 13), so ``import fastgraph`` makes none."""

    #: For a kernel of ``prange`` loops: the kernel that runs them as plain loops, which a
    #: forked child calls instead (see :func:`run_on_one_core`); made on first need.
    twin = None

    def __init__(self, function, options):
        self.py_func = function
        self._options = options
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__doc__ = function.__doc__
        self.__module__ = function.__module__
        if options.get("parallel"):
            _PARALLEL.append(self)
            if _ONE_CORE:  # made after run_on_one_core() (a module imported since)
                _on_one_core(self)

    @functools.cached_property
    def dispatcher(self):
        _load_numba_registries()
        if self._options.get("parallel") and _threads().most == 1:
            # A process that never runs more than one thread (FASTGRAPH_THREADS=1, one
            # core, an MPI rank with a core of its own) compiles the plain loops, as it does
            # the optimizers' updates (``OnThreads``): a parallel kernel is 2.5-4x longer to
            # compile (LeNet-5's convolution 5.5 s of CPU, its plain loops 1.6).
            return self.plain().dispatcher
        return njit(**self._options)(self.py_func)

    def plain(self):
        """The plain twin of this kernel of ``prange`` loops, made on first need."""
        if self.twin is None:
            self.twin = plain_twin(self.py_func, self._options)
        return self.twin

    @functools.cached_property
    def _numba_type_(self):
        return types.Dispatcher(self.dispatcher)

    def __call__(self, *args):
        recorder = getattr(recording, "recorder", None)
        if recorder is not None and recorder(self, args):
            return -1  # (not run: what a kernel that returns a status says when all is well)
        return self.dispatcher(*args)

    def __repr__(self):
        return f"<kernel {self.__module__}.{self.__name__}>"


def _kernel_decorator(**options):
    return lambda function: Kernel(function, options)


def _threads():
    """``fastgraph.threads.threads`` (imported when first asked: that module imports this
    package's BLAS on first use)."""
    from ..threads import threads

    return threads


def ran():
    """Whether a kernel has been made ready to run in this process (compiled or loaded)."""
    return _load_numba_registries.cache_info().currsize > 0


#: Every kernel compiled with ``parallel=True`` (made as their modules are imported).
_PARALLEL = []
#: Whether run_on_one_core() was called: the kernels made since run their twins too.
_ONE_CORE = []


def plain_twin(function, options):
    """``function`` (a kernel's Python function) as a kernel of plain loops: ``prange`` runs
    as ``range``, on the calling thread, with the other ``options``. Its own name
    (``<name>_one_core``): Numba's cache files code under a function's name."""
    name = f"{function.__name__}_one_core"
    plain = types_module.FunctionType(function.__code__, function.__globals__, name,
                                      function.__defaults__, function.__closure__)
    plain.__qualname__ = name
    return Kernel(plain, {key: value for key, value in options.items() if key != "parallel"})


def run_on_one_core():
    """From now on, every kernel of ``prange`` loops runs its plain twin, and nothing of
    this process starts a parallel region (``fastgraph.threads``: in a child forked from a
    process that used GNU OpenMP, where Numba stops the process at its first parallel region
    and MKL waits for threads that fork did not copy). Calls from Python and passes recorded
    from now on take the twins; passes recorded before must be recorded again."""
    _ONE_CORE.append(True)
    for parallel in _PARALLEL:
        _on_one_core(parallel)


def _on_one_core(parallel):
    parallel.__dict__["dispatcher"] = parallel.plain().dispatcher
    parallel.__dict__.pop("_numba_type_", None)


class _NoScipyLinalg:
    """An import finder that refuses ``scipy.linalg`` to one caller only: the probe for a
    BLAS that ``numba.np.arraymath`` makes on import (``_check_blas``)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.startswith("scipy.linalg"):
            frame = sys._getframe(1)
            while frame is not None:
                if (frame.f_code.co_name == "_check_blas"
                        and frame.f_globals.get("__name__") == "numba.np.arraymath"):
                    raise ModuleNotFoundError(f"{name}: not needed by fastgraph's kernels")
                frame = frame.f_back
        return None


@functools.cache
def _load_numba_registries():
    """Import ``numba.np.arraymath`` (which Numba imports before it compiles or loads its
    first function) without the probe that imports ``scipy.linalg``.

    Numba's probe imports ``scipy.linalg.cython_blas`` to learn whether ``np.dot`` may call
    BLAS in compiled code: 0.13-0.18 s here (scipy.linalg's own imports), a fifth of a
    warm-cache start of the MNIST MLP (import, build, first step). No kernel of fastgraph
    uses Numba's ``np.dot`` (products go through ``kernels.blas``). The probe's answer is
    then set to whether scipy is installed, as it would have been; Numba's linear algebra
    imports ``scipy.linalg`` itself when a function that uses it is compiled, as it always
    does. If scipy.linalg is imported already, the probe is cheap and runs as usual."""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.meta_path.insert(0, _NoScipyLinalg)
    try:
        import numba.np.arraymath as arraymath
    finally:
        sys.meta_path.remove(_NoScipyLinalg)
    arraymath._HAVE_BLAS = importlib.util.find_spec("scipy") is not None


#: How every kernel is compiled. ``error_model="numpy"`` drops the zero-division checks that
#: Python semantics would add to every float division (they stop LLVM from vectorising a
#: loop: Adam ran 6x slower with them); cache=True keeps the machine code between runs.
kernel = _kernel_decorator(cache=True, error_model="numpy", nogil=True)

#: For work bound by memory rather than arithmetic (gathering a batch, per-sample outer
#: products; the optimizer updates too, without fastmath, see ``kernels.optimizers``):
#: ``prange`` loops run on every core, which together move more bytes than one (Adam on
#: 100x784 took 76 us instead of 105 in a training step), and LLVM may reassociate and
#: contract into FMAs. NaN and infinity keep their meaning, so a diverging run still shows
#: NaN.
parallel_kernel = _kernel_decorator(cache=True, error_model="numpy", nogil=True, parallel=True,
                                    fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})

#: For sums along a row (dot products), which LLVM vectorises only when it may reassociate
#: them: one thread, the floating-point freedoms of ``parallel_kernel``.
reducing_kernel = _kernel_decorator(cache=True, error_model="numpy", nogil=True,
                                    fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})

#: A function that kernels call, inlined into them (per element in the update kernels' loops,
#: per row in softmax): compiled as part of each caller, under the caller's options (its own
#: ``fastmath`` set here does not apply then), and never as a function of its own.
inline = njit(inline="always", error_model="numpy", fastmath={"nsz", "arcp", "contract", "afn",
                                                                 "reassoc"})


#: Where the arrays that kernels read and write begin (node values and buffers, parameters,
#: gradient sums, optimizer states, batches): a cache line, which is also an AVX-512 vector.
#: NumPy's large arrays begin 16 bytes into a page (the allocator's header), so every 64-byte
#: load of a row that starts there spans two cache lines: on a Zen 5, one thread, the own
#: dot products of 784-256-128-10's first layer (a part: 128x784 by 784x128) took 141-144 us
#: with both operands so and 111-116 aligned, its outer products 115-116 against 110-114
#: (``/work/notes/s34/peak_align.py``).
ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` beginning at a multiple of ``ALIGNMENT`` bytes, C-contiguous
    and writable. Its memory is a part of a byte array a little larger, reached through a
    ``memoryview``: the array and its views then own nothing, and the array is what they
    go back to (``np.ndarray.base``) with its own address and size (what the compiled
    passes compare and move: ``engines.compiled``)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    memory = memoryview(raw)[start:start + count * dtype.itemsize]
    return np.frombuffer(memory, dtype, count).reshape(shape)


def aligned_zeros(shape, dtype):
    """``np.zeros(shape, dtype)`` aligned as :func:`aligned_empty`."""
    array = aligned_empty(shape, dtype)
    array.fill(0)
    return array


#: A parameter of at least this many numbers is owned in parts by the threads: its optimizer
#: update runs on every core (``kernels.optimizers``), and the products that read or write
#: it by rows (``kernels.blas.gemm_owned``) split it the same way (:func:`owned_rows`), so
#: that each core finds its part of the weights, gradient sums and optimizer states in its
#: own cache from one step to the next.
PARALLEL_MIN = 16384


@inline
def owned_rows(rows, parts, part):
    """The rows ``[start, stop)`` of a parameter's ``rows`` that thread ``part`` of ``parts``
    owns: equal shares, in order. They are the rows of the numbers that Numba's static
    schedule gives that thread in the update's ``prange`` loop over the parameter (one
    equal chunk per thread, in thread order: the same cuts whenever ``parts`` divides
    ``rows``, within a row otherwise), which is what makes a thread's part of a product
    and its part of the update the same numbers."""
    return rows * part // parts, rows * (part + 1) // parts


@intrinsic
def array_at(typingctx, address, size, like):
    """The 1-D C-contiguous array of ``size`` numbers at ``address`` (an integer), of the
    dtype of ``like`` (an array, or a NumPy scalar type such as ``np.int32``). Built here
    rather than by ``numba.carray``, whose implementation is one more function to compile
    (0.06 s of CPU, with an empty cache, in the MLP's first step)."""
    dtype = like.dtype if isinstance(like, types.Array) else like.instance_type
    array_type = types.Array(dtype, 1, "C")

    def codegen(context, builder, signature, args):
        address, size = args[0], args[1]
        array = context.make_array(array_type)(context, builder)
        element = context.get_data_type(array_type.dtype)
        itemsize = ir.Constant(size.type, context.get_abi_sizeof(element))
        context.populate_array(array, data=builder.inttoptr(address, element.as_pointer()),
                               shape=cgutils.pack_array(builder, [size]),
                               strides=cgutils.pack_array(builder, [itemsize]),
                               itemsize=itemsize, meminfo=None)
        return array._getvalue()

    return array_type(address, size, like), codegen


@intrinsic
def stack_bytes(typingctx, count):
    """The address of ``count`` bytes (a literal number) of the calling kernel's stack frame,
    16-byte aligned, valid until the kernel returns: scratch space that costs no allocation
    (view it with :func:`array_at`)."""
    if not isinstance(count, types.IntegerLiteral):
        raise TypingError("stack_bytes needs a literal number of bytes")
    words = (count.literal_value + 15) // 16

    def codegen(context, builder, signature, args):
        block = ir.ArrayType(ir.IntType(128), words)
        space = cgutils.alloca_once(builder, block)
        space.align = 16
        return builder.ptrtoint(space, ir.IntType(64))

    return types.int64(count), codegen


#: Bytes a thread's entry of a board of shares takes (:func:`share_out`): a cache line each,
#: so that a thread taking from its own share does not move the others' lines.
SHARE_BYTES = 64
#: The most threads a board serves; a thread past it takes nothing of its own and helps the
#: others.
SHARES_MOST = 64
#: A board's bytes: ``stack_bytes(BOARD_BYTES)`` in the kernel that shares out its work.
BOARD_BYTES = SHARE_BYTES * SHARES_MOST


@intrinsic
def _load_share(typingctx, address):
    """The int64 at ``address``, read atomically."""

    def codegen(context, builder, signature, args):
        word = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(word, "monotonic", 8)

    return types.int64(address), codegen


@intrinsic
def _exchange_share(typingctx, address, expected, new):
    """Set the int64 at ``address`` to ``new`` if it holds ``expected``, in one atomic step;
    returns what it held (``expected`` when the exchange was made)."""

    def codegen(context, builder, signature, args):
        word = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        pair = builder.cmpxchg(word, args[1], args[2], "monotonic", "monotonic")
        return builder.extract_value(pair, 0)

    return types.int64(address, expected, new), codegen


@inline
def share_out(board, count, parts):
    """Write on ``board`` (``BOARD_BYTES`` bytes: ``stack_bytes(BOARD_BYTES)``) each of
    ``parts`` threads' share of ``count`` pieces of work: the pieces Numba's static schedule
    would give it (:func:`owned_rows`), as ``(first << 32) | stop``. Then each thread of a
    ``prange(parts)`` loop takes pieces with :func:`take`."""
    for part in range(min(parts, SHARES_MOST)):
        first, stop = owned_rows(count, min(parts, SHARES_MOST), part)
        array_at(board + part * SHARE_BYTES, 1, np.int64)[0] = (first << 32) | stop


@inline
def take(board, part, parts):
    """The next piece of work for thread ``part`` of ``parts`` (:func:`share_out`), or -1 when
    none is left: the first piece left of its own share, else the last left of another
    thread's, taken in one atomic step. So on equally fast cores each thread does its own
    share, the pieces its cache holds from the step before (``owned_rows``), and a thread
    that finishes early takes over the end of a slower one's (on a shared machine one core
    may run at half the other's speed for seconds: ``python -m benchmarks.cores
    --together``). Which thread makes a piece never changes its numbers."""
    shares = min(parts, SHARES_MOST)
    mine = board + part * SHARE_BYTES
    while part < shares:
        held = _load_share(mine)
        first, stop = held >> 32, held & 0xFFFFFFFF
        if first >= stop:
            break
        if _exchange_share(mine, held, ((first + 1) << 32) | stop) == held:
            return first
    for step in range(1, shares + 1):
        other = board + ((part + step) % shares) * SHARE_BYTES
        while True:
            held = _load_share(other)
            first, stop = held >> 32, held & 0xFFFFFFFF
            if first >= stop:
                break
            if _exchange_share(other, held, (first << 32) | (stop - 1)) == held:
                return stop - 1
    return -1
