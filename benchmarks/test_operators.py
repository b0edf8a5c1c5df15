"""Forward + VJP of each operator against its dense-Jacobian path, at several batch sizes.

Groups are per operator and batch size, so pytest-benchmark shows the two engines side by
side: ``vjp`` is one batched forward and one VJP per parent; ``jacobian`` is the article's
per-sample forward and dense Jacobian per parent.
"""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines.jacobian import one_sample_at_a_time

FEATURES = 64


def _network_op(kind):
    """(make, parent dims); the first parent is the batched input."""
    return {
        "MatMul": (lambda x, w: fg.ops.MatMul(w, x), [(FEATURES, 1), (32, FEATURES)]),
        "Add": (fg.ops.Add, [(FEATURES, 1), (FEATURES, 1)]),
        "ReLU": (fg.ops.ReLU, [(FEATURES, 1)]),
        "Logistic": (fg.ops.Logistic, [(FEATURES, 1)]),
        "Tanh": (fg.ops.Tanh, [(FEATURES, 1)]),
        "SoftMax": (fg.ops.SoftMax, [(FEATURES, 1)]),
        "CrossEntropyWithSoftMax": (fg.ops.loss.CrossEntropyWithSoftMax,
                                    [(FEATURES, 1), (FEATURES, 1)]),
    }[kind]


def build(kind, batch, rng):
    make, dims = _network_op(kind)
    graph = fg.Graph()
    x = fg.Variable(dims[0], trainable=False, graph=graph)
    x.set_value(rng.normal(size=(batch, dims[0][0])))
    parents = [x]
    for dim in dims[1:]:
        if kind == "CrossEntropyWithSoftMax":
            labels = fg.Variable(dim, trainable=False, graph=graph)
            labels.set_value(np.eye(dim[0])[rng.integers(0, dim[0], batch)])
            parents.append(labels)
        else:
            param = fg.Variable(dim, graph=graph)
            param.set_value(rng.normal(size=dim))
            parents.append(param)
    with graph:
        op = make(*parents)
    return graph, op


KINDS = ["MatMul", "Add", "ReLU", "Logistic", "Tanh", "SoftMax", "CrossEntropyWithSoftMax"]


@pytest.mark.parametrize("batch", [1, 16, 64])
@pytest.mark.parametrize("kind", KINDS)
def test_vjp(benchmark, kind, batch, rng):
    graph, op = build(kind, batch, rng)
    tape = graph.tape(op)
    upstream = np.ones_like(op.output())
    benchmark.group = f"{kind} batch {batch}"

    def step():
        op.state = 2  # force the forward to run
        tape.forward()
        for slot in range(len(op.parents)):
            op.vjp(slot, upstream)

    benchmark(step)


@pytest.mark.parametrize("batch", [1, 16, 64])
@pytest.mark.parametrize("kind", KINDS)
def test_dense_jacobian(benchmark, kind, batch, rng):
    graph, op = build(kind, batch, rng)
    tape = graph.tape(op)
    benchmark.group = f"{kind} batch {batch}"

    def step():
        for _ in one_sample_at_a_time(tape):
            tape.forward()
            for slot in range(len(op.parents)):
                op.dense_jacobian(slot)

    benchmark.pedantic(step, rounds=5 if batch > 1 else 20, warmup_rounds=1)
