"""A full training step (set_value, one_step, update) of both MNIST networks, both engines."""

import numpy as np
import pytest

import fastgraph as fg

NETWORKS = {"784-100-20-10": ((100, 20), 64), "784-256-128-10": ((256, 128), 128)}


@pytest.mark.parametrize("engine", ["vjp", "jacobian"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_training_step(benchmark, network, engine, mnist_arrays):
    hidden, batch = NETWORKS[network]
    features, labels = mnist_arrays
    model = fg.models.mlp(784, hidden, 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001, engine=engine)
    if engine == "jacobian":
        batch = 4  # the article's engine: a few samples, reported per step of 4
    state = {"start": 0}
    benchmark.group = f"training step {network}"
    benchmark.extra_info["batch"] = batch

    def step():
        start = state["start"]
        state["start"] = (start + batch) % (len(features) - batch)
        model.x.set_value(features[start : start + batch])
        model.one_hot.set_value(labels[start : start + batch])
        optimizer.one_step()
        optimizer.update()

    if engine == "jacobian":
        benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    else:
        benchmark(step)
    assert np.isfinite(model.loss.value).all()
