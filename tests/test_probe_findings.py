"""What a probe of the session's own changes found (helper h4): each test failed on the code
as it was (f91494c)."""

import threading

import numpy as np
import pytest
from helpers import linear_loss

import fastgraph as fg
from fastgraph import profiler
from fastgraph.engines import compiled


def test_a_parameter_frozen_after_a_clear_stands_still():
    """clear() starts the wiring numbering over but left the version's wiring number as it
    was: the first frozen set after it got that same number, the version did not change, and
    the optimizer went on training the frozen parameter."""
    graph = fg.Graph(dtype=np.float64, seed=0)
    w, _, _ = linear_loss(graph)
    w.trainable = False  # numbered 1
    graph.clear()
    w, _, loss = linear_loss(graph)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    w.trainable = False
    before = w.value.copy()
    optimizer.one_step()
    optimizer.update()
    assert w not in optimizer.params
    np.testing.assert_array_equal(w.value, before)


def _welded(graph):
    with graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        u = fg.Variable((2, 2), name="u")
        branches = [fg.ops.Tanh(x), fg.ops.MatMul(u, x)]
        weld = fg.ops.Welding(branches[0], name="weld")
        w = fg.Variable((1, 2), name="w")
        t = fg.Variable((1, 1), trainable=False, name="t")
        loss = fg.ops.loss.MeanSquaredError(fg.ops.MatMul(w, weld), t)
    x.set_value(np.ones((1, 2, 1)))
    t.set_value(np.zeros((1, 1, 1)))
    u.set_value(np.array([[1.0, 2.0], [3.0, 4.0]]))
    w.set_value(np.array([[1.0, -1.0]]))
    return u, w, branches, weld, loss


def test_a_weld_after_a_clear_is_followed():
    """The same with a re-wiring: the optimizer kept its old parameters and replayed the pass
    of the old wiring (loss 0 and a zero gradient instead of 16 and (-24, -56))."""
    graph = fg.Graph(dtype=np.float64)
    _, _, branches, weld, _ = _welded(graph)
    weld.weld(branches[1])  # numbered 1
    graph.clear()
    u, w, branches, weld, loss = _welded(graph)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    optimizer.one_step()
    optimizer.update()
    weld.weld(branches[1])
    optimizer.one_step()
    loss.forward()
    assert u in optimizer.params
    np.testing.assert_allclose(loss.value.ravel(), [16.0])
    np.testing.assert_allclose(optimizer.get_gradient(w).ravel(), [-24.0, -56.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", ["Adam", "RMSProp"])
def test_a_small_second_moment_fed_by_a_gradient_is_not_flushed(dtype, rule):
    """A second moment made from a tiny nonzero gradient was stored as zero, so with a small
    eps the step was m / eps, 1e11 times torch's (whose ratio m / sqrt(v) is ~1)."""
    g, eps, lr = 1e-19, 1e-30, 0.001
    with fg.Graph(dtype=dtype) as graph:
        x = fg.Variable((1, 1), trainable=False)
        w = fg.Variable((1, 1))
        w.set_value(np.zeros((1, 1)))
        out = fg.ops.MatMul(w, x)
    x.set_value(np.full((1, 1, 1), g))
    optimizer = getattr(fg.optimizer, rule)(graph, out, lr, eps=eps)
    optimizer.one_step()
    optimizer.update()
    expected = -lr * g / (abs(g) + eps) if rule == "Adam" else \
        -lr * g / (np.sqrt(0.01 * g * g) + eps)
    assert float(w.value[0, 0]) == pytest.approx(expected, rel=1e-3)


def _model(seed):
    with fg.Graph(dtype=np.float64, seed=seed) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((1, 3), init=True)
        out = fg.ops.MatMul(w, x)
    x.set_value(np.ones((2, 3, 1)))
    return fg.optimizer.GradientDescent(graph, out, 0.01)


@pytest.mark.compiled
def test_two_profiles_in_two_threads_restore_pass_run():
    """Profiles that end in another order than they began (two threads) left Pass.run
    patched for good (the first profile's wrapper), and the second lost its pass times."""
    original = compiled.Pass.run
    a_started, b_started, a_done = threading.Event(), threading.Event(), threading.Event()
    profiles = {}

    def feed_a(step):
        if step == 0:
            a_started.set()
            b_started.wait(10)

    def feed_b(step):
        if step == 0:
            b_started.set()
            a_done.wait(10)

    def run_a():
        profiles["a"] = profiler.profile_steps(_model(1), feed_a, steps=3, warmup=0)
        a_done.set()

    def run_b():
        a_started.wait(10)
        profiles["b"] = profiler.profile_steps(_model(2), feed_b, steps=3, warmup=0)

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert compiled.Pass.run is original
        assert "forward" in profiles["b"].by_phase()
    finally:
        compiled.Pass.run = original


def test_a_fastgraph_style_operator_without_infer_dim_is_not_called_the_articles():
    class Double(fg.ops.Operator):
        def compute(self):
            self.output()[:] = 2 * self.parents[0].flat

        def vjp(self, slot, upstream):
            return 2 * upstream

    with fg.Graph():
        x = fg.Variable((2, 1), trainable=False)
        with pytest.raises(TypeError, match="defines no infer_dim") as caught:
            Double(x)
    assert "get_jacobi" not in str(caught.value)


def test_matrixslows_first_saver_form_a_bare_list_of_nodes_loads(tmp_path):
    import json

    nodes = [{"node_type": "Variable", "name": "w", "parents": [], "children": [],
              "kargs": {}, "dim": [1, 2]}]
    (tmp_path / "model.json").write_text(json.dumps(nodes))
    np.savez(tmp_path / "weights.npz", w=np.array([[1.0, 2.0]]))
    with fg.Graph(dtype=np.float64):
        fg.trainer.Saver(str(tmp_path)).load()
        np.testing.assert_array_equal(fg.get_node_from_graph("w").value, [[1.0, 2.0]])


def test_the_articles_mlp_builder_refuses_a_dict_of_layers():
    with fg.Graph() as graph, pytest.raises(ValueError, match=r"hidden_layers must be a list"):
        fg.model.multilayer_perception(4, 3, {8: "a"}, "ReLU")
    assert graph.nodes == []
