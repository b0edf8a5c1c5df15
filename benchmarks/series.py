"""The targets of a series of ``benchmarks/measure.sh``: each target's value in every run,
their range, and whether every run met it.

    python -m benchmarks.series OUTDIR [OUTDIR ...]

An OUTDIR is what ``measure.sh OUTDIR`` wrote: ``compare-*.json`` (fastgraph, NumPy, PyTorch
and JAX), ``extra-*.json`` (fastgraph and JAX alone), ``article-*.json`` (the article
programs' one-sample loop), ``bench.txt`` (the compiled tape's pytest-benchmarks) and
``startup-*.txt`` (fresh processes, warm and empty cache). The ratios are fastgraph's time
over JAX's within each run; a target is met in a series only where every run met it. With
several OUTDIRs the table has a column for each and a last one over all of them.
``measure.sh`` ends by writing this table into its OUTDIR as ``summary.md``.
"""

import argparse
import glob
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

SMALL, LARGE = "784-100-20-10", "784-256-128-10"
ONE_SAMPLE = "test_one_sample_per_step[mlp 784-100-20-10-vjp]"
CHAIN = re.compile(r"^test_chain_of_10000_adds\[compiled\]\s+([\d,.]+)", re.M)
START = re.compile(r"^(warm|empty) cache\s+run \d+:\s+([\d.]+) s wall", re.M)


class SeriesError(ValueError):
    """An OUTDIR that holds no series, or a file of it that cannot be read."""


def _json(path):
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise SeriesError(f"{path}: not a readable JSON report ({error})") from None


def _text(path):
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


def _files(folder, pattern):
    """The files of ``pattern`` in ``folder``, in run order (compare-2 before compare-10)."""
    def run(path):
        number = re.search(r"(\d+)\.\w+$", path)
        return int(number.group(1)) if number else 0
    return sorted(glob.glob(os.path.join(folder, pattern)), key=run)


@dataclass
class Runs:
    """What a series holds, read once: its reports and its texts."""

    compare: list
    extra: list
    article: list
    bench: str
    startup: dict

    @classmethod
    def read(cls, folder):
        if not os.path.isdir(folder):
            raise SeriesError(f"{folder}: no such folder (give the OUTDIR of measure.sh)")
        compare = [_json(path) for path in _files(folder, "compare-*.json")]
        extra = [_json(path) for path in _files(folder, "extra-*.json")]
        if not compare and not extra:
            raise SeriesError(f"{folder}: no compare-*.json or extra-*.json: not an OUTDIR of "
                              f"benchmarks/measure.sh, or it has not finished a run")
        article = [_json(path) for path in _files(folder, "article-*.json")]
        startup = {name: _text(os.path.join(folder, f"startup-{name}.txt"))
                   for name in ("mlp", "recurrent")}
        return cls(compare, extra, article, _text(os.path.join(folder, "bench.txt")), startup)


def _epoch_ratios(network):
    def values(runs):
        out = []
        for report in runs.compare + runs.extra:
            results = report.get("networks", {}).get(network, {})
            ours, theirs = results.get("fastgraph", {}), results.get("jax", {})
            if "seconds_per_epoch" in ours and "seconds_per_epoch" in theirs:
                out.append(ours["seconds_per_epoch"] / theirs["seconds_per_epoch"])
        return out
    return values


def _recurrent(runs):
    return [report["recurrent"]["fastgraph"]["ms"] / report["recurrent"]["jax"]["ms"]
            for report in runs.compare + runs.extra
            if "ms" in report.get("recurrent", {}).get("fastgraph", {})
            and "ms" in report.get("recurrent", {}).get("jax", {})]


def _jacobian(runs):
    out = []
    for report in runs.compare + runs.extra:
        derivatives = report.get("derivatives", {})
        ours, theirs = derivatives.get("fastgraph", {}), derivatives.get("jax", {})
        if "jacobian_ms" in ours and "jacobian_ms" in theirs:
            out.append(ours["jacobian_ms"] / theirs["jacobian_ms"])
    return out


def _one_sample(runs):
    """Microseconds a sample: the benchmark's median over the samples of a round."""
    return [entry["stats"]["median"] / entry["extra_info"]["samples"] * 1e6
            for report in runs.article for entry in report.get("benchmarks", [])
            if entry.get("name") == ONE_SAMPLE]


def _chain(runs):
    """Microseconds a node: the compiled chain's minimum (in us) over its 10,000 nodes."""
    return [float(found.replace(",", "")) / 10_000 for found in CHAIN.findall(runs.bench)]


def _start(kind, models, from_compare):
    def values(runs):
        out = [float(seconds) for model in models
               for which, seconds in START.findall(runs.startup[model]) if which == kind]
        if from_compare:
            out += [report["cold_start"][f"{kind}_cache"] for report in runs.compare
                    if f"{kind}_cache" in report.get("cold_start", {})]
        return out
    return values


@dataclass
class Target:
    name: str
    asked: float
    unit: str  # "x" for a ratio to JAX, else the unit of the values
    values: Callable  # Runs -> [value of each run]
    digits: int = 2

    def show(self, value):
        return f"{value:.{self.digits}f}{self.unit if self.unit == 'x' else ' ' + self.unit}"


#: The compiled tape's targets (its issue), in the README's order.
TARGETS = [
    Target(f"article MLP ({SMALL}, batch 64), epoch / JAX's", 0.7, "x", _epoch_ratios(SMALL)),
    Target(f"{LARGE}, batch 128, epoch / JAX's", 0.8, "x", _epoch_ratios(LARGE)),
    Target("recurrent net, a training step / JAX's", 0.5, "x", _recurrent),
    Target("per-sample Jacobian (64, 10, 784) / JAX's", 0.8, "x", _jacobian),
    Target("one sample a one_step(), article programs' MLP", 20, "us", _one_sample, 1),
    Target("chain of 10,000 Adds, batch 1, a node", 0.3, "us", _chain, 3),
    Target("import and first step, warm cache", 1, "s", _start("warm", ["mlp"], True)),
    Target("the same, empty cache", 5, "s", _start("empty", ["mlp"], True)),
    Target("first step of the 583-node net, warm", 2, "s", _start("warm", ["recurrent"], False)),
]


def spread(target, values):
    """The values' range as text: "0.43-0.60x", or one value where they all print alike."""
    low, high = f"{min(values):.{target.digits}f}", target.show(max(values))
    return high if target.show(min(values)) == high else f"{low}-{high}"


def judge(target, values):
    """(range, met): the values' range as text, with how many were over where some were, and
    whether every one is within the target (None where the series measured nothing)."""
    if not values:
        return "not measured", None
    over = sum(value > target.asked for value in values)
    return spread(target, values) + (f" ({over} of {len(values)} over)" if over else ""), \
        over == 0


def table(folders):
    """The markdown table of the targets, a column per series (and one over all of them),
    then each run's value of every target."""
    series = [Runs.read(folder) for folder in folders]
    names = [os.path.basename(os.path.normpath(folder)) for folder in folders]
    header = ["target", "asked", *names] + (["all"] if len(series) > 1 else [])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    each = {target.name: [target.values(runs) for runs in series] for target in TARGETS}
    for target in TARGETS:
        cells = []
        for values in each[target.name]:
            shown, met = judge(target, values)
            cells.append(shown if met is None else f"{shown}, {'met' if met else 'not met'}")
        if len(series) > 1:
            measured = [values for values in each[target.name] if values]
            met_in = sum(judge(target, values)[1] for values in measured)
            every = [value for values in measured for value in values]
            cells.append(f"{spread(target, every)}, met in {met_in} of {len(measured)}")
        asked = f"<= {target.show(target.asked)}"
        lines.append("| " + " | ".join([target.name, asked, *cells]) + " |")
    lines += ["", "Each run, in the order measure.sh made them (compare-*, then extra-*):"]
    for target in TARGETS:
        runs = "; ".join(f"{name}: " + (", ".join(f"{value:.{target.digits}f}"
                                                   for value in values) or "none")
                         for name, values in zip(names, each[target.name]))
        lines.append(f"- {target.name} ({target.unit}): {runs}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", metavar="OUTDIR",
                        help="what benchmarks/measure.sh OUTDIR wrote")
    args = parser.parse_args(argv)
    try:
        print(table(args.folders))
    except SeriesError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
