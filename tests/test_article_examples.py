"""The article-style examples (examples/article) run in their --quick form, in this process
(runpy), so that they cannot rot; each checks its own result."""

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples" / "article"
pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def run(name, monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", [name, "--quick", *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def last_accuracy(output):
    return float(re.findall(r"accuracy (\d\.\d+)", output)[-1])


def test_there_are_article_examples():
    assert {path.name for path in EXAMPLES.glob("*.py")} >= {
        "adaline.py", "rnn_welding.py", "trainer_and_saver.py"}


def test_adaline_learns_one_sample_at_a_time(monkeypatch, capsys):
    assert last_accuracy(run("adaline.py", monkeypatch, capsys)) > 0.85


def test_rnn_welding_learns_sequences_of_varying_length(monkeypatch, capsys):
    assert last_accuracy(run("rnn_welding.py", monkeypatch, capsys)) > 0.9


def test_trainer_and_saver_restore_the_same_model(monkeypatch, capsys, tmp_path):
    output = run("trainer_and_saver.py", monkeypatch, capsys, "--dir", str(tmp_path))
    assert "same predictions: True" in output and last_accuracy(output) > 0.85
    assert (tmp_path / "model.json").exists() and (tmp_path / "weights.npz").exists()
