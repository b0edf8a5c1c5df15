"""The fused optimizer kernels on the first layer's weights (100 x 784, float32)."""

import numpy as np
import pytest

import fastgraph as fg


@pytest.mark.parametrize("name", ["GradientDescent", "Momentum", "AdaGrad", "RMSProp", "Adam"])
def test_update(benchmark, name, rng):
    with fg.Graph() as graph:
        w = fg.Variable((100, 784))
        w.set_value(rng.normal(size=(100, 784)))
        optimizer = getattr(fg.optimizer, name)(graph, fg.ops.Tanh(w))
    optimizer.one_step()
    benchmark.group = "optimizer update 100x784"

    def update():
        optimizer.samples = 1  # keep the accumulated gradient; time the update alone
        optimizer.update()

    benchmark(update)
    assert np.isfinite(w.value).all()
