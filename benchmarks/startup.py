"""Start-up: ``import fastgraph``, build a model and one training step, in fresh processes.

    python -m benchmarks.startup [--model mlp|lenet5|recurrent] [--runs 3] [--compiles]

Each run is a new Python process. With an empty cache (``NUMBA_CACHE_DIR`` pointed at a new
temporary directory) every kernel, adapter and replay loop is compiled; with a warm one
(the same directory again, after a run that filled it) they are loaded from disk. Prints
the wall and CPU seconds of each run and the load average before and after: the machine is
shared, so compare figures taken at similar loads, and CPU seconds when the load moves.
``--compiles`` also lists what the first empty-cache run compiled and the CPU seconds each
took (of the compiling thread: the figure that moves least with the load).
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
print(json.dumps({{"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "import": imported, "compiles": compiles}}))
"""


#: Build and one step: a classifier of ``fastgraph.models`` on 64 images...
CLASSIFIER = """
model = fg.models.{name}(seed=0)
optimizer = fg.optimizer.Adam(model.graph, model.loss)
model.x.set_value(np.zeros((64, 784), np.float32))
model.one_hot.set_value(np.eye(10, dtype=np.float32)[np.arange(64) % 10])
optimizer.one_step()
optimizer.update()
"""
#: ... or the recurrent net of ``benchmarks.recurrent`` (583 nodes, batch 16).
RECURRENT = """
from benchmarks import recurrent
network = recurrent.Fastgraph(recurrent.initial(np.random.default_rng(0)))
network.step(*recurrent.data(np.random.default_rng(0)))
"""
BODIES = {"mlp": CLASSIFIER.format(name="mlp"), "lenet5": CLASSIFIER.format(name="lenet5"),
          "recurrent": RECURRENT}


def run(model, cache, compiles=False):
    """One fresh process with ``NUMBA_CACHE_DIR=cache``: its figures as a dict."""
    code = "import json\n" + STEP.format(body=BODIES[model], compiles=compiles)
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True)
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
    args = parser.parse_args(argv)
    print(f"{args.model}: import fastgraph, build, one_step() + update(), Adam")
    with tempfile.TemporaryDirectory(prefix="fastgraph-startup-") as root:
        for label, warm in (("empty cache", False), ("warm cache", True)):
            for index in range(args.runs):
                cache = os.path.join(root, "warm" if warm else f"empty-{index}")
                if warm and index == 0:
                    run(args.model, cache)  # fills it
                before = load()
                figures = run(args.model, cache, args.compiles and not warm and index == 0)
                print(f"{label:<11} run {index + 1}: {figures['wall']:5.2f} s wall, "
                      f"{figures['cpu']:5.2f} s CPU (import {figures['import']:.2f} s); "
                      f"load {before} -> {load()}", flush=True)
                for name, seconds in sorted(figures["compiles"], key=lambda c: -c[1]):
                    print(f"    {seconds:6.3f} s CPU  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
