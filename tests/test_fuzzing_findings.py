"""What differential fuzzing of the three paths found (helper h3): each test failed on the
code as it was."""

import numpy as np
import pytest

import fastgraph as fg


def _chain(length=20):
    """More than vjp.FEW (16) nodes, so that forward() runs a compiled pass."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((2, 2), name="w")
        w.set_value(np.eye(2))
        node = fg.ops.MatMul(w, x)
        for _ in range(length):
            node = fg.ops.Tanh(node)
        loss = fg.ops.Dot(node, node, name="loss")
    return graph, x, w, loss


def _expected(w, length=20):
    v = w.value @ np.ones(2)
    for _ in range(length):
        v = np.tanh(v)
    return (v ** 2).sum()


@pytest.mark.parametrize("engine", ["vjp", "python", "jacobian"])
def test_forward_after_update_gives_a_fresh_value(engine):
    """A pass recorded by forward() computed every node under the pass number of the
    computation before it, so `value` handed back the snapshot taken before the update
    (flat held the new numbers)."""
    graph, x, w, loss = _chain()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 1.0, engine=engine)
    x.set_value(np.ones((3, 2, 1)))
    for _ in range(2):  # (vjp: the second step replays the recorded training pass)
        optimizer.one_step()
        before = loss.value[:, 0, 0]
        optimizer.update()
    loss.forward()
    np.testing.assert_allclose(loss.flat[:, 0], _expected(w), rtol=1e-12)
    np.testing.assert_allclose(loss.value[:, 0, 0], _expected(w), rtol=1e-12)
    assert not np.allclose(loss.value[:, 0, 0], before)


@pytest.mark.parametrize("change", ["freeze", "weld"])
def test_a_parameter_leaving_mid_accumulation_keeps_the_deferred_samples(change, monkeypatch):
    """One-sample steps on a weight of >= 2048 numbers defer its gradient (outer_staged);
    when another parameter leaves during the accumulation (frozen, or welded away), one_step
    runs with a slice of the sums (Optimizer._stepped) and the pass it left pending was
    never completed by get_gradient/update (`found.sums is sums` fails): that sample's
    weight gradient was lost (or added later into another accumulation)."""
    def run(executor):
        monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
        rng = np.random.default_rng(0)
        with fg.Graph(dtype=np.float64) as graph:
            x = fg.Variable((64, 1), trainable=False, name="x")
            w = fg.Variable((32, 64), name="w")
            w.set_value(rng.normal(size=(32, 64)) * 0.1)
            v = fg.Variable((3, 32), name="v")
            v.set_value(rng.normal(size=(3, 32)))
            u = fg.Variable((3, 32), name="u")
            u.set_value(rng.normal(size=(3, 32)))
            hidden = fg.ops.Tanh(fg.ops.MatMul(w, x))
            weld = fg.ops.Welding(fg.ops.MatMul(v, hidden))
            other = fg.ops.MatMul(u, hidden)  # welded in instead of v's product
            loss = fg.ops.Dot(weld, weld)
        optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
        samples = rng.normal(size=(2, 64, 1))
        x.set_value(samples[0])
        optimizer.one_step()
        if change == "freeze":
            v.trainable = False
        else:
            weld.weld(other)
        x.set_value(samples[1])
        optimizer.one_step()
        gradient = optimizer.get_gradient(w).copy()
        optimizer.update()
        return gradient, w.value

    (got, got_w), (want, want_w) = run("compiled"), run("python")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_w, want_w, rtol=1e-10, atol=1e-12)


def test_a_target_welded_away_from_every_parameter_is_not_called_frozen():
    """The message said every parameter was frozen when none was: a re-wiring had taken
    the target to a branch of inputs alone."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((2, 2), name="w")
        w.set_value(np.eye(2))
        weld = fg.ops.Welding(fg.ops.MatMul(w, x))
        inputs_only = fg.ops.Tanh(x)
        loss = fg.ops.Dot(weld, weld, name="loss")
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    x.set_value(np.ones((2, 1)))
    optimizer.one_step()
    optimizer.update()
    weld.weld(inputs_only)
    for _ in range(2):  # (and again: the check is made anew at the next step)
        with pytest.raises(ValueError, match=r"^loss depends on no trainable Variable now: it "
                           r"reads no parameter since a re-wiring \(a Welding welded to a "
                           r"branch of inputs alone\); weld it back"):
            optimizer.one_step()
