"""Data-parallel training on this machine: 1 process with 2 BLAS threads against 2 processes
with 1 thread each, and the MPI all-reduce that the cost model in the README is checked with.

    python -m benchmarks.distributed [--runs 3] [--models mlp,lenet5]

Every configuration is ``fastgraph train mnist`` run as a user runs it (``--processes N``
for the MPI runs), interleaved run by run so that the machine's noise falls on all of them;
samples/s is the median over the epochs after the first (which compiles), accuracy is the
final test accuracy. ``--allreduce`` (under mpiexec) times ``Allreduce`` of float32
buffers of the sizes that matter here. Results go to ``benchmarks/results/distributed.json``
(``--json`` elsewhere).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"
EPOCH = re.compile(r"^epoch (\d+)/\d+: .* ([\d,]+) samples/s$")
ACCURACY = re.compile(r"^test accuracy: ([\d.]+)$")
MODELS = {  # the options of each model's runs (shorter than `make train`: a shared machine)
    "mlp": ["--epochs", "5"],
    "lenet5": ["--model", "lenet5", "--epochs", "2", "--train-samples", "12000"],
}
CONFIGS = [  # (processes, BLAS and Numba threads per process)
    (1, 2),
    (2, 1),
]


def train(model, processes, threads):
    """One run of the command line; returns samples/s (median of epochs 2..) and accuracy."""
    env = {**os.environ, "MKL_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "fastgraph.cli", "train", "mnist", "--no-progress",
               *MODELS[model]]
    if processes > 1:
        command += ["--processes", str(processes)]
    load = os.getloadavg()[0]  # the machine is shared: a run under load says so
    began = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    rates, accuracy = {}, None
    for line in result.stdout.splitlines():
        if match := EPOCH.match(line):
            rates[int(match[1])] = float(match[2].replace(",", ""))
        elif match := ACCURACY.match(line):
            accuracy = float(match[1])
    later = [rate for epoch, rate in rates.items() if epoch > 1] or list(rates.values())
    return {"samples_per_second": statistics.median(later), "accuracy": accuracy,
            "wall_seconds": time.perf_counter() - began, "load_average": load}


def allreduce_times(sizes, repeats=200):
    """Per size, the minimum and the median seconds of one in-place float32 Allreduce (run
    under mpiexec). Each call starts after a barrier and is timed alone: on a shared machine
    the minimum is the cost when every rank has a core, the median what a step saw."""
    import numpy as np
    from mpi4py import MPI

    from fastgraph.distributed import communicator

    comm = communicator()  # a rank that raises ends the job
    times = {}
    for size in sizes:
        buffer = np.ones(size, np.float32)
        for _ in range(10):
            comm.Allreduce(MPI.IN_PLACE, buffer)
        samples = []
        for _ in range(repeats if size < 1 << 20 else repeats // 10):
            comm.Barrier()
            began = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer)
            samples.append(time.perf_counter() - began)
        samples = np.array(samples)
        comm.Allreduce(MPI.IN_PLACE, samples, op=MPI.MAX)  # the slowest rank's time
        times[size] = [float(samples.min()), float(np.median(samples))]
    return times if comm.Get_rank() == 0 else None


def parameter_counts():
    import numpy as np

    import fastgraph as fg
    from fastgraph.models import lenet5, mlp

    counts = {}
    for name, model in (("mlp", mlp(seed=0)), ("lenet5", lenet5(10, seed=0))):
        params = fg.optimizer.GradientDescent(model.graph, model.loss, 0.1).params
        counts[name] = int(sum(np.prod(param.dim) for param in params))
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--allreduce", help=argparse.SUPPRESS)  # sizes, under mpiexec
    parser.add_argument("--only-allreduce", action="store_true")
    parser.add_argument("--json", default=str(RESULTS), help="where the results go")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.allreduce:
        times = allreduce_times([int(size) for size in args.allreduce.split(",")])
        if times is not None:
            print(json.dumps(times))
        return 0

    from fastgraph import distributed

    counts = parameter_counts()
    sizes = [1, 1024, counts["mlp"], counts["lenet5"], 1 << 22]
    allreduce = {}
    for processes in (2, 4):
        argv, env = distributed.mpiexec_command(processes, [
            sys.executable, "-m", "benchmarks.distributed", "--allreduce",
            ",".join(map(str, sizes))])
        runs = []
        for _ in range(args.runs):
            output = subprocess.run(argv, env=env, capture_output=True, text=True, check=True,
                                    timeout=600).stdout
            runs.append({int(size): value for size, value in json.loads(output).items()})
        allreduce[processes] = {size: [run[size] for run in runs] for size in sizes}
        for size in sizes:
            low = [value[0] * 1e6 for value in allreduce[processes][size]]
            middle = [value[1] * 1e6 for value in allreduce[processes][size]]
            print(f"allreduce {processes} processes, {size:>8} floats: minimum "
                  f"{min(low):8.1f} - {max(low):8.1f} us, median {min(middle):8.1f} - "
                  f"{max(middle):8.1f} us", flush=True)

    training = {}
    for model in [] if args.only_allreduce else args.models.split(","):
        for processes, threads in CONFIGS:
            training[f"{model}/{processes}x{threads}"] = []
        for run in range(args.runs):
            for processes, threads in CONFIGS:
                record = train(model, processes, threads)
                training[f"{model}/{processes}x{threads}"].append(record)
                print(f"{model}, {processes} process(es) x {threads} thread(s), run {run + 1}: "
                      f"{record['samples_per_second']:,.0f} samples/s, accuracy "
                      f"{record['accuracy']} (load average {record['load_average']:.1f})",
                      flush=True)

    print("\n| model | processes x threads | samples/s | test accuracy |")
    print("| --- | --- | ---: | ---: |")
    for key, records in training.items():
        model, config = key.split("/")
        rates = [record["samples_per_second"] for record in records]
        accuracies = [record["accuracy"] for record in records]
        print(f"| {model} | {config} | {min(rates):,.0f} - {max(rates):,.0f} | "
              f"{min(accuracies):.4f} - {max(accuracies):.4f} |")
    results = Path(args.json)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"parameters": counts, "allreduce_seconds": allreduce,
                                   "training": training, "cpus": os.cpu_count(),
                                   "date": time.strftime("%Y-%m-%d")}, indent=1))
    print(f"\nwrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
