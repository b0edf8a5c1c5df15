"""The thread count of training steps: chosen from the steps' own times, or fixed."""

import numba
import numpy as np
import pytest

import fastgraph as fg
from fastgraph import threads as threads_module
from fastgraph.threads import Chooser, threads
from tests.helpers import FakeClock, chosen_counts, in_a_thread, linear_loss


def run(cost, steps, monkeypatch, most=2):
    """The counts chosen when a step on n threads takes ``cost(n)``."""
    return chosen_counts(lambda count, step: cost(count), steps, monkeypatch, most)


def run_between(cost, between, steps, monkeypatch):
    """The counts chosen when a step takes ``cost(count, step)`` and the program spends
    ``between(step)`` before it, outside the optimizer's calls."""
    return chosen_counts(cost, steps, monkeypatch, 2, between)


def test_starts_on_one_thread_then_keeps_the_faster_count(monkeypatch):
    counts, chooser = run(lambda n: 1.0 if n == 2 else 1.6, 100, monkeypatch)
    # one trial of two threads: a first step that wakes them, then eight judged
    assert counts[:8] == [1] * 8 and counts[8:17] == [2] * 9
    assert counts[17:81] == [2] * 64  # they won: one thread is tried again 64 steps later
    assert counts[81:90] == [1] * 9 and counts[90:] == [2] * 10
    assert chooser.medians == pytest.approx([1.6, 1.0])
    counts, _ = run(lambda n: 2.0 if n == 2 else 1.0, 60, monkeypatch)
    assert counts[17:] == [1] * 43  # one thread won and stays


def test_a_trial_that_loses_comes_back_after_twice_the_steps(monkeypatch):
    counts, chooser = run(lambda n: 1.2 if n == 2 else 1.0, 400, monkeypatch)
    trials = [i for i in range(1, len(counts)) if counts[i] == 2 and counts[i - 1] == 1]
    assert trials[:3] == [8, 17 + 64, 17 + 64 + 9 + 128]
    assert chooser.interval == 256


def test_a_count_that_lost_narrowly_is_tried_again_within_1024_steps(monkeypatch):
    """Trials that lose by little cost little: however often two threads lost (here while
    a core was slow, at 1.7 against one thread's 1.6), they come back within 1,024 steps
    once it is fast again (two threads at 1.0 from step 3,000 on), not 4,096 later."""
    counts, chooser = chosen_counts(lambda n, step: 1.6 if n == 1 else 1.7 if step < 3000
                                    else 1.0, 4200, monkeypatch)
    assert counts[:3000].count(2) < 100  # lost every trial while slow
    assert chooser.home == 1  # two threads won the first trial after
    back = next(i for i in range(3000, len(counts)) if counts[i:i + 100] == [2] * 100)
    assert back <= 3000 + 1024 + 2 * 9


def test_a_far_slower_trial_ends_after_one_step_and_waits_its_cost(monkeypatch):
    counts, _ = run(lambda n: 1.0 if n == 1 else 10.0, 2000, monkeypatch)
    # the waking step, then one judged step ends the trial
    assert counts[:8] == [1] * 8 and counts[8:10] == [2, 2] and counts[10] == 1
    trials = [i for i in range(1, len(counts)) if counts[i] == 2 and counts[i - 1] == 1]
    assert all(counts[i:i + 3] == [2, 2, 1] for i in trials)
    # each trial lost 2 x 9 one-thread steps, its waking step's too: 20 x that runs untried
    assert all(later - earlier >= 20 * 18 for earlier, later in zip(trials, trials[1:]))
    lost = 18 * len(trials)
    assert lost / len(counts) <= 1 / 20 + 0.01


def test_a_trials_first_step_is_not_judged(monkeypatch):
    """Two threads that slept since the last trial take long to wake: the first step on
    them is not held against them (it ended trials that two threads would have won)."""
    state = {"last": 1, "steps": 0}

    def cost(count):
        woken = count != state["last"]
        state["last"] = count
        return 50.0 if woken and count == 2 else (1.0 if count == 2 else 1.6)

    counts, chooser = run(cost, 40, monkeypatch)
    assert counts[8:17] == [2] * 9 and counts[17:] == [2] * 23  # the trial ran and won
    assert chooser.medians == pytest.approx([1.6, 1.0])
    assert chooser.interval == 64


def test_what_the_program_does_between_steps_is_no_step_s_time(monkeypatch):
    """A step is timed from the accumulation's first one_step() to its update's end, not
    from the update before: an evaluation between epochs (here 300 steps' time before
    steps 10, 60, 110, ...) landing in the first trial of two threads used to end it as
    far slower, and its cost kept one thread for 20 x that (3,750 steps at 1.6x)."""
    counts, chooser = run_between(lambda n, step: 1.0 if n == 2 else 1.6,
                                  lambda step: 300.0 if step % 50 == 10 else 0.0,
                                  400, monkeypatch)
    assert counts[8:17] == [2] * 9 and chooser.medians == pytest.approx([1.6, 1.0])
    assert counts.count(1) < 50 and chooser.home == 1  # (the later trials of one thread)


def test_an_optimizer_times_its_steps_from_their_first_one_step(monkeypatch):
    graph = fg.Graph()
    _, _, loss = linear_loss(graph)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.01)
    chooser, now, times = optimizer.threads, [0.0], []
    monkeypatch.setattr(chooser, "fixed", False)
    monkeypatch.setattr(chooser, "clock", lambda: now[0])
    monkeypatch.setattr(chooser, "record", times.append)
    for _ in range(3):
        now[0] += 100.0  # feeding, evaluating, ...: before the batch's first one_step()
        for _ in range(2):  # two one_step() calls an update, as the article's loops make
            optimizer.one_step()
            now[0] += 1.5
        optimizer.update()
    assert times == [3.0, 3.0]  # (the first update starts the clock)


def test_the_load_changing_starts_a_trial_at_once(monkeypatch):
    load = {"busy": False}
    counts, chooser = run(lambda n: (5.0 if load["busy"] else 1.0) if n == 2 else 1.5, 25,
                          monkeypatch)
    assert counts[17:] == [2] * 8 and chooser.until_trial > 32  # two threads won
    load["busy"] = True  # another process takes a core: two threads now wait for each other
    clock = FakeClock(lambda n, step: 5.0 if n == 2 else 1.5)
    clock.chooser, chooser.clock = chooser, clock
    seen = [clock.step() for _ in range(24)]
    assert seen[:17] == [2] * 8 + [1] * 9  # not 64 steps later
    # one thread won: two more steps on two threads, one waking them and one 2x as slow as
    # one thread's, confirm it
    assert seen[17:] == [2, 2] + [1] * 5 and chooser.home == 0


def test_a_one_thread_trial_that_beat_a_burst_is_confirmed_before_it_is_kept(monkeypatch):
    """A burst of slow steps on both cores starts a trial at once and inflates the median
    that the trial is judged against: a trial of one thread that wins then is held to the
    two threads' next steps, and keeps them where the burst has passed."""
    def cost(count, step):
        if count == 1:
            return 1.6
        return 3.0 if 20 <= step < 36 else 1.0  # a burst at steps 20-35, on two threads

    counts, chooser = chosen_counts(cost, 120, monkeypatch, 2)
    assert counts[17:25] == [2] * 8  # two threads won the first trial; then the burst
    assert counts[25:34] == [1] * 9  # the load changed: one thread tried at once, and won
    assert counts[34:] == [2] * (120 - 34)  # two threads again, faster: kept, not 64 steps
    assert chooser.home == 1 and chooser.medians == pytest.approx([1.6, 1.0])
    assert chooser.interval == 128  # the trial counts as lost


def test_a_fixed_count_or_one_core_never_tries_another(monkeypatch):
    counts, _ = run(lambda n: 1.0 if n == 1 else 0.1, 100, monkeypatch, most=1)
    assert set(counts) == {1}
    monkeypatch.setattr(threads, "fixed", 2)
    monkeypatch.setattr(threads, "most", 2)
    clock = FakeClock(lambda n, step: 1.0 if n == 1 else 5.0)
    clock.chooser = Chooser(clock)
    clock.chooser.tick()
    assert {clock.step() for _ in range(100)} == {2}


def _preparing_chooser(prepare, cost, monkeypatch):
    """A fake clock with a chooser on two cores whose ``before_more_threads`` is
    ``prepare``, its steps timed by ``cost(count, step)``, the clock started."""
    monkeypatch.setattr(threads_module, "before_more_threads", [prepare])
    monkeypatch.setattr(threads, "most", 2)
    monkeypatch.setattr(threads, "fixed", None)
    monkeypatch.setattr(threads, "use", lambda count: None)
    clock = FakeClock(cost)
    clock.chooser = Chooser(clock)
    clock.chooser.tick()
    return clock


def test_what_more_threads_need_is_compiled_before_their_trial_untimed(monkeypatch):
    """``before_more_threads`` runs once as each trial of two threads begins (never for
    one thread's steps), and the time it takes (compiling, on an empty cache) is in no
    step's: the trial's first step is as long as waking the threads made it, and a trial
    that loses waits the steps its own cost asks for."""
    prepared = []

    def compile_forms():
        prepared.append(clock.steps)
        clock.now += 100.0  # a compile: 100 one-thread steps
        return True

    clock = _preparing_chooser(compile_forms, lambda n, step: 1.2 if n == 2 else 1.0,
                               monkeypatch)  # two threads lose
    counts = [clock.step() for _ in range(300)]
    trials = [i for i in range(1, len(counts)) if counts[i] == 2 and counts[i - 1] == 1]
    assert prepared == trials[:len(prepared)] and len(prepared) == len(trials) >= 2
    assert trials[:2] == [8, 17 + 64]  # as without it: the first loss waits 64 steps
    assert clock.chooser.medians == pytest.approx([1.0, 1.2])


def test_a_trial_waits_on_one_thread_while_what_it_needs_compiles_elsewhere(monkeypatch):
    """``before_more_threads`` saying not yet (the compile worker is still at the parallel
    update): the steps stay on one thread, untimed by it, and it is asked again 8 steps
    later, until it is ready; the trial then runs as it would have."""
    asked, ready_at = [], 40

    def compiled_elsewhere():
        asked.append(clock.steps)
        return clock.steps >= ready_at

    clock = _preparing_chooser(compiled_elsewhere, lambda n, step: 1.0 if n == 2 else 1.6,
                               monkeypatch)  # two threads win
    counts = [clock.step() for _ in range(70)]
    assert asked == [8, 16, 24, 32, 40]  # (a step: 8 of one thread's, a median, then asked)
    assert counts[:40] == [1] * 40 and counts[40:49] == [2] * 9 and counts[49:] == [2] * 21
    assert clock.chooser.medians == pytest.approx([1.6, 1.0]) and clock.chooser.home == 1


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_a_bad_fastgraph_threads_is_named(monkeypatch, text):
    monkeypatch.setenv("FASTGRAPH_THREADS", text)
    with pytest.raises(ValueError, match=f"FASTGRAPH_THREADS='{text}'.*'auto' or a positive"):
        threads_module._requested()


def test_use_sets_mkl_and_numba_together(monkeypatch):
    from fastgraph.kernels import blas

    monkeypatch.setattr(threads, "most", min(2, numba.config.NUMBA_NUM_THREADS))
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
        if blas.BACKEND == "mkl":
            assert get() == threads.most
        assert threads.current == min(threads.most, numba.config.NUMBA_NUM_THREADS)
    finally:
        threads.use(before or threads.most)


def test_training_gives_the_same_numbers_on_one_thread_and_on_every_core(monkeypatch):
    """The MLP's products are split along rows and columns only: the counts agree bit for
    bit, so a chooser that switches does not change a run."""
    monkeypatch.setattr(threads, "most", min(2, numba.config.NUMBA_NUM_THREADS))

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


def test_an_optimizer_times_its_steps_from_update_to_update(monkeypatch):
    monkeypatch.setattr(threads, "most", 2)
    monkeypatch.setattr(threads, "fixed", None)
    model = fg.models.mlp(4, (3,), 2, seed=0)
    optimizer = fg.optimizer.GradientDescent(model.graph, model.loss, 0.1)
    model.x.set_value(np.ones((5, 4), np.float32))
    model.one_hot.set_value(np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 1]])
    for _ in range(6):
        optimizer.one_step()
        optimizer.update()
    assert len(optimizer.threads.times) == 5  # the first update starts the clock
    assert all(seconds > 0 for seconds in optimizer.threads.times)
    assert threads.current == 1  # a trial of two threads starts after 8 steps


def test_each_result_node_has_its_own_thread_chooser():
    """fg.jacobian / fg.per_sample_gradients time each result node's calls apart (a LeNet's
    Jacobians and an MLP's would mix times 20x apart); a keyword call finds the same
    chooser; a node that is gone takes its chooser with it."""
    import gc

    rng = np.random.default_rng(0)
    small = fg.models.mlp(6, (4,), 3, seed=0)
    large = fg.models.mlp(8, (5,), 3, seed=1)
    for model, width in ((small, 6), (large, 8)):
        model.x.set_value(rng.random((2, width)).astype(np.float32))
        model.one_hot.set_value(np.eye(3, dtype=np.float32)[[0, 2]])
        fg.jacobian(model.logits, model.x)
    choosers = fg.jacobian.choosers
    assert small.logits in choosers and large.logits in choosers
    assert choosers[small.logits] is not choosers[large.logits]
    mine = choosers[small.logits]
    gc.collect()  # (nodes of earlier tests that are gone leave now, not below)
    count = len(choosers)
    fg.jacobian(result=small.logits, wrt=small.x)
    assert choosers[small.logits] is mine and len(choosers) == count
    fg.per_sample_gradients(loss=large.loss, params=[large.x])
    assert large.loss in fg.per_sample_gradients.choosers
    del small, model, mine
    gc.collect()
    assert len(choosers) == count - 1 and large.logits in choosers


def _counts():
    """The calling thread's (Numba, MKL) kernel thread counts."""
    from fastgraph.kernels import blas

    mkl = None
    if blas.BACKEND == "mkl":
        import ctypes

        get = ctypes.CDLL(blas.LIBRARY).MKL_Get_Max_Threads
        get.restype = ctypes.c_int
        mkl = get()
    return numba.get_num_threads(), mkl


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_counts_are_each_python_threads_own(monkeypatch):
    """One process-wide 'current' count: a thread whose count differed from it was never
    set (Numba's count is per thread), and one thread's MKL count was every thread's."""
    from fastgraph.kernels import blas

    monkeypatch.setattr(threads, "most", 2)
    before = threads.current
    try:
        threads.use(1)
        other = in_a_thread(lambda: (threads.use(2), _counts(), threads.current)[1:])
        assert other == ((2, 2 if blas.BACKEND == "mkl" else None), 2)
        assert _counts() == (1, 1 if blas.BACKEND == "mkl" else None)  # not the other's
        assert threads.current == 1
        assert in_a_thread(lambda: threads.current) is None  # a new thread has set none
    finally:
        threads.use(before or threads.most)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_a_fixed_count_holds_in_a_thread_that_only_computes(monkeypatch, rng):
    """FASTGRAPH_THREADS=1: a new Python thread ran its kernels on every core (Numba starts a
    thread at all of them), until an optimizer there set the count."""
    monkeypatch.setattr(threads, "fixed", 1)
    monkeypatch.setattr(threads, "most", 1)
    with fg.Graph() as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((2, 3), init=True)
        out = fg.ops.MatMul(w, x)
    x.set_value(rng.normal(size=(4, 3, 1)))

    def forward_then_count():
        out.forward()
        return _counts()

    numba_count, mkl_count = in_a_thread(forward_then_count)
    assert numba_count == 1 and mkl_count in (1, None)
    loss = fg.ops.Dot(out, out, graph=graph)
    optimizer = fg.optimizer.GradientDescent(graph, loss)

    def step_then_count():
        optimizer.one_step()
        return _counts()

    assert in_a_thread(step_then_count)[0] == 1
