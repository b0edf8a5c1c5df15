"""Numba kernels, grouped by operator family. They take and fill arrays; none knows a node.

Every kernel is compiled lazily on first use and cached on disk (``cache=True``), so an
import compiles nothing and a second process loads machine code instead of compiling.
Batched arrays are ``(B, n)`` matrices. An operand with fewer rows than the output is read
at row ``i * rows // out_rows``: one row stands for the whole batch (a parameter beside a
batch of samples), and B rows for B * m (the per-sample passes of ``fastgraph.jacobians``,
whose upstream holds m rows per sample).
"""

from numba import njit

#: How every kernel is compiled. ``error_model="numpy"`` drops the zero-division checks that
#: Python semantics would add to every float division (they stop LLVM from vectorising a
#: loop: Adam ran 6x slower with them); cache=True keeps the machine code between runs.
kernel = njit(cache=True, error_model="numpy", nogil=True)

#: For work bound by memory rather than arithmetic (optimizer updates, gathering a batch,
#: per-sample outer products): ``prange`` loops run on every core, which together move more
#: bytes than one (Adam on 100x784 took 76 us instead of 105 in a training step), and LLVM
#: may reassociate and contract into FMAs. NaN and infinity keep their meaning, so a
#: diverging run still shows NaN.
parallel_kernel = njit(cache=True, error_model="numpy", nogil=True, parallel=True,
                       fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})

#: A per-element function that the update kernels call from their loops, inlined into them.
inline = njit(inline="always", error_model="numpy", fastmath={"nsz", "arcp", "contract", "afn",
                                                                 "reassoc"})
