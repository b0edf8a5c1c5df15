"""The four mutants that survived the third mutation sweep (65 tried): each test fails on its
mutant. O7: sums laid out anew without the ones accumulated; A5: article_batch without the
transpose; B6: Batches not shuffling by default; J5: chunk_size ignored with copy=False."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.article_trainer import article_batch
from fastgraph.datasets import Batches
from tests.helpers import welded_tanh

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def test_a_rewire_between_one_steps_keeps_the_sums_already_accumulated(rng):
    """O7: one_step on one wiring, weld to a branch with a new parameter, one_step again:
    the gradient of the parameters both wirings share is the mean over both steps' samples
    (the sums are laid out anew, and must come along)."""
    graph, x, target, weld, branches, (u, w, b), loss = welded_tanh(rng)
    data = [(rng.normal(size=(3, 2)), rng.normal(size=(3, 1))),
            (rng.normal(size=(5, 2)), rng.normal(size=(5, 1)))]
    sums = []
    for branch, (xs, ts) in zip((0, 1), data):  # each step's own sums, by fresh optimizers
        weld.weld(branches[branch])
        x.set_value(xs)
        target.set_value(ts)
        alone = fg.optimizer.GradientDescent(graph, loss, 0.1)
        alone.one_step()
        sums.append({p: alone.get_gradient(p) * len(xs) for p in (w, b)})
    weld.weld(branches[0])
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    for branch, (xs, ts) in zip((0, 1), data):
        weld.weld(branches[branch])
        x.set_value(xs)
        target.set_value(ts)
        optimizer.one_step()
    assert u in optimizer.params and optimizer.samples == 8
    for p in (w, b):
        np.testing.assert_allclose(optimizer.get_gradient(p), (sums[0][p] + sums[1][p]) / 8,
                                   rtol=1e-12, err_msg=p.name)


def test_article_batch_shapes_each_sample_as_the_article_does():
    """A5: the article feeds np.mat(sample).T: a matrix sample is transposed (square ones
    too, where a missing transpose changes no shape)."""
    rng = np.random.default_rng(1)
    for samples in (rng.normal(size=(4, 3, 3)), rng.normal(size=(2, 2, 5)),
                    rng.normal(size=(3, 4)), rng.normal(size=5)):
        expected = np.stack([np.asarray(np.asmatrix(s).T) for s in samples])
        np.testing.assert_array_equal(article_batch(samples), expected)


def test_batches_shuffle_by_default_with_a_new_order_every_pass():
    """B6: Batches shuffles unless told not to (SimpleTrainer relies on the default)."""
    features = np.arange(40, dtype=np.float64).reshape(40, 1)
    batches = Batches(features, np.zeros(40, np.int64), 8, classes=1, seed=0)
    orders = [np.concatenate([x[:, 0].copy() for x, _ in batches]) for _ in range(2)]
    for order in orders:
        assert sorted(order) == list(range(40))
        assert not np.array_equal(order, np.arange(40))
    assert not np.array_equal(orders[0], orders[1])
    in_order = Batches(features, np.zeros(40, np.int64), 8, classes=1, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([x[:, 0].copy() for x, _ in in_order]),
                                  np.arange(40))


def test_per_sample_gradients_in_chunks_without_copy_are_new_arrays(rng):
    """J5: with a chunk_size below the batch, copy=False still assembles the result in new
    arrays (the chunks bound the engine's memory), so a later backward pass leaves it."""
    with fg.Graph(dtype=np.float64):
        x = fg.Variable((3, 1), trainable=False)
        t = fg.Variable((1, 1), trainable=False)
        w = fg.Variable((1, 3))
        w.set_value(rng.normal(size=(1, 3)))
        loss = fg.ops.loss.MeanSquaredError(fg.ops.Tanh(fg.ops.MatMul(w, x)), t)
    x.set_value(rng.normal(size=(6, 3)))
    t.set_value(rng.normal(size=(6, 1)))
    chunked = fg.per_sample_gradients(loss, w, chunk_size=2, copy=False)
    kept = chunked.copy()
    x.set_value(rng.normal(size=(6, 3)))  # another batch of the same size, another pass
    fg.per_sample_gradients(loss, w, copy=False)
    np.testing.assert_array_equal(chunked, kept)
