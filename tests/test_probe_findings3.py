"""What a probe of the interrupt-safety changes found (helper hC, 2026-12-01): mutants of
them that no test killed, a half-applied update of two kernels, and a rule overriding
apply() that read its gradient."""

import signal
import threading

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines import compiled
from fastgraph.graph import GraphInUse
from tests.helpers import one_sample_mlp


def _linear(dtype=np.float64):
    graph = fg.Graph(dtype=dtype, seed=1)
    with graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        out = fg.ops.Tanh(fg.ops.MatMul(fg.Variable((2, 3), init=True), x))
    return graph, x, out


def test_a_batch_of_one_is_refused_while_another_thread_holds_the_graph():
    """(mutant N2: the batch-of-one short path without its `not graph.claims`)"""
    graph, x, out = _linear()
    x.set_value(np.ones((1, 3)))  # holds a batch of one: the short path is open
    held, done = threading.Event(), threading.Event()

    def hold():
        graph.claim("test")
        held.set()
        done.wait()
        graph.release()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    try:
        with pytest.raises(GraphInUse):
            x.set_value(np.full((1, 3), 2.0))
        with pytest.raises(GraphInUse):
            x.set_value(np.full((1, 3, 1), 2.0))
    finally:
        done.set()
        thread.join()
    np.testing.assert_array_equal(x.value, np.ones((1, 3, 1)))


def test_a_node_that_is_its_parents_child_twice_is_rewired_with_the_right_counts():
    """(mutants W11, W12: the children fixed once per distinct parent) Add(x, x) re-wired
    to (z, z), then (x, z), then back: each parent lists the node as often as it is a
    parent, and the values follow."""
    graph = fg.Graph(dtype=np.float64)
    with graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        z = fg.Variable((2, 1), trainable=False, name="z")
        other = fg.ops.Tanh(x, name="other")
        s = fg.ops.Add(x, x, name="s")
        out = fg.ops.Tanh(s)
    x.set_value(np.array([[1.0], [2.0]]))
    z.set_value(np.array([[10.0], [20.0]]))
    for parents, expected in (([z, z], [20.0, 40.0]), ([x, z], [11.0, 22.0]),
                              ([x, x], [2.0, 4.0]), ([x, x], [2.0, 4.0])):
        graph.rewire(s, parents)
        assert [list(p.children).count(s) for p in (x, z)] == \
            [parents.count(x), parents.count(z)]
        out.forward()
        np.testing.assert_array_equal(np.asarray(s.value).ravel(), expected)
    assert list(x.children)[0] is other  # the other child keeps its place


def test_a_childless_node_rewired_from_a_parameter_to_an_input_is_batched():
    """(mutant W6: node.batched not updated by the re-wiring)"""
    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        w = fg.Variable((2, 1), init=True, name="w")
        x = fg.Variable((2, 1), trainable=False, name="x")
        t = fg.ops.Tanh(w)
    t.forward()
    assert not t.batched and t.value.shape == (2, 1)
    graph.rewire(t, [x])
    x.set_value(np.full((3, 2, 1), 0.5))
    t.forward()
    assert t.batched
    np.testing.assert_array_equal(t.value, np.tanh(np.full((3, 2, 1), 0.5)))


def _params(graph):
    return [np.asarray(node.value).copy() for node in graph.nodes
            if isinstance(node, fg.Variable) and node.trainable]


@pytest.mark.compiled
def test_a_one_sample_one_step_stopped_leaves_nothing_of_its_deferred_sums(monkeypatch):
    """(mutant O2: one_step()'s KeyboardInterrupt handler without complete()) The one-sample
    steps defer a part of their sums: a one_step() stopped as its pass returns drops the
    accumulation, and its deferred part must not land in the next one."""
    rng = np.random.default_rng(0)
    samples = [(rng.random((784, 1)), np.eye(10)[k].reshape(10, 1)) for k in range(5)]

    def run(interrupt):
        graph, x, y, loss = one_sample_mlp()
        optimizer = fg.optimizer.GradientDescent(graph, loss, 0.05)
        for k, (features, labels) in enumerate(samples):
            x.set_value(features)
            y.set_value(labels)
            if interrupt and k == 2:
                def run_then_stop(self, *args, real=compiled.Pass.run, **kwargs):
                    real(self, *args, **kwargs)
                    raise KeyboardInterrupt

                with monkeypatch.context() as patch:
                    patch.setattr(compiled.Pass, "run", run_then_stop)
                    with pytest.raises(KeyboardInterrupt):
                        optimizer.one_step()
                continue
            if not interrupt and k < 3:
                continue  # the clean run's accumulation starts where the stopped one does
            optimizer.one_step()
        optimizer.update()
        return _params(graph)

    for got, expected in zip(run(True), run(False), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.compiled
def test_a_completion_stopped_as_another_optimizer_defers_loses_nothing(monkeypatch):
    """(mutant P2: _deferring forgets the other pass before completing it) Two optimizers
    of one graph step one sample at a time; the second's deferring completes the first's
    pending sums: a Ctrl-C as that completion starts must leave them pending."""
    rng = np.random.default_rng(1)
    samples = [(rng.random((784, 1)), np.eye(10)[k].reshape(10, 1)) for k in range(3)]

    def run(interrupt):
        graph, x, y, loss = one_sample_mlp()
        first = fg.optimizer.GradientDescent(graph, loss, 0.05)
        second = fg.optimizer.GradientDescent(graph, loss, 0.05)
        for features, labels in samples:
            x.set_value(features)
            y.set_value(labels)
            first.one_step()
        assert graph.deferred
        x.set_value(samples[0][0])
        y.set_value(samples[0][1])
        second.one_step()
        if interrupt:
            with monkeypatch.context() as patch:
                patch.setattr(compiled.Pass, "complete",
                              lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
                with pytest.raises(KeyboardInterrupt):
                    second.one_step()  # first=False: defers, completing the first's first
        return [first.get_gradient(p).copy() for p in first.params]

    for got, expected in zip(run(True), run(False), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_a_failed_save_removes_only_its_own_temporary(monkeypatch, tmp_path):
    """(mutant F1: the name of another's file kept in `made` after FileExistsError)"""
    from fastgraph import files

    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    target = tmp_path / "model.bin"
    theirs = tmp_path / ".model.bin.aaaaaaaaaaaa.tmp"
    theirs.write_bytes(b"another writer's")

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="cannot write"):
        files._write_beside(target, b"payload")
    assert theirs.read_bytes() == b"another writer's"
    assert not (tmp_path / ".model.bin.bbbbbbbbbbbb.tmp").exists()


def test_npz_bytes_raises_a_genuine_value_error_as_it_is():
    """(mutant S2: every ValueError taken for a Ctrl-C masked by the zip's close)"""
    from fastgraph import saver

    with pytest.raises(ValueError, match="allow_pickle"):
        saver._npz_bytes({"a": np.array([None, 1], dtype=object)})


def test_the_macro_averages_count_a_class_that_occurs_only_in_the_labels():
    """(mutant R3: the classes seen taken from the predictions alone)"""
    result = fg.metrics.precision_recall_f1([0, 1, 2], [0, 0, 2])
    assert result["macro"]["recall"] == pytest.approx(2 / 3)
    assert result["macro"]["precision"] == pytest.approx((0.5 + 0 + 1) / 3)
    result = fg.metrics.precision_recall_f1([0, 0, 2], [0, 1, 2])
    assert result["macro"]["precision"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("conventions", ["torch", "article"])
def test_an_update_of_two_kernels_stopped_after_the_first_is_an_update_done(
        monkeypatch, conventions):
    """(finding M1) Adam runs one kernel per group of parameters when a parameter joined
    later (torch: its own step count; the article: its first update): a Ctrl-C as the
    first returns must still leave the update done, every parameter updated."""
    from fastgraph.kernels import optimizers as rule_kernels
    from tests.helpers import welded_tanh

    def setup():
        graph, x, target, weld, branches, params, loss = welded_tanh(np.random.default_rng(0))
        optimizer = fg.optimizer.Adam(graph, loss, 0.05, conventions=conventions)
        x.set_value(np.array([[0.5], [-1.0]]))
        target.set_value(np.array([[0.2]]))
        optimizer.one_step()
        optimizer.update()
        weld.weld(branches[1])  # u joins
        optimizer.one_step()
        return optimizer, params

    optimizer, params = setup()
    real, calls = rule_kernels.adam, []

    def adam(*args):  # a real Ctrl-C (SIGINT) as the first of the two kernels returns
        real(*args)
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(rule_kernels, "adam", adam)
    # Python's own Ctrl-C handler, as in a terminal: a process started in the background
    # by a shell without job control (`cmd &`) starts with SIGINT ignored, and there the
    # signal raised here is dropped (the update ran whole, and nothing was raised).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            optimizer.update()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 2  # both ran before the KeyboardInterrupt was raised
    monkeypatch.setattr(rule_kernels, "adam", real)
    clean, clean_params = setup()
    clean.update()
    for got, expected in zip(params, clean_params, strict=True):
        np.testing.assert_array_equal(np.asarray(got.value), np.asarray(expected.value))
    assert optimizer.samples == 0 and optimizer.steps == clean.steps


def test_a_rule_overriding_apply_reads_its_gradient():
    """(finding M2, a regression of the update's reordering) a rule written as a subclass
    whose apply() reads get_gradient() found the samples already counted out."""

    class PlainSGD(fg.optimizer.Optimizer):
        def apply(self, table, gradients, scale):
            for param in self.params:
                param.set_value(param.value - self.learning_rate * self.get_gradient(param))

    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        x = fg.Variable((2, 1), trainable=False)
        y = fg.Variable((1, 1), trainable=False)
        w = fg.Variable((1, 2), init=True)
        loss = fg.ops.loss.MeanSquaredError(fg.ops.MatMul(w, x), y)
    optimizer = PlainSGD(graph, loss, 0.1)
    x.set_value(np.ones((4, 2, 1)))
    y.set_value(np.ones((4, 1, 1)))
    optimizer.one_step()
    gradient = optimizer.get_gradient(w).copy()
    before = w.value.copy()
    optimizer.update()
    assert optimizer.steps == 1 and optimizer.samples == 0
    np.testing.assert_allclose(w.value, before - 0.1 * gradient)


def test_a_packing_stopped_leaves_no_archive_that_fails_when_collected(monkeypatch):
    """(mutant S1: the dropped archive keeps its file: collected, its close() raised
    "Exception ignored in ZipFile.__del__")"""
    import gc
    import sys
    import zipfile

    from fastgraph import saver

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    monkeypatch.setattr(zipfile._ZipWriteFile, "close",
                        lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        saver._npz_bytes({"a": np.zeros(3)})
    gc.collect()
    assert ignored == []


def test_a_claim_after_another_threads_sets_its_own_thread_count(monkeypatch):
    """(finding L1) claim() read the count before taking the lock: a thread that read
    another's claim, then took the lock the other let go, skipped threads.here() (its
    fixed thread count, FASTGRAPH_THREADS=N). The outermost claim is decided holding the
    lock now."""
    from fastgraph import graph as graph_module

    graph = fg.Graph(dtype=np.float64)
    with graph:
        x = fg.Variable((2, 1), trainable=False)
        fg.ops.Tanh(x)
    called = []
    monkeypatch.setattr(graph_module.threads, "here",
                        lambda: called.append(threading.current_thread().name))
    real = graph._user
    a_holds, b_at_lock, a_let_go = threading.Event(), threading.Event(), threading.Event()

    class Lock:  # B's acquire waits, between its read of the count and the lock, for A
        def __getattr__(self, name):
            return getattr(real, name)

        def acquire(self, blocking=True):
            if threading.current_thread().name == "B":
                b_at_lock.set()
                a_let_go.wait()
            return real.acquire(blocking)

    def a():
        graph.claim("A")
        a_holds.set()
        b_at_lock.wait()
        graph.release()
        a_let_go.set()

    def b():
        a_holds.wait()
        graph.claim("B")
        graph.release()

    graph._user = Lock()
    threads_ = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for thread in threads_:
        thread.start()
    for thread in threads_:
        thread.join(timeout=10)
    graph._user = real
    assert called == ["A", "B"]
