"""The profiler: its rows add up to the steps' wall time and name every phase."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import engines
from fastgraph.engines import compiled
from tests.helpers import turned_products


def _profile(rng, engine, steps=20):
    model = fg.models.mlp(20, (8,), 3, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, engine=engine)
    features, labels = rng.random((64, 20)), np.eye(3)[rng.integers(0, 3, 64)]
    fed = []

    def feed(step):
        fed.append(step)
        model.x.set_value(features)
        model.one_hot.set_value(labels)

    return fg.profiler.profile_steps(optimizer, feed, steps=steps, warmup=2), fed, optimizer


@pytest.mark.parametrize("engine", ["vjp", "python"])
def test_the_phases_add_up_to_the_steps_and_are_named(rng, engine):
    profile, fed, optimizer = _profile(rng, engine)
    assert fed == list(range(22))  # the warm-up steps, then the profiled ones
    phases = profile.by_phase()
    assert set(phases) == {"forward", "backward", "feed", "update", "overhead"}
    assert sum(phases.values()) == pytest.approx(profile.step_seconds * 1e6)
    assert all(micros > 0 for phase, micros in phases.items() if phase != "overhead")
    rows = {(phase, kind): calls for phase, kind, calls, _, _ in profile.rows()}
    assert rows[("feed", "set_value")] == 1 and rows[("update", "Adam")] == 1
    walker = engine == "python" or engines._executor() is engines.vjp  # (its fallbacks)
    turned = 0 if walker else turned_products(64, ((8, 20), (3, 8)))  # (compiled: kernel calls)
    assert rows[("forward", "MatMul")] == 2 + turned
    table = profile.table()
    for phase in phases:
        assert f"{phase} " in table.split("by phase: ")[1]
    passes = compiled.passes(optimizer.graph, optimizer)
    assert all(compiled_pass.cycles.size == 0 for compiled_pass in passes)


def test_the_article_engine_is_timed_node_by_node_sample_by_sample(rng):
    """engine="jacobian": every node's compute on the batch (an error names its sample
    before any sum changes), on each of the 64 samples, then once more on the batch, and
    every (node, parent) pair's dense Jacobian on each sample."""
    profile, fed, optimizer = _profile(rng, "jacobian", steps=3)
    rows = {(phase, kind): calls for phase, kind, calls, _, _ in profile.rows()}
    assert rows[("forward", "MatMul")] == 2 * 66 and rows[("forward", "ReLU")] == 66
    assert rows[("backward", "MatMul")] == 3 * 64  # to W1, W2 and the hidden layer
    assert rows[("backward", "Add")] == 2 * 2 * 64 and rows[("backward", "ReLU")] == 64
    assert rows[("backward", "CrossEntropyWithSoftMax")] == 64
    phases = profile.by_phase()
    assert phases["backward"] > 0 and sum(phases.values()) == pytest.approx(
        profile.step_seconds * 1e6)
    for node in optimizer.graph.nodes:  # the timers are gone
        assert "dense_jacobian" not in vars(node) and "compute" not in vars(node)


@pytest.mark.compiled
def test_an_interrupted_profile_leaves_no_timer_behind(rng):
    model = fg.models.mlp(20, (8,), 3, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss)
    features, labels = rng.random((4, 20)), np.eye(3)[rng.integers(0, 3, 4)]

    def feed(step):
        if step == 5:
            raise KeyboardInterrupt
        model.x.set_value(features)
        model.one_hot.set_value(labels)

    with pytest.raises(KeyboardInterrupt):
        fg.profiler.profile_steps(optimizer, feed, steps=10, warmup=2)
    assert compiled.passes(model.graph, optimizer)
    assert all(compiled_pass.cycles.size == 0
               for compiled_pass in compiled.passes(model.graph, optimizer))


def _one_sample_loop(rng, profiled, every=4, steps=12, warmup=4):
    """The article's loop on a small MLP: one sample a one_step(), an update every
    ``every``; profiled or plain, from the same start. Returns (profile, parameters)."""
    model = fg.models.mlp(20, (8,), 3, seed=0, dtype=np.float64)
    optimizer = fg.optimizer.Adam(model.graph, model.loss)
    samples, labels = rng.random((steps + warmup, 1, 20)), np.eye(3)[rng.integers(0, 3, 16)]

    def feed(step):
        model.x.set_value(samples[step])
        model.one_hot.set_value(labels[step % 16][None])

    if profiled:
        profile = fg.profiler.profile_steps(optimizer, feed, steps=steps, warmup=warmup,
                                            update_every=every)
    else:
        profile = None
        for step in range(warmup + steps):
            feed(step)
            optimizer.one_step()
            if (step + 1) % every == 0:
                optimizer.update()
    assert optimizer.samples == 0  # nothing left accumulated
    return profile, [param.value.copy() for param in optimizer.params], optimizer


@pytest.mark.parametrize("engine", ["compiled", "python"])
def test_the_articles_loop_is_profiled_with_an_update_every_mini_batch(rng, engine,
                                                                        monkeypatch):
    """update_every=4: an update() after every 4th one_step(), as the article's programs
    do; the rows are per one_step(), add up to the loop's time, and the parameters are
    those of the same loop unprofiled (3 updates, not 12)."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", engine)
    profile, profiled, optimizer = _one_sample_loop(np.random.default_rng(1), True)
    _, plain, _ = _one_sample_loop(np.random.default_rng(1), False)
    for got, expected in zip(profiled, plain):
        np.testing.assert_array_equal(got, expected)
    assert optimizer.steps == 4  # one in the warm-up, three profiled
    rows = {(phase, kind): calls for phase, kind, calls, _, _ in profile.rows()}
    assert rows[("feed", "set_value")] == 1 and rows[("update", "Adam")] == 0.25
    assert rows[("forward", "MatMul")] == 2  # (one sample: no product is turned)
    assert sum(profile.by_phase().values()) == pytest.approx(profile.step_seconds * 1e6)
    assert profile.table().startswith("one one_step() (an update every 4): ")


@pytest.mark.parametrize("steps, warmup, every, message", [
    (10, 4, 4, r"steps \(10\) and warmup \(4\) must be multiples of update_every \(4\)"),
    (8, 2, 4, r"steps \(8\) and warmup \(2\) must be multiples of update_every \(4\)"),
    (8, 0, 0, r"update_every must be at least 1, got 0"),
    (8, 0, 2.5, r"update_every must be a positive integer, got 2.5"),
])
def test_update_every_is_checked_before_any_step(rng, steps, warmup, every, message):
    model = fg.models.mlp(20, (8,), 3, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss)
    fed = []
    with pytest.raises(ValueError, match=r"^profile_steps: " + message):
        fg.profiler.profile_steps(optimizer, fed.append, steps=steps, warmup=warmup,
                                  update_every=every)
    assert fed == [] and optimizer.samples == 0
