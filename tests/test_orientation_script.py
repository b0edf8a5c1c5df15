"""benchmarks.orientation: the ways of a forward product that ``blas.flips`` and
``blas.dots`` choose between, timed as the compiled tape runs them."""

import numpy as np
import pytest

from benchmarks import orientation
from fastgraph.kernels import blas


def test_it_times_the_ways_of_each_shape_and_says_what_flips_and_dots_choose(capsys):
    rows = orientation.main(["--shapes", "64x10x20", "16x12x16", "32x24x784", "--calls", "3",
                             "--rounds", "2"])
    assert [row[:3] for row in rows] == [(64, 10, 20), (16, 12, 16), (32, 24, 784)]
    for m, n, k, straight, turned, dots, flipped, dotted in rows:
        assert straight > 0 and turned > 0 and dots > 0
        assert flipped == blas.flips(m, n, k, np.float32)
        assert dotted == blas.dots(m, n, k, np.float32)
    printed = capsys.readouterr().out
    assert "64x10x20" in printed and "16x12x16" in printed and "turned/straight" in printed
    assert "dots/straight" in printed


def test_the_ways_it_times_make_the_same_product(monkeypatch):
    """``measure`` checks the turned product and the dot products against the straight one,
    which is MKL's GEMM even where ``dots`` would take the shape: all three are run."""
    calls, owned = [], []
    turned_product, gemm_owned = blas.turned_product, blas.gemm_owned
    monkeypatch.setattr(blas, "turned_product",
                        lambda *args: (calls.append(args[-2].shape), turned_product(*args)))
    monkeypatch.setattr(blas, "gemm_owned",
                        lambda *args: (owned.append(args[0]), gemm_owned(*args)))
    monkeypatch.setattr(blas, "dots", lambda *args: True)
    straight, turned, dots = orientation.measure(32, 24, 784, calls=4, rounds=1)
    assert calls == [(32, 24)] * 4 and straight > 0 and turned > 0 and dots > 0
    assert owned.count(blas.DOTS) == 4 and blas.dots(1, 1, 1, np.float32)  # (restored)


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
