"""Each core's speed, in turn, to see whether a shared machine gives its cores equal time.

A virtual machine's cores are threads of a host that other machines share: one core can
run at a fraction of the other's speed for seconds at a time, and a step split into equal
parts (MKL's products, fastgraph's parameters owned in parts, Numba's static ``prange``
chunks) would then wait for the slow core. This times the same small pure-Python loop on
core 0, then on core 1, over and over, and prints how often one was much slower than the
other:

    python -m benchmarks.cores --seconds 40
"""

import argparse
import math
import os
import time

import numpy as np


def loop_ms(iterations=200_000):
    began = time.perf_counter()
    total = 0.0
    for _ in range(iterations):
        total += 1.0
    return (time.perf_counter() - began) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args(argv)
    if not (math.isfinite(args.seconds) and args.seconds > 0):  # 0: no pair; inf: no end
        parser.error(f"--seconds must be a positive, finite number, got {args.seconds}")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("benchmarks.cores: this process may run on one core only")
    first, second = cores[:2]
    times = {first: [], second: []}
    end = time.monotonic() + args.seconds
    try:
        while time.monotonic() < end or not times[second]:  # one pair at least
            for core in (first, second):
                os.sched_setaffinity(0, {core})
                time.sleep(0.01)  # let the move happen before timing
                times[core].append(loop_ms())
    except KeyboardInterrupt:  # Ctrl-C: the report of what was measured so far
        if not times[second]:
            raise
    finally:
        os.sched_setaffinity(0, cores)
    pairs = min(len(times[first]), len(times[second]))
    a, b = np.array(times[first][:pairs]), np.array(times[second][:pairs])
    ratio = a / b
    slower = np.mean((ratio > 1.5) | (ratio < 1 / 1.5))
    print(f"{len(a)} pairs: core {first} {np.median(a):.2f} ms, core {second} "
          f"{np.median(b):.2f} ms (medians)")
    print(f"core {first} / core {second}, percentiles 5, 25, 50, 75, 95: "
          + ", ".join(f"{q:.2f}" for q in np.percentile(ratio, [5, 25, 50, 75, 95])))
    print(f"pairs with one core over 1.5x slower than the other: {slower:.0%}")
    bins = np.array_split(ratio, min(40, len(ratio)))
    print("over time: " + " ".join(f"{np.median(part):.2f}" for part in bins))


if __name__ == "__main__":
    main()
