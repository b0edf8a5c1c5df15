"""What a read of the README against the code found (helper hA, 2026-12-01): structure
assigned by hand, ``set_values`` on inputs of two shapes, the command line's help."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import cli


def _wired():
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable(dim=(2, 1), trainable=False, name="x")
        w1 = fg.Variable(dim=(2, 2), name="w1")
        w2 = fg.Variable(dim=(2, 2), name="w2")
        y = fg.ops.MatMul(w1, x, name="y")
        total = fg.ops.Add(y, fg.ops.MatMul(w2, x))
    w1.set_value(np.eye(2))
    w2.set_value(2 * np.eye(2))
    return graph, x, w1, w2, y, total


@pytest.mark.parametrize("attribute, words", [
    ("parents", r"the parents of y are changed only by the graph; re-wire the node with "
                r"graph.rewire\(node, parents\)"),
    ("children", r"the children of y are changed only by the graph"),
    ("graph", r"the graph of y is fixed when the node is made"),
    ("dim", r"dim of y is fixed when the node is made .*: make a new MatMul"),
])
def test_a_nodes_structure_cannot_be_assigned(attribute, words):
    """README: a node's parents and children are read-only (the graph changes them).
    Assigning ``y.parents`` was accepted, and the compiled executor kept the old wiring
    (2.6 where the walker gave 3.6); ``dim`` and ``graph`` failed later, unclearly."""
    graph, x, w1, w2, y, total = _wired()
    optimizer = fg.optimizer.GradientDescent(graph, total, 0.1)
    x.set_value(np.ones((1, 2)))
    optimizer.one_step()
    before = getattr(y, attribute)
    value = {"parents": [w2, x], "children": [], "graph": fg.Graph(), "dim": (3, 1)}[attribute]
    with pytest.raises(AttributeError, match=words):
        setattr(y, attribute, value)
    assert getattr(y, attribute) is before
    graph.rewire(y, [w2, x])  # the graph's own way still works, and is followed
    x.set_value(np.ones((1, 2)))
    total.forward()
    np.testing.assert_allclose(total.value.ravel(), [4.0, 4.0])


def test_set_values_refuses_inputs_of_two_shapes_and_says_what_to_do():
    model = fg.models.mlp(seed=0)
    features = np.zeros((4, 784), np.float32)
    labels = np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]
    with pytest.raises(ValueError, match=r"set_values: one_hot is 10x1, x 784x1: the inputs "
                                         r"must share a shape \(set inputs of other shapes "
                                         r"each with set_value\)"):
        fg.set_values([model.x, model.one_hot], [features, labels])


def test_the_learning_rate_help_gives_each_optimizers_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name, (_, rate) in cli.OPTIMIZERS.items():
        assert f"{rate:g} for {name}" in help_text
    assert "0.002 for adam" in help_text  # the README's figure


def test_per_sample_gradients_of_one_node_is_its_array():
    graph, x, w1, w2, y, total = _wired()
    x.set_value(np.ones((3, 2)))
    one = fg.per_sample_gradients(total, w1)
    both = fg.per_sample_gradients(total, [w1, w2])
    assert isinstance(one, np.ndarray) and one.shape == (3, 2, 2)
    assert isinstance(both, list) and np.array_equal(both[0], one)


def test_gradient_descent_says_what_it_does():
    assert "torch.optim.SGD" in fg.optimizer.GradientDescent.__doc__
    assert not fg.optimizer.GradientDescent.__doc__.startswith("Base class")
