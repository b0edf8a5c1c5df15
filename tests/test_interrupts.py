"""A Ctrl-C lands where Python looks for one: as a call returns (mostly a kernel, where the
time goes) or as a function starts. What it leaves must be as if the call had not started,
or had finished, or a documented drop of the accumulation; never a gradient applied twice,
a sample counted that is not in the sums, a stale value read as current, or a graph in use
for good. Each test puts a KeyboardInterrupt at one such point (helper hA's probe, 2026-12-01:
each failed before its fix)."""

import threading

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import kernels
from fastgraph.engines import compiled
from fastgraph.kernels import program
from tests.helpers import one_sample_mlp


def _model(seed=3):
    graph = fg.Graph(dtype=np.float64, seed=seed)
    with graph:
        x = fg.Variable((3, 1), init=False, trainable=False)
        y = fg.Variable((2, 1), init=False, trainable=False)
        logits = fg.layer.fc(fg.layer.fc(x, 3, 4, "Tanh"), 4, 2, None)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, y)
    rng = np.random.default_rng(7)
    batches = [(rng.normal(size=(5, 3, 1)), np.eye(2)[rng.integers(0, 2, 5)].reshape(5, 2, 1))
               for _ in range(4)]
    return graph, x, y, logits, loss, batches


def _params(graph):
    return [node.value.copy() for node in graph.nodes
            if isinstance(node, fg.Variable) and node.trainable]


def _then_interrupt(monkeypatch, owner, name):
    """``owner.name`` runs, then a Ctrl-C lands as it returns."""
    original = getattr(owner, name)

    def then_interrupt(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, then_interrupt)


def _feed(x, y, batch):
    x.set_value(batch[0])
    y.set_value(batch[1])


def _same(got, expected):
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.compiled
@pytest.mark.parametrize("rule", ["GradientDescent", "Adam"])
def test_a_one_step_stopped_as_its_pass_returns_drops_the_accumulation(monkeypatch, rule):
    """The pass added the batch to the sums, the count never saw it: the next update()
    applied twice the mean. Now the accumulation is dropped (as discard() does), and the
    steps after it are those of a run that started its accumulation there."""
    graph, x, y, _, loss, batches = _model()
    optimizer = getattr(fg.optimizer, rule)(graph, loss, 0.05)
    for batch in batches[:2]:
        _feed(x, y, batch)
        optimizer.one_step()
    _feed(x, y, batches[2])
    with monkeypatch.context() as patch:
        _then_interrupt(patch, compiled.Pass, "run")
        with pytest.raises(KeyboardInterrupt):
            optimizer.one_step()
    assert optimizer.samples == 0
    with pytest.raises(RuntimeError, match="call one_step"):
        optimizer.update()  # nothing accumulated: nothing to apply
    _feed(x, y, batches[3])
    optimizer.one_step()
    optimizer.update()
    twin, tx, ty, _, twin_loss, _ = _model()
    clean = getattr(fg.optimizer, rule)(twin, twin_loss, 0.05)
    _feed(tx, ty, batches[3])
    clean.one_step()
    clean.update()
    _same(_params(graph), _params(twin))


@pytest.mark.parametrize("rule, conventions", [("GradientDescent", None), ("Adam", "torch"),
                                               ("Adam", "article"), ("RMSProp", "article")])
def test_an_update_stopped_as_its_kernel_returns_is_an_update_done(monkeypatch, rule,
                                                                    conventions):
    """The parameters had moved but the count, the step and the stale values said not:
    forward() gave the old weights' loss and a second update() applied the gradient again
    (Adam's t and the article's first-update flag counted anyway). Now an update stopped
    there is one done: the run goes on as a clean one does."""
    def run(interrupt):
        graph, x, y, logits, loss, batches = _model()
        options = {} if conventions is None else {"conventions": conventions}
        optimizer = getattr(fg.optimizer, rule)(graph, loss, 0.05, **options)
        losses = []
        for k, batch in enumerate(batches):
            _feed(x, y, batch)
            optimizer.one_step()
            if interrupt and k == 1:
                with monkeypatch.context() as patch:
                    _then_interrupt(patch, type(optimizer), "apply")
                    with pytest.raises(KeyboardInterrupt):
                        optimizer.update()
                assert optimizer.samples == 0
                with pytest.raises(RuntimeError, match="call one_step"):
                    optimizer.update()  # not a second time
            else:
                optimizer.update()
            loss.forward()
            losses.append(loss.value.copy())
        return _params(graph), losses, optimizer.steps

    clean, clean_losses, clean_steps = run(False)
    got, losses, steps = run(True)
    _same(got, clean)
    _same(losses, clean_losses)  # the loss after the interrupted update: the new weights'
    assert steps == clean_steps == 4


@pytest.mark.compiled
def test_a_stopped_completion_of_deferred_sums_loses_no_sample(monkeypatch):
    """The article's loop defers one-sample weight gradients; update() adds them to the
    sums first. A pass forgotten before its completion ran lost them (1.3e-2 off a clean
    run); completed twice, it adds nothing the second time."""
    def run(interrupt):
        graph, x, y, loss = one_sample_mlp()
        optimizer = fg.optimizer.GradientDescent(graph, loss, 0.05)
        rng = np.random.default_rng(0)
        for k in range(4):  # one sample a one_step()
            x.set_value(rng.random((784, 1)))
            y.set_value(np.eye(10)[k].reshape(10, 1))
            optimizer.one_step()
        if interrupt:
            assert graph.deferred
            with monkeypatch.context() as patch:
                if interrupt == "as it starts":
                    patch.setattr(compiled.Pass, "complete",
                                  lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
                else:
                    _then_interrupt(patch, compiled.Pass, "complete")
                with pytest.raises(KeyboardInterrupt):
                    optimizer.update()
            assert graph.deferred  # still pending: completed by the update again
        optimizer.update()
        return _params(graph)

    clean = run(None)
    _same(run("as it starts"), clean)
    _same(run("as it returns"), clean)


@pytest.mark.parametrize("where", ["invalidate", "mark_computed"])
def test_a_parameters_set_value_stopped_leaves_no_stale_value(monkeypatch, where):
    """Stopped after the copy, what depended on the parameter stayed COMPUTED with the old
    value: forward() gave the old weights' logits. It is marked stale before the copy now."""
    graph, x, _, logits, _, batches = _model()
    x.set_value(batches[0][0])
    logits.forward()
    w = next(node for node in graph.nodes if isinstance(node, fg.Variable) and node.trainable)
    new = np.full(w.dim, 0.25)
    with monkeypatch.context() as patch:
        if where == "invalidate":  # as it starts: nothing changed yet
            patch.setattr(graph, "invalidate",
                          lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
        else:  # the copy done: as mark_computed starts
            patch.setattr(graph, "mark_computed",
                          lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            w.set_value(new)
    logits.forward()
    twin, tx, _, twin_logits, _, _ = _model()
    for mine, other in zip((n for n in graph.nodes if isinstance(n, fg.Variable)),
                           (n for n in twin.nodes if isinstance(n, fg.Variable))):
        if mine.trainable:
            other.set_value(mine.value)
    np.testing.assert_array_equal(w.value, new if where == "mark_computed" else w.value)
    tx.set_value(batches[0][0])
    twin_logits.forward()
    np.testing.assert_array_equal(logits.value, twin_logits.value)


class _InterruptedLock:
    """The graph's lock, with a Ctrl-C landing as its acquire returns (the lock taken)."""

    def __init__(self, lock):
        self.lock, self.armed = lock, True

    def acquire(self, blocking=True):
        taken = self.lock.acquire(blocking)
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return taken

    def __getattr__(self, name):
        return getattr(self.lock, name)


def _other_thread_forward(node):
    errors = []

    def other():
        try:
            node.forward()
        except fg.GraphInUse as error:
            errors.append(error)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    return errors


def test_a_claim_stopped_with_the_lock_taken_is_given_back_by_the_next_call():
    """A Ctrl-C between the lock and the count left the lock held by the thread: every
    other thread got GraphInUse for the rest of the process. The thread's next outermost
    claim gives the uncounted hold back."""
    graph, x, _, logits, _, batches = _model()
    x.set_value(batches[0][0])
    graph._user = _InterruptedLock(graph._user)
    with pytest.raises(KeyboardInterrupt):
        logits.forward()
    assert graph.claims == 0
    assert _other_thread_forward(logits)  # held, uncounted, until this thread's next call
    logits.forward()
    assert _other_thread_forward(logits) == [] and graph.claims == 0


def test_a_claim_stopped_as_it_sets_the_threads_is_given_back_too(monkeypatch):
    """threads.here() ran after the lock was taken and counted: a Ctrl-C in it left both
    the lock and the count held (the short path of set_value off for good). It runs before
    the count now: the lock alone is left, given back by the thread's next call."""
    graph, x, _, logits, _, batches = _model()
    x.set_value(batches[0][0])
    from fastgraph import graph as graph_module

    with monkeypatch.context() as patch:
        patch.setattr(graph_module.threads, "here",
                      lambda: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            logits.forward()
    assert graph.claims == 0
    logits.forward()
    assert _other_thread_forward(logits) == [] and graph.claims == 0


@pytest.mark.compiled
def test_a_recording_stopped_as_it_ends_leaves_no_recorder_set(monkeypatch):
    """A Ctrl-C at the start of the recording's __exit__ left the thread's recorder set:
    every later kernel call in the thread, on any graph, was recorded and not run (another
    graph's forward gave uninitialised memory). The recording ends with no call on the way."""
    monkeypatch.setattr(program.recording, "__exit__",
                        lambda self, *exc: (_ for _ in ()).throw(KeyboardInterrupt))
    graph, x, y, logits, loss, batches = _model()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.05)
    _feed(x, y, batches[0])
    try:
        optimizer.one_step()  # records its pass
    except KeyboardInterrupt:  # (where the recording ends by calling __exit__)
        pass
    assert getattr(kernels.recording, "recorder", None) is None
    other, ox, _, other_logits, _, _ = _model(seed=4)
    ox.set_value(batches[1][0])
    other_logits.forward()  # compiled
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", "python")
    walked, wx, _, walked_logits, _, _ = _model(seed=4)
    wx.set_value(batches[1][0])
    walked_logits.forward()
    np.testing.assert_array_equal(other_logits.value, walked_logits.value)


@pytest.mark.parametrize("stop", ["settle", "invalidate", "stamp"])
def test_a_weld_stopped_anywhere_computes_what_its_parents_say_and_can_be_made_again(
        monkeypatch, stop):
    """A weld stopped half way left the parents new and the values, the version or the
    children lists old: forward() gave the old branch's value, and the next weld failed
    with "list.remove(x): x not in list". Now the values are made stale first, the children
    lists are made right whatever they hold, and the wiring changes in plain stores: a
    stopped weld computes from the parents it left, and welding again completes it."""
    from tests.helpers import welded_tanh

    graph, x, target, weld, branches, _, loss = welded_tanh(np.random.default_rng(0))
    x.set_value(np.array([[0.5], [-1.0]]))
    target.set_value(np.array([[0.2]]))
    loss.forward()
    x.set_value(np.array([[0.3], [0.7]]))  # unsettled: the weld settles it first
    calls = {"settle": 0, "invalidate": 0}
    real = {name: getattr(graph, name) for name in ("settle", "invalidate", "_stamp")}

    def stopping(name, nth):
        def call(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == nth:
                raise KeyboardInterrupt
            return real[name](*args, **kwargs)
        return call

    name, nth = {"settle": ("settle", 1), "invalidate": ("invalidate", 1),
                 "stamp": ("_stamp", 1)}[stop]
    with monkeypatch.context() as patch:
        patch.setattr(graph, name, stopping(name, nth))
        with pytest.raises(KeyboardInterrupt):
            weld.weld(branches[1])
    loss.forward()  # whatever wiring it left, computed from it
    twin, tx, ttarget, tweld, tbranches, _, tloss = welded_tanh(np.random.default_rng(0))
    if weld.parents[0] is branches[1]:
        tweld.weld(tbranches[1])
    tx.set_value(np.array([[0.3], [0.7]]))
    ttarget.set_value(np.array([[0.2]]))
    tloss.forward()
    np.testing.assert_array_equal(loss.value, tloss.value)
    weld.weld(branches[1])  # made again: no "x not in list"
    assert [list(parent.children).count(weld) for parent in branches] == [0, 1]
    loss.forward()
    clean, cx, ctarget, cweld, cbranches, _, closs = welded_tanh(np.random.default_rng(0))
    cweld.weld(cbranches[1])
    cx.set_value(np.array([[0.3], [0.7]]))
    ctarget.set_value(np.array([[0.2]]))
    closs.forward()
    np.testing.assert_array_equal(loss.value, closs.value)


def _interrupt_once_after(monkeypatch, when):
    """Variable.set_value runs, then a Ctrl-C lands as it returns, the first time ``when(node,
    value)`` holds."""
    real = fg.Variable.set_value
    armed = [True]

    def set_value(node, value):
        real(node, value)
        if armed[0] and when(node, np.asarray(value)):
            armed[0] = False
            raise KeyboardInterrupt

    monkeypatch.setattr(fg.Variable, "set_value", set_value)


def test_set_values_of_one_sample_each_is_never_left_half_set(monkeypatch):
    """One sample per input is set input by input: a Ctrl-C between two left some new,
    the rest old, and the next forward computed from the mix. Now the rest are set, then the
    KeyboardInterrupt is raised."""
    with fg.Graph(dtype=np.float64):
        inputs = [fg.Variable((2, 1), trainable=False) for _ in range(3)]
        total = fg.ops.Add(fg.ops.Add(inputs[0], inputs[1]), inputs[2])
    fg.set_values(inputs, np.zeros((3, 2, 1)))
    new = np.arange(6.0).reshape(3, 2, 1)
    with monkeypatch.context() as patch:
        _interrupt_once_after(patch, lambda node, value: node is inputs[0])
        with pytest.raises(KeyboardInterrupt):
            fg.set_values(inputs, new)
    for node, value in zip(inputs, new):
        np.testing.assert_array_equal(node.value, value)
    total.forward()
    np.testing.assert_array_equal(total.value, new.sum(axis=0))


def test_a_chunked_jacobian_stopped_puts_every_input_back(monkeypatch):
    """fg.jacobian(chunk_size=...) feeds each chunk's rows, then puts the batch back; a
    Ctrl-C there left an input holding the last chunk (1 row of 5) and forward() gave 1
    row. Now every input gets its batch back before the KeyboardInterrupt is raised."""
    graph, x, y, logits, loss, batches = _model()
    _feed(x, y, batches[0])
    with monkeypatch.context() as patch:
        _interrupt_once_after(patch, lambda node, value: value.shape[0] == 5)
        with pytest.raises(KeyboardInterrupt):
            fg.jacobian(loss, [x, y], chunk_size=2)
    np.testing.assert_array_equal(x.value, batches[0][0])
    np.testing.assert_array_equal(y.value, batches[0][1])
    logits.forward()
    assert logits.value.shape == (5, 2, 1)


def test_the_articles_saver_load_stopped_sets_every_parameter(monkeypatch, tmp_path):
    """Saver.load set the file's parameters one by one: a Ctrl-C between two left the graph
    with some of the file's values and its own for the rest. Now all are set (each was
    checked before the first), then the KeyboardInterrupt is raised."""
    graph, x, y, logits, loss, batches = _model(seed=5)
    fg.trainer.Saver(str(tmp_path)).save(graph=graph)
    saved = _params(graph)
    with fg.Graph(dtype=np.float64, seed=6) as other:
        ox = fg.Variable((3, 1), init=False, trainable=False)
        oy = fg.Variable((2, 1), init=False, trainable=False)
        fg.ops.loss.CrossEntropyWithSoftMax(
            fg.layer.fc(fg.layer.fc(ox, 3, 4, "Tanh"), 4, 2, None), oy)
    assert not all(np.array_equal(a, b) for a, b in zip(saved, _params(other)))
    with monkeypatch.context() as patch:
        _interrupt_once_after(patch, lambda node, value: node.trainable)
        with pytest.raises(KeyboardInterrupt):
            fg.trainer.Saver(str(tmp_path)).load(to_graph=other)
    _same(_params(other), saved)


def test_each_whole_redoes_the_stopped_item_and_a_second_ctrl_c_stops_it():
    from fastgraph.graph import each_whole

    done, raises = [], {1: 1}

    def action(item):
        if raises.get(item):
            raises[item] -= 1
            raise KeyboardInterrupt
        done.append(item)

    with pytest.raises(KeyboardInterrupt):
        each_whole(range(4), action)
    assert done == [0, 1, 2, 3]  # 1 stopped once, done again, the rest done, then raised
    done.clear()
    raises.update({1: 1, 2: 1})
    with pytest.raises(KeyboardInterrupt):
        each_whole(range(4), action)
    assert done == [0, 1]  # a second Ctrl-C: at once


def test_a_save_stopped_as_its_temporary_is_made_leaves_no_temporary(monkeypatch, tmp_path):
    """A Ctrl-C as the temporary file beside the model was created (as os.open returns)
    left it there; the model itself is the old one."""
    from fastgraph import files, saver

    graph, *_ = _model()
    path = tmp_path / "m.fgz"
    saver.save(path, graph)
    before = path.read_bytes()
    real = files.os.open

    def open_then_interrupt(name, *args, **kwargs):
        handle = real(name, *args, **kwargs)
        if str(name).endswith(".tmp"):
            raise KeyboardInterrupt
        return handle

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "open", open_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            saver.save(path, graph)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fgz"]
    assert path.read_bytes() == before


def test_the_articles_saver_stopped_while_packing_raises_the_interrupt(monkeypatch, tmp_path):
    """A Ctrl-C as an entry of the weights' zip was being closed (its __exit__ starting)
    surfaced as "ValueError: Can't close the ZIP file while there is an open writing handle
    on it". The entries are written whole now; what stops while packing raises the
    KeyboardInterrupt, and nothing is written."""
    import zipfile

    graph, *_ = _model()
    monkeypatch.setattr(zipfile._ZipWriteFile, "close",
                        lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    real = np.lib.format.write_array
    calls = []

    def write_then_interrupt(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fg.trainer.Saver(str(tmp_path)).save(graph=graph)
    assert list(tmp_path.iterdir()) == []


def test_a_one_step_stopped_on_the_walker_drops_the_accumulation(monkeypatch):
    """The walker adds the gradients parameter by parameter: a Ctrl-C in between left some
    sums with the batch and some without, and the count without it."""
    from fastgraph.engines import vjp

    monkeypatch.setenv("FASTGRAPH_EXECUTOR", "python")
    graph, x, y, _, loss, batches = _model()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.05)
    _feed(x, y, batches[0])
    optimizer.one_step()
    _feed(x, y, batches[1])
    with monkeypatch.context() as patch:
        _then_interrupt(patch, vjp, "accumulate")
        with pytest.raises(KeyboardInterrupt):
            optimizer.one_step()
    assert optimizer.samples == 0
    _feed(x, y, batches[2])
    optimizer.one_step()
    optimizer.update()
    twin, tx, ty, _, twin_loss, _ = _model()
    clean = fg.optimizer.GradientDescent(twin, twin_loss, 0.05)
    _feed(tx, ty, batches[2])
    clean.one_step()
    clean.update()
    _same(_params(graph), _params(twin))
