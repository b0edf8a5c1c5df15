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

import numpy as np

from ..graph import EMPTY
from ..kernels.elementwise import identity_rows
from ..kernels.program import NO_CYCLES, Program, execute, execute_stale, recording
from . import vjp


class Pass:
    """One compiled pass: forward along ``tape``, then (with a ``plan``) backward from its
    target, seeded with ones or, with ``seeds``, ``seeds`` identity rows per sample; then,
    with ``sums``, the parameters' gradients copied or added into ``sums``."""

    def __init__(self, tape, plan=None, seeds=None, params=(), sums=None):
        graph = tape.target.graph
        self.graph = graph
        self.inputs = tape.inputs
        with recording(graph.dtype) as calls:
            steps = []
            for node in tape.nodes:
                if node.parents:
                    calls.owner = node
                    start = len(calls.calls)
                    node.compute()
                    graph.mark_computed(node)
                    steps.append((node.index, start, len(calls.calls)))
            self.forward_stop = len(calls.calls)
            self.results = []
            if plan is not None:
                calls.owner = None
                seed = None
                if seeds is not None:
                    seed = tape.target.buffer("identity seeds", (tape.batch_size() * seeds, seeds))
                    identity_rows(seed)
                vjp.backward(plan, tape.target, seed, visit=lambda node: setattr(
                    calls, "owner", node))
                self.results = [source.grad for source in plan.sources]
            self.backward_stop = len(calls.calls)
            if sums is not None:  # recorded, not run: the caller's run() does it once
                calls.owner = None
                calls.replay_only = True
                vjp.accumulate(params, sums, first=True)
                self.copy_stop = len(calls.calls)
                vjp.accumulate(params, sums, first=False)
        self.program = Program(calls)
        self.cycles = NO_CYCLES  # the profiler gives a pass one counter per call
        self.layout = graph.layout  # the buffers the recording saw (it may have made some)
        self.steps = np.array(steps or np.empty((0, 3)), np.int64).reshape(-1, 3)
        self.direct = None
        if sums is not None:
            self.direct = self._direct(params, sums)

    def _direct(self, params, sums):
        """The backward calls with every parameter's gradient buffer moved onto its sum, so
        that the first step after an update writes the sums without a copy (None when two
        parameters share a gradient buffer, or a buffer is not the sum's size)."""
        buffers = [_owner(param.grad) for param in params]
        if len({id(buffer) for buffer in buffers}) < len(buffers) or any(
                buffer.nbytes != total.nbytes for buffer, total in zip(buffers, sums)):
            return None
        self.program.arrays.extend(sums)
        return self.program.relocated(list(zip(buffers, sums)), self.forward_stop,
                                      self.backward_stop)

    def valid(self):
        return self.layout == self.graph.layout and all(
            node.flat is not None for node in self.inputs)

    def run(self, first=True):
        """Forward (what is not up to date), backward, accumulation."""
        graph, program, cycles = self.graph, self.program, self.cycles
        code, ints, reals = program.code, program.ints, program.reals
        graph.passes += 1
        failed = execute_stale(code, ints, reals, self.steps, graph.states, graph.computed,
                               graph.passes, cycles)
        if failed >= 0:
            self._explain(failed)
        stop = self.backward_stop
        if first and self.direct is not None:  # the gradients land in the sums themselves
            execute(code, self.direct, reals, self.forward_stop, stop, cycles)
            return
        execute(code, ints, reals, self.forward_stop, stop, cycles)
        if len(program) > stop:
            start, stop = (stop, self.copy_stop) if first else (self.copy_stop, len(program))
            execute(code, ints, reals, start, stop, cycles)

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


def _owner(array):
    """The array that owns ``array``'s memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _pass(graph, key, build):
    """The cached pass under ``key``, rebuilt when the graph's layout changed."""
    found = graph.cached(key, build)
    if not found.valid():
        graph.forget(key)
        found = graph.cached(key, build)
    return found


def passes(graph):
    """The compiled passes a graph holds now (the profiler times their calls)."""
    return [value for _, value in graph._cache.values() if isinstance(value, Pass)]


def gradients(target, params, sums, first):
    graph = target.graph
    tape = graph.tape(target)
    batch_size = tape.batch_size()
    key = ("training pass", target, id(sums), batch_size)  # sums: the optimizer's own tuple
    training = _pass(graph, key, lambda: Pass(tape, graph.plan(target, params), params=params,
                                              sums=sums))
    training.run(first)
    return batch_size or 1


def forward(node):
    """Compute ``node``: a handful of stale nodes in Python, a whole tape compiled."""
    graph = node.graph
    stale = _stale_ancestors(node, limit=16)
    if stale is not None:
        graph.passes += 1
        for stale_node in stale:
            _check_batch_sizes(stale_node)
            stale_node.compute()
            graph.mark_computed(stale_node)
        return
    tape = graph.tape(node)
    batch_size = tape.batch_size()
    _pass(graph, ("forward pass", node, batch_size), lambda: Pass(tape)).run()


def per_sample(result, nodes, seeds):
    """One backward pass per sample from ``result`` to ``nodes`` (the per-sample plan),
    seeded with ``seeds`` identity rows per sample (None: ones). Returns the gradient
    arrays of ``nodes``: ``(B * seeds, n)``, or ``(B, n)`` without seeds."""
    graph = result.graph
    tape = graph.tape(result)
    batch_size = tape.batch_size()
    key = ("per-sample pass", result, tuple(nodes), seeds, batch_size)
    compiled = _pass(graph, key, lambda: Pass(tape, graph.plan(result, nodes, per_sample=True),
                                              seeds=seeds))
    compiled.run()
    return compiled.results


def _stale_ancestors(node, limit):
    """``node``'s ancestors (and itself) that need computing, parents first, when there are
    at most ``limit`` of them; None when there are more."""
    states = node.graph.states
    if not states[node.index]:
        return []
    order, done, stack = [], set(), [(node, False)]
    while stack:
        current, parents_done = stack.pop()
        if parents_done:
            order.append(current)
            if len(order) > limit:
                return None
            continue
        if current in done:
            continue
        done.add(current)
        if not current.parents:  # an input that was never set: the tape says which
            node.graph.tape(node).batch_size()
        stack.append((current, True))
        stack.extend((parent, False) for parent in current.parents
                     if states[parent.index] and parent not in done)
    return order


def _check_batch_sizes(node):
    sizes = {parent.flat.shape[0] for parent in node.parents if parent.batched}
    if len(sizes) > 1:
        node.graph.tape(node).batch_size()  # explains which inputs disagree
