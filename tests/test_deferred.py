"""Deferred one-sample weight gradients (``kernels.blas.outer_staged``): the compiled engine
keeps up to ``STAGED_ROWS`` samples' rows aside and adds them to an optimizer's sums with one
GEMM; every read of the sums completes them first. Held against the Python walker, which
adds each sample's outer product at once, and against plain NumPy."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.kernels.blas import STAGED_ROWS, flush_staged, outer_staged
from tests.helpers import mnist_network


@pytest.fixture
def executor(monkeypatch):
    def use(name):
        monkeypatch.setenv("FASTGRAPH_EXECUTOR", name)
    return use


def samples(rng, count, dtype=np.float64):
    columns = rng.random((count, 784, 1)).astype(dtype)
    labels = np.eye(10, dtype=dtype)[rng.integers(0, 10, count)][:, :, None]
    return columns, labels


def one_sample_steps(executor, how, steps, dtype=np.float64, reads=(), rule=fg.optimizer.Adam):
    """``steps`` one-sample one_step() calls on the article's network (its first weight,
    784x100, defers); ``reads``: steps after which a read of the sums is checked. Returns
    the optimizer and the gradients read after the last step (get_gradient per parameter)."""
    executor(how)
    graph, x, one_hot, _, _, loss = mnist_network(dtype=dtype, seed=3)
    optimizer = rule(graph, loss, 0.01)
    columns, labels = samples(np.random.default_rng(7), steps, dtype)
    seen = []
    for i in range(steps):
        x.set_value(columns[i])
        one_hot.set_value(labels[i])
        optimizer.one_step()
        if i + 1 in reads:
            seen.append([optimizer.get_gradient(p).copy() for p in optimizer.params])
    return optimizer, seen


@pytest.mark.parametrize("steps", [1, 2, STAGED_ROWS, STAGED_ROWS + 1, 2 * STAGED_ROWS + 5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_deferred_sums_and_update_agree_with_the_walker(executor, steps, dtype):
    results = {}
    for how in ("compiled", "python"):
        # (gradient descent: Adam's m / sqrt(v) turns last-bit differences of gradients
        # near zero into differences of a whole step)
        optimizer, _ = one_sample_steps(executor, how, steps, dtype,
                                        rule=fg.optimizer.GradientDescent)
        gradients = [optimizer.get_gradient(p).copy() for p in optimizer.params]
        optimizer.update()
        results[how] = gradients, [np.asarray(p.value).copy() for p in optimizer.params]
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    for got, want in zip(results["compiled"][0], results["python"][0]):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
    for got, want in zip(results["compiled"][1], results["python"][1]):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.compiled
def test_the_sums_lack_the_staged_samples_until_read(executor):
    """The premise of the other tests: the first weight's additions really wait (without a
    read, the optimizer's own buffer lacks them), and every way of reading completes."""
    optimizer, _ = one_sample_steps(executor, "compiled", 6)
    assert any(found.sums is optimizer._sums for found in optimizer.graph.deferred)
    raw = optimizer._buffer.copy()
    completed = optimizer.gradient_buffer.copy()  # a read: completes
    assert not np.allclose(raw, completed)
    assert not any(found.sums is optimizer._sums for found in optimizer.graph.deferred)
    for read in (lambda o: o.gradient_buffer, lambda o: np.concatenate(
            [s.ravel() for s in o.gradient_sums]), lambda o: np.concatenate(
            [o.get_gradient(p).ravel() * o.samples for p in o.params])):
        optimizer, _ = one_sample_steps(executor, "compiled", 6)
        sums = completed.size - fg.optimizer.SPARE
        np.testing.assert_allclose(read(optimizer)[:sums], completed[:sums], rtol=1e-12)


def test_reads_between_steps_agree_with_the_walker(executor):
    reads = (1, 3, STAGED_ROWS - 1, STAGED_ROWS, STAGED_ROWS + 2)
    _, fast = one_sample_steps(executor, "compiled", STAGED_ROWS + 2, reads=reads)
    _, slow = one_sample_steps(executor, "python", STAGED_ROWS + 2, reads=reads)
    for fast_read, slow_read in zip(fast, slow):
        for got, want in zip(fast_read, slow_read):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_samples_and_batches_mixed_and_the_executor_switched(executor, rng):
    """One-sample steps (deferred), a batch, more samples on the walker, more compiled: the
    sums are the walker's throughout."""
    results = {}
    for how in ("compiled", "python"):
        executor(how)
        graph, x, one_hot, _, _, loss = mnist_network(seed=5)
        optimizer = fg.optimizer.Adam(graph, loss, 0.01)
        columns, labels = samples(np.random.default_rng(11), 80)
        plan = [("one", range(0, 20)), ("batch", range(20, 52)), ("one", range(52, 60)),
                ("walker", range(60, 70)), ("one", range(70, 80))]
        for kind, rows in plan:
            if kind == "batch":
                x.set_value(columns[rows.start:rows.stop, :, 0])
                one_hot.set_value(labels[rows.start:rows.stop, :, 0])
                optimizer.one_step()
                continue
            if kind == "walker":
                executor("python")
            for i in rows:
                x.set_value(columns[i])
                one_hot.set_value(labels[i])
                optimizer.one_step()
            executor(how)
        results[how] = [optimizer.get_gradient(p).copy() for p in optimizer.params]
        assert optimizer.samples == 80
    for got, want in zip(results["compiled"], results["python"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_two_optimizers_sharing_a_node_keep_their_own_sums(executor):
    """Two optimizers of one graph, stepping in turn: the stages belong to the nodes they
    share, so one's deferred samples must never land in the other's sums."""
    results = {}
    for how in ("compiled", "python"):
        executor(how)
        graph, x, one_hot, logits, _, loss = mnist_network(seed=9)
        with graph:
            other_loss = fg.ops.loss.CrossEntropyWithSoftMax(
                fg.ops.Add(logits, logits), one_hot)
        first = fg.optimizer.Adam(graph, loss, 0.01)
        second = fg.optimizer.GradientDescent(graph, other_loss, 0.01)
        columns, labels = samples(np.random.default_rng(13), 40)
        for i in range(40):
            x.set_value(columns[i])
            one_hot.set_value(labels[i])
            (first if i % 3 else second).one_step()
        results[how] = [[o.get_gradient(p).copy() for p in o.params] for o in (first, second)]
    for fast, slow in zip(results["compiled"], results["python"]):
        for got, want in zip(fast, slow):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_a_rewired_target_keeps_the_deferred_samples(executor):
    """A re-wiring that changes the optimizer's parameters lays its sums out anew: what was
    deferred into the old ones is added first, and comes along."""
    results = {}
    for how in ("compiled", "python"):
        executor(how)
        graph = fg.Graph(dtype=np.float64, seed=2)
        with graph:
            x = fg.Variable(dim=(784, 1), init=False, trainable=False)
            label = fg.Variable(dim=(10, 1), init=False, trainable=False)
            hidden = fg.layer.fc(x, 784, 64, "ReLU")
            end = fg.ops.Welding()
            logits = fg.layer.fc(end, 64, 10, None)
            loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, label)
            extra = fg.layer.fc(hidden, 64, 64, "ReLU")
        end.weld(hidden)
        optimizer = fg.optimizer.Adam(graph, loss, 0.01)
        columns, labels = samples(np.random.default_rng(17), 30)
        for i in range(30):
            if i == 12:
                end.weld(extra)  # now through more parameters
            x.set_value(columns[i])
            label.set_value(labels[i])
            optimizer.one_step()
        results[how] = {p.name: optimizer.get_gradient(p).copy() for p in optimizer.params}
    assert results["compiled"].keys() == results["python"].keys()
    for name, want in results["python"].items():
        np.testing.assert_allclose(results["compiled"][name], want, rtol=1e-12, atol=1e-15)


@pytest.mark.compiled
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_kernels_against_numpy(rng, dtype):
    m, n, count = 7, 300, STAGED_ROWS + 3
    a, b = rng.standard_normal((count, 1, m)).astype(dtype), rng.standard_normal(
        (count, 1, n)).astype(dtype)
    stage_a, stage_b = np.zeros((STAGED_ROWS, m), dtype), np.zeros((STAGED_ROWS, n), dtype)
    staged = np.zeros((1, 1), dtype)
    start = rng.standard_normal((m, n)).astype(dtype)
    out = start.copy()
    for k in range(count):
        outer_staged(a[k], b[k], stage_a, stage_b, staged, 1, out, 1.0)
    assert staged[0, 0] == count - STAGED_ROWS  # one GEMM added the first STAGED_ROWS
    partial = start + sum(a[k].T @ b[k] for k in range(STAGED_ROWS))
    tolerance = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out, partial, rtol=tolerance, atol=tolerance)
    flush_staged(stage_a, stage_b, staged, out)
    assert staged[0, 0] == 0
    np.testing.assert_allclose(out, start + sum(a[k].T @ b[k] for k in range(count)),
                               rtol=tolerance, atol=tolerance)
    # defer 0 or beta 0: at once, the stage left alone
    outer_staged(a[0], b[0], stage_a, stage_b, staged, 1, out, 1.0)
    before = out.copy()
    outer_staged(a[1], b[1], stage_a, stage_b, staged, 0, out, 1.0)
    np.testing.assert_allclose(out, before + a[1].T @ b[1], rtol=tolerance, atol=tolerance)
    outer_staged(a[2], b[2], stage_a, stage_b, staged, 1, out, 0.0)
    np.testing.assert_array_equal(out, a[2].T @ b[2])
    assert staged[0, 0] == 1


def test_memory_stays_flat_over_many_deferred_samples(executor):
    """The article's loop, one sample a step and an update every 32: the deferral keeps no
    Python object per step (its stages are node buffers, its pending passes a set)."""
    import gc
    import tracemalloc

    executor("compiled")
    graph, x, one_hot, _, _, loss = mnist_network(dtype=np.float32, seed=1)
    optimizer = fg.optimizer.Adam(graph, loss, 0.001)
    columns, labels = samples(np.random.default_rng(3), 64, np.float32)

    def steps(count):
        for i in range(count):
            x.set_value(columns[i % 64])
            one_hot.set_value(labels[i % 64])
            optimizer.one_step()
            if i % 32 == 31:
                optimizer.update()

    steps(640)
    gc.collect()
    tracemalloc.start()
    steps(3200)  # CPython's free lists fill up
    before = tracemalloc.get_traced_memory()[0]
    steps(6400)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 16 * 1024, f"grew by {after - before} bytes over 6,400 samples"


# -- two graphs: each one's deferred sums are its own ----------------------------------------
class ArticleJob:
    """The article's loop on its network (784x100 defers), one sample a step, an update every
    16 steps, on a graph of its own."""

    STEPS = 800

    def __init__(self, seed):
        graph, self.x, self.one_hot, _, _, loss = mnist_network(dtype=np.float32, seed=seed)
        self.optimizer = fg.optimizer.Adam(graph, loss, 0.001)
        self.columns, self.labels = samples(np.random.default_rng(seed), self.STEPS, np.float32)

    def step(self, i):
        self.x.set_value(self.columns[i])
        self.one_hot.set_value(self.labels[i])
        self.optimizer.one_step()
        if (i + 1) % 16 == 0:
            self.optimizer.update()

    def run(self):
        for i in range(self.STEPS):
            self.step(i)
        return self.weights()

    def weights(self):
        return [np.array(p.value) for p in self.optimizer.params]


def alone():
    return [ArticleJob(seed).run() for seed in (1, 2)]


def assert_same(expected, jobs):
    for want, job in zip(expected, jobs):
        for a, b in zip(want, job.weights()):
            np.testing.assert_array_equal(b, a)


def test_two_graphs_stepped_in_turn_give_each_ones_numbers():
    """One graph's step completed the other's deferred additions early (one process-wide
    list of passes): the same sums grouped otherwise, other last bits."""
    expected = alone()
    jobs = [ArticleJob(1), ArticleJob(2)]
    for i in range(ArticleJob.STEPS):
        for job in jobs:
            job.step(i)
    assert_same(expected, jobs)


def test_two_graphs_trained_in_two_threads_give_each_ones_numbers():
    """From two threads, one graph's step completed the other's deferred additions while
    that one was staging or updating them: samples added twice or lost (weights off by up to
    0.05 after 800 steps)."""
    import threading

    expected = alone()
    for _ in range(3):
        jobs = [ArticleJob(1), ArticleJob(2)]
        start = threading.Barrier(2)
        errors = []

        def train(job, start=start, errors=errors):
            try:
                start.wait(10)
                job.run()
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=train, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        assert_same(expected, jobs)
