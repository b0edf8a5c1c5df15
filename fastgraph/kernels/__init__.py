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

from numba import njit, types

#: ``recording.recorder``, set by ``program.recording()`` in the thread that records a
#: pass, receives ``(kernel, args)`` for every kernel call made in that thread.
recording = threading.local()


class Kernel:
    """A compiled kernel that a program recorder can see being called.

    Its Numba dispatcher is made on first use: making one with ``cache=True`` costs about
    0.4 ms (the cache's locator reads the source file), and of the 90-odd kernels a program
    uses a few (the MNIST MLP's first step 13), so ``import fastgraph`` makes none."""

    def __init__(self, function, options):
        self.py_func = function
        self._options = options
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__doc__ = function.__doc__
        self.__module__ = function.__module__

    @functools.cached_property
    def dispatcher(self):
        _load_numba_registries()
        return njit(**self._options)(self.py_func)

    @functools.cached_property
    def _numba_type_(self):
        return types.Dispatcher(self.dispatcher)

    def __call__(self, *args):
        recorder = getattr(recording, "recorder", None)
        if recorder is not None and recorder(self, args):
            return None
        return self.dispatcher(*args)

    def __repr__(self):
        return f"<kernel {self.__module__}.{self.__name__}>"


def _kernel_decorator(**options):
    return lambda function: Kernel(function, options)


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
