"""benchmarks/measure.sh, which makes the README's Performance figures: it parses, and what it
runs exists (a renamed module or benchmark file would otherwise be found only by the next
person measuring)."""

import importlib
import re
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "measure.sh"


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_module_and_benchmark_file_it_runs_exists():
    text = SCRIPT.read_text()
    modules = set(re.findall(r"-m (benchmarks\.\w+)", text))
    files = set(re.findall(r"(benchmarks/test_\w+\.py)", text))
    assert modules == {"benchmarks.compare", "benchmarks.startup", "benchmarks.series"}
    assert len(files) == 3
    for name in modules:
        assert hasattr(importlib.import_module(name), "main"), name
    for name in files:
        assert (SCRIPT.parent.parent / name).is_file(), name
