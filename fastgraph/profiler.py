"""Where a training step's time goes: per phase and per node kind.

``profile_steps(optimizer, feed, steps)`` runs ``steps`` training steps (``feed(step)`` sets
the inputs, gathering the batch if it likes, then ``one_step()`` and ``update()``) and
times the feed, every node's kernels in the forward and backward passes, the gradient
sums and the optimizer's update. With the compiled executor, the kernels are timed inside
compiled code by the processor's cycle counter (about 15 ns a call), converted to seconds
against the wall clock of the same run; with the Python walker (``FASTGRAPH_EXECUTOR=
python``), by a timer around every node's ``compute`` and ``vjp``. The feed and the update
(``update()``: the rule and marking the parameters outdated) are timed by three clock
reads a step. What no timer covers is the engine's own Python work and the loop's
("engine and Python overhead"), so the rows add up to the wall time of the steps; the
timers themselves cost about 2 us a step of the compiled MNIST network. With
``engine="jacobian"`` (the article's engine, one sample at a time), the forward rows time
every node's ``compute`` on each sample and the backward rows its ``dense_jacobian``; the
products that chain the Jacobians, and the sums, are the engine's own work.

The article's programs step one sample at a time and update once a mini-batch:
``profile_steps(optimizer, feed, steps, update_every=32)`` profiles that loop, an
``update()`` after every 32nd ``one_step()``; the rows are then per ``one_step()``, the
update's share spread over the samples it applies (it includes finishing the gradient sums
that the one-sample steps defer: ``fastgraph.engines.compiled``).
"""

import numbers
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from . import checks
from .engines import compiled
from .kernels.program import NO_CYCLES, cycle_counter
from .ops.base import Operator


@dataclass
class Profile:
    steps: int
    seconds: float
    entries: dict = field(default_factory=dict)  # (phase, kind) -> [calls, seconds]
    update_every: int = 1  # one_step() calls an update() applies

    @property
    def step_seconds(self):
        return self.seconds / self.steps

    def rows(self):
        """``(phase, kind, calls per step, microseconds per step, share)``, largest first.
        The calls are, with the compiled executor, the kernel calls of the nodes of that
        kind (a product made as its transpose is two, ``kernels.blas.flips``; a node whose
        work needs no kernel, none); with the walker, their ``compute`` and ``vjp`` calls."""
        measured = sum(seconds for _, seconds in self.entries.values())
        rows = [(phase, kind, calls / self.steps, seconds / self.steps * 1e6,
                 seconds / self.seconds)
                for (phase, kind), (calls, seconds) in self.entries.items()]
        rows.sort(key=lambda row: -row[3])
        rest = self.seconds - measured
        rows.append(("overhead", "engine and Python overhead", 0.0, rest / self.steps * 1e6,
                     rest / self.seconds))
        return rows

    def by_phase(self):
        totals = defaultdict(float)
        for phase, _, _, micros, _ in self.rows():
            totals[phase] += micros
        return dict(totals)

    def table(self):
        what = ("one training step" if self.update_every == 1 else
                f"one one_step() (an update every {self.update_every})")
        lines = [f"{what}: {self.step_seconds * 1e6:,.1f} us (mean of {self.steps} steps)",
                 "phase     node kind                    calls  us/step   share"]
        for phase, kind, calls, micros, share in self.rows():
            lines.append(f"{phase:<9} {kind:<27} {calls:6.1f} {micros:8.1f} {share:7.1%}")
        lines.append("by phase: " + ", ".join(f"{phase} {micros:,.1f} us"
                                               for phase, micros in self.by_phase().items()))
        return "\n".join(lines)


def profile_steps(optimizer, feed, steps=200, warmup=20, update_every=1):
    """Profile ``steps`` training steps of ``optimizer``; ``feed(step)`` sets the inputs.
    A step is ``one_step()``; ``update()`` follows every ``update_every``-th (the article's
    programs: one sample a step, an update a mini-batch), so ``steps`` and ``warmup`` are
    multiples of it (the optimizer ends the profile with nothing accumulated)."""
    if not all(callable(getattr(optimizer, name, None)) for name in ("one_step", "update")) \
            or getattr(optimizer, "graph", None) is None:
        raise TypeError(f"profile_steps: optimizer must be a fastgraph optimizer, got "
                        f"{type(optimizer).__name__} {optimizer!r:.60}")
    if not callable(feed):
        raise TypeError(f"profile_steps: feed must be a function of the step that sets the "
                        f"inputs, got {type(feed).__name__} {feed!r:.60}")
    steps = checks.positive_integer("profile_steps: steps", steps)
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or warmup < 0:
        raise ValueError(f"profile_steps: warmup must be a non-negative integer, got {warmup!r}")
    every = checks.positive_integer("profile_steps: update_every", update_every)
    if steps % every or warmup % every:
        raise ValueError(f"profile_steps: steps ({steps}) and warmup ({warmup}) must be "
                         f"multiples of update_every ({every}), so that every one_step() is "
                         "followed by its update()")
    for step in range(warmup):
        feed(step)
        optimizer.one_step()
        if (step + 1) % every == 0:
            optimizer.update()
    graph = optimizer.graph
    if not _runs_compiled(optimizer):
        return _profile_walker(optimizer, feed, steps, warmup, every)
    entries = defaultdict(lambda: [0, 0.0])
    runs = _watch(graph)  # each pass of the graph that runs in the loop: its counters, runs
    cycles_began, clock_began = cycle_counter(), time.perf_counter()
    try:
        seconds = _loop(optimizer, feed, range(warmup, warmup + steps), entries, every)
    finally:
        cycles = cycle_counter() - cycles_began
        per_cycle = (time.perf_counter() - clock_began) / cycles
        _unwatch(graph)
        for compiled_pass in runs:
            compiled_pass.cycles = NO_CYCLES
    for compiled_pass, (counts, times) in runs.items():
        for pc, phase in enumerate(compiled_pass.phases()):
            if counts[pc]:
                owner = compiled_pass.program.owners[pc]
                entry = entries[(phase, "gradient sums" if owner is None
                                 else type(owner).__name__)]
                entry[0] += times
                entry[1] += counts[pc] * per_cycle
    return Profile(steps, seconds, dict(entries), every)


# The graphs being profiled (each by one thread: a graph is used by one at a time), and
# what runs in place of Pass.run while there are any: every run of a pass of such a graph
# is counted, and a pass recorded during the profile (the first step with warmup=0, a new
# batch size) gets its counters too; other graphs' passes just run.
_watched = {}
_watching = threading.Lock()
_unwatched_run = compiled.Pass.run


def _counted_run(compiled_pass, first=True):
    runs = _watched.get(compiled_pass.graph)
    if runs is not None and runs.stepping:  # (what feed() runs is the feed's time)
        if compiled_pass not in runs:
            compiled_pass.cycles = np.zeros(len(compiled_pass.program), np.int64)
            runs[compiled_pass] = [compiled_pass.cycles, 0]
        runs[compiled_pass][1] += 1
    return _unwatched_run(compiled_pass, first)


def _watch(graph):
    with _watching:
        if graph in _watched:
            raise RuntimeError("profile_steps: this graph is being profiled already (by "
                               "this thread or another): one profile of a graph at a time")
        runs = _watched[graph] = _Runs()
        compiled.Pass.run = _counted_run
        return runs


class _Runs(dict):
    """The passes run while profiling a graph, and whether the profiled optimizer's
    ``one_step()`` is running (set by ``_loop``): only its passes are counted."""

    stepping = False


def _unwatch(graph):
    with _watching:
        del _watched[graph]
        if not _watched:  # the last profile to end, whatever the order they began in
            compiled.Pass.run = _unwatched_run


def _runs_compiled(optimizer):
    """Whether ``optimizer``'s steps run compiled passes (none recorded yet: warmup=0)."""
    from . import engines

    return getattr(optimizer, "engine", "vjp") == "vjp" and engines._executor() is compiled


def _loop(optimizer, feed, steps, entries, every):
    """Run the steps, an update after every ``every``-th; time the feed and the update into
    ``entries`` with three clock reads a step (the end of one step is the start of the
    next). Returns the seconds they took."""
    clock = time.perf_counter
    fed = updated = 0.0
    began = now = clock()
    runs = _watched[optimizer.graph]
    for count, step in enumerate(steps, 1):
        feed(step)
        feed_done = clock()
        runs.stepping = True
        try:
            optimizer.one_step()
        finally:
            runs.stepping = False
        update_began = clock()
        if count % every == 0:
            optimizer.update()
        fed += feed_done - now
        now = clock()
        updated += now - update_began
    entries[("feed", "set_value")][:] = len(steps), fed
    entries[("update", type(optimizer).__name__)][:] = len(steps) // every, updated
    return now - began


def _timed(owner, method, entry):
    """Time every call of ``owner.method`` into ``entry``; returns what undoes it."""
    original = getattr(owner, method)

    def wrapper(*args):
        began = time.perf_counter()
        result = original(*args)
        entry[1] += time.perf_counter() - began
        entry[0] += 1
        return result

    setattr(owner, method, wrapper)
    return lambda: delattr(owner, method)


def _profile_walker(optimizer, feed, steps, warmup, every):
    _watch(optimizer.graph)  # (one profile of a graph at a time: the timers are per node)
    try:
        return _profile_nodes(optimizer, feed, steps, warmup, every)
    finally:
        _unwatch(optimizer.graph)


def _profile_nodes(optimizer, feed, steps, warmup, every):
    entries = defaultdict(lambda: [0, 0.0])
    restores = []
    dense = getattr(optimizer, "engine", None) == "jacobian"
    for node in optimizer.graph.tape(optimizer.target).nodes:
        if node.parents:
            kind = type(node).__name__
            restores.append(_timed(node, "compute", entries[("forward", kind)]))
            if dense:  # the article's engine: each node's Jacobian, sample by sample
                restores.append(_timed(node, "dense_jacobian", entries[("backward", kind)]))
                continue
            restores.append(_timed(node, "vjp", entries[("backward", kind)]))
            if type(node).vjp_summed is not Operator.vjp_summed:  # else it calls vjp: timed
                restores.append(_timed(node, "vjp_summed", entries[("backward", kind)]))
    try:
        seconds = _loop(optimizer, feed, range(warmup, warmup + steps), entries, every)
    finally:
        for restore in restores:
            restore()
    return Profile(steps, seconds, dict(entries), every)
