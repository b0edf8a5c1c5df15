"""The profiler: its rows add up to the steps' wall time and name every phase."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines import compiled


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
    assert rows[("forward", "MatMul")] == 2
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
