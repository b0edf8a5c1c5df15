"""Mutation sweep 9 (helper h5) of the session's changes since a817a73: each test fails under
a mutation that no other test caught, and passes on the code as it is (8894f59)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import linear_loss

import fastgraph as fg
import fastgraph.graph
from fastgraph import optimizer as optimizers
from fastgraph import viz
from fastgraph.trainer import SimpleTrainer, TrainingDiverged


def _step(optimizer):
    optimizer.one_step()
    optimizer.update()


# graph.py: Graph.clear() forgets the frozen set (mutation: `self._frozen.clear()` dropped)

def test_a_parameter_frozen_before_a_clear_is_not_kept_frozen_in_the_numbering():
    """A frozen index left over from before clear() made a later freeze of the new node at
    that index leave the version as it was: the optimizer went on training it."""
    graph = fg.Graph(dtype=np.float64, seed=0)
    w, _, _ = linear_loss(graph)
    w.trainable = False  # left frozen when the graph is cleared
    graph.clear()
    w, b, loss = linear_loss(graph)  # w at the same index, trainable
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    b.trainable = False
    _step(optimizer)
    b.trainable = True
    _step(optimizer)
    w.trainable = False
    before = w.value.copy()
    _step(optimizer)
    assert w not in optimizer.params
    np.testing.assert_array_equal(w.value, before)


# graph.py: the numbering starts over when WIRINGS_KEPT states are numbered (mutation:
# `len(self._wirings) >= WIRINGS_KEPT` -> `>`)

def test_the_graph_numbers_no_more_states_than_it_keeps(monkeypatch):
    monkeypatch.setattr(fastgraph.graph, "WIRINGS_KEPT", 3)
    graph = fg.Graph(dtype=np.float64, seed=0)
    w, b, _ = linear_loss(graph)
    for frozen in [(w,), (w, b), (b,), (), (w,), (b,)]:
        w.trainable = w not in frozen
        b.trainable = b not in frozen
        assert len(graph._wirings) <= 3


# optimizer.py: the kept layouts are bounded (mutation: the eviction in _keep_layout dropped)

def test_an_optimizer_keeps_at_most_layouts_kept_parameter_sets():
    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        ws = [fg.Variable((1, 2), init=True, name=f"w{i}") for i in range(4)]
        total = ws[0]
        for w in ws[1:]:
            total = fg.ops.Add(total, w)
        loss = fg.ops.loss.MeanSquaredError(fg.ops.MatMul(total, x),
                                            fg.Variable((1, 1), trainable=False, name="t"))
    x.set_value(np.ones((1, 2, 1)))
    graph.get_node("t").set_value(np.zeros((1, 1, 1)))
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    _step(optimizer)
    for frozen in [(0,), (1,), (2,), (3,), (0, 1), (2, 3), ()]:  # seven parameter sets
        for i, w in enumerate(ws):
            w.trainable = i not in frozen
        _step(optimizer)
    assert len(optimizer._layouts) <= optimizers.LAYOUTS_KEPT


# optimizer.py: discard() completes the staged additions before it drops the sums (mutation:
# `complete(graph, self._sums)` dropped from discard)

def test_discard_leaves_no_staged_addition_for_the_next_accumulation():
    """One-sample gradients of a large weight (ops.arithmetic.DEFERRED_FROM numbers or more)
    are staged, added to the sums when they are read: discard() must not leave them to be
    added into the next accumulation."""
    rng = np.random.default_rng(0)
    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        x = fg.Variable((64, 1), init=False, trainable=False, name="x")
        w = fg.Variable((64, 64), init=True, name="w")
        t = fg.Variable((64, 1), init=False, trainable=False, name="t")
        loss = fg.ops.loss.MeanSquaredError(fg.ops.MatMul(w, x), t)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    t.set_value(np.zeros((64, 1)))
    for _ in range(3):  # one sample at a time: the steps after the first stage theirs
        x.set_value(rng.standard_normal((64, 1)))
        optimizer.one_step()
    optimizer.discard()
    x.set_value(rng.standard_normal((64, 1)))
    optimizer.one_step()
    fresh = fg.optimizer.GradientDescent(graph, loss, 0.1)
    fresh.one_step()
    np.testing.assert_allclose(optimizer.get_gradient(w), fresh.get_gradient(w), rtol=1e-12)


# article_trainer.py: a diverged training drops its gradients (mutation: the
# `self.optimizer.discard()` of Trainer._check_loss dropped)

def test_the_articles_trainer_leaves_no_gradient_when_it_stops_on_a_diverged_loss():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 4))
    labels = features @ np.array([1.0, -2.0, 0.5, 3.0])
    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        x = fg.core.Variable(dim=(4, 1), init=False, trainable=False, name="x")
        y = fg.core.Variable(dim=(1, 1), init=False, trainable=False, name="y")
        loss = fg.ops.loss.MeanSquaredError(fg.layer.fc(x, 4, 1, None), y)
        optimizer = fg.optimizer.GradientDescent(graph, loss, 1e30)
    trainer = SimpleTrainer([x], y, loss, optimizer, epoches=1, batch_size=4)
    with pytest.raises(TrainingDiverged):
        trainer.train({"x": features}, labels)
    assert optimizer.samples == 0


# trainer.py: a second train()'s progress bar counts the epochs of both (mutation:
# `self._epoch(batches, epoch, done + epochs)` -> `epochs`)

def test_a_second_trains_progress_bar_counts_all_the_epochs(capsys):
    rng = np.random.default_rng(0)
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((4, 1), init=False, trainable=False)
        y = fg.Variable((3, 1), init=False, trainable=False)
        out = fg.layer.fc(x, 4, 3, None)
        opt = fg.optimizer.GradientDescent(graph, fg.ops.loss.CrossEntropyWithSoftMax(out, y),
                                           0.1)
    trainer = SimpleTrainer(x, y, out, opt, batch_size=8, progress=True, log=lambda line: None)
    features, classes = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    trainer.train(features, classes, epochs=2)
    capsys.readouterr()
    trainer.train(features, classes, epochs=2)
    err = capsys.readouterr().err
    assert "epoch 3/4" in err and "epoch 4/4" in err


# saver.py: MatrixSlow's form with its shape among the options (mutation: `and "dim" not in
# options` dropped from _build: the shape beside them, absent, replaced it)

def test_a_matrixslow_form_variable_with_its_shape_in_kargs_loads(tmp_path):
    nodes = [{"node_type": "Variable", "name": "w", "parents": [], "children": [],
              "kargs": {"dim": [1, 2]}}]
    (tmp_path / "model.json").write_text(json.dumps(nodes))
    np.savez(tmp_path / "weights.npz", w=np.array([[1.0, 2.0]]))
    with fg.Graph(dtype=np.float64):
        fg.trainer.Saver(str(tmp_path)).load()
        np.testing.assert_array_equal(fg.get_node_from_graph("w").value, [[1.0, 2.0]])


# model.py: multilayer_perception takes a range or an array of sizes (mutation: the accepted
# types cut to list and tuple)

@pytest.mark.parametrize("hidden", [np.array([5, 3]), range(3, 4)])
def test_the_articles_mlp_builder_takes_sizes_as_an_array_or_a_range(hidden):
    with fg.Graph(seed=0):
        x, logits = fg.model.multilayer_perception(4, 2, hidden, "ReLU")
    assert logits.dim == (2, 1)


# viz.py: an upper-case .DOT is the file itself when Graphviz is missing (mutation:
# graph_destination compares the suffix as it is)

def test_graph_destination_of_an_upper_case_dot_file_is_itself(monkeypatch, tmp_path):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    assert viz.graph_destination(tmp_path / "g.DOT") == tmp_path / "g.DOT"
    assert viz.graph_destination(tmp_path / "g.SVG") == tmp_path / "g.dot"


# viz.py: Graphviz is asked for the format in lower case (mutation: `-T{suffix}` as written)

def test_graphviz_is_asked_for_a_lower_case_format(monkeypatch, tmp_path):
    asked = []

    def run(command, **options):
        asked.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=b"<svg/>", stderr=b"")

    monkeypatch.setattr(viz.shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(viz.subprocess, "run", run)
    with fg.Graph() as graph:
        fg.Variable((1, 1), name="w")
    written, note = viz.write_graph(graph, tmp_path / "G.SVG")
    assert asked and asked[0][1] == "-Tsvg"
    assert Path(written).read_bytes() == b"<svg/>"


# cli.py: --hidden "" is a size missing, said as such (mutation: `len(parts) > 1` -> `> 0`
# in _sizes: "expected positive sizes")

def test_an_empty_hidden_option_is_not_called_a_size_below_one():
    import argparse

    from fastgraph import cli

    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected sizes like 100,20, got ''"):
        cli._sizes("")
    assert cli._sizes("100,20,") == (100, 20)


# cli.py: _is_empty of a file that went away is False (mutation: `return True` on OSError)

def test_a_missing_file_is_not_called_empty(tmp_path):
    from fastgraph import cli

    assert cli._is_empty(tmp_path / "gone.png") is False
    (tmp_path / "empty.png").write_bytes(b"")
    assert cli._is_empty(tmp_path / "empty.png") is True


# profiler.py: a graph profiled already is refused (mutation: `if graph in _watched` never
# true in _watch)

def test_a_profile_of_a_graph_being_profiled_is_refused():
    from fastgraph import profiler
    from fastgraph.engines import compiled

    graph = fg.Graph(dtype=np.float64, seed=0)
    _, _, loss = linear_loss(graph)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.01)
    refused = []

    def feed(step):
        if not refused:
            with pytest.raises(RuntimeError, match="being profiled already"):
                profiler.profile_steps(optimizer, lambda step: None, steps=2, warmup=0)
            refused.append(step)

    profiler.profile_steps(optimizer, feed, steps=3, warmup=0)
    assert refused
    assert compiled.Pass.run is profiler._unwatched_run


# kernels/optimizers.py: _decayed flushes small states, of either sign, and nothing else

def _rule_step(rule, states, gradient, coefficients):
    """One update by ``rule`` (both forms) of one weight per element; the states after."""
    results = []
    for form in (rule.one_core, rule.every_core):
        weights = np.ones(gradient.size, np.float32)
        table = np.array([[weights.ctypes.data, 0, gradient.size]], np.int64)
        kept = [np.array(state, np.float32) for state in states]
        form(table, gradient.astype(np.float32), *kept, np.array(coefficients, np.float32))
        results.append(kept)
    return results


def test_a_negative_velocity_is_not_flushed():
    """(mutation: `abs(x) < TINY` -> `x < TINY`: every negative state was zeroed when its
    gradient was 0)"""
    from fastgraph.kernels import optimizers as rules

    for (velocity,) in _rule_step(rules.momentum, [[-1.0, -1e-3]], np.zeros(2),
                                  (1.0, 0.1, 0.5)):
        np.testing.assert_array_equal(velocity, np.float32([-0.5, -5e-4]))


def test_adams_second_moment_is_flushed_too_and_a_normal_one_kept():
    """(mutation: `vi = _decayed(...)` -> the bare sum: Adam's v was never looked at; and
    the existing test's `pytest.approx(TINY * 1.5, rel=1e-6)` holds for 0 as well, through
    approx's default abs=1e-12)"""
    from fastgraph.kernels import optimizers as rules

    tiny = np.finfo(np.float32).tiny
    coefficients = (1.0, 0.1, 0.9, 0.1, 0.5, 0.5, 1.0, 1e-8, 0.0)  # beta_2 = 0.5
    m = [0.0, 0.0, 1.0]
    v = [tiny * 1.5, tiny * 3, 1e-3]  # v decays by 0.5: 0.75 tiny (flushed), 1.5 tiny (kept)
    for _, v_after in _rule_step(rules.adam, [m, v], np.zeros(3), coefficients):
        assert v_after[0] == 0
        assert v_after[1] == np.float32(tiny * 1.5)
        assert v_after[2] == np.float32(5e-4)


def test_a_state_that_decays_exactly_to_the_smallest_normal_is_kept():
    """Below TINY is flushed, TINY itself is not (mutation: `<` -> `<=`; and TINY * 2:
    the existing test's approx did not see a normal state flushed)."""
    from fastgraph.kernels import optimizers as rules

    tiny = np.finfo(np.float32).tiny
    for (velocity,) in _rule_step(rules.momentum, [[tiny * 2, tiny * 3]], np.zeros(2),
                                  (1.0, 0.1, 0.5)):
        assert velocity[0] == np.float32(tiny)
        assert velocity[1] == np.float32(tiny * 1.5)


# datasets/batches.py: the labels are fed in their node's shape (mutation:
# `one_hot.set_value(labels)`: a (1, 3) label row refused the gathered (size, 3) batch)

def test_the_trainer_feeds_labels_to_a_row_node_in_its_shape():
    rng = np.random.default_rng(0)
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((1, 4), init=False, trainable=False)
        y = fg.Variable((1, 3), init=False, trainable=False)
        out = fg.ops.MatMul(x, fg.Variable((4, 3), init=True))
        opt = fg.optimizer.GradientDescent(graph, fg.ops.loss.MeanSquaredError(out, y), 0.1)
    trainer = SimpleTrainer(x, y, out, opt, batch_size=8, progress=False, log=lambda line: None)
    features, classes = rng.standard_normal((16, 1, 4)), rng.integers(0, 3, 16)
    history = trainer.train(features, classes, epochs=1)
    assert history[0]["samples"] == 16 and np.isfinite(history[0]["loss"])
