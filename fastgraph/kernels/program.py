"""Programs: recorded kernel calls, replayed by one compiled loop with no Python between them.

A program is what the compiled tape runs. It is made by *recording*: the Python walker runs
a pass once (forward along the tape, backward along a plan) while every :class:`Kernel` call
is written down with its arguments. Since every array an operator passes to a kernel is a
buffer that lives as long as the graph's shapes do, the calls can be replayed as they are:

- ``code``: one row per call, ``(adapter address, offset into ints, index of the call)``;
- ``ints``: four numbers per argument: an array's ``(address, rows, cols, 0)``, an
  integer's value, or a float's index into ``reals``;
- ``reals``: the float arguments, in the graph's dtype.

An *adapter* is a small C-callable function per kernel and argument layout, generated here
from the kinds of the recorded arguments (``C`` a C-contiguous matrix, ``F`` a transposed
one, ``f`` a float, ``i`` an integer): it rebuilds the arrays from the addresses and calls
the kernel. Adapters are compiled on first use and cached on disk like every kernel, so the
replay loop (:func:`execute`) is compiled once per library version and nothing is compiled
per graph. Adding an operator or a kernel changes nothing here.
"""

import sys

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic, overload

from . import Kernel

_package = sys.modules[__package__]

INTS_PER_ARGUMENT = 4


# -- what runs: the replay loop and the pieces adapters are made of --------------------------
@intrinsic
def _pointer(typingctx, address, like):
    """The integer ``address`` as a pointer of the type ``like`` has."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(like))

    return like(types.int64, like), codegen


@intrinsic
def _call(typingctx, function, ints, reals):
    """Call the adapter at address ``function`` with the addresses of its ints and reals."""

    def codegen(context, builder, signature, args):
        pointer = ir.IntType(8).as_pointer()
        adapter = ir.FunctionType(ir.IntType(64), [pointer, pointer])
        target = builder.inttoptr(args[0], adapter.as_pointer())
        return builder.call(target, [builder.inttoptr(args[1], pointer),
                                     builder.inttoptr(args[2], pointer)])

    return types.int64(types.int64, types.int64, types.int64), codegen


@njit(inline="always")
def _matrix(ints, k, reals):
    return carray(_pointer(ints[k], reals), (ints[k + 1], ints[k + 2]))


@njit(inline="always")
def _transposed(ints, k, reals):
    return carray(_pointer(ints[k], reals), (ints[k + 2], ints[k + 1])).T


@njit(inline="always")
def _real(ints, k, reals):
    return reals[ints[k]]


@njit(inline="always")
def _integer(ints, k, reals):
    return ints[k]


def _status(result):
    """-1 for a kernel that returns nothing, else what it returned (a row it rejects)."""


@overload(_status, inline="always")
def _status_overload(result):
    if isinstance(result, types.NoneType):
        return lambda result: np.int64(-1)
    return lambda result: np.int64(result)


@intrinsic
def _cycles(typingctx):
    """The processor's cycle counter (``llvm.readcyclecounter``): a few cycles to read."""

    def codegen(context, builder, signature, args):
        counter = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(
            ir.IntType(64), []))
        return builder.call(counter, [])

    return types.int64(), codegen


@njit(cache=True)
def cycle_counter():
    return _cycles()


@njit(inline="always")
def _run(code, ints, reals, pc, cycles):
    """Call row ``pc`` of ``code``; with a non-empty ``cycles``, add the cycles it took to
    the counter of the recorded call it replays (``code[pc, 2]``)."""
    address = ints.ctypes.data + code[pc, 1] * 8
    if cycles.shape[0] == 0:
        return _call(code[pc, 0], address, reals.ctypes.data)
    began = _cycles()
    status = _call(code[pc, 0], address, reals.ctypes.data)
    cycles[code[pc, 2]] += _cycles() - began
    return status


@njit(cache=True, nogil=True)
def execute(code, ints, reals, cycles):
    """Run every row of ``code``; -1, or the row of a call that returned a status.
    ``cycles``: empty, or one counter per recorded call (the profiler's)."""
    for pc in range(code.shape[0]):
        if _run(code, ints, reals, pc, cycles) >= 0:
            return pc
    return -1


@njit(cache=True, nogil=True)
def execute_stale(code, ints, reals, steps, states, computed, stamp, cycles):
    """The forward pass of a tape: for each node in order (``steps``: its index in the graph
    and the range of its rows), run its calls if its state is not 0 (computed), then mark
    it computed by pass ``stamp``. -1, or the row of a call that returned a status."""
    for s in range(steps.shape[0]):
        node = steps[s, 0]
        if states[node] != 0:
            for pc in range(steps[s, 1], steps[s, 2]):
                if _run(code, ints, reals, pc, cycles) >= 0:
                    return pc
            states[node] = 0
            computed[node] = stamp
    return -1


@njit(cache=True, nogil=True)
def execute_pass(code, ints, reals, steps, states, computed, stamp, backward, backward_ints,
                 backward_reals, cycles):
    """A whole compiled pass in one call: the forward (see ``execute_stale``), then every
    row of ``backward`` with its own ints and reals. -1, or the row of the forward call
    that returned a status."""
    failed = execute_stale(code, ints, reals, steps, states, computed, stamp, cycles)
    if failed >= 0:
        return failed
    execute(backward, backward_ints, backward_reals, cycles)
    return -1


# -- adapters ---------------------------------------------------------------------------------
_READERS = {"C": "_matrix", "F": "_transposed", "f": "_real", "i": "_integer"}
_HELPERS = {"_matrix": _matrix, "_transposed": _transposed, "_real": _real,
            "_integer": _integer, "_status": _status}
_adapters = {}


def adapter(kernel, kinds, dtype):
    """The address of the C-callable adapter of ``kernel`` for arguments of ``kinds``."""
    key = (kernel, kinds, dtype)
    found = _adapters.get(key)
    if found is None:
        found = _adapters[key] = _compile_adapter(kernel, kinds, dtype).address
    return found


def _compile_adapter(kernel, kinds, dtype):
    # The adapter's source names the kernel's module file as its own, so Numba caches its
    # machine code beside the kernel's (and drops it when that file changes).
    name = f"_adapter_{kernel.__name__}_{kinds}"
    arguments = ", ".join(f"{_READERS[kind]}(ints, {INTS_PER_ARGUMENT * i}, reals)"
                          for i, kind in enumerate(kinds))
    source = f"def {name}(ints, reals):\n    return _status(kernel({arguments}))\n"
    module = sys.modules[kernel.py_func.__module__]
    namespace = {"__name__": module.__name__, "kernel": kernel, **_HELPERS}
    exec(compile(source, module.__file__, "exec"), namespace)
    real = types.float32 if dtype == np.float32 else types.float64
    signature = types.int64(types.CPointer(types.int64), types.CPointer(real))
    # (Compiling adapters without LLVM's optimisation took 40% less time, but left a runtime
    # address in the module, so Numba refused to cache them: every process compiled again.)
    return cfunc(signature, cache=True)(namespace[name])


# -- recording --------------------------------------------------------------------------------
class NotRecordable(Exception):
    """A pass did numeric work that a program cannot replay (said why)."""


class Recording:
    """The calls of one pass, as they are made: ``with recording(dtype) as calls: ...``.

    ``owner`` names what the calls that follow belong to (a node, for errors). While
    ``replay_only`` is true, calls are written down but not run (calls whose effect the
    recording pass must not have, like adding a gradient into an optimizer's sums).
    """

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.calls = []  # (kernel, kinds, ints) per call
        self.reals = []
        self.arrays = []  # keeps every recorded array alive as long as the program
        self.owners = []
        self.owner = None
        self.replay_only = False

    def __call__(self, kernel, args):
        """Write the call down; True when it must not run now."""
        kinds, ints = "", []
        for arg in args:
            if type(arg) is np.ndarray:
                if arg.ndim != 2 or arg.dtype != self.dtype:
                    raise NotRecordable(f"{kernel.__name__} was given a {arg.ndim}-D "
                                        f"{arg.dtype} array; programs take {self.dtype} matrices")
                if arg.flags.c_contiguous:
                    kinds += "C"
                elif arg.flags.f_contiguous:
                    kinds += "F"
                else:
                    raise NotRecordable(f"{kernel.__name__} was given a strided view")
                self.arrays.append(arg)
                ints += (_address(arg), arg.shape[0], arg.shape[1], 0)
            elif isinstance(arg, (bool, int, np.integer)):
                kinds += "i"
                ints += (int(arg), 0, 0, 0)
            elif isinstance(arg, (float, np.floating)):
                kinds += "f"
                self.reals.append(float(arg))
                ints += (len(self.reals) - 1, 0, 0, 0)
            else:
                raise NotRecordable(f"{kernel.__name__} was given a {type(arg).__name__}")
        self.calls.append((kernel, kinds, ints))
        self.owners.append(self.owner)
        return self.replay_only


@njit(cache=True)
def _address(array):
    return array.ctypes.data  # NumPy's own .ctypes costs ten times more from Python


def fuse_additions(calls, start, stop, add):
    """Rewrite ``calls.calls[start:stop]`` so that where ``add(total, part)`` adds a buffer
    that one earlier call wrote as its ``out`` argument followed by ``beta`` (and nothing
    else touches), that call adds into ``total`` itself (``beta`` = 1) and the addition goes.
    It must come after every other call that touches ``total`` (which made it). A parameter
    shared by many nodes (an RNN's weights, one product per time step) then gathers its
    gradient without a pass over each part. Returns how many calls went."""
    recorded, uses, first_use = calls.calls, {}, {}  # per address: calls passing it
    for index in range(start, stop):
        _, kinds, ints = recorded[index]
        for i, kind in enumerate(kinds):
            if kind in "CF":
                address = ints[INTS_PER_ARGUMENT * i]
                uses[address] = uses.get(address, 0) + 1
                first_use.setdefault(address, index)
    dropped, last_use = set(), {}  # the last call so far that passed an address
    for index in range(start, stop):
        kernel, kinds, ints = recorded[index]
        if kernel is add and kinds == "CC":
            total, part = ints[0:3], ints[INTS_PER_ARGUMENT:INTS_PER_ARGUMENT + 3]
            writer = first_use[part[0]]
            w_kernel, w_kinds, w_ints = recorded[writer]
            out = INTS_PER_ARGUMENT * (len(w_kinds) - 2)
            size = part[1] * part[2]  # C-contiguous all: one size is one layout
            if (uses[part[0]] == 2 and total[1] * total[2] == size and writer < index
                    and _writes_with_beta(w_kernel, w_kinds) and w_ints[out] == part[0]
                    and w_ints[out + 1] * w_ints[out + 2] == size
                    and last_use.get(total[0], writer) < writer):  # the total made before
                w_ints = list(w_ints)
                w_ints[out] = total[0]
                calls.reals.append(1.0)
                w_ints[out + INTS_PER_ARGUMENT] = len(calls.reals) - 1
                recorded[writer] = (w_kernel, w_kinds, w_ints)
                dropped.add(index)
                last_use[total[0]] = writer
                continue
        for i, kind in enumerate(kinds):
            if kind in "CF":
                last_use[ints[INTS_PER_ARGUMENT * i]] = index
    calls.calls[start:stop] = [call for i, call in enumerate(recorded[start:stop], start)
                               if i not in dropped]
    calls.owners[start:stop] = [owner for i, owner in enumerate(calls.owners[start:stop], start)
                                if i not in dropped]
    return len(dropped)


def _writes_with_beta(kernel, kinds):
    code = kernel.py_func.__code__
    names = code.co_varnames[:code.co_argcount]
    return names[-1:] == ("beta",) and kinds[-1:] == "f" and kinds[-2:-1] == "C"


class recording:
    """Context manager: while it is open, every kernel call is recorded in ``Recording``."""

    def __init__(self, dtype):
        self.calls = Recording(dtype)

    def __enter__(self):
        if getattr(_package.recording, "recorder", None) is not None:
            raise RuntimeError("a program is already being recorded in this thread")
        _package.recording.recorder = self.calls  # what every Kernel call looks at
        return self.calls

    def __exit__(self, *exc):
        _package.recording.recorder = None


class Program:
    """Recorded calls, encoded for the executors: ``code`` rows are ``(adapter address,
    offset into ints, index of the call)``. ``arrays`` keeps the recorded buffers alive."""

    def __init__(self, calls):
        dtype = calls.dtype
        self.dtype = dtype
        self.owners = calls.owners
        self.arrays = calls.arrays
        self.kernels = []  # per call: (kernel, kinds)
        self.code = np.empty((len(calls.calls), 3), np.int64)
        ints, addresses, rows, found = [], [], [], {}
        for index, (kernel, kinds, numbers) in enumerate(calls.calls):
            key = (kernel, kinds)
            if key not in found:
                if not isinstance(kernel, Kernel):
                    raise NotRecordable(f"{kernel!r} is not a compiled kernel")
                slots = [INTS_PER_ARGUMENT * i for i, kind in enumerate(kinds) if kind in "CF"]
                found[key] = adapter(kernel, kinds, dtype), slots
            address, slots = found[key]
            rows.append((address, len(ints), index))
            addresses.extend(len(ints) + slot for slot in slots)
            ints.extend(numbers)
            self.kernels.append(key)
        if rows:
            self.code[:] = rows
        self.ints = np.array(ints or [0], np.int64)
        self.addresses = np.array(addresses, np.int64)  # where ints hold array addresses
        self.reals = np.array(calls.reals or [0.0], dtype)

    def __len__(self):
        return len(self.code)

    def rows(self, *ranges):
        """The code rows of the calls in ``ranges`` (``(start, stop)`` pairs), in order."""
        return np.ascontiguousarray(np.concatenate(
            [self.code[start:stop] for start, stop in ranges] or [self.code[:0]]))

    def touching(self, array, start, stop):
        """The calls in ``[start, stop)`` that pass an array within ``array``'s memory, with
        the positions of those arguments: ``{call: [argument, ...]}``."""
        low, high = array.ctypes.data, array.ctypes.data + array.nbytes
        found = {}
        for call in range(start, stop):
            offset = self.code[call, 1]
            kernel, kinds = self.kernels[call]
            for i, kind in enumerate(kinds):
                if kind in "CF" and low <= self.ints[offset + INTS_PER_ARGUMENT * i] < high:
                    found.setdefault(call, []).append(i)
        return found

    def relocated(self, moves, start, stop):
        """A copy of ``ints`` in which calls ``start`` to ``stop`` use other memory: for each
        ``(old, new)`` pair of arrays of one size, what the calls read or wrote anywhere in
        ``old``'s buffer they now read or write at the same place of ``new``."""
        ints = self.ints.copy()
        first = self.code[start, 1] if start < len(self) else len(ints)
        last = self.code[stop, 1] if stop < len(self) else len(ints)
        slots = self.addresses[(self.addresses >= first) & (self.addresses < last)]
        for old, new in moves:
            low = old.ctypes.data
            inside = slots[(ints[slots] >= low) & (ints[slots] < low + old.nbytes)]
            ints[inside] += new.ctypes.data - low
        return ints


#: ``cycles`` for a run that is not profiled.
NO_CYCLES = np.zeros(0, np.int64)
