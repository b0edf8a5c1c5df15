"""Each core's speed, in turn, to see whether a shared machine gives its cores equal time.

A virtual machine's cores are threads of a host that other machines share: one core can
run at a fraction of the other's speed for seconds at a time, and a step split into equal
parts (MKL's products, fastgraph's parameters owned in parts, Numba's static ``prange``
chunks) would then wait for the slow core. This times the same small pure-Python loop on
core 0, then on core 1, over and over, and prints how often one was much slower than the
other:

    python -m benchmarks.cores --seconds 40

With ``--together``, two threads run the same compiled loop of about 20 us side by side in
one parallel region, as a step's parts do, each timed by the cycle counter, region after
region; it prints how much longer the slower thread took, and what equal halves cost
against a split by the threads' speeds: the sum of the slower thread's times over the sum of
the two times' harmonic means (the time each region would take if each thread had work in
proportion to its speed there).
"""

import argparse
import math
import os
import time

import numba
import numpy as np
from numba import njit, prange

from fastgraph.kernels.program import cycle_counter

#: Passes of the side-by-side loop over its 4,096 numbers: about 20 us.
REPEATS = 60


def loop_ms(iterations=200_000):
    began = time.perf_counter()
    total = 0.0
    for _ in range(iterations):
        total += 1.0
    return (time.perf_counter() - began) * 1e3


@njit(parallel=True, cache=True)
def _side_by_side(numbers, cycles, region):
    for thread in prange(numbers.shape[0]):  # one iteration a thread (a static schedule)
        began = cycle_counter()
        line = numbers[thread]
        for _ in range(REPEATS):
            for i in range(line.shape[0]):
                line[i] = line[i] * np.float32(0.999) + np.float32(0.001)
        cycles[region, thread] = cycle_counter() - began


def summary(cycles):
    """``(slower / faster percentiles 50, 75, 95, equal halves / split by speed)`` of the
    threads' times, a row per region."""
    cycles = np.asarray(cycles, float)
    slower, faster = cycles.max(1), cycles.min(1)
    harmonic = 2 / (1 / cycles[:, 0] + 1 / cycles[:, 1])
    return np.percentile(slower / faster, [50, 75, 95]), slower.sum() / harmonic.sum()


def together(seconds):
    numbers = np.ones((2, 4096), np.float32)
    blocks = [np.zeros((4096, 2), np.int64)]
    before = numba.get_num_threads()
    numba.set_num_threads(2)  # (a count this thread set before, one say, would run both)
    try:
        _side_by_side(numbers, blocks[0], 0)  # compiled or loaded before timing
        regions, end = 0, time.monotonic() + seconds
        while time.monotonic() < end or regions == 0:
            if regions == len(blocks) * 4096:
                blocks.append(np.zeros((4096, 2), np.int64))
            _side_by_side(numbers, blocks[-1], regions % 4096)
            regions += 1
    finally:
        numba.set_num_threads(before)
    cycles = np.concatenate(blocks)[:regions]
    spread, cost = summary(cycles)
    medians = np.median(cycles, 0)
    print(f"{regions} regions: thread 0 {medians[0]:.0f} cycles, thread 1 {medians[1]:.0f} "
          "(medians)")
    print("slower / faster thread, percentiles 50, 75, 95: "
          + ", ".join(f"{q:.2f}" for q in spread))
    print(f"equal halves took {cost:.3f}x the time of a split by the threads' speeds")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--together", action="store_true",
                        help="time two threads side by side in one parallel region")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.seconds) and args.seconds > 0):  # 0: no pair; inf: no end
        parser.error(f"--seconds must be a positive, finite number, got {args.seconds}")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("benchmarks.cores: this process may run on one core only")
    if args.together:
        if numba.config.NUMBA_NUM_THREADS < 2:  # both halves would run on one thread
            raise SystemExit("benchmarks.cores --together: Numba runs one thread here "
                             "(NUMBA_NUM_THREADS)")
        together(args.seconds)
        return
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
