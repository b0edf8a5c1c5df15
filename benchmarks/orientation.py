"""A layer's forward product ``x @ W.T`` made as it is, as its transpose, and by dot products,
as the compiled tape runs them: what ``fastgraph.kernels.blas.flips`` and ``dots`` decide
from.

    python -m benchmarks.orientation [--shapes 64x100x784 16x12x16 ...] [--threads 1]

For each shape ``m x n x k`` (batch, units, inputs: ``out`` is m by n), both ways are
recorded, ``--calls`` times over, and replayed by the compiled replay loop (no Python
between calls): straight, ``blas.product(OUT_COLUMNS, x, False, W, True, out)`` without a
scratch array, and with ``dots`` off; turned, ``blas.turned_product``, ``W @ x.T`` into a
scratch array, then its transpose into ``out``; dots, ``gemm_owned``'s DOTS (fastgraph's
own dot products, in the parameter's parts). Each way's time a product is the best of
``--rounds`` replays, the ways taking turns. It prints the turned and dots ways' times over
the straight way's, and what ``flips`` and ``dots`` choose on this machine (never on a
processor where MKL generates code for the shape, where ``product`` uses those kernels).
``--threads 2`` times the split products as a two-thread step runs them."""

import argparse
import time

import numpy as np

#: The MNIST networks' forward products (784-100-20-10 at 64, 784-256-128-10 at 128), the
#: recurrent benchmark's (batch 16, input 16, state 12, output 2), and shapes around them.
SHAPES = ["64x100x784", "64x20x100", "64x10x20", "128x256x784", "128x128x256", "128x10x128",
          "16x12x16", "16x12x12", "16x2x12", "64x12x16", "16x10x64", "32x10x20", "64x4x64",
          "128x12x32", "64x50x784", "64x12x784", "64x24x64"]


def shape(text):
    """'64x100x784' as (64, 100, 784); an ArgumentTypeError that says what is expected."""
    try:
        m, n, k = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a shape m x n x k, like "
                                         "64x100x784") from None
    if min(m, n, k) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be 1 or more")
    return m, n, k


def _program(call, times):
    """``call()`` made ``times`` times while recorded: the compiled program that replays
    them, and a function that runs it once."""
    from fastgraph.kernels import program

    with program.recording(np.float32) as calls:
        for _ in range(times):
            call()
    compiled = program.Program(calls)
    code = compiled.rows((0, len(compiled)))
    steps = np.array([[0, 0, len(compiled)]], np.int64)
    states, stamp = np.ones(1, np.int8), np.zeros(1, np.int64)

    def run():
        states[0] = 1  # (the node to compute: the replay marks it computed)
        status = program.execute(code, compiled.ints, compiled.reals, steps, states, stamp, 1,
                                 code[:0], compiled.ints, compiled.reals, program.NO_CYCLES)
        if status != -1:
            raise RuntimeError(f"the replay stopped at row {status}")
    return compiled, run


def measure(m, n, k, calls=200, rounds=7, seed=0):
    """(straight, turned, dots) microseconds a product, best of ``rounds``; the outs
    agree."""
    from fastgraph.kernels import blas

    rng = np.random.default_rng(seed)
    x = rng.random((m, k), np.float32)
    w = rng.random((n, k), np.float32)
    outs = [np.zeros((m, n), np.float32) for _ in range(3)]
    scratch = np.zeros((n, m), np.float32)
    dots = blas.dots
    blas.dots = lambda *args: False  # (while recording: the kernels the calls make are kept)
    try:
        straight = _program(lambda: blas.product(blas.OUT_COLUMNS, x, False, w, True, outs[0],
                                                  0.0), calls)
    finally:
        blas.dots = dots
    ways = [straight,
            _program(lambda: blas.turned_product(blas.OUT_COLUMNS, x, False, w, True,
                                                 outs[1], scratch), calls),
            _program(lambda: blas.gemm_owned(blas.DOTS, x, False, w, True, outs[2], 0.0),
                     calls)]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5 * k)
    best = [float("inf")] * len(ways)
    for _ in range(rounds):
        for i, (_, run) in enumerate(ways):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], (time.perf_counter() - start) / calls * 1e6)
    return tuple(best)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=shape, nargs="+", default=[shape(s) for s in SHAPES])
    parser.add_argument("--threads", type=int, default=1, help="the process's threads")
    parser.add_argument("--calls", type=int, default=200, help="products a replay")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if min(args.threads, args.calls, args.rounds) < 1:
        parser.error("--threads, --calls and --rounds must be 1 or more")
    from fastgraph.kernels import blas
    from fastgraph.threads import threads

    most, before = threads.most, threads.current
    threads.limit(args.threads)
    threads.use(threads.most)
    used, rows = threads.most, []
    try:
        for m, n, k in args.shapes:
            straight, turned, dots = measure(m, n, k, args.calls, args.rounds)
            rows.append((m, n, k, straight, turned, dots, blas.flips(m, n, k, np.float32),
                         blas.dots(m, n, k, np.float32)))
    finally:  # (the process's threads as they were: main may be called in a longer run)
        threads.limit(most)
        if before:
            threads.use(before)
    print(f"{used} thread(s); MKL generates code: {blas.generates_code()}")
    print(f"{'m x n x k':>14} {'straight us':>12} {'turned us':>10} {'dots us':>9} "
          f"{'turned/straight':>16} {'dots/straight':>14} flips dots")
    for m, n, k, straight, turned, dots, flipped, dotted in rows:
        print(f"{f'{m}x{n}x{k}':>14} {straight:12.3f} {turned:10.3f} {dots:9.3f} "
              f"{turned / straight:16.2f} {dots / straight:14.2f} "
              f"{'yes' if flipped else 'no':>5} {'yes' if dotted else 'no':>4}")
    return rows


if __name__ == "__main__":
    main()
