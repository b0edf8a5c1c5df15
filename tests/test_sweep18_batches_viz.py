"""Batches and pictures, from a sweep of bad inputs: a batch size changed during a pass
takes effect at the next batch without skipping or repeating a sample, and misused
arguments are refused by name (they were bare AttributeErrors and TypeErrors)."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import viz
from fastgraph.datasets import Batches
from fastgraph.models import mlp


@pytest.mark.parametrize("first, then", [(3, 5), (4, 2), (1, 10), (6, 1)])
def test_a_batch_size_set_during_a_pass_starts_at_the_next_batch(first, then):
    features = np.arange(10, dtype=np.float32)[:, None]
    batches = Batches(features, np.zeros(10, int), first, classes=1, shuffle=False)
    seen, sizes = [], []
    for number, (x, _) in enumerate(batches):
        seen += x[:, 0].astype(int).tolist()
        sizes.append(len(x))
        if number == 0:
            batches.batch_size = then
    assert seen == list(range(10))  # each sample once, in order
    assert sizes[0] == first and set(sizes[1:-1]) <= {then}


def test_a_batch_size_set_during_a_feed_starts_at_the_next_batch():
    model = mlp(1, (3,), 2, seed=0)
    batches = Batches(np.arange(10, dtype=np.float32)[:, None], np.zeros(10, int), 4,
                      classes=2, shuffle=False)
    seen = []
    for number, size in enumerate(batches.feed(model.x, model.one_hot)):
        seen += model.x.value[:size, 0, 0].astype(int).tolist()
        if number == 0:
            batches.batch_size = 3
    assert seen == list(range(10))


def test_feed_refuses_one_node_as_both_inputs():
    model = mlp(6, (5,), 6, seed=0)
    batches = Batches(np.ones((20, 6), np.float32), np.zeros(20, int), 8, classes=6)
    with pytest.raises(ValueError, match=r"Batches.feed: '[^']+' is given as both x and "
                                         r"one_hot"):
        next(batches.feed(model.x, model.x))


def test_to_dot_of_a_node_says_to_pass_its_graph():
    model = mlp(4, (3,), 2, seed=0)
    with pytest.raises(TypeError, match=r"to_dot: expected a fastgraph Graph, got "
                                        r"CrossEntropyWithSoftMax \(pass its graph: node.graph\)"):
        viz.to_dot(model.loss)
    assert viz.to_dot(model.graph).startswith(viz.DOT_FIRST_LINE)


def test_draw_refuses_what_is_not_axes():
    pytest.importorskip("matplotlib")
    with pytest.raises(TypeError, match=r"draw: ax must be matplotlib Axes \(or None for a new "
                                        r"figure\), got str 'x'"):
        mlp(4, (3,), 2, seed=0).graph.draw(ax="x")


def test_plot_history_refuses_no_history_and_a_folder(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(TypeError, match=r"plot_history: history must be the epochs' records "
                                        r"\(SimpleTrainer.train's list\), got NoneType"):
        viz.plot_history(None, tmp_path / "curves.png")
    folder = tmp_path / "plots"
    folder.mkdir()
    records = [{"epoch": 1, "loss": 1.0, "train_accuracy": 0.5}]
    with pytest.raises(ValueError, match=r"plot_history: path '.*plots' is a folder, expected "
                                         r"a file name"):
        viz.plot_history(records, folder)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plots"]  # no plots.png
    assert viz.plot_history(records, tmp_path / "curves") == tmp_path / "curves.png"


def test_the_graph_module_draws_into_given_axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    try:
        assert fg.Graph().draw(ax=axes) is axes
    finally:
        plt.close(figure)
