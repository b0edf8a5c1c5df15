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

import threading

from numba import njit, types

#: ``recording.recorder``, set by ``program.recording()`` in the thread that records a
#: pass, receives ``(kernel, args)`` for every kernel call made in that thread.
recording = threading.local()


class Kernel:
    """A compiled kernel that a program recorder can see being called."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.py_func = dispatcher.py_func
        self.__name__ = dispatcher.__name__
        self.__doc__ = dispatcher.__doc__
        self.__module__ = dispatcher.__module__
        self._numba_type_ = types.Dispatcher(dispatcher)

    def __call__(self, *args):
        recorder = getattr(recording, "recorder", None)
        if recorder is not None and recorder(self, args):
            return None
        return self.dispatcher(*args)

    def __repr__(self):
        return f"<kernel {self.__module__}.{self.__name__}>"


def _kernel_decorator(**options):
    compile_ = njit(**options)
    return lambda function: Kernel(compile_(function))


#: How every kernel is compiled. ``error_model="numpy"`` drops the zero-division checks that
#: Python semantics would add to every float division (they stop LLVM from vectorising a
#: loop: Adam ran 6x slower with them); cache=True keeps the machine code between runs.
kernel = _kernel_decorator(cache=True, error_model="numpy", nogil=True)

#: For work bound by memory rather than arithmetic (optimizer updates, gathering a batch,
#: per-sample outer products): ``prange`` loops run on every core, which together move more
#: bytes than one (Adam on 100x784 took 76 us instead of 105 in a training step), and LLVM
#: may reassociate and contract into FMAs. NaN and infinity keep their meaning, so a
#: diverging run still shows NaN.
parallel_kernel = _kernel_decorator(cache=True, error_model="numpy", nogil=True, parallel=True,
                                    fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})

#: For sums along a row (dot products), which LLVM vectorises only when it may reassociate
#: them: one thread, the floating-point freedoms of ``parallel_kernel``.
reducing_kernel = _kernel_decorator(cache=True, error_model="numpy", nogil=True,
                                    fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})

#: A per-element function that the update kernels call from their loops, inlined into them.
inline = njit(inline="always", error_model="numpy", fastmath={"nsz", "arcp", "contract", "afn",
                                                                 "reassoc"})
