"""The comparison command's report: table and chart, from a made-up run (no peers needed)."""

import numpy as np
import pytest

from benchmarks import compare


def report():
    row = {"seconds_per_epoch": 0.5, "samples_per_second": 120_000.0, "test_accuracy": 0.97,
           "peak_mb": 500.0}
    return {
        "epochs": 4,
        "networks": {"784-100-20-10": {
            "fastgraph": row,
            "jax": {**row, "seconds_per_epoch": 0.6, "samples_per_second": 100_000.0},
            "pytorch": {"skipped": "not installed (pip install -e '.[bench]')"},
            "fastgraph jacobian": {"seconds_per_epoch": 500.0, "samples_per_second": 120.0,
                                   "test_accuracy": None},
        }},
        "derivatives": {"fastgraph": {"jacobian_ms": 0.8, "per_sample_gradients_ms": 0.5,
                                      "backward_ms": 0.08}},
        "cold_start": {"warm_cache": 0.6, "empty_cache": 3.3},
    }


def test_table_lists_every_framework_with_ratios():
    text = compare.table(report())
    lines = text.splitlines()
    assert any(line.startswith("fastgraph ") and "1.00x" in line for line in lines)
    assert any(line.startswith("jax ") and "1.20x" in line for line in lines)
    assert any(line.startswith("pytorch ") and "skipped: not installed" in line for line in lines)
    assert any(line.startswith("fastgraph jacobian") and "1000.00x" in line for line in lines)
    assert "0.60 s with the Numba cache warm, 3.30 s with it empty" in text
    assert "0.800 ms" in text and "0.500 ms" in text


def test_chart_is_a_png(tmp_path):
    compare.chart(report(), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_fastgraph_the_ratios_are_to_the_first_framework_run():
    run = report()
    del run["networks"]["784-100-20-10"]["fastgraph"]
    lines = compare.table(run).splitlines()
    assert any("vs jax" in line for line in lines)
    assert any(line.startswith("jax ") and "1.00x" in line for line in lines)
    assert any(line.startswith("fastgraph jacobian") and "833.33x" in line for line in lines)


def test_the_articles_loop_is_profiled_with_an_update_every_32():
    """`compare --profile` also profiles the article's loop (one sample a one_step(), an
    update every 32) on the MNIST network, against the same loop untimed."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.random((96, 784)).astype(np.float32)
    one_hot = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 96)]
    report = compare.article_profile_report((images, one_hot))
    lines = report.splitlines()
    assert lines[0].startswith("profile of the article's loop, 784-100-20-10, one sample a "
                               "one_step(), an update every 32")
    assert lines[1].startswith("one one_step() (an update every 32): ")
    assert "(mean of 640 steps)" in lines[1]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[3:-2]}
    assert rows[("feed", "set_value")][2] == "1.0" and rows[("forward", "MatMul")][2] == "3.0"
    assert ("update", "Adam") in rows and ("overhead", "engine") in rows
    assert lines[-1].startswith("the same loop untimed, in alternation: ")
    assert lines[-1].split("profiled/untimed: ")[1].count("/") == 15  # each round's pair


@pytest.mark.parametrize(("network", "hidden"), [("784-100-20-10", (8,)), ("lenet5", None)])
def test_fastgraph_s_epochs_say_on_which_thread_counts_their_steps_ran(network, hidden):
    """A run at one thread's speed shows in the report: each timed epoch's steps on each
    count the thread chooser ran them on, recorded by ``Fastgraph.epoch``, for the MLPs and
    LeNet-5 alike (the warm-up epoch of ``compare`` is limited to 20 batches)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 256)
    data = (None, None, None, None, labels, images.reshape(256, -1))
    frameworks, init = compare.frameworks_for(network)
    runner = frameworks["fastgraph"](hidden, 64, data, init(rng, hidden))
    runner.epoch(rng.permutation(256), limit=128)
    for _ in range(2):
        runner.epoch(rng.permutation(256))
    assert [sum(epoch.values()) for epoch in runner.threads] == [2, 4, 4]  # batches of 64
    assert set().union(*runner.threads) <= {1, runner.optimizer.threads.counts[1]}
    run = report()
    run["networks"]["784-100-20-10"]["fastgraph"]["epoch_threads"] = [{"1": 400, "2": 69},
                                                                      {"2": 469}]
    assert ("fastgraph's epochs, steps on each thread count: 400 on 1, 69 on 2; 469 on 2"
            in compare.table(run))
