"""The compiled tape where Python between nodes used to dominate: many small nodes.

- a 10,000-node chain of Add at batch 1, forward and backward (per-node cost: divide by
  10,000; the target is <= 0.3 us a node), with the compiled executor and the walker;
- the article's way of training, one sample per ``one_step()`` and an update every 64, on
  the MNIST network (target <= 20 us a sample);
- the recurrent network of the article's book, one training step at batch 16
  (``benchmarks.recurrent`` holds it and its JAX and PyTorch peers).
"""

import numpy as np
import pytest

import fastgraph as fg
from benchmarks import recurrent

EXECUTORS = ["compiled", "python"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_chain_of_10000_adds(benchmark, executor, monkeypatch):
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    with fg.Graph(dtype=np.float32) as graph:
        x = fg.Variable((1, 1), trainable=False)
        w = fg.Variable((1, 1))
        w.set_value(np.ones((1, 1)))
        node = x
        for _ in range(10_000):
            node = fg.ops.Add(node, w)
    optimizer = fg.optimizer.GradientDescent(graph, node, 1e-6)
    sample = np.zeros((1, 1, 1), np.float32)
    benchmark.group = "chain of 10,000 Add nodes, batch 1, forward + backward"

    def step():
        x.set_value(sample)
        optimizer.one_step()
        optimizer.samples = 0

    # A step first, outside the timing: the first records the pass (some milliseconds),
    # and pytest-benchmark, sizing its rounds by the first call, then made only five
    # (their minimum once fell in a slow spell of the machine: 2.4 ms against 0.4-0.8).
    step()
    benchmark(step)
    assert node.flat[0, 0] == pytest.approx(10_000)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_one_sample_per_step(benchmark, executor, monkeypatch, mnist_arrays):
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    features, labels = mnist_arrays
    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001)
    columns = features.reshape(-1, 784, 1)
    hot = labels.reshape(-1, 10, 1)
    benchmark.group = "the article's loop: 64 one-sample one_step() calls and an update"

    def batch_of_64():
        for b in range(64):
            model.x.set_value(columns[b])  # one sample in its own shape, as the article
            model.one_hot.set_value(hot[b])
            optimizer.one_step()
        optimizer.update()

    # (rounds given: calibrated on a first round that records the pass, pytest-benchmark
    # ran about ten)
    benchmark.pedantic(batch_of_64, rounds=200, warmup_rounds=5)
    assert np.isfinite(model.loss.flat).all()


def test_one_sample_per_step_as_a_batch_of_one(benchmark, mnist_arrays):
    """The same loop, each sample fed as a batch of one, ``features[b:b + 1]`` (1, 784)."""
    features, labels = mnist_arrays
    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001)
    benchmark.group = "the article's loop: 64 one-sample one_step() calls and an update"

    def batch_of_64():
        for b in range(64):
            model.x.set_value(features[b:b + 1])
            model.one_hot.set_value(labels[b:b + 1])
            optimizer.one_step()
        optimizer.update()

    benchmark(batch_of_64)
    assert np.isfinite(model.loss.flat).all()


def test_recurrent_step(benchmark):
    rng = np.random.default_rng(0)
    network = recurrent.Fastgraph(recurrent.initial(rng))
    x, y = recurrent.data(rng)
    benchmark.group = "recurrent net, 96 steps, batch 16: one training step"
    loss = benchmark(network.step, x, y)
    assert np.isfinite(loss)


@pytest.mark.parametrize("frozen", ["each half in turn", "none"])
def test_freezing_in_turn(benchmark, frozen, mnist_arrays):
    """A GAN's way: the first layer frozen for one step, the rest for the next, a batch of
    64 each (a frozen set seen before finds its passes again; against no freezing)."""
    features, labels = mnist_arrays
    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001)
    params = [node for node in model.graph.nodes
              if isinstance(node, fg.Variable) and node.trainable]
    halves = (params[:2], params[2:]) if frozen != "none" else ((), ())
    benchmark.group = "MNIST MLP, batch 64: a step freezing half the parameters in turn"
    model.x.set_value(features[:64])
    model.one_hot.set_value(labels[:64])

    def two_steps():
        for half, other in (halves, halves[::-1]):
            for param in half:
                param.trainable = False
            for param in other:
                param.trainable = True
            optimizer.one_step()
            optimizer.update()

    benchmark(two_steps)
    assert np.isfinite(model.loss.flat).all()


@pytest.mark.parametrize("evaluation", ["1,000 samples between steps", "none"])
def test_training_with_an_evaluation_between_steps(benchmark, evaluation, mnist_arrays):
    """A training step of 64 and a forward of the logits on 1,000 samples in turn (each
    batch size's pass takes its buffers back), against the steps alone."""
    features, labels = mnist_arrays
    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001)
    logits = model.logits
    benchmark.group = "MNIST MLP, batch 64: a step, with an evaluation forward in between"

    def step_and_evaluation():
        model.x.set_value(features[:64])
        model.one_hot.set_value(labels[:64])
        optimizer.one_step()
        optimizer.update()
        if evaluation != "none":
            model.x.set_value(features[:1000])
            logits.forward()

    benchmark(step_and_evaluation)
    assert np.isfinite(model.loss.flat).all()
