"""benchmarks.cores: the per-core speed check that benchmarks/results/performance-notes.md cites."""

import json
import os

import numpy as np
import pytest

from benchmarks import cores


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_it_times_both_cores_and_gives_the_process_back_all_of_them(capsys):
    before = os.sched_getaffinity(0)
    cores.main(["--seconds", "0.3"])
    assert os.sched_getaffinity(0) == before
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1] == "pairs:" and int(lines[0].split()[0]) >= 2
    assert lines[2].startswith("pairs with one core over 1.5x slower than the other: ")
    assert lines[2].endswith("%")


def test_one_core_is_refused(monkeypatch):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(SystemExit, match="may run on one core only"):
        cores.main(["--seconds", "0.1"])


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf"])
def test_seconds_must_be_positive_and_finite(seconds, capsys):
    """0 ended in NumPy's IndexError (no pair), inf never ended."""
    with pytest.raises(SystemExit) as exit_:
        cores.main(["--seconds", seconds])
    assert exit_.value.code == 2
    assert "--seconds must be a positive, finite number" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--networks", "nope"], "--networks: unknown 'nope'; choose from 784-100-20-10"),
    (["--frameworks", "fastgraph,tensorflow"], "--frameworks: unknown 'tensorflow'; choose "
                                               "from fastgraph"),
])
def test_compare_checks_its_options_before_any_work(argv, message, capsys, tmp_path):
    """--epochs 0 wrote NaN over the kept compare.json, then failed on the chart; an
    unknown network failed after loading MNIST; unknown frameworks were dropped silently."""
    from benchmarks import compare

    json_path = tmp_path / "compare.json"
    with pytest.raises(SystemExit) as exit_:
        compare.main([*argv, "--json", str(json_path), "--chart", str(tmp_path / "c.png")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not json_path.exists()


def test_startup_runs_must_be_at_least_one(capsys):
    from benchmarks import startup

    with pytest.raises(SystemExit) as exit_:
        startup.main(["--runs", "0"])
    assert exit_.value.code == 2 and "--runs must be at least 1, got 0" in capsys.readouterr().err


def test_startup_steps_must_be_at_least_one(capsys):
    from benchmarks import startup

    with pytest.raises(SystemExit) as exit_:
        startup.main(["--steps", "0"])
    assert exit_.value.code == 2 and "--steps must be at least 1, got 0" in capsys.readouterr().err


def test_startup_makes_the_steps_asked_for():
    """``--steps N``: the timed body makes N training steps of the model (here with stand-ins
    for fastgraph that count the calls)."""
    from types import SimpleNamespace

    from benchmarks import startup

    made = []
    node = SimpleNamespace(set_value=lambda value: made.append("set_value"))
    model = SimpleNamespace(x=node, one_hot=node, graph=None, loss=None)
    optimizer = SimpleNamespace(one_step=lambda: made.append("one_step"),
                                update=lambda: made.append("update"))
    fg = SimpleNamespace(models=SimpleNamespace(mlp=lambda seed: model),
                         optimizer=SimpleNamespace(Adam=lambda graph, loss: optimizer))
    exec(startup.BODIES["mlp"].format(steps=3), {"fg": fg, "np": np})
    assert made == ["set_value"] * 2 + ["one_step", "update"] * 3


def test_summary_compares_equal_halves_with_a_split_by_speed():
    """Each region's slower thread against the harmonic mean of the two threads' times: the
    time the region would take with work in proportion to each thread's speed there."""
    spread, cost = cores.summary([[1, 2], [2, 2], [3, 1]])
    assert spread == pytest.approx(np.percentile([2.0, 1.0, 3.0], [50, 75, 95]))
    harmonic = 4 / 3 + 2 + 3 / 2  # 2 / (1/1 + 1/2), 2 / (1/2 + 1/2), 2 / (1/3 + 1/1)
    assert cost == pytest.approx((2 + 2 + 3) / harmonic)
    assert cores.summary([[5, 5], [7, 7]])[1] == pytest.approx(1.0)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_together_times_two_threads_side_by_side(capsys):
    cores.main(["--together", "--seconds", "0.2"])
    lines = capsys.readouterr().out.splitlines()
    regions, words = int(lines[0].split()[0]), lines[0].split()
    assert regions >= 1 and words[1:3] == ["regions:", "thread"]
    assert float(words[4]) > 0 and float(words[7]) > 0  # each thread's median, in cycles
    assert lines[1].startswith("slower / faster thread, percentiles 50, 75, 95: ")
    assert len(lines[1].split(": ")[1].split(", ")) == 3
    assert lines[2].startswith("equal halves took ") and lines[2].split()[3].endswith("x")
    # (no bound on the figures themselves: summary() is tested on known times above)


def test_together_needs_two_numba_threads(monkeypatch):
    monkeypatch.setattr(cores.numba.config, "NUMBA_NUM_THREADS", 1)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1})
    with pytest.raises(SystemExit, match="Numba runs one thread here"):
        cores.main(["--together", "--seconds", "0.1"])


def test_compare_writes_its_report_outside_the_kept_results(monkeypatch, tmp_path):
    """A plain `python -m benchmarks.compare` (`make compare`) wrote over
    benchmarks/results/compare.{json,png}, the README's figures, leaving the checkout
    changed; it writes to runs/ (which git ignores) unless told. The training is stood in for
    here: this checks where the report and chart go, and that they hold the run."""
    from benchmarks import compare

    seconds = {"fastgraph": 0.125, "jax": 0.25}
    monkeypatch.setattr(compare, "load_data", lambda: None)
    monkeypatch.setattr(compare, "available", lambda name: True)
    monkeypatch.setattr(compare, "compare", lambda network, epochs, data, names: {
        name: {"seconds_per_epoch": seconds[name]} for name in names})
    monkeypatch.setattr(compare, "derivatives", lambda data, names: {})
    monkeypatch.setattr(compare, "table", lambda report: "")
    monkeypatch.chdir(tmp_path)
    assert compare.main(["--networks", "784-100-20-10", "--frameworks", "fastgraph,jax",
                         "--epochs", "1", "--no-memory", "--no-cold-start",
                         "--no-recurrent"]) == 0
    report = json.loads((tmp_path / "runs" / "compare.json").read_text())
    assert report["networks"]["784-100-20-10"] == {
        name: {"seconds_per_epoch": value} for name, value in seconds.items()}
    assert (tmp_path / "runs" / "compare.png").stat().st_size > 0
    assert not (tmp_path / "benchmarks").exists()
