"""Every example runs, in its --quick form, so none can rot."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples():
    assert {path.name for path in EXAMPLES} >= {
        "quickstart.py",
        "mnist_mlp.py",
        "logistic_regression.py",
        "spirals.py",
        "cnn_article.py",
        "lenet5.py",
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(example, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGRAPH_DATA", str(mnist_dir))
    result = subprocess.run(
        [sys.executable, str(example), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout


def test_saliency_runs_on_the_cnn(mnist_dir, tmp_path, monkeypatch):
    """Per-sample Jacobians through Conv2D and MaxPool2D, in the example that draws them."""
    monkeypatch.setenv("FASTGRAPH_DATA", str(mnist_dir))
    example = Path(__file__).parent.parent / "examples" / "saliency.py"
    result = subprocess.run(
        [sys.executable, str(example), "--quick", "--network", "lenet5"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and (tmp_path / "saliency.png").exists()


@pytest.mark.parametrize("option, value, expected", [
    ("--clip", "nan", "above 0"), ("--clip", "-1", "above 0"), ("--lr", "nan", "above 0"),
    ("--lr", "inf", "above 0"), ("--noise", "-1", "of at least 0"),
])
def test_dp_sgd_refuses_options_that_are_no_bound_noise_or_rate(option, value, expected,
                                                                 tmp_path):
    """--clip nan trained a whole epoch on NaN and ended in a traceback of the metrics;
    --noise -1 in NumPy's "scale < 0"."""
    example = Path(__file__).parent.parent / "examples" / "dp_sgd.py"
    result = subprocess.run([sys.executable, str(example), "--quick", option, value],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "FASTGRAPH_DATA": str(tmp_path)})  # no MNIST
    assert result.returncode == 2
    assert result.stderr.endswith(f"error: argument {option}: '{value}': expected a finite "
                                  f"number {expected}\n"), result.stderr
