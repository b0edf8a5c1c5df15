"""benchmarks.series: the targets of a measure.sh series, read from the files it writes (here
a series made up in the formats measure.sh's programs write, so that each number's place
and each rule can be checked)."""

import json

import pytest

from benchmarks import series


def _network(ours, jax):
    return {"fastgraph": {"seconds_per_epoch": ours}, "jax": {"seconds_per_epoch": jax}}


def _compare(small, large, recurrent=(0.2, 0.5), jacobian=(0.2, 0.5), cold=(0.4, 2.5)):
    """A compare-N.json: fastgraph's and JAX's seconds (small and large MLP), ms (recurrent
    net, Jacobian) and the cold start's seconds."""
    return {"networks": {series.SMALL: _network(*small), series.LARGE: _network(*large)},
            "recurrent": {"fastgraph": {"ms": recurrent[0]}, "jax": {"ms": recurrent[1]}},
            "derivatives": {"fastgraph": {"jacobian_ms": jacobian[0]},
                            "jax": {"jacobian_ms": jacobian[1]}},
            "cold_start": {"warm_cache": cold[0], "empty_cache": cold[1]}}


BENCH = """
Name (time in us)                              Min                 Median
test_chain_of_10000_adds[compiled]        281.4200 (1.0)         286.0915 (1.0)
test_chain_of_10000_adds[python]       33,572.9540 (119.30)   34,935.8510 (122.11)
"""

STARTUP = """mlp: import fastgraph, build, one_step() + update(), Adam
empty cache run 1:  2.83 s wall,  2.63 s CPU (import 0.22 s); load 1.69 -> 1.72
empty cache run 2:  5.20 s wall,  2.63 s CPU (import 0.20 s); load 1.72 -> 1.72
warm cache  run 1:  0.44 s wall,  0.54 s CPU (import 0.27 s); load 1.69 -> 1.69
"""


def _article(median_seconds, samples=64):
    return {"benchmarks": [
        {"name": series.ONE_SAMPLE, "stats": {"median": median_seconds},
         "extra_info": {"samples": samples}},
        {"name": "test_one_sample_per_step[mlp 784-100-20-10-jacobian]",
         "stats": {"median": 1.0}, "extra_info": {"samples": 64}}]}


def _write(folder, files):
    folder.mkdir()
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / name).write_text(text)
    return str(folder)


@pytest.fixture
def a_series(tmp_path):
    """Two compare runs and one extra; the large MLP over 0.8x in the extra run only, the
    empty-cache start over 5 s in one startup run."""
    return _write(tmp_path / "s1", {
        "compare-1.json": _compare((0.10, 0.20), (0.20, 0.30)),
        "compare-2.json": _compare((0.12, 0.20), (0.21, 0.30), recurrent=(0.1, 0.5)),
        "extra-1.json": {"networks": {series.SMALL: _network(0.13, 0.20),
                                      series.LARGE: _network(0.27, 0.30)}},
        "article-1.json": _article(640e-6), "article-2.json": _article(576e-6),
        "bench.txt": BENCH, "startup-mlp.txt": STARTUP,
        "startup-recurrent.txt": "warm cache  run 1:  0.45 s wall\n"})


def test_each_target_takes_every_run_of_its_kind(a_series):
    runs = series.Runs.read(a_series)
    values = {target.name: target.values(runs) for target in series.TARGETS}
    small, large, recurrent, jacobian, one, chain, warm, empty, first = series.TARGETS
    assert values[small.name] == pytest.approx([0.5, 0.6, 0.65])
    assert values[large.name] == pytest.approx([0.2 / 0.3, 0.7, 0.9])
    assert values[recurrent.name] == pytest.approx([0.4, 0.2])  # (none in an extra run)
    assert values[jacobian.name] == pytest.approx([0.4, 0.4])
    assert values[one.name] == pytest.approx([10.0, 9.0])  # us a sample, the vjp engine's
    assert values[chain.name] == pytest.approx([0.028142])  # the compiled one, per node
    assert values[warm.name] == pytest.approx([0.44, 0.4, 0.4])  # startup, then compare's
    assert values[empty.name] == pytest.approx([2.83, 5.2, 2.5, 2.5])
    assert values[first.name] == pytest.approx([0.45])


def test_a_target_is_met_only_where_every_run_met_it(a_series):
    text = series.table([a_series])
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if " | " in line}
    assert rows[series.TARGETS[0].name].endswith("| 0.50-0.65x, met |")
    assert rows[series.TARGETS[1].name].endswith("| 0.67-0.90x (1 of 3 over), not met |")
    assert rows[series.TARGETS[7].name].endswith("| 2.50-5.20 s (1 of 4 over), not met |")
    assert "- chain of 10,000 Adds, batch 1, a node (us): s1: 0.028" in text


def test_several_series_have_a_column_each_and_a_count(a_series, tmp_path):
    second = _write(tmp_path / "s2", {
        "compare-1.json": _compare((0.10, 0.20), (0.20, 0.30))})
    text = series.table([a_series, second])
    assert text.splitlines()[0] == "| target | asked | s1 | s2 | all |"
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if " | " in line}
    assert rows[series.TARGETS[1].name].endswith(
        "| 0.67x, met | 0.67-0.90x, met in 1 of 2 |")
    # s2 has no article, bench or startup files: not measured there, counted over s1 only
    assert rows[series.TARGETS[5].name].endswith("| not measured | 0.028 us, met in 1 of 1 |")


def test_runs_are_read_in_their_numbers_order(tmp_path):
    folder = _write(tmp_path / "s", {
        f"compare-{n}.json": _compare((0.01 * n, 0.20), (0.20, 0.30)) for n in (1, 2, 10)})
    values = series.TARGETS[0].values(series.Runs.read(folder))
    assert values == pytest.approx([0.05, 0.1, 0.5])  # compare-10 last, not after compare-1


@pytest.mark.parametrize("files, message", [
    (None, "no such folder (give the OUTDIR of measure.sh)"),
    ({"bench.txt": BENCH}, "no compare-*.json or extra-*.json: not an OUTDIR of"),
    ({"compare-1.json": '{"networks": '}, "compare-1.json: not a readable JSON report"),
])
def test_what_is_not_a_series_is_refused_by_name(files, message, tmp_path, capsys):
    folder = str(tmp_path / "nothing") if files is None else _write(tmp_path / "s", files)
    with pytest.raises(SystemExit) as exit_:
        series.main([folder])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert message in error and folder in error
