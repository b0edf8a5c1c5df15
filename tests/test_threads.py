"""The thread count of training steps: chosen from the steps' own times, or fixed."""

import numba
import numpy as np
import pytest

import fastgraph as fg
from fastgraph import threads as threads_module
from fastgraph.threads import Chooser, threads


class FakeClock:
    """A clock whose steps take what ``cost(count)`` says for the thread count in use."""

    def __init__(self, chooser_cost):
        self.now, self.cost, self.chooser = 0.0, chooser_cost, None

    def __call__(self):
        return self.now

    def step(self):
        started = self.chooser.begin()
        count = self.chooser.count
        self.now += self.cost(count)
        self.chooser.end(started, complete=True)
        return count


def run(cost, steps, monkeypatch, most=2):
    monkeypatch.setattr(threads, "most", most)
    monkeypatch.setattr(threads, "fixed", None)
    monkeypatch.setattr(threads, "use", lambda count: None)
    clock = FakeClock(cost)
    clock.chooser = Chooser(clock)
    return [clock.step() for _ in range(steps)], clock.chooser


def test_starts_on_every_core_then_keeps_the_faster_count(monkeypatch):
    counts, chooser = run(lambda n: 1.0 if n == 2 else 1.6, 200, monkeypatch)
    assert counts[:8] == [2] * 8 and counts[8:16] == [1] * 8  # one trial of one thread
    assert counts[16:80] == [2] * 64  # one thread lost: the next trial comes 64 steps later
    assert chooser.medians == pytest.approx([1.0, 1.6])
    counts, _ = run(lambda n: 3.0 if n == 2 else 1.0, 40, monkeypatch)
    assert counts[16:] == [1] * 24  # one thread won and stays


def test_a_trial_that_loses_comes_back_after_twice_the_steps(monkeypatch):
    counts, chooser = run(lambda n: 1.0 if n == 2 else 1.2, 400, monkeypatch)
    trials = [i for i in range(1, len(counts)) if counts[i] == 1 and counts[i - 1] == 2]
    assert trials[:3] == [8, 16 + 64, 16 + 64 + 8 + 128]
    assert chooser.interval == 256


def test_a_far_slower_trial_ends_after_two_steps(monkeypatch):
    counts, _ = run(lambda n: 1.0 if n == 1 else 10.0, 30, monkeypatch)
    # two threads first (8 steps, the only measure of them), then one thread wins for good
    assert counts[:8] == [2] * 8 and counts[8:] == [1] * 22
    counts, _ = run(lambda n: 1.0 if n == 2 else 10.0, 30, monkeypatch)
    assert counts[8:10] == [1, 1] and counts[10:] == [2] * 20  # the trial ended early


def test_the_load_changing_starts_a_trial_at_once(monkeypatch):
    load = {"busy": False}
    counts, chooser = run(lambda n: (5.0 if load["busy"] else 1.0) if n == 2 else 1.5, 24,
                          monkeypatch)
    assert counts[16:] == [2] * 8 and chooser.until_trial > 32  # two threads won
    load["busy"] = True  # another process takes a core: two threads now wait for each other
    clock = FakeClock(lambda n: 5.0 if n == 2 else 1.5)
    clock.chooser, chooser.clock = chooser, clock
    seen = [clock.step() for _ in range(24)]
    assert seen[:8] == [2] * 8 and seen[8:] == [1] * 16  # not 64 steps later


def test_a_fixed_count_or_one_core_never_tries_another(monkeypatch):
    counts, _ = run(lambda n: 1.0 if n == 1 else 0.1, 100, monkeypatch, most=1)
    assert set(counts) == {1}
    monkeypatch.setattr(threads, "fixed", 2)
    monkeypatch.setattr(threads, "most", 2)
    clock = FakeClock(lambda n: 1.0 if n == 1 else 5.0)
    clock.chooser = Chooser(clock)
    assert {clock.step() for _ in range(100)} == {2}


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_a_bad_fastgraph_threads_is_named(monkeypatch, text):
    monkeypatch.setenv("FASTGRAPH_THREADS", text)
    with pytest.raises(ValueError, match=f"FASTGRAPH_THREADS='{text}'.*'auto' or a positive"):
        threads_module._requested()


def test_use_sets_mkl_and_numba_together():
    from fastgraph.kernels import blas

    before = threads.current
    try:
        threads.use(1)
        assert numba.get_num_threads() == 1
        if blas.BACKEND == "mkl":
            import ctypes

            get = ctypes.CDLL(blas.LIBRARY).MKL_Get_Max_Threads
            get.restype = ctypes.c_int
            assert get() == 1
            threads.use(threads.most)
            assert get() == threads.most
        assert threads.current == min(threads.most, numba.config.NUMBA_NUM_THREADS)
    finally:
        threads.use(before or threads.most)


def test_training_gives_the_same_numbers_on_one_thread_and_on_every_core():
    """The MLP's products are split along rows and columns only: the counts agree bit for
    bit, so a chooser that switches does not change a run."""
    def train(count):
        threads.use(count)
        model = fg.models.mlp(784, (100, 20), 10, seed=3)
        optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
        optimizer.threads.fixed = True
        optimizer.threads.counts = (count, count)
        rng = np.random.default_rng(0)
        for _ in range(5):
            model.x.set_value(rng.random((64, 784), np.float32))
            model.one_hot.set_value(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)])
            optimizer.one_step()
            optimizer.update()
        return [p.value.copy() for p in optimizer.params]

    try:
        for a, b in zip(train(1), train(threads.most)):
            np.testing.assert_array_equal(a, b)
    finally:
        threads.use(threads.most)
