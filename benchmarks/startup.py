"""Start-up: ``import fastgraph``, build a model and one training step, in fresh processes.

    python -m benchmarks.startup [--model mlp|lenet5|recurrent] [--runs 3] [--compiles]
                                 [--against DIRECTORY] [--source] [--steps 1]

Each run is a new Python process. With an empty cache (``NUMBA_CACHE_DIR`` pointed at a new
temporary directory) every kernel, adapter and replay loop is compiled; with a warm one
(the same directory again, after a run that filled it) they are loaded from disk. Prints
the wall and CPU seconds of each run and the load average before and after: the machine is
shared, so compare figures taken at similar loads, and CPU seconds when the load moves.
``--compiles`` also lists what the first empty-cache run compiled and the CPU seconds each
took (of the compiling thread: the figure that moves least with the load), and what the
worker process of ``fastgraph.kernels.ahead`` compiled beside it. ``--against``
another checkout of fastgraph (say a ``git archive`` of an older commit in /tmp) runs it and
this one alternately, run for run (which goes first alternating too), and sums up the
ranges of each: a comparison that the load moves alike for both. ``--steps N`` times N
training steps instead of one (the same batch again): what a start costs a short training,
compiling left for later steps included.

fastgraph's modules are read from their bytecode cache (``__pycache__``, written with
``compileall`` before the runs), as for an installed package, even when
``PYTHONDONTWRITEBYTECODE`` is set here: with it and no cache, every run compiled the 40-odd
modules from source (about 0.07 s of a 0.6 s warm start). ``--source`` skips ``compileall``
and keeps the variable: modules with no bytecode cache yet are then compiled in every run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

#: What a run does (for the MLP, the step of ``benchmarks.compare``'s cold start: Adam,
#: batch 64), timed from before ``import numpy``.
STEP = """
import time
wall, cpu = time.perf_counter(), time.process_time()
compiles = []
if {compiles}:
    from numba.core import event

    class Listener(event.Listener):
        def on_start(self, ev):
            self.began = getattr(self, "began", []) + [time.thread_time()]

        def on_end(self, ev):
            began = self.began.pop()
            if not self.began:  # what a compile of its own callees included
                name = getattr(ev.data["dispatcher"], "__qualname__", "?")
                compiles.append((name, time.thread_time() - began))

    event.register("numba:compile", Listener())
import numpy as np
import fastgraph as fg
imported = time.perf_counter() - wall
{body}
import sys
print(json.dumps({{"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "import": imported, "compiles": compiles,
                  "ahead": getattr(sys.modules.get("fastgraph.kernels.ahead"), "report", None)}}))
"""


#: Build and one step: a classifier of ``fastgraph.models`` on 64 images...
CLASSIFIER = """
model = fg.models.{name}(seed=0)
optimizer = fg.optimizer.Adam(model.graph, model.loss)
model.x.set_value(np.zeros((64, 784), np.float32))
model.one_hot.set_value(np.eye(10, dtype=np.float32)[np.arange(64) % 10])
for _ in range({{steps}}):
    optimizer.one_step()
    optimizer.update()
"""
#: ... or the recurrent net of ``benchmarks.recurrent`` (583 nodes, batch 16).
RECURRENT = """
from benchmarks import recurrent
network = recurrent.Fastgraph(recurrent.initial(np.random.default_rng(0)))
batch = recurrent.data(np.random.default_rng(0))
for _ in range({steps}):
    network.step(*batch)
"""
BODIES = {"mlp": CLASSIFIER.format(name="mlp"), "lenet5": CLASSIFIER.format(name="lenet5"),
          "recurrent": RECURRENT}


#: The checkout this file belongs to.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(model, cache, compiles=False, tree=HERE, source=False, steps=1):
    """One fresh process with ``NUMBA_CACHE_DIR=cache``, importing fastgraph from the
    checkout ``tree`` (from bytecode unless ``source``), making ``steps`` training steps:
    its figures as a dict."""
    body = BODIES[model].format(steps=steps)
    code = "import json\n" + STEP.format(body=body, compiles=compiles)
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": tree}
    if not source:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=tree)
    if result.returncode:
        raise SystemExit(f"the {model} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(BODIES), default="mlp",
                        help="mlp (784-100-20-10), lenet5, or recurrent (benchmarks.recurrent's "
                             "583-node net, batch 16)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compiles", action="store_true",
                        help="list what the first empty-cache run compiled")
    parser.add_argument("--against", metavar="DIRECTORY",
                        help="another checkout of fastgraph, run alternately with this one")
    parser.add_argument("--steps", type=int, default=1,
                        help="training steps timed after the build (default 1)")
    parser.add_argument("--source", action="store_true",
                        help="no compileall, and PYTHONDONTWRITEBYTECODE kept if set "
                             "(modules with no bytecode cache compiled in every run)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    source = args.source and bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    steps = "one_step() + update()" if args.steps == 1 else \
        f"{args.steps:,} steps of one_step() + update()"
    print(f"{args.model}: import fastgraph, build, {steps}, Adam; modules "
          f"{'as found (no compileall)' if source else 'from their bytecode cache'}")
    trees = {"": HERE}
    if args.against:
        against = os.path.abspath(args.against)
        if not os.path.isfile(os.path.join(against, "fastgraph", "__init__.py")):
            parser.error(f"--against {args.against}: no fastgraph package in that directory")
        trees = {"this ": HERE, "other": against}
    if not source:
        for tree in trees.values():  # as pip does on installing
            subprocess.run([sys.executable, "-m", "compileall", "-q", "fastgraph", "benchmarks"],
                           cwd=tree, check=True, stdout=subprocess.DEVNULL)
    seen = {}  # (label, tree) -> [(wall, cpu), ...]
    with tempfile.TemporaryDirectory(prefix="fastgraph-startup-") as root:
        for label, warm in (("empty cache", False), ("warm cache", True)):
            for index in range(args.runs):
                order = list(trees.items())
                for name, tree in order if index % 2 == 0 else order[::-1]:
                    cache = os.path.join(root, f"{name.strip()}-" + (
                        "warm" if warm else f"empty-{index}"))
                    if warm and index == 0:
                        run(args.model, cache, tree=tree, source=source,
                            steps=args.steps)  # fills it
                    before = load()
                    figures = run(args.model, cache, args.compiles and not warm and index == 0,
                                  tree, source, args.steps)
                    seen.setdefault((label, name), []).append((figures["wall"], figures["cpu"]))
                    print(f"{name}{' ' if name else ''}{label:<11} run {index + 1}: "
                          f"{figures['wall']:5.2f} s wall, {figures['cpu']:5.2f} s CPU (import "
                          f"{figures['import']:.2f} s); load {before} -> {load()}", flush=True)
                    for compiled, seconds in sorted(figures["compiles"], key=lambda c: -c[1]):
                        print(f"    {seconds:6.3f} s CPU  {compiled}")
                    if figures["compiles"] and (figures.get("ahead") or {}).get("worker"):
                        print("    and by the worker (kernels.ahead), loaded here: "
                              + ", ".join(figures["ahead"]["worker"]))
    if args.against:
        print(f"this: {HERE}; other: {against}")
        for (label, name), figures in seen.items():
            walls, cpus = zip(*figures)
            print(f"{name} {label:<11}: {min(walls):.2f}-{max(walls):.2f} s wall, "
                  f"{min(cpus):.2f}-{max(cpus):.2f} s CPU over {len(figures)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
