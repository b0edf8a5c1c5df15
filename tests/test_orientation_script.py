"""benchmarks.orientation: the two ways of a forward product that ``blas.flips`` chooses
between, timed as the compiled tape runs them."""

import numpy as np
import pytest

from benchmarks import orientation
from fastgraph.kernels import blas


def test_it_times_both_ways_of_each_shape_and_says_what_flips_chooses(capsys):
    rows = orientation.main(["--shapes", "64x10x20", "16x12x16", "--calls", "3",
                             "--rounds", "2"])
    assert [row[:3] for row in rows] == [(64, 10, 20), (16, 12, 16)]
    for m, n, k, straight, turned, chosen in rows:
        assert straight > 0 and turned > 0
        assert chosen == blas.flips(m, n, k, np.float32)
    printed = capsys.readouterr().out
    assert "64x10x20" in printed and "16x12x16" in printed and "turned/straight" in printed


def test_the_two_ways_it_times_make_the_same_product(monkeypatch):
    """``measure`` checks the turned product against the straight one: both are run."""
    calls = []
    turned_product = blas.turned_product
    monkeypatch.setattr(blas, "turned_product",
                        lambda *args: (calls.append(args[-2].shape), turned_product(*args)))
    straight, turned = orientation.measure(32, 10, 20, calls=4, rounds=1)
    assert calls == [(32, 10)] * 4 and straight > 0 and turned > 0


def test_it_leaves_the_process_s_threads_as_they_were():
    from fastgraph.threads import threads

    most, current = threads.most, threads.current
    orientation.main(["--shapes", "16x4x20", "--calls", "1", "--rounds", "1", "--threads",
                      str(most + 1)])
    assert (threads.most, threads.current) == (most, current)


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "64x10"], "expected a shape m x n x k"),
    (["--shapes", "64x0x20"], "every size must be 1 or more"),
    (["--calls", "0"], "must be 1 or more"),
])
def test_bad_options_are_refused_with_what_is_expected(capsys, argv, message):
    with pytest.raises(SystemExit):
        orientation.main(argv)
    assert message in capsys.readouterr().err
