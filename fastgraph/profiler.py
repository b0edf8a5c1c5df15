"""Where a training step's time goes: per phase and per node kind.

``profile_steps(optimizer, feed, steps)`` runs ``steps`` training steps (``feed(step)`` sets
the inputs, then ``one_step()`` and ``update()``) with a timer around every node's
``compute`` (forward) and ``vjp`` (backward), every parameter's update kernel and the feed.
What the timers do not cover is the engine's own Python work: walking the tape, checking
inputs, accumulating gradients (reported as "engine and Python overhead"). The timers cost
a fraction of a microsecond each, so totals are a little above an untimed run.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Profile:
    steps: int
    seconds: float
    entries: dict = field(default_factory=dict)  # (phase, kind) -> [calls, seconds]

    @property
    def step_seconds(self):
        return self.seconds / self.steps

    def rows(self):
        """``(phase, kind, calls per step, microseconds per step, share)``, largest first."""
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
        lines = [f"one training step: {self.step_seconds * 1e6:,.1f} us "
                 f"(mean of {self.steps} steps)",
                 "phase     node kind                    calls  us/step   share"]
        for phase, kind, calls, micros, share in self.rows():
            lines.append(f"{phase:<9} {kind:<27} {calls:6.1f} {micros:8.1f} {share:7.1%}")
        lines.append("by phase: " + ", ".join(f"{phase} {micros:,.1f} us"
                                               for phase, micros in self.by_phase().items()))
        return "\n".join(lines)


def profile_steps(optimizer, feed, steps=200, warmup=20):
    """Profile ``steps`` training steps of ``optimizer``; ``feed(step)`` sets the inputs."""
    for step in range(warmup):
        feed(step)
        optimizer.one_step()
        optimizer.update()
    entries = defaultdict(lambda: [0, 0.0])
    patched = []

    def timed(owner, method, key):
        original = getattr(owner, method)
        entry = entries[key]

        def wrapper(*args):
            began = time.perf_counter()
            result = original(*args)
            entry[1] += time.perf_counter() - began
            entry[0] += 1
            return result

        setattr(owner, method, wrapper)
        patched.append((owner, method))

    for node in optimizer.graph.tape(optimizer.target).nodes:
        if node.parents:
            timed(node, "compute", ("forward", type(node).__name__))
            timed(node, "vjp", ("backward", type(node).__name__))
    timed(optimizer, "apply", ("update", type(optimizer).__name__))
    feed_entry = entries[("feed", "set_value")]
    began = time.perf_counter()
    for step in range(warmup, warmup + steps):
        feed_began = time.perf_counter()
        feed(step)
        feed_entry[1] += time.perf_counter() - feed_began
        feed_entry[0] += 1
        optimizer.one_step()
        optimizer.update()
    seconds = time.perf_counter() - began
    for owner, method in patched:
        delattr(owner, method)
    return Profile(steps, seconds, dict(entries))
