"""benchmarks.ab: a predicate of fastgraph's off in one copy of a network and as it is in the
other, stepped in turns."""

import numpy as np
import pytest

from benchmarks import ab
from fastgraph.kernels import blas


def test_only_copy_a_sees_the_predicate_off(monkeypatch, capsys):
    """On the walker (every step asks): the predicate forced true turns both products of
    mlp:8 in B (two copies back a step, warm-up included), none in A; afterwards the module
    holds the predicate it had."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", "python")
    always = lambda *args: True  # noqa: E731
    monkeypatch.setattr(blas, "flips", always)
    copies = []
    transpose_rows = blas.transpose_rows  # (the copy back: out as one row of m * n)
    monkeypatch.setattr(blas, "transpose_rows",
                        lambda *args: (copies.append((args[2], args[1])), transpose_rows(*args)))
    result = ab.main(["--off", "fastgraph.kernels.blas.flips", "--model", "mlp:8", "--batch",
                      "16", "--rounds", "2", "--steps", "2", "--warmup", "1"])
    assert sorted(copies) == sorted([(16, 8), (16, 10)] * (1 + 2 * 2))
    assert blas.flips is always
    assert [len(result["times"][copy]) for copy in "AB"] == [2, 2]
    assert all(t > 0 for copy in "AB" for t in result["times"][copy])
    assert result["median_ratio"] > 0 and result["fastest_ratio"] > 0
    printed = capsys.readouterr().out
    assert "mlp 8, batch 16: A = fastgraph.kernels.blas.flips off" in printed
    assert "B / A: " in printed


def test_the_recurrent_net_runs_with_its_own_batch():
    times = ab.run(ab.switch("fastgraph.kernels.blas.flips"), "recurrent", (), rounds=1,
                   steps=1, warmup=1)
    assert [len(times[copy]) for copy in "AB"] == [1, 1]
    assert np.isfinite(times["A"] + times["B"]).all()


@pytest.mark.parametrize("argv, message", [
    (["--off", "fastgraph.kernels.blas.nope"], "has no function 'nope'"),
    (["--off", "nothing.here.x"], "no module 'nothing.here'"),
    (["--off", "fastgraph.kernels.blas.flips", "--model", "mlp:a"], "expected mlp:H1,H2"),
    (["--off", "fastgraph.kernels.blas.flips", "--model", "cnn"], "expected mlp:H1,H2"),
    (["--off", "fastgraph.kernels.blas.flips", "--rounds", "0"], "must be 1 or more"),
    ([], "--off"),
])
def test_bad_options_are_refused_with_what_is_expected(capsys, argv, message):
    with pytest.raises(SystemExit):
        ab.main(argv)
    assert message in capsys.readouterr().err
