"""benchmarks.cores: the per-core speed check the README's Performance section cites."""

import os

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
