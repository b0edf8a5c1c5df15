"""Programs: recorded kernel calls, replayed by one compiled loop with no Python between them.

A program is what the compiled tape runs. It is made by *recording*: the Python walker runs
a pass once (forward along the tape, backward along a plan) while every :class:`Kernel` call
is written down with its arguments. Since every array an operator passes to a kernel is a
buffer that lives as long as the graph's shapes do, the calls can be replayed as they are:

- ``code``: one row per call, ``(adapter address, offset into ints, index of the call,
  address of the kernel's machine code)``;
- ``ints``: four numbers per argument: an array's ``(address, rows, cols, transposed)``
  (1 for an F-contiguous one), an integer's value, or a float's index into ``reals``;
- ``reals``: the float arguments, as float64 (each keeps the value it was recorded with).

The replay calls each kernel's own machine code, the very function Numba compiled when the
walker called the kernel from Python (so no kernel is compiled twice), through an *adapter*
shared by every kernel called with the same kinds of arguments: ``C`` a C-contiguous
matrix, ``F`` a transposed one, ``f`` a float, ``g`` a float32 scalar, ``i`` an integer,
``b`` a bool. An adapter is a small C-callable function that rebuilds the arguments from
``ints`` and ``reals`` and calls the kernel's code with Numba's calling convention. C and
F matrices share one (compiled code receives a matrix the same way whatever its layout,
with strides, which the adapter sets from the transposed flag): one adapter serves a
product of any transpositions. Adapters are compiled on first use and cached on disk like
every kernel; the replay loop (:func:`execute_pass`) is compiled once per library version.
Nothing is compiled per graph, and adding an operator or a kernel changes nothing here.
"""

import sys

import numpy as np
from llvmlite import ir
from numba import cfunc, njit, types
from numba.core import cgutils
from numba.core.callconv import excinfo_t
from numba.extending import intrinsic

from . import Kernel, array_at

_package = sys.modules[__package__]

INTS_PER_ARGUMENT = 4


# -- what runs: the replay loop -------------------------------------------------------------
@intrinsic
def _call(typingctx, adapter, kernel, ints, reals):
    """Call the adapter at address ``adapter`` with the address of the ``kernel``'s code
    and those of its ints and reals."""

    def codegen(context, builder, signature, args):
        word, pointer = ir.IntType(64), ir.IntType(8).as_pointer()
        function = ir.FunctionType(word, [word, pointer, pointer])
        target = builder.inttoptr(args[0], function.as_pointer())
        return builder.call(target, [args[1], builder.inttoptr(args[2], pointer),
                                     builder.inttoptr(args[3], pointer)])

    return types.int64(types.int64, types.int64, types.int64, types.int64), codegen


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


#: A pass's header: an int64 array, whose address :func:`execute_pass` is given, holding
#: the address of each array the pass reads and the lengths its loops need. Two integers
#: cost Numba's dispatcher about 0.4 us a call, eleven arrays 1.5 us (a tenth of a
#: one-sample step of the article's MLP): see :func:`header`.
(H_FORWARD, H_FORWARD_ROWS, H_INTS, H_REALS, H_STEPS, H_STEPS_ROWS, H_STATES, H_COMPUTED,
 H_NODES, H_BACKWARD, H_BACKWARD_ROWS, H_BACKWARD_INTS, H_BACKWARD_REALS, H_CYCLES,
 H_CYCLES_SIZE, HEADER_SIZE) = range(16)


@njit(cache=True, nogil=True)
def execute_pass(header, stamp):
    """A whole compiled pass in one call, its arrays read from the header at address
    ``header``. The forward: for each node in order (``steps``: rows of its index in the
    graph and the range of its rows of ``code``), run its calls if its state is not 0
    (computed), then mark it computed by pass ``stamp``. Then every row of ``backward``
    with its own ints and reals. -1, or the row of the forward call that returned a
    status. ``cycles``: empty, or one counter per recorded call (``code[pc, 2]``) to which
    each call adds the cycles it took (the profiler's). The rows are read flat (``code[4
    * row + column]``): a reshape costs a third more of compiling."""
    h = array_at(header, HEADER_SIZE, np.int64)
    states = array_at(h[H_STATES], h[H_NODES], np.int8)
    computed = array_at(h[H_COMPUTED], h[H_NODES], np.int64)
    code = array_at(h[H_FORWARD], 4 * h[H_FORWARD_ROWS], np.int64)
    steps = array_at(h[H_STEPS], 3 * h[H_STEPS_ROWS], np.int64)
    cycles = array_at(h[H_CYCLES], h[H_CYCLES_SIZE], np.int64)
    timed = h[H_CYCLES_SIZE] != 0  # (one loop body per pass, not a helper: half the compiling)
    address, real = h[H_INTS], h[H_REALS]
    for s in range(h[H_STEPS_ROWS]):
        node = steps[3 * s]
        if states[node] != 0:
            for pc in range(4 * steps[3 * s + 1], 4 * steps[3 * s + 2], 4):
                began = _cycles() if timed else 0
                status = _call(code[pc], code[pc + 3], address + code[pc + 1] * 8, real)
                if timed:
                    cycles[code[pc + 2]] += _cycles() - began
                if status >= 0:
                    return pc // 4
            states[node] = 0
            computed[node] = stamp
    backward = array_at(h[H_BACKWARD], 4 * h[H_BACKWARD_ROWS], np.int64)
    address, real = h[H_BACKWARD_INTS], h[H_BACKWARD_REALS]
    for pc in range(0, 4 * h[H_BACKWARD_ROWS], 4):
        began = _cycles() if timed else 0
        _call(backward[pc], backward[pc + 3], address + backward[pc + 1] * 8, real)
        if timed:
            cycles[backward[pc + 2]] += _cycles() - began
    return -1


def header(code, ints, reals, steps, states, computed, backward, backward_ints,
           backward_reals, cycles):
    """The header of a pass over these arrays (C-contiguous; ``code`` and ``backward``
    rows of 4, ``steps`` rows of 3), for :func:`execute_pass`. The caller keeps every array
    alive while the header is used: it holds only their addresses."""
    for array in (code, ints, reals, steps, states, computed, backward, backward_ints,
                  backward_reals, cycles):
        if not array.flags.c_contiguous:
            raise ValueError("a pass's arrays must be C-contiguous")
    if code.shape[1:] != (4,) or backward.shape[1:] != (4,) or steps.shape[1:] != (3,):
        raise ValueError("a pass's code has rows of 4 numbers, its steps rows of 3")
    if len(computed) < len(states):
        raise ValueError("a pass's computed passes must be as many as its states")
    return np.array([
        located(code), len(code), located(ints), located(reals), located(steps),
        len(steps), located(states), located(computed), len(states),
        located(backward), len(backward), located(backward_ints),
        located(backward_reals), located(cycles), len(cycles)], np.int64)


def execute(code, ints, reals, steps, states, computed, stamp, backward, backward_ints,
            backward_reals, cycles):
    """:func:`execute_pass` of these arrays (tests, rare calls: the engine keeps its
    passes' headers)."""
    made = header(code, ints, reals, steps, states, computed, backward, backward_ints,
                  backward_reals, cycles)
    return execute_pass(located(made), stamp)


# -- adapters ---------------------------------------------------------------------------------
_TYPES = {"f": types.float64, "g": types.float32, "i": types.int64, "b": types.boolean}
_adapters = {}  # (kinds, dtype name, result) -> the compiled adapter (a CFunc)


def signature(kinds, dtype):
    """The Numba argument types of a kernel called with arguments of ``kinds``."""
    element = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    return tuple(types.Array(element, 2, kind) if kind in "CF" else _TYPES[kind]
                 for kind in kinds)


def machine_code(kernel, kinds, dtype):
    """``(address, result type, library)`` of ``kernel``'s code for arguments of ``kinds``:
    the function the walker's calls ran (compiled now if none has run it yet), and the
    Numba library that holds it (what keeps the address valid)."""
    argument_types = signature(kinds, dtype)
    dispatcher = kernel.dispatcher
    if argument_types not in dispatcher.overloads:
        dispatcher.compile(argument_types)
    compiled = dispatcher.overloads[argument_types]
    result = compiled.signature.return_type
    if not isinstance(result, (types.NoneType, types.Integer)):
        raise NotRecordable(f"{kernel.__name__} returns {result}; a kernel in a program "
                            "returns nothing or an integer status")
    address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
    if not address:  # (Numba says 0 for a symbol it did not keep: never call that)
        raise NotRecordable(f"Numba kept no callable code of {kernel.__name__} for {kinds}")
    return address, result, compiled.library


def adapter(kinds, dtype, result):
    """The address of the C-callable adapter for arguments of ``kinds`` (matrices of
    ``dtype``) and a kernel that returns ``result`` (a Numba type: none or an integer)."""
    key = (kinds.replace("F", "C"), np.dtype(dtype).name, str(result))
    found = _adapters.get(key)
    if found is None:
        found = _adapters[key] = _compile_adapter(*key)
    return found.address


def adapter_name(kinds, dtype, result):
    """The name an adapter is compiled and cached under: everything its code depends on."""
    return f"_adapter_{dtype}_{kinds or 'none'}_returns_{result}"


def _compile_adapter(kinds, dtype, result):
    # Numba caches the adapter under its name (which says everything its code depends on)
    # beside this module's kernels, and drops it when this file changes.
    name = adapter_name(kinds, dtype, result)
    source = f"def {name}(kernel, ints, reals):\n    return invoke(kernel, ints, reals)\n"
    result = types.none if result == "none" else getattr(types, result)
    namespace = {"__name__": __name__, "invoke": _invoker(kinds, signature(kinds, dtype), result)}
    exec(compile(source, __file__, "exec"), namespace)
    arguments = (types.int64, types.CPointer(types.int64), types.CPointer(types.float64))
    return cfunc(types.int64(*arguments), cache=True)(namespace[name])


def _invoker(kinds, argument_types, result):
    """An intrinsic ``invoke(kernel, ints, reals)``: call the Numba-compiled function at
    address ``kernel`` with arguments of ``argument_types`` read from ``ints`` and ``reals``
    by their ``kinds``. It returns -1 when the function returns nothing (``result`` none),
    what it returned, or 0 when it raised (the executor then has Python explain)."""

    def codegen(context, builder, signature, args):
        kernel, ints, reals = args
        word = ir.IntType(64)

        def integer(k):
            return builder.load(builder.gep(ints, [ir.Constant(word, k)]))

        values = []
        for i, (kind, argument_type) in enumerate(zip(kinds, argument_types)):
            k = INTS_PER_ARGUMENT * i
            if kind == "C":
                values.append(_matrix(context, builder, argument_type, *map(integer, range(
                    k, k + INTS_PER_ARGUMENT))))
            elif kind in "fg":
                real = builder.load(builder.gep(reals, [integer(k)]))
                values.append(real if kind == "f" else builder.fptrunc(real, ir.FloatType()))
            elif kind == "i":
                values.append(integer(k))
            else:
                values.append(builder.icmp_signed("!=", integer(k), ir.Constant(word, 0)))
        convention = context.call_conv
        function = convention.get_function_type(result, argument_types)
        target = builder.inttoptr(kernel, function.as_pointer())
        value_type = convention.get_return_type(result).pointee
        value = cgutils.alloca_once(builder, value_type)
        builder.store(cgutils.get_null_value(value_type), value)
        exception = cgutils.alloca_once(builder, ir.PointerType(excinfo_t))
        packed = convention._get_arg_packer(argument_types).as_arguments(builder, values)
        code = builder.call(target, [value, exception, *packed])
        if isinstance(result, types.NoneType):
            status = ir.Constant(word, -1)
        else:
            status = context.cast(builder, builder.load(value), result, types.int64)
        return builder.select(builder.icmp_signed("==", code, ir.Constant(code.type, 0)),
                              status, ir.Constant(word, 0))

    def invoke(typingctx, kernel, ints, reals):
        return types.int64(kernel, ints, reals), codegen

    return intrinsic(invoke)


def _matrix(context, builder, array_type, address, rows, cols, transposed):
    """A Numba array of ``array_type`` over the memory at ``address``: C-contiguous, or
    F-contiguous when ``transposed`` is not 0."""
    array = context.make_array(array_type)(context, builder)
    size = context.get_abi_sizeof(context.get_data_type(array_type.dtype))
    itemsize = ir.Constant(address.type, size)
    flip = builder.icmp_signed("!=", transposed, ir.Constant(transposed.type, 0))
    strides = [builder.select(flip, itemsize, builder.mul(cols, itemsize)),
               builder.select(flip, builder.mul(rows, itemsize), itemsize)]
    data = builder.inttoptr(address, context.get_data_type(array_type.dtype).as_pointer())
    context.populate_array(array, data=data, shape=cgutils.pack_array(builder, [rows, cols]),
                           strides=cgutils.pack_array(builder, strides), itemsize=itemsize,
                           meminfo=None)
    return array._getvalue()


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
            kind = _SCALAR_KINDS.get(type(arg))
            if kind is None and type(arg) is np.ndarray:
                if arg.ndim != 2 or arg.dtype != self.dtype:
                    raise NotRecordable(f"{kernel.__name__} was given a {arg.ndim}-D "
                                        f"{arg.dtype} array; programs take {self.dtype} matrices")
                if not arg.flags.aligned:  # (the replay passes what Numba compiles as aligned)
                    raise NotRecordable(f"{kernel.__name__} was given an unaligned array")
                if arg.flags.c_contiguous:
                    kinds += "C"
                    ints += (address_of(arg), arg.shape[0], arg.shape[1], 0)
                elif arg.flags.f_contiguous:
                    kinds += "F"
                    ints += (address_of(arg.T), arg.shape[0], arg.shape[1], 1)
                else:
                    raise NotRecordable(f"{kernel.__name__} was given a strided view")
                self.arrays.append(arg)
                continue
            if kind is None:  # another NumPy integer or float: replayed as the usual one
                if isinstance(arg, np.integer):
                    kind = "i"
                elif isinstance(arg, np.floating):
                    kind = "f"
                else:
                    raise NotRecordable(f"{kernel.__name__} was given a {type(arg).__name__}")
            if kind in "fg":
                self.reals.append(float(arg))
                ints += (len(self.reals) - 1, 0, 0, 0)
            else:
                ints += (int(arg), 0, 0, 0)
            kinds += kind
        self.calls.append((kernel, kinds, ints))
        self.owners.append(self.owner)
        return self.replay_only


#: The kind of a scalar argument, by its exact type: what Numba compiles the kernel for when
#: it is called from Python with it (a float32 scalar and a Python float are two kernels).
_SCALAR_KINDS = {float: "f", np.float64: "f", np.float32: "g", int: "i", np.int64: "i",
                 bool: "b", np.bool_: "b"}


@njit(cache=True)
def address_of(array):
    """The address of ``array``'s memory: 0.45 us a call, where NumPy's own ``.ctypes``
    costs 1.8 from Python; for what runs often (a recording's every array, a per-sample
    pass's outputs). Each array type is a signature of its own to compile (about 70 ms on
    an empty cache): for what is made once, :func:`located`."""
    return array.ctypes.data


def located(array):
    """The address of ``array``'s memory, from NumPy (1.8 us): for what is made once, a
    pass's header, whose arrays of int64, int8 and float64 would each have ``address_of``
    compile a signature on an empty cache (four of its five on the MLP's first step)."""
    return array.ctypes.data


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
    names = argument_names(kernel)
    return names[-1:] == ("beta",) and kinds[-1:] == "f" and kinds[-2:-1] == "C"


def argument_names(kernel):
    """The names of a kernel's arguments, in order (``out``, ``beta``, ``defer``... say what
    a call does with them)."""
    code = kernel.py_func.__code__
    return code.co_varnames[:code.co_argcount]


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
    offset into ints, index of the call, kernel address)``. ``arrays`` keeps the recorded
    buffers alive. Adapters and kernel addresses are looked up (compiled, the first time)
    only for the rows that :meth:`rows` hands out: calls that no variant of a pass runs
    cost nothing."""

    def __init__(self, calls):
        self.dtype = calls.dtype
        self.owners = calls.owners
        self.arrays = calls.arrays
        self.kernels = []  # per call: (kernel, kinds)
        self.libraries = set()  # the Numba libraries holding the kernels' code
        self.code = np.zeros((len(calls.calls), 4), np.int64)
        ints, addresses = [], []
        for index, (kernel, kinds, numbers) in enumerate(calls.calls):
            if not isinstance(kernel, Kernel):
                raise NotRecordable(f"{kernel!r} is not a compiled kernel")
            self.code[index, 1:3] = len(ints), index
            addresses.extend(len(ints) + INTS_PER_ARGUMENT * i
                             for i, kind in enumerate(kinds) if kind in "CF")
            ints.extend(numbers)
            self.kernels.append((kernel, kinds))
        self.ints = np.array(ints or [0], np.int64)
        self._address_index = {}  # (start, stop) -> the arguments by address (touching)
        self.addresses = np.array(addresses, np.int64)  # where ints hold array addresses
        self.reals = np.array(calls.reals or [0.0], np.float64)

    def __len__(self):
        return len(self.code)

    def rows(self, *ranges):
        """The code rows of the calls in ``ranges`` (``(start, stop)`` pairs), in order."""
        for start, stop in ranges:
            self._resolve(start, stop)
        return np.ascontiguousarray(np.concatenate(
            [self.code[start:stop] for start, stop in ranges] or [self.code[:0]]))

    def _resolve(self, start, stop):
        """Fill in the adapter and kernel addresses of the calls in ``[start, stop)``."""
        found = {}
        for call in range(start, stop):
            if self.code[call, 0]:
                continue
            key = self.kernels[call]
            if key not in found:
                kernel, kinds = key
                code, result, library = machine_code(kernel, kinds, self.dtype)
                self.libraries.add(library)  # alive as long as the program, come what may
                found[key] = adapter(kinds, self.dtype, result), code
            self.code[call, 0], self.code[call, 3] = found[key]

    def touching(self, array, start, stop):
        """The calls in ``[start, stop)`` that pass an array within ``array``'s memory, with
        the positions of those arguments: ``{call: [argument, ...]}``, calls and arguments in
        order. A search in the calls' array arguments sorted by address, made once per
        range: asked for every parameter of a pass, a scan of the calls each time made the
        first step quadratic in the parameters (4,000 of them: 10 s)."""
        low, high = array.ctypes.data, array.ctypes.data + array.nbytes
        addresses, calls, arguments = self._by_address(start, stop)
        first, last = np.searchsorted(addresses, (low, high))
        found = {}
        for call, argument in sorted(zip(calls[first:last].tolist(),
                                         arguments[first:last].tolist())):
            found.setdefault(call, []).append(argument)
        return found

    def _by_address(self, start, stop):
        """The array arguments of the calls in ``[start, stop)``: their addresses (sorted),
        calls and positions, as three arrays; kept per range (``ints`` never changes)."""
        kept = self._address_index.get((start, stop))
        if kept is None:
            rows = [(self.ints[self.code[call, 1] + INTS_PER_ARGUMENT * i], call, i)
                    for call in range(start, stop)
                    for i, kind in enumerate(self.kernels[call][1]) if kind in "CF"]
            table = np.array(rows, np.int64).reshape(-1, 3)
            table = table[np.argsort(table[:, 0], kind="stable")]
            kept = self._address_index[(start, stop)] = (table[:, 0], table[:, 1], table[:, 2])
        return kept

    def sole_output(self, array, start, stop):
        """Where ``ints`` holds ``array``'s address when one call, in ``[start, stop)``, makes
        ``array`` whole and no other call of the program touches its memory, so that the call
        can as well write it anywhere else (in an array its caller returns, say): that call
        passes exactly ``array``'s memory as its ``out`` argument, and a ``beta`` it takes is
        0 (it does not read what was there). (``[start, stop)``: calls that run every time;
        a pass's forward skips what is up to date.) A call that only adds into its ``out``
        would read the buffer as the previous pass left it: no pass does that, since a
        node's gradient is made before anything adds to it. The index into ``ints``, or
        None."""
        owner = array
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        touching = self.touching(owner, 0, len(self))
        if len(touching) != 1 or not array.flags.c_contiguous or array.dtype != self.dtype:
            return None
        (call, arguments), = touching.items()
        if not start <= call < stop:
            return None
        kernel, kinds = self.kernels[call]
        names = argument_names(kernel)
        if len(arguments) != 1 or names[arguments[0]] != "out":
            return None
        slot = self.code[call, 1] + INTS_PER_ARGUMENT * arguments[0]
        address, rows, cols = self.ints[slot:slot + 3]
        if address != array.ctypes.data or rows * cols != array.size:
            return None
        if names[-1] == "beta" and kinds[-1] in "fg":
            if self.reals[self.ints[self.code[call, 1] + INTS_PER_ARGUMENT * (len(kinds) - 1)]]:
                return None
        return int(slot)

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
