"""One graph, two threads: a thread that feeds, computes or updates a graph while another
thread is doing so is refused with ``GraphInUse``, and nothing of the graph changes; one
thread after another is how a graph moves between threads, and works."""

import re
import threading

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.datasets import Batches
from tests.helpers import Holder


def _network(rng):
    with fg.Graph(dtype=np.float64, seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        label = fg.Variable((2, 1), trainable=False, name="label")
        w = fg.Variable((2, 3), name="w")
        w.set_value(rng.normal(size=(2, 3)))
        logits = fg.ops.MatMul(w, x, name="logits")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, label, name="loss")
    return graph, x, label, w, logits, loss


@pytest.mark.parametrize("one_sample", [False, True], ids=["batch", "one sample"])
def test_every_use_from_a_second_thread_is_refused_and_changes_nothing(rng, one_sample):
    graph, x, label, w, logits, loss = _network(rng)
    if one_sample:  # the article's loop: one sample into inputs that hold one (short path)
        x.set_value(rng.normal(size=(3, 1)))
        label.set_value(np.array([[1.0], [0.0]]))
    else:
        x.set_value(rng.normal(size=(4, 3, 1)))
        label.set_value(np.eye(2)[[0, 1, 1, 0]][..., None])
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    optimizer.one_step()  # a gradient to update with
    loss.forward()
    before = {node.name: np.array(node.flat) for node in (x, label, w, logits, loss)}
    batches = Batches(np.ones((8, 3)), np.arange(8) % 2, 4, classes=2)
    uses = [
        ("x.set_value", lambda: x.set_value(np.ones((3, 1)) if one_sample
                                            else np.ones((4, 3, 1)))),
        ("set_values", lambda: fg.set_values([x], np.ones((1, 5, 3, 1)))),
        # into inputs of its batch size it gathers itself; into others it sets them: one use
        ("Batches.feed", lambda: next(batches.feed(x, label))),
        ("logits.forward", logits.forward),
        ("GradientDescent.one_step", optimizer.one_step),
        ("GradientDescent.update", optimizer.update),
        ("x.backward", lambda: x.backward(logits)),
        ("per_sample_gradients of loss", lambda: fg.per_sample_gradients(loss=loss, params=w)),
        ("jacobian of logits", lambda: fg.jacobian(logits, [x, w], chunk_size=1)),
    ]
    with Holder(graph):
        for what, use in uses:
            with pytest.raises(fg.GraphInUse, match=rf"^{what}: Graph\(5 nodes, "
                                                     r"dtype=float64\) is in use by another "
                                                     r"thread .* give each thread its own graph"):
                use()
    assert optimizer.samples == (1 if one_sample else 4) and optimizer.steps == 0
    for node in (x, label, w, logits, loss):
        np.testing.assert_array_equal(node.flat, before[node.name], err_msg=node.name)
    # the holder has let go: the main thread uses the graph as before
    optimizer.update()
    assert optimizer.steps == 1
    assert not np.array_equal(w.flat, before["w"])
    logits.forward()


def test_a_graph_moves_between_threads_one_after_another(rng):
    """Built in one thread, trained in another, evaluated in the first: each use in turn."""
    graph, x, label, w, logits, loss = _network(rng)
    x.set_value(rng.normal(size=(4, 3, 1)))
    label.set_value(np.eye(2)[[0, 1, 1, 0]][..., None])
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    errors = []

    def train():
        try:
            for _ in range(5):
                optimizer.one_step()
                optimizer.update()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    worker = threading.Thread(target=train)
    worker.start()
    worker.join(60)
    assert not errors and optimizer.steps == 5
    loss.forward()
    assert np.isfinite(loss.flat).all()


class _Waiting(fg.ops.base.Operator):
    """The identity, which waits in its forward until told to go on: a pass caught in the
    middle, with the graph claimed by the thread that runs it."""

    arity = 1

    def infer_dim(self):
        return self.parents[0].dim

    def compute(self):
        self.graph.waiting.set()
        assert self.graph.go.wait(30)
        np.copyto(self.output(), self.parents[0].flat)

    def vjp(self, slot, upstream):
        return upstream

    def dense_jacobian(self, slot):
        return self.identity()


def test_a_feed_during_another_threads_pass_is_refused_and_the_pass_is_right(rng, monkeypatch):
    """Before the claim, the feed wrote the batch under the pass, which computed from both."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", "python")  # an operator of Python, no kernels
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        doubled = fg.ops.Add(_Waiting(x), _Waiting(x))
    graph.waiting, graph.go = threading.Event(), threading.Event()
    batch = rng.normal(size=(4, 3, 1))
    x.set_value(batch)
    pass_ = threading.Thread(target=doubled.forward)
    pass_.start()
    try:
        assert graph.waiting.wait(30)  # the pass is inside its first _Waiting
        with pytest.raises(fg.GraphInUse, match=r"^x.set_value: .* in use by another thread"):
            x.set_value(np.zeros((4, 3, 1)))
        with pytest.raises(fg.GraphInUse, match=r"^Add:\d+.forward: "):
            doubled.forward()
    finally:
        graph.go.set()
        pass_.join(30)
    np.testing.assert_array_equal(doubled.value, 2 * batch)


def test_saving_and_loading_while_another_thread_holds_the_graph_are_refused(rng, tmp_path):
    """A save read the parameters while another thread's update wrote them (a file of no
    one moment); a load wrote them under another thread's pass."""
    from fastgraph import saver

    graph, x, label, w, logits, loss = _network(rng)
    before = np.array(w.flat)
    with Holder(graph):
        with pytest.raises(fg.GraphInUse, match=r"model.fgz: saving the graph: Graph\(5 nodes"):
            saver.save(tmp_path / "model.fgz", graph)
        with pytest.raises(fg.GraphInUse, match=r"^Saver.save: .* another thread"):
            saver.Saver(tmp_path).save(graph)
    assert list(tmp_path.iterdir()) == []  # nothing written
    saver.save(tmp_path / "model.fgz", graph)
    saver.Saver(tmp_path).save(graph)
    w.set_value(np.zeros((2, 3)))
    with Holder(graph):
        with pytest.raises(fg.GraphInUse, match=r"^Saver.load: .* another thread"):
            saver.Saver(tmp_path).load(graph)
    np.testing.assert_array_equal(w.flat, 0)  # not restored under the holder
    saver.Saver(tmp_path).load(graph)
    np.testing.assert_array_equal(w.flat, before)


def test_one_sample_into_a_graph_this_thread_holds_is_set(rng):
    """The short path of set_value takes no claim; while a claim is held (here by this
    thread, as a pass of its own would) it goes by the claimed path, which sets it too."""
    graph, x, label, w, logits, loss = _network(rng)
    x.set_value(np.zeros((3, 1)))
    sample = rng.normal(size=(3, 1))
    graph.claim("a use of this thread")
    try:
        x.set_value(np.asmatrix(sample))
        logits.forward()
    finally:
        graph.release()
    np.testing.assert_array_equal(np.asarray(x.value), sample)
    np.testing.assert_allclose(np.asarray(logits.value), w.value @ sample)
    assert graph.claims == 0


def test_building_rewiring_resetting_and_reading_are_refused_too(rng):
    """A node added under another thread's pass changed the graph's arrays under it; a
    weld, a reset, a gradient read or a metric's forward were not checked either."""
    graph, x, label, w, logits, loss = _network(rng)
    x.set_value(rng.normal(size=(4, 3, 1)))
    label.set_value(np.eye(2)[[0, 1, 1, 0]][..., None])
    with graph:
        end = fg.ops.Welding(name="end")
        end.weld(logits)
        other = fg.ops.ReLU(logits, name="other")
        accuracy = fg.ops.metrics.Accuracy(logits, label, name="accuracy")
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    optimizer.one_step()
    count = graph.node_count()
    uses = [
        ("adding Variable", lambda: fg.Variable((2, 1), graph=graph)),
        ("adding MatMul", lambda: fg.ops.MatMul(w, x)),
        ("weld", lambda: end.weld(other)),
        ("rewire", lambda: graph.rewire(end, [other])),
        ("reset_value", graph.reset_value),
        ("logits.reset_value", logits.reset_value),
        ("GradientDescent.get_gradient", lambda: optimizer.get_gradient(w)),
        ("accuracy.forward", accuracy.forward),
        ("set_values", lambda: fg.set_values([x], np.ones((1, 3, 1)))),  # one sample: one use
    ]
    with Holder(graph):
        for what, use in uses:
            with pytest.raises(fg.GraphInUse, match=rf"^{what}: Graph\(\d+ nodes"):
                use()
    assert graph.node_count() == count and end.parents == [logits]
    assert accuracy.value is None  # counted nothing
    fg.Variable((2, 1), graph=graph)  # and all of them work once the holder let go
    end.weld(other)
    accuracy.forward()
    assert accuracy.value is not None


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="two threads")
def test_a_fixed_thread_count_holds_in_a_thread_that_feeds_or_steps_on_the_walker(rng,
                                                                                  monkeypatch):
    """FASTGRAPH_THREADS=1: a step of engine="python" or a feed in a new thread ran on every
    core until that thread's first update()."""
    import numba

    from fastgraph.threads import threads

    monkeypatch.setattr(threads, "fixed", 1)
    monkeypatch.setattr(threads, "most", 1)
    graph, x, label, w, logits, loss = _network(rng)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1, engine="python")
    seen = {}

    def work():
        fg.set_values([x], rng.normal(size=(1, 4, 3, 1)))
        seen["feed"] = numba.get_num_threads()
        label.set_value(np.eye(2)[[0, 1, 1, 0]][..., None])
        optimizer.one_step()
        seen["step"] = numba.get_num_threads()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert seen == {"feed": 1, "step": 1}


@pytest.mark.parametrize("call, message", [
    ("update", r"update\(\) needs a gradient: call one_step\(\) first"),
    ("get_gradient", r"no gradient accumulated: call one_step\(\) first"),
])
def test_a_gradient_is_looked_for_holding_the_graph(rng, call, message):
    """update() saw a gradient, then another thread's update() ended it before this one held
    the graph: it counted a step and divided by 0 samples (ZeroDivisionError)."""
    graph, x, label, w, logits, loss = _network(rng)
    x.set_value(rng.normal(size=(4, 3, 1)))
    label.set_value(np.eye(2)[[0, 1, 1, 0]][..., None])
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    optimizer.one_step()
    real_claim, paused, other_done = graph.claim, threading.Event(), threading.Event()

    def claim(what, *names):  # thread B waits at its claim while the main thread updates
        if threading.current_thread().name == "B" and not paused.is_set():
            paused.set()
            assert other_done.wait(30)
        return real_claim(what, *names)

    graph.claim = claim
    outcome = {}

    def second():
        try:
            (optimizer.update if call == "update" else lambda: optimizer.get_gradient(w))()
        except Exception as error:  # noqa: BLE001 - reported below
            outcome["error"] = error

    thread = threading.Thread(target=second, name="B")
    thread.start()
    assert paused.wait(30)
    optimizer.update()
    other_done.set()
    thread.join(30)
    assert isinstance(outcome.get("error"), RuntimeError), outcome
    assert re.search(message, str(outcome["error"]))
    assert optimizer.steps == 1 and optimizer.samples == 0
