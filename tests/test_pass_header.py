"""A compiled pass is one call of ``execute_pass`` with the address of its header (the
addresses of the arrays it reads). These tests hold the one-sample loop that runs such calls
to the walker's numbers, see that a header follows the arrays it points at, and that a
header is refused for arrays the loop cannot read."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines import compiled
from fastgraph.kernels import program
from tests.helpers import with_executor

pytestmark = [pytest.mark.compiled,
              pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")]


def _one_sample_net(seed):
    """A 5-4-3 net with a softmax cross-entropy, fed one column at a time (the article's
    loop), and its optimizer."""
    graph = fg.Graph(seed=seed)
    with graph:
        x = fg.core.Variable(dim=(5, 1), init=False, trainable=False)
        label = fg.core.Variable(dim=(3, 1), init=False, trainable=False)
        hidden = fg.layer.fc(x, 5, 4, "ReLU")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(fg.layer.fc(hidden, 4, 3, None), label)
        optimizer = fg.optimizer.Adam(graph, loss, 0.01)
    return graph, x, label, loss, optimizer


def _train(samples, labels, steps=20):
    """Losses and final weights of ``steps`` one-sample steps with an update every 4."""
    graph, x, label, loss, optimizer = _one_sample_net(3)
    losses = []
    for i in range(steps):
        x.set_value(np.asmatrix(samples[i % len(samples)]).T)
        label.set_value(np.asmatrix(labels[i % len(labels)]).T)
        optimizer.one_step()
        losses.append(float(loss.value[0, 0]))
        if i % 4 == 3:
            optimizer.update()
    return np.array(losses), [node.value.copy() for node in optimizer.params]


def test_one_sample_steps_match_the_walker():
    rng = np.random.default_rng(0)
    samples, labels = rng.normal(size=(7, 5)), np.eye(3)[[0, 2, 1, 1, 0, 2, 2]]
    walked = with_executor("python", lambda: _train(samples, labels))
    losses, weights = _train(samples, labels)
    np.testing.assert_allclose(losses, walked[0], rtol=1e-5)
    for mine, theirs in zip(weights, walked[1]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)


def test_a_settled_input_and_what_it_feeds_carry_the_pass_stamp():
    graph, x, label, loss, optimizer = _one_sample_net(0)
    x.set_value(np.asmatrix(np.ones(5)).T)
    label.set_value(np.asmatrix(np.eye(3)[0]).T)
    optimizer.one_step()
    first = float(loss.value[0, 0])
    x.set_value(np.asmatrix(np.arange(5.0)).T)  # the short path: settled by the next pass
    assert graph.unsettled
    optimizer.one_step()
    assert not graph.unsettled
    assert graph._computed[x.index] == graph._computed[loss.index] == graph.passes
    assert float(loss.value[0, 0]) != first  # recomputed from the new sample


def test_a_header_follows_the_profilers_counters_and_the_graphs_states():
    graph, x, label, loss, optimizer = _one_sample_net(1)
    x.set_value(np.asmatrix(np.ones(5)).T)
    label.set_value(np.asmatrix(np.eye(3)[1]).T)
    optimizer.one_step()
    optimizer.one_step()  # (a first and a later step: both variants' headers made)
    compiled_pass, = [found for found in compiled.passes(graph, optimizer)
                      if found.sums is not None]
    before = compiled_pass.headers[False]
    compiled_pass.cycles = np.zeros(len(compiled_pass.program), np.int64)
    optimizer.one_step()
    assert compiled_pass.cycles.sum() > 0  # the new counters were written
    assert compiled_pass.headers[False] is not before
    assert compiled_pass.headers[False][2] is compiled_pass.cycles
    counted = compiled_pass.cycles.copy()
    graph._states = graph._states.copy()  # (as a graph that grew would have)
    x.set_value(np.asmatrix(np.full(5, 2.0)).T)
    optimizer.one_step()
    assert compiled_pass.headers[False][1] is graph._states
    assert (graph._states[[x.index, loss.index]] == 0).all()
    assert (compiled_pass.cycles >= counted).all() and compiled_pass.cycles.sum() > counted.sum()


def test_a_header_is_refused_for_arrays_the_loop_cannot_read():
    code, steps = np.zeros((0, 4), np.int64), np.zeros((0, 3), np.int64)
    ints, reals = np.zeros(4, np.int64), np.zeros(1)
    states, computed = np.zeros(8, np.int8), np.zeros(8, np.int64)

    def made(**changed):
        arrays = dict(code=code, ints=ints, reals=reals, steps=steps, states=states,
                      computed=computed, backward=code, backward_ints=ints,
                      backward_reals=reals, cycles=program.NO_CYCLES)
        return program.header(**{**arrays, **changed})

    assert made().dtype == np.int64 and len(made()) == program.HEADER_SIZE
    with pytest.raises(ValueError, match="C-contiguous"):
        made(ints=np.zeros(8, np.int64)[::2])
    with pytest.raises(ValueError, match="rows of 4"):
        made(backward=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="rows of 3"):
        made(steps=np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="as many as its states"):
        made(computed=np.zeros(4, np.int64))


def test_settling_follows_a_graph_that_grew_past_its_state_arrays():
    graph = fg.Graph(seed=0)
    with graph:
        x = fg.core.Variable(dim=(2, 1), init=False, trainable=False)
        y = fg.ops.ReLU(x)
        x.set_value(np.asmatrix([[1.0], [-2.0]]))
        y.forward()
        x.set_value(np.asmatrix([[3.0], [4.0]]))  # the short path: settled on the next read
        y.forward()
        states = graph._states
        chain = y
        for _ in range(40):  # past the 16 entries the graph's arrays started with
            chain = fg.ops.Add(chain, x)
        assert graph._states is not states
        x.set_value(np.asmatrix([[5.0], [-6.0]]))
        assert graph.unsettled
        chain.forward()
    np.testing.assert_allclose(y.value, [[5.0], [0.0]])
    np.testing.assert_allclose(chain.value, [[5.0 + 40 * 5.0], [-40 * 6.0]])
