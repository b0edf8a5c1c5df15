"""Freezing and thawing parameters step by step (a GAN trains each half in turn that way):
the numbers of the walker, and a parameter set seen before finds its compiled pass again."""

import numpy as np
import pytest
from helpers import with_executor

import fastgraph as fg
import fastgraph.graph
from fastgraph.engines import compiled


def _two_layers(dtype=np.float64):
    with fg.Graph(dtype=dtype, seed=3) as graph:
        x = fg.Variable((4, 1), trainable=False, name="x")
        target = fg.Variable((2, 1), trainable=False, name="target")
        w1 = fg.Variable((3, 4), init=True, name="w1")
        b1 = fg.Variable((3, 1), init=True, name="b1")
        w2 = fg.Variable((2, 3), init=True, name="w2")
        hidden = fg.ops.ReLU(fg.ops.Add(fg.ops.MatMul(w1, x), b1))
        loss = fg.ops.loss.MeanSquaredError(fg.ops.MatMul(w2, hidden), target)
    return graph, x, target, (w1, b1, w2), loss


def _train(frozen_at, steps=12, rule=fg.optimizer.Adam):
    """Parameters after each step, with ``frozen_at(step)`` the parameters frozen for it."""
    graph, x, target, params, loss = _two_layers()
    optimizer = rule(graph, loss, 0.05)
    rng = np.random.default_rng(0)
    history = []
    for step in range(steps):
        frozen = frozen_at(step)
        for param in params:
            param.trainable = param.name not in frozen
        x.set_value(rng.normal(size=(5, 4, 1)))
        target.set_value(rng.normal(size=(5, 2, 1)))
        optimizer.one_step()
        optimizer.update()
        history.append([param.value.copy() for param in params])
    return graph, params, history, optimizer


def _alternate(step):
    return ("w1", "b1") if step % 2 else ("w2",)


def _assert_same(history, expected):
    for step, (got, want) in enumerate(zip(history, expected)):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")


@pytest.mark.parametrize("rule", [fg.optimizer.Adam, fg.optimizer.Momentum,
                                  fg.optimizer.GradientDescent])
def test_freezing_in_turn_every_step_gives_the_walkers_numbers(rule):
    _, _, history, _ = _train(_alternate, rule=rule)
    _, _, expected, _ = with_executor("python", lambda: _train(_alternate, rule=rule))
    _assert_same(history, expected)
    for step in range(1, len(history)):  # and the frozen ones stood still
        for name, before, after in zip(("w1", "b1", "w2"), history[step - 1], history[step]):
            if name in _alternate(step):
                np.testing.assert_array_equal(after, before)
            else:
                assert not np.array_equal(after, before), (step, name)


@pytest.mark.compiled
def test_a_parameter_set_seen_before_runs_its_pass_again():
    """Freezing used to make a version of the graph that never came back: each freeze or
    thaw recorded a new pass (5-6x slower steps when toggled every step). Now the graph's
    version and the optimizer's sums return with the parameter set."""
    graph, _, _, optimizer = _train(_alternate, steps=4)
    recorded = len(compiled.passes(graph, optimizer))
    version = graph._version
    graph, _, _, optimizer = _train(_alternate, steps=40)
    assert len(compiled.passes(graph, optimizer)) == recorded
    assert graph._version == version


def test_a_parameter_frozen_then_thawed_between_steps_starts_from_a_zero_sum():
    """The kept sums of a parameter set are cleared when it comes back: the gradient is the
    present batch's alone."""
    graph, x, target, (w1, b1, w2), loss = _two_layers()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    x.set_value(np.ones((3, 4, 1)))
    target.set_value(np.zeros((3, 2, 1)))
    optimizer.one_step()
    optimizer.update()
    w2.trainable = False
    optimizer.one_step()
    optimizer.update()
    w2.trainable = True
    optimizer.one_step()
    fresh = fg.optimizer.GradientDescent(graph, loss, 0.1)
    fresh.one_step()
    for param in (w1, b1, w2):
        np.testing.assert_allclose(optimizer.get_gradient(param), fresh.get_gradient(param),
                                   rtol=1e-12)
    assert set(optimizer.params) == {w1, b1, w2}


def test_a_parameter_thawed_during_an_accumulation_sums_from_zero():
    """A parameter that comes back between two one_step()s of one accumulation gathers the
    steps after its return alone (its sum in the kept layout is no leftover)."""
    graph, x, target, (w1, b1, w2), loss = _two_layers()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    x.set_value(np.ones((3, 4, 1)))
    target.set_value(np.zeros((3, 2, 1)))
    optimizer.one_step()
    optimizer.update()  # the sums of {w1, b1, w2} are kept, not zero
    w2.trainable = False
    optimizer.one_step()
    optimizer.update()
    optimizer.one_step()  # an accumulation begins without w2 ...
    w2.trainable = True
    optimizer.one_step()  # ... and w2 joins it
    fresh = fg.optimizer.GradientDescent(graph, loss, 0.1)
    fresh.one_step()
    np.testing.assert_allclose(optimizer.get_gradient(w2), fresh.get_gradient(w2) / 2,
                               rtol=1e-12)
    np.testing.assert_allclose(optimizer.get_gradient(w1), fresh.get_gradient(w1), rtol=1e-12)


def test_past_the_kept_states_the_numbering_starts_over(monkeypatch):
    """More frozen sets than the graph numbers (WIRINGS_KEPT) start the numbering over under
    a new version; the numbers stay right."""
    states = [(), ("w1",), ("w2",), ("b1",), ("w1", "w2"), ()]

    def frozen_at(step):
        return states[step % len(states)]

    _, _, expected, _ = _train(frozen_at, steps=14)
    monkeypatch.setattr(fastgraph.graph, "WIRINGS_KEPT", 2)
    graph, _, history, _ = _train(frozen_at, steps=14)
    _assert_same(history, expected)
    assert graph._version[0] > len(graph.nodes)  # (nodes added, then restarts)
    assert len(graph._wirings) <= 2
