"""Per-sample Jacobians and gradients of the MNIST network (784-100-20-10, batch 64, float32),
beside the ordinary backward pass they are compared with."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines.vjp import backward


@pytest.fixture
def model(mnist_arrays):
    features, labels = mnist_arrays
    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    model.x.set_value(features[:64])
    model.one_hot.set_value(labels[:64])
    return model


def params(model):
    return [n for n in model.graph.nodes if isinstance(n, fg.Variable) and n.trainable]


@pytest.mark.parametrize("chunk_size", [None, 16])
def test_jacobian_of_logits_wrt_input(benchmark, model, chunk_size):
    benchmark.group = "per-sample derivatives, batch 64"
    jacobian = benchmark(fg.jacobian, model.logits, model.x, chunk_size=chunk_size)
    assert jacobian.shape == (64, 10, 784)


def test_jacobian_every_result_kept(benchmark, model):
    """As a program that keeps each batch's Jacobian (2 MB): every call's result is new
    memory, which the kernel that writes it first touches (page faults)."""
    benchmark.group = "per-sample derivatives, batch 64"
    kept = []
    jacobian = benchmark(lambda: kept.append(fg.jacobian(model.logits, model.x)) or kept[-1])
    assert jacobian.shape == (64, 10, 784)
    assert not any(np.shares_memory(array, jacobian) for array in kept[:-1])


@pytest.mark.parametrize("copy", [True, False])
def test_per_sample_gradients(benchmark, model, copy):
    benchmark.group = "per-sample derivatives, batch 64"
    gradients = benchmark(fg.per_sample_gradients, model.loss, params(model), copy=copy)
    assert gradients[0].shape == (64, 100, 784)


def test_ordinary_backward(benchmark, model):
    benchmark.group = "per-sample derivatives, batch 64"
    plan = model.graph.plan(model.loss, params(model))
    model.graph.tape(model.loss).forward()
    benchmark(backward, plan, model.loss)
    assert np.isfinite(params(model)[0].grad).all()
