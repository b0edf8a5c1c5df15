"""The compiled engine: the walker's calls, recorded once, replayed with no Python between nodes.

A :class:`Pass` is made by running the readable engine (``engines.vjp``) once under
``kernels.program.recording``: every kernel call of the forward pass along a tape, of the
backward pass along a plan, and of the gradients' accumulation into an optimizer's sums is
written down. Replaying it is one call into compiled code (``kernels.program``) that skips
the nodes whose state says they are up to date, as the walker does. What a pass writes and
reads are the buffers that the recording saw, so a pass stays valid while the graph's
structure and buffers do; it is rebuilt when either changes (a node added or re-wired, a new
batch size, another set of parameters or seeds), which ``Graph.cached`` and the ``layout``
number of the graph tell.

Nothing here knows an operator: operators run their own ``compute`` and ``vjp`` once, and
their kernels are replayed.
"""

import warnings

import numpy as np

from .. import kernels
from ..graph import CACHE_SIZE, EMPTY
from ..kernels import ahead
from ..kernels.elementwise import add_into, identity_rows
from ..kernels.program import (
    H_BACKWARD_INTS,
    INTS_PER_ARGUMENT,
    NO_CYCLES,
    NotRecordable,
    Program,
    adapter,
    address_of,
    argument_names,
    execute_pass,
    fuse_additions,
    header,
    located,
    machine_code,
    recording,
    signature,
)
from ..node import FLAT
from . import vjp


class Pass:
    """One compiled pass: forward along ``tape``, then (with a ``plan``) backward from its
    target, seeded with ones or, with ``seeds``, ``seeds`` identity rows per sample; then,
    with ``sums``, the parameters' gradients copied or added into ``sums``."""

    def __init__(self, tape, plan=None, seeds=None, params=(), sums=None):
        graph = tape.target.graph
        if ahead.pending():  # the process's first pass: on an empty cache, compile on two cores
            ahead.decide(lambda: _survey(tape, plan, seeds), execute_pass, _replay_types())
        self.graph = graph
        graph.passes += 1  # the recording computes nodes: under a number of its own, so
        # that a snapshot of a value taken under the last one is not taken for the new one
        self.inputs = tape.inputs
        # Not a `with`: its __exit__ is a call, at whose start a Ctrl-C could stop it and
        # leave the thread's recorder set (every later kernel call recorded, none run);
        # the finally's inline reset has no such point.
        calls = recording(graph.dtype).__enter__()
        try:
            steps = []
            for node in tape.nodes:
                if node.parents:
                    calls.owner = node
                    start = len(calls.calls)
                    node.compute()
                    graph.mark_computed(node)
                    _check_recorded(node, calls, start)
                    steps.append((node.index, start, len(calls.calls)))
            self.forward_stop = len(calls.calls)
            self.results = []
            if plan is not None:
                calls.owner = tape.target  # its seed: the first call of the backward
                vjp.backward(plan, tape.target, _seed(tape, seeds), visit=lambda node: setattr(
                    calls, "owner", node))
                self.results = [source.grad for source in plan.sources]
                fuse_additions(calls, self.forward_stop, len(calls.calls), add_into)
            self.backward_stop = len(calls.calls)
            if sums is not None:  # recorded, not run: the caller's run() does it once
                calls.owner = None
                calls.replay_only = True
                vjp.accumulate(params, sums, first=True)
                self.copy_stop = len(calls.calls)
                vjp.accumulate(params, sums, first=False)
        finally:
            kernels.recording.recorder = None
        program = self.program = Program(calls)
        self.sums, self.completion = sums, None  # (completion: see _deferred)
        self.cycles = NO_CYCLES  # the profiler gives a pass one counter per call
        self.headers = {}  # see _bind
        self.layout = graph.layout  # the buffers the recording saw (it may have made some)
        self.kernels = _kernels[0]  # the kernels' machine code it calls (see forked_child)
        self.bindings = _bindings(tape.nodes, program.arrays)
        self.steps = np.array(steps or np.empty((0, 3)), np.int64).reshape(-1, 3)
        self.forward = program.rows((0, self.forward_stop))
        backward = (self.forward_stop, self.backward_stop)
        # What runs after the forward, as (code rows, ints, reals): one variant for a pass
        # without sums, two for a training pass (see _first and _adding).
        self.variants = {"only": (program.rows(backward), program.ints, program.reals)}
        if sums is not None:
            program.arrays.extend(sums)
            buffers = [_owner(param.grad) for param in params]
            unique = len({id(buffer) for buffer in buffers}) == len(buffers)
            self.variants = {True: self._first(buffers, sums, unique),
                             False: self._adding(buffers, sums, unique)}

    def _first(self, buffers, sums, unique):
        """The first step after an update: every parameter's gradient buffer moved onto its
        sum, so the backward writes the sums without a copy (or, when two parameters share
        a buffer or a size differs, the backward and then a copy into each sum)."""
        program, backward = self.program, (self.forward_stop, self.backward_stop)
        if unique and all(buffer.nbytes == total.nbytes for buffer, total in zip(buffers, sums)):
            ints = program.relocated(list(zip(buffers, sums)), *backward)
            return program.rows(backward), ints, program.reals
        return program.rows(backward, (self.backward_stop, self.copy_stop)), program.ints, \
            program.reals

    def _adding(self, buffers, sums, unique):
        """A later step: a parameter whose gradient one kernel call writes, and that takes a
        ``beta``, has that call add into its sum (``beta`` = 1); the others are added after
        the backward. Adding a one-sample weight gradient in place saves a pass over it."""
        program, (start, stop) = self.program, (self.forward_stop, self.backward_stop)
        moves, betas, added = [], [], []
        for k, (buffer, total) in enumerate(zip(buffers, sums)):
            call = _accumulating_call(program, buffer, start, stop)
            if unique and call is not None and buffer.nbytes == total.nbytes:
                moves.append((buffer, total))
                betas.append(call)
            else:
                add = self.copy_stop + k
                added.append((add, add + 1))
        ints = program.relocated(moves, start, stop)
        reals = program.reals.copy()
        for call in betas:  # beta is the last argument; its ints hold its index in reals
            kinds = program.kernels[call][1]
            reals[ints[program.code[call, 1] + INTS_PER_ARGUMENT * (len(kinds) - 1)]] = 1.0
        self.completion = self._deferred(betas, ints, reals)
        return program.rows((start, stop), *added), ints, reals

    def _deferred(self, calls, ints, reals):
        """Of ``calls``, which add into an optimizer's sums, those whose kernel can defer
        the addition (it takes a ``defer`` argument and has a ``flush`` kernel, whose
        arguments are some of its own, by name) are told to, in ``ints``. Returns what
        completes the sums (the flushes: code rows, ints, reals), or None."""
        program, rows, flush_ints = self.program, [], []
        for call in calls:
            kernel, kinds = program.kernels[call]
            flush, names = getattr(kernel, "flush", None), argument_names(kernel)
            if flush is None or "defer" not in names:
                continue
            offset = program.code[call, 1]
            ints[offset + INTS_PER_ARGUMENT * names.index("defer")] = 1
            taken = [names.index(name) for name in argument_names(flush)]
            flush_kinds = "".join(kinds[i] for i in taken)
            code, result, library = machine_code(flush, flush_kinds, program.dtype)
            program.libraries.add(library)
            rows.append((adapter(flush_kinds, program.dtype, result), len(flush_ints), call,
                         code))
            for i in taken:
                at = offset + INTS_PER_ARGUMENT * i
                flush_ints.extend(ints[at:at + INTS_PER_ARGUMENT])
        if not rows:
            return None
        return np.array(rows, np.int64), np.array(flush_ints, np.int64), reals

    def complete(self):
        """Add what the deferring calls still keep into the sums."""
        execute_pass(self._header("complete"), self.graph.passes)

    def valid(self):
        """Whether the pass may run: the graph's buffers are the ones it was recorded with,
        or can be made so again (see ``_restore``)."""
        if self.layout != self.graph.layout and (self.kernels is not _kernels[0]
                                                 or not self._restore()):
            return False
        return all(node.flat is not None for node in self.inputs)

    def dead(self):
        """Whether the pass can never run again: a buffer it uses is neither held nor kept by
        its node any more (a batch size pushed out of the node's ``KEPT_SHAPES``, a shape
        changed by a re-wiring)."""
        return any((node.flat if role is FLAT else node._buffers.get(role)) is not array
                   and node._kept.get((role, array.shape)) is not array
                   for node, role, array in self.bindings)

    def _restore(self):
        """The graph's buffers changed since the pass last ran (another batch size ran in
        between, say). When every buffer it uses is still its node's, for its role and shape
        (the node holds it, or keeps it: ``Node.output``), and the inputs hold theirs (a
        leaf's scratch arrays, a shared weight's summed gradient, may be taken back), the
        nodes are pointed back at them and the pass is valid again; else it must be
        recorded again (False).

        No value is stale after it: an array is written by nothing while a node keeps it
        (a pass that uses it runs only once it is pointed back at it), and a node's output
        moves to another array only when its batch size changed, which marked it not
        computed when its input was fed (a scratch array that the forward leaves the VJP,
        a pooling's argmax, has the batch's shape too)."""
        graph, moved = self.graph, []
        for node, role, array in self.bindings:
            current = node.flat if role is FLAT else node._buffers.get(role)
            if current is array:
                continue
            if (role is FLAT and not node.parents  # an input holds what was fed into it
                    or node._kept.get((role, array.shape)) is not array):
                return False
            moved.append((node, role, array))
        for node, role, array in moved:
            if role is FLAT:
                node._hold(array)
            else:
                node._take(role, array)
        self.layout = graph.layout
        return True

    def run(self, first=True):
        """Forward (what is not up to date), backward, and the gradients into the sums
        (written directly on the ``first`` step after an update, else added)."""
        graph = self.graph
        graph.passes += 1
        if first is False and self.completion is not None:
            _deferring(self)
        if graph.unsettled:  # (what the inputs fed on the short path owe: see Graph.states)
            graph.settle()
        failed = execute_pass(self._header(first), graph.passes)
        if failed >= 0:
            self._explain(failed)

    def _header(self, key):
        """The address of the header of the variant ``key`` (see ``_bind``), made again when
        the graph's states or the profiler's counters are other arrays than it points at
        (the computed stamps, a row of the graph's table, are made again with the states, in
        ``Graph.add``: one identity check covers both)."""
        bound = self.headers.get(key)
        cycles = NO_CYCLES if key == "complete" else self.cycles  # (completions: not timed)
        if bound is None or bound[1] is not self.graph._states or bound[2] is not cycles:
            bound = self._bind(key, cycles)
        return bound[0]

    def _bind(self, key, cycles):
        """The header of the variant ``key`` (a key of ``variants``, or "complete") over the
        graph's arrays now and the profiler's counters ``cycles``, kept in ``headers`` as
        ``(its address, the graph's states, the counters, the header, the arrays it points
        at)`` (see ``_header``). It keeps every array it points at alive."""
        graph = self.graph
        if key == "complete":
            forward, ints, reals, steps = _NO_CODE, *self.completion[1:], _NO_STEPS
            backward, backward_ints, backward_reals = self.completion
        else:
            forward, ints, reals, steps = self.forward, self.program.ints, \
                self.program.reals, self.steps
            backward, backward_ints, backward_reals = self.variants.get(key) or \
                self.variants["only"]
        arrays = (forward, ints, reals, steps, graph._states, graph._computed, backward,
                  backward_ints, backward_reals, cycles)
        made = header(*arrays)
        bound = self.headers[key] = (located(made), graph._states, cycles, made, arrays)
        return bound

    #: Per result of a per-sample pass, where ints hold its address when ``run_into`` may
    #: have its one writer write it elsewhere (``Program.sole_output``), else None.
    outputs = None

    def run_into(self, into):
        """``run()`` of a per-sample pass, with each result that one call makes whole written
        by that call straight into the array ``into`` gives in its place (C-contiguous, of
        the result's size and dtype: what the caller returns), not into the engine's buffer.
        Returns the results: ``into``'s arrays where they were written, else the buffers
        (which the caller copies: a gradient that a later call reads or adds to, say)."""
        graph, program = self.graph, self.program
        if self.outputs is None:
            owners = [id(_owner(result)) for result in self.results]  # one memory, one writer
            backward = (self.forward_stop, self.backward_stop)
            self.outputs = [program.sole_output(result, *backward) if owners.count(owner) == 1
                            else None for result, owner in zip(self.results, owners)]
        # Each call rewrites its own copy (under a microsecond): calls from two threads never
        # send one's output into the other's array.
        ints, results = program.ints.copy(), list(self.results)
        for k, (slot, target) in enumerate(zip(self.outputs, into)):
            if (slot is not None and target is not None and target.dtype == program.dtype
                    and target.size == results[k].size and target.flags.c_contiguous):
                ints[slot], results[k] = address_of(target), target
        graph.passes += 1
        if graph.unsettled:  # (settled in Python: this pass runs once a batch)
            graph.settle()
        self._header("only")  # (made again if the states or the counters moved)
        made = self.headers["only"][3].copy()
        made[H_BACKWARD_INTS] = address_of(ints)
        failed = execute_pass(address_of(made), graph.passes)
        if failed >= 0:
            self._explain(failed)
        return results

    def phases(self):
        """Each call's phase: forward, backward, or (adding up gradients) sums."""
        return (["forward"] * self.forward_stop
                + ["backward"] * (self.backward_stop - self.forward_stop)
                + ["sums"] * (len(self.program) - self.backward_stop))

    def _explain(self, call):
        """A kernel refused its input (labels that are not a distribution, say): the node's
        own compute() says why in Python, with names."""
        node = self.program.owners[call]
        graph = self.graph
        graph.invalidate([node], EMPTY, itself=True)
        node.compute()
        raise RuntimeError(f"{node.name}: a kernel reported an error that compute() did not")


def _survey(tape, plan, seeds):
    """What recording this pass will compile, for ``kernels.ahead``: ``(kernel, argument
    types, (kinds, dtype) of its adapter)`` per kernel call, found by running the pass's
    operators with every call written down and none made (the values are left as they
    were: a pass computes them when it runs). It stops at the first operator that is not
    fastgraph's (its ``compute`` may do more than call kernels) and at the first error (an
    operator that read a value it was not given): what it missed compiles when called.
    The gradients' copies into an optimizer's sums are left out: a training pass mostly
    has the backward write the sums instead (``_first``, ``_adding``)."""
    graph = tape.target.graph
    calls = recording(graph.dtype).__enter__()
    calls.replay_only = True
    try:
        with np.errstate(all="ignore"):
            for node in tape.nodes:
                if node.parents:
                    if not type(node).__module__.startswith("fastgraph."):
                        return _jobs(calls)
                    node.compute()
            if plan is not None:
                vjp.backward(plan, tape.target, _seed(tape, seeds))
    except Exception:
        pass
    finally:
        kernels.recording.recorder = None
    return _jobs(calls)


def _seed(tape, seeds):
    """The seed of a backward from the tape's target: ``seeds`` identity rows per sample
    (written by a recorded kernel call), or None (ones)."""
    if seeds is None:
        return None
    seed = tape.target.buffer("identity seeds", (tape.batch_size() * seeds, seeds))
    identity_rows(seed)
    return seed


def _jobs(calls):
    dtype = calls.dtype
    return [(kernel, signature(kinds, dtype), (kinds, dtype)) for kernel, kinds, _ in calls.calls]


def _replay_types():
    """The argument types of ``execute_pass``: every pass calls it with two integers."""
    return (execute_pass.typeof_pyval(0),) * 2


def _replay_calls():
    """The replay loop, as every pass calls it, for ``kernels.ahead`` to compile first."""
    return [(execute_pass, _replay_types(), None)]


def _check_recorded(node, calls, start):
    """A node's value must come from its kernels (or be a parent's memory, as a reshape's
    is): an operator that computed it with NumPy could not be replayed."""
    flat = node.flat
    low, high = flat.ctypes.data, flat.ctypes.data + flat.nbytes
    for _, kinds, ints in calls.calls[start:]:
        for i, kind in enumerate(kinds):
            if kind in "CF" and low <= ints[INTS_PER_ARGUMENT * i] < high:
                return
    if any(np.shares_memory(flat, parent.flat) for parent in node.parents):
        return
    raise NotRecordable(f"{node.name} ({type(node).__name__}) computed its value without "
                        "a fastgraph kernel")


def _bindings(nodes, arrays):
    """``(node, role, array)`` for each array of ``nodes`` (its output, ``FLAT``, and its
    scratch buffers by key) whose memory the recorded ``arrays`` use."""
    used = {id(_owner(array)) for array in arrays}
    bindings = []
    for node in nodes:
        for role, array in ((FLAT, node.flat), *node._buffers.items()):
            if array is not None and id(_owner(array)) in used:
                bindings.append((node, role, array))
    return bindings


def _accumulating_call(program, buffer, start, stop):
    """The one call in ``[start, stop)`` that touches ``buffer``, when it writes it as its
    ``out`` argument followed by ``beta`` (so it can add into it instead); else None."""
    touching = program.touching(buffer, start, stop)
    if len(touching) != 1:
        return None
    (call, arguments), = touching.items()
    kernel, kinds = program.kernels[call]
    names = argument_names(kernel)
    if names[-1:] == ("beta",) and kinds[-1] == "f" and arguments == [len(names) - 2]:
        return call
    return None


#: Which kernels the passes recorded now call: a new object once a forked child runs its
#: kernels on one core (``forked_child``), so that no pass recorded before it is run again.
_kernels = [object()]


def forked_child():
    """In a child forked from a process that used GNU OpenMP (``fastgraph.threads``): every
    kernel of ``prange`` loops runs its plain twin from now on, and every graph's passes,
    which call the parallel kernels' code, are recorded again when next run (each graph's
    ``layout`` moves on, and a pass of the old kernels is never restored)."""
    from ..graph import _GRAPHS

    kernels.run_on_one_core()
    _kernels[0] = object()
    for graph in list(_GRAPHS):
        graph.layout += 1


#: A pass's empty forward, for running its completion alone.
_NO_CODE, _NO_STEPS = np.zeros((0, 4), np.int64), np.zeros((0, 3), np.int64)

def _deferring(compiled_pass):
    """``compiled_pass`` is about to defer additions into its sums. The stages it keeps
    them in belong to its nodes, which another optimizer's passes of the same graph may
    share: theirs are completed first. The passes that wait are the graph's own
    (``Graph.deferred``), never another graph's (a process-wide list had one graph's steps
    complete another's, from another thread too: wrong sums)."""
    pending = compiled_pass.graph.deferred
    if compiled_pass in pending:
        return
    for other in [other for other in pending if other.sums is not compiled_pass.sums]:
        other.complete()  # then forgotten: a Ctrl-C between the two leaves it pending, and
        del pending[other]  # a second completion adds nothing (the kernel empties the stage)
    pending[compiled_pass] = None


def complete(graph, sums):
    """Make ``sums`` (the gradient sums of an optimizer of ``graph``) hold every addition
    that a pass deferred: optimizers call this before they read their sums."""
    pending = graph.deferred
    if not pending:
        return
    graph.claim("completing the gradient sums")
    try:  # by the arrays a pass adds into: one_step() may run on a slice of the sums (a
        mine = {id(total) for total in sums}  # parameter left during the accumulation)
        for compiled_pass in [found for found in pending
                              if any(id(total) in mine for total in found.sums)]:
            compiled_pass.complete()  # before it is forgotten (see _deferring)
            del pending[compiled_pass]
    finally:
        graph.release()


def _owner(array):
    """The array that owns ``array``'s memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _pass(graph, key, build, store=None):
    """The pass under ``key`` in ``store`` (the graph's cache unless given), rebuilt when
    the graph's buffers changed and cannot be given back to it; None when the graph holds an
    operator whose work cannot be replayed (the walker then runs it)."""
    store = graph._cache if store is None else store
    key = (key, graph._version)
    found = store.get(key)
    if found is not None:
        store.move_to_end(key)
        if found is UNRECORDABLE or found.valid():
            return None if found is UNRECORDABLE else found
        del store[key]
    _drop_dead(graph, store)  # once per recording
    found = store[key] = _recorded(build)
    if len(store) > CACHE_SIZE:  # least recently used first out
        store.popitem(last=False)
    return None if found is UNRECORDABLE else found


def _drop_dead(graph, store):
    """Forget every pass of ``store`` that can never run again: a buffer it uses is
    neither held nor kept by its node any more (a batch size pushed out of the node's
    ``KEPT_SHAPES``). Each kept its buffers alive, up to CACHE_SIZE passes of them. Looked
    over only when a node dropped a buffer since the last time."""
    if store.checked == graph.dropped:
        return
    store.checked = graph.dropped
    dead = {id(found) for found in store.values() if isinstance(found, Pass) and found.dead()}
    for key, found in list(store.items()):
        if id(found) in dead:
            del store[key]
        elif isinstance(found, _Latest):
            for version in [version for version, (kept, _) in found.passes.items()
                            if id(kept) in dead]:
                del found.passes[version]


#: What the cache keeps for a pass that could not be recorded (so it is said once).
UNRECORDABLE = object()


def _recorded(build):
    try:
        return build()
    except NotRecordable as reason:
        warnings.warn(f"fastgraph: running this graph in Python, not compiled: {reason}. "
                      "Operators that do their numeric work in fastgraph kernels (see "
                      "fastgraph.kernels) are compiled.", stacklevel=5)
        return UNRECORDABLE


def passes(graph, *optimizers):
    """The compiled passes a graph holds now, and those it recorded for ``optimizers``."""
    stores = [graph._cache, graph.training_passes,
              *(optimizer._passes for optimizer in optimizers)]
    return [value for store in stores for value in store.values() if isinstance(value, Pass)]


def gradients(target, params, sums, first, passes=None):
    """Forward, backward and the gradients into ``sums``, as ``vjp.gradients``, by a pass
    recorded once and kept in ``passes``: the caller's own store (an optimizer's, so that
    its passes and the sums they hold go with it), else the graph's."""
    graph = target.graph
    if passes is None:
        passes = graph.training_passes
    last = passes.get(id(sums))  # the usual case: this wiring and these buffers seen before
    if last is not None and last.sums is sums and last.layout == graph.layout:
        found = last.passes.get(graph._version)
        if found is not None:
            found[0].run(first)
            return found[1]
    tape = graph.tape(target)
    batch_size = tape.batch_size()
    key = ("training pass", target, id(sums), batch_size)  # sums: the optimizer's own tuple
    training = _pass(graph, key, lambda: Pass(tape, graph.plan(target, params), params=params,
                                              sums=sums), passes)
    if training is None:
        return vjp.gradients(target, params, sums, first)
    training.run(first)
    last = passes.get(id(sums))
    if last is None or last.sums is not sums or last.layout != graph.layout:
        last = passes[id(sums)] = _Latest(sums, graph.layout)
        if len(passes) > CACHE_SIZE:  # (a _Latest counts as an entry too)
            passes.popitem(last=False)
    if len(last.passes) >= CACHE_SIZE:
        last.passes.clear()
    last.passes[graph._version] = (training, batch_size or 1)
    return batch_size or 1


class _Latest:
    """Under ``id(sums)`` in a store of ``gradients``: the passes that ran for ``sums`` at
    the graph's ``layout``, ``{graph version: (pass, batch size)}``, one per wiring (the
    article's RNN welds its output to another time step every sample and comes back to
    each): found with two comparisons and a lookup."""

    __slots__ = ("sums", "layout", "passes")

    def __init__(self, sums, layout):
        self.sums, self.layout, self.passes = sums, layout, {}


def forget(passes, sums):
    """Forget the passes of ``passes`` (an optimizer's store) that add into ``sums``, which
    their optimizer no longer keeps."""
    mine = {id(total) for total in sums}  # a pass may add into a prefix of them (a
    for key in [key for key, found in passes.items()  # parameter left mid-accumulation)
                if any(id(total) in mine for total in getattr(found, "sums", None) or ())]:
        del passes[key]


def forward(node):
    """Compute ``node``: a handful of stale nodes in Python, a whole tape compiled."""
    graph = node.graph
    if vjp.compute_few(node):
        return
    tape = graph.tape(node)
    batch_size = tape.batch_size()
    compiled = _pass(graph, ("forward pass", node, batch_size), lambda: Pass(tape))
    if compiled is None:
        tape.forward()
    else:
        compiled.run()


def per_sample(result, nodes, seeds, into=None):
    """One backward pass per sample from ``result`` to ``nodes`` (the per-sample plan),
    seeded with ``seeds`` identity rows per sample (None: ones). Returns the gradient
    arrays of ``nodes``: ``(B * seeds, n)``, or ``(B, n)`` without seeds. With ``into``
    (an array or None per node), those it could write there directly (``Pass.run_into``)."""
    graph = result.graph
    tape = graph.tape(result)
    batch_size = tape.batch_size()
    key = ("per-sample pass", result, tuple(nodes), seeds, batch_size)
    compiled = _pass(graph, key, lambda: Pass(tape, graph.plan(result, nodes, per_sample=True),
                                              seeds=seeds))
    if compiled is None:
        return vjp.per_sample(result, nodes, seeds)
    if into is not None:
        return compiled.run_into(into)
    compiled.run()
    return compiled.results


ahead.expect(_replay_calls)  # (compiled first by a worker, on an empty cache)
