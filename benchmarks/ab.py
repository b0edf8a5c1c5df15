"""A switch in fastgraph, off and on, on one network in one process: what a change is worth.

    python -m benchmarks.ab --off fastgraph.kernels.blas.flips [--model mlp:100,20]
                            [--batch 64] [--rounds 15] [--steps 300]

``--off MODULE.NAME`` names a predicate of fastgraph's (a function whose true answer turns
something on, like ``kernels.blas.flips``). Two copies of the network are built from the
same weights: A with the predicate answering False, B with it as it is; each is recorded
(its first steps) and stepped with the predicate so, and they take turns, round by round,
``--steps`` training steps (one_step() and update(), Adam) a round on a fixed set of random
batches. The machine's speed moves from minute to minute; two graphs in one process, in
alternating rounds, meet the same moments. It prints each round's microseconds a step, the
medians, and B over A: the median of the rounds' ratios, and the ratio of the fastest
rounds. Read the range over several runs.

Models: ``mlp:H1,H2,...`` (784 inputs, those hidden ReLU layers, 10 outputs) or
``recurrent`` (``benchmarks.recurrent``'s network; its batch is its own, 16).
"""

import argparse
import importlib
import statistics
import time

import numpy as np


def switch(path):
    """``'package.module.name'`` as (module, name), the name a callable of that module; an
    ArgumentTypeError that says what is missing otherwise."""
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError):
        raise argparse.ArgumentTypeError(f"{path!r}: no module {module_name!r} "
                                         "(expected package.module.function)") from None
    if not callable(getattr(module, name, None)):
        raise argparse.ArgumentTypeError(f"{path!r}: {module_name} has no function {name!r}")
    return module, name


def model(text):
    """``'mlp:100,20'`` as ('mlp', (100, 20)), ``'recurrent'`` as ('recurrent', ())."""
    kind, _, rest = text.partition(":")
    if kind == "recurrent" and not rest:
        return kind, ()
    try:
        hidden = tuple(int(h) for h in rest.split(",")) if kind == "mlp" else None
    except ValueError:
        hidden = None
    if not hidden or min(hidden) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected mlp:H1,H2,... (hidden layer "
                                         "widths of 1 or more) or recurrent")
    return kind, hidden


class _Network:
    """One copy of the network with its optimizer, its batches and a ``step(i)``."""

    def __init__(self, kind, hidden, batch):
        import fastgraph as fg

        rng = np.random.default_rng(0)  # (the same weights and batches for both copies)
        if kind == "recurrent":
            from benchmarks import recurrent

            net = recurrent.Fastgraph(recurrent.initial(rng))
            x, y = recurrent.data(rng)
            self.step = lambda i: net.step(x, y)
            return
        net = fg.models.mlp(784, hidden, 10, seed=0)
        optimizer = fg.optimizer.Adam(net.graph, net.loss, 0.001)
        xs = rng.random((8, batch, 784, 1), np.float32)
        ys = np.eye(10, dtype=np.float32)[rng.integers(0, 10, (8, batch))]

        def step(i):
            net.x.set_value(xs[i % 8])
            net.one_hot.set_value(ys[i % 8])
            optimizer.one_step()
            optimizer.update()
        self.step = step


def run(off, kind, hidden, batch=64, rounds=15, steps=300, warmup=50):
    """``{"A": [us a step, a round each], "B": [...]}``: A with ``off`` = (module, name)
    answering False, B with it as it is. The module is as it was afterwards."""
    module, name = off
    real = getattr(module, name)

    def never(*args, **kwargs):
        return False

    patched = {"A": never, "B": real}
    networks = {}
    try:
        for copy in "AB":
            setattr(module, name, patched[copy])
            networks[copy] = _Network(kind, hidden, batch)
            for i in range(warmup):
                networks[copy].step(i)
        times = {"A": [], "B": []}
        for _ in range(rounds):
            for copy in "AB":
                setattr(module, name, patched[copy])
                step = networks[copy].step
                start = time.perf_counter()
                for i in range(steps):
                    step(i)
                times[copy].append((time.perf_counter() - start) / steps * 1e6)
    finally:
        setattr(module, name, real)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--off", type=switch, required=True, metavar="MODULE.FUNCTION")
    parser.add_argument("--model", type=model, default=model("mlp:100,20"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)
    if min(args.batch, args.rounds, args.steps, args.warmup) < 1:
        parser.error("--batch, --rounds, --steps and --warmup must be 1 or more")
    kind, hidden = args.model
    times = run(args.off, kind, hidden, args.batch, args.rounds, args.steps, args.warmup)
    ratios = [b / a for a, b in zip(times["A"], times["B"])]
    name = f"{args.off[0].__name__}.{args.off[1]}"
    network = f"mlp {','.join(map(str, hidden))}, batch {args.batch}" if hidden else \
        "recurrent, batch 16"
    print(f"{network}: A = {name} off, B = as it is; us a step, round by round")
    for copy in "AB":
        print(f"  {copy}: " + " ".join(f"{t:.1f}" for t in times[copy])
              + f"  (median {statistics.median(times[copy]):.1f})")
    result = {"times": times, "median_ratio": statistics.median(ratios),
              "fastest_ratio": min(times["B"]) / min(times["A"])}
    print(f"B / A: {result['median_ratio']:.3f} (median of the rounds' ratios), "
          f"{result['fastest_ratio']:.3f} (fastest rounds)")
    return result


if __name__ == "__main__":
    main()
