"""What the probe of this session's later changes found (helper hD, 2026-12-01): a
parameter leaving mid-accumulation and the optimizer's own passes, node attributes given
in a subclass's constructor, the profiler with a second optimizer, sums after clear()."""

import gc
import weakref

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.graph import CACHE_SIZE
from tests.helpers import mnist_network, turned_products, welded_tanh


def _leaving_network(batch):
    graph, x, one_hot, _, _, loss = mnist_network(seed=3, hidden=(16, 8))
    rng = np.random.default_rng(0)
    x.set_value(rng.random((batch, 784, 1)))
    one_hot.set_value(np.eye(10)[rng.integers(0, 10, batch)][:, :, None])
    return graph, loss


@pytest.mark.compiled
def test_a_parameter_frozen_mid_accumulation_again_and_again_keeps_the_store_bounded(
        recordings):
    """A parameter frozen during an accumulation stays until the update (README); frozen
    so in every accumulation, the optimizer records its passes once, and keeps them bounded
    (its store grew by one entry per step, past CACHE_SIZE, without end)."""
    graph, loss = _leaving_network(8)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.05)
    last = optimizer.params[-1]
    for step in range(1, 4 * (CACHE_SIZE // 2) + 1):
        optimizer.one_step()
        if step % 4 == 2:
            last.trainable = False  # leaves at the update: two steps with it leaving
        if step % 4 == 0:
            optimizer.update()
            last.trainable = True
    assert len(optimizer._passes) <= 8
    assert len(recordings) == 2


@pytest.mark.compiled
def test_a_welding_that_drops_a_parameter_mid_accumulation_records_each_pass_once(recordings):
    rng = np.random.default_rng(0)
    graph, x, target, weld, branches, _, loss = welded_tanh(rng)
    optimizer = fg.optimizer.Adam(graph, loss, 0.05)
    for step in range(400):
        weld.weld(branches[(step // 3) % 2])  # u joins and leaves during accumulations of 8
        x.set_value(rng.normal(size=(2, 1)))
        target.set_value(rng.normal(size=(1, 1)))
        optimizer.one_step()
        if step % 8 == 7:
            optimizer.update()
    assert len(optimizer._passes) <= 16
    assert len(recordings) <= 4


@pytest.mark.compiled
def test_a_parameter_set_let_go_frees_its_sums_after_one_left_it_mid_accumulation():
    """README: an optimizer's passes, with the sums they add into, go with a parameter set
    it no longer keeps; also those of a parameter that was leaving (they add into the
    sums' first ones, a tuple of their own)."""
    graph, loss = _leaving_network(4)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.05)
    params = list(optimizer.params)
    optimizer.one_step()
    params[0].trainable = False  # leaves mid-accumulation
    optimizer.one_step()
    buffer = weakref.ref(optimizer._buffer)
    optimizer.update()
    for k in range(1, fg.optimizer.LAYOUTS_KEPT + 2):  # other sets: that one is let go
        for j, param in enumerate(params):
            param.trainable = j != k
        optimizer.one_step()
        optimizer.update()
    gc.collect()
    assert buffer() is None


def test_an_operator_may_give_its_shape_before_the_base_constructor():
    class Constant(fg.ops.Operator):
        def __init__(self, parent, dim, **options):
            self.dim = tuple(dim)  # given, not inferred
            super().__init__(parent, **options)

        def infer_dim(self):
            return self.dim

    with fg.Graph(dtype=np.float64):
        node = Constant(fg.Variable((3, 1), trainable=False), (2, 2))
    assert node.dim == (2, 2) and node.name.startswith("Constant")


@pytest.mark.parametrize("attribute", ["graph", "parents", "dim"])
def test_an_attribute_set_before_the_base_constructor_is_replaced_by_it(attribute):
    class Early(fg.ops.Tanh):
        def __init__(self, parent):
            value = {"graph": parent.graph, "parents": [parent], "dim": parent.dim}[attribute]
            setattr(self, attribute, value)
            super().__init__(parent)

    with fg.Graph(dtype=np.float64):
        x = fg.Variable((3, 1), trainable=False)
        node = Early(x)
    assert node.graph is x.graph and list(node.parents) == [x] and node.dim == (3, 1)
    assert list(x.children) == [node]


def test_the_value_a_node_has_may_be_assigned_again_and_a_shapeless_welding_says_so():
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        point = fg.ops.Welding(name="point")
    x.dim = (3, 1)  # MatrixSlow's Variable writes self.dim = dim after Node.__init__
    x.graph = graph
    with pytest.raises(AttributeError, match=r"dim of x is fixed when the node is made"):
        x.dim = (4, 1)
    with pytest.raises(AttributeError, match=r"point has no shape yet: give "
                                             r"Welding\(dim=\.\.\.\), build a layer on it"):
        point.dim = (4, 1)


@pytest.mark.compiled
def test_a_second_optimizer_stepping_in_the_feed_is_the_feeds_time(rng):
    """profile_steps counted every pass of the graph: a GAN's other half stepping inside
    feed() was in the kernel rows and in the feed row (the rows added up to 152%)."""
    model = fg.models.mlp(20, (8,), 3, seed=0)
    first = fg.optimizer.Adam(model.graph, model.loss)
    second = fg.optimizer.GradientDescent(model.graph, model.loss, 0.01)
    features, labels = rng.random((64, 20)), np.eye(3)[rng.integers(0, 3, 64)]

    def feed(step):
        model.x.set_value(features)
        model.one_hot.set_value(labels)
        for _ in range(3):
            second.one_step()
        second.update()

    profile = fg.profiler.profile_steps(first, feed, steps=10, warmup=2)
    rows = {(phase, kind): calls for phase, kind, calls, _, _ in profile.rows()}
    turned = turned_products(64, ((8, 20), (3, 8)))  # (kernel calls: a turned product's two)
    assert rows[("forward", "MatMul")] == 2 + turned  # the profiled optimizer's two products
    assert profile.by_phase()["overhead"] >= 0


def _six_samples_then_clear(engine):
    with fg.Graph(dtype=np.float64, seed=1) as graph:
        x = fg.Variable((80, 1), trainable=False)
        w = fg.Variable((40, 80), init=True)  # 3200 numbers: its additions are deferred
        target = fg.Variable((40, 1), trainable=False)
        total = fg.ops.loss.MeanSquaredError(fg.ops.MatMul(w, x), target)
    optimizer = fg.optimizer.GradientDescent(graph, total, 0.1, engine=engine)
    rng = np.random.default_rng(3)
    for _ in range(6):
        x.set_value(rng.normal(size=(80, 1)))
        target.set_value(rng.normal(size=(40, 1)))
        optimizer.one_step()
    graph.clear()
    return optimizer.gradient_buffer.copy()


@pytest.mark.compiled
def test_sums_read_after_clear_hold_the_deferred_samples():
    """clear() forgot the passes whose one-sample additions were deferred: the sums read
    afterwards (gradient_buffer) lacked them, silently."""
    np.testing.assert_allclose(_six_samples_then_clear("vjp"), _six_samples_then_clear("python"),
                               rtol=1e-10, atol=1e-12)
