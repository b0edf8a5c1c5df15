"""The article's API: module layout, single-sample values, Welding, Transpose, metric nodes,
the article's trainer and saver. Programs in the article's style, written for these tests."""

import json

import numpy as np
import pytest

import fastgraph as ms
from fastgraph.trainer import ArticleSimpleTrainer, SimpleTrainer, TrainingDiverged

# np.asmatrix and np.matrix are the article's types; NumPy warns about the class itself.
pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def column(values):
    return np.asmatrix(np.asarray(values, dtype=float)).T


# -- the layout ------------------------------------------------------------------------------
def test_article_module_layout_is_the_one_implementation():
    assert ms.core.Variable is ms.Variable and ms.core.Node is ms.Node
    assert ms.core.Graph is ms.Graph and ms.core.name_scope is ms.name_scope
    assert ms.core.get_node_from_graph is ms.get_node_from_graph
    with ms.Graph() as graph:
        assert ms.core.default_graph is graph and ms.default_graph is graph
    assert ms.ops.CrossEntropyWithSoftMax is ms.ops.loss.CrossEntropyWithSoftMax
    assert ms.ops.LogLoss is ms.ops.loss.LogLoss
    for name in ("Accuracy", "Precision", "Recall", "ROC", "ROC_AUC", "F1Score"):
        assert issubclass(getattr(ms.ops.metrics, name), ms.ops.metrics.Metrics)
    assert callable(ms.model.logistic_regression) and callable(ms.model.multilayer_perception)
    with pytest.raises(AttributeError, match="fastgraph.core' has no attribute 'nothing'"):
        ms.core.nothing  # noqa: B018


# -- single-sample values ---------------------------------------------------------------------
def test_one_sample_in_its_own_shape_gives_the_articles_matrices():
    with ms.Graph(dtype=np.float64):
        x = ms.core.Variable(dim=(3, 1), init=False, trainable=False)
        w = ms.core.Variable(dim=(1, 3), init=True, trainable=True)
        b = ms.core.Variable(dim=(1, 1), init=True, trainable=True)
        output = ms.ops.Add(ms.ops.MatMul(w, x), b)
        predict = ms.ops.Logistic(output)
    x.set_value(column([1.0, 2.0, 3.0]))
    predict.forward()
    value = predict.value
    assert isinstance(value, np.matrix) and value.shape == (1, 1)
    expected = 1 / (1 + np.exp(-(w.value @ np.array([[1.0], [2.0], [3.0]]) + b.value)))
    assert isinstance(value[0, 0], float) and value[0, 0] == pytest.approx(expected[0, 0])
    assert isinstance(x.value, np.matrix) and x.value.A1.tolist() == [1.0, 2.0, 3.0]
    assert (x.value.T * x.value)[0, 0] == 14.0  # * is the matrix product, as in the article
    predict.backward(predict)
    w.backward(predict)
    assert isinstance(w.jacobi, np.matrix) and w.jacobi.shape == (1, 3)
    slope = expected[0, 0] * (1 - expected[0, 0])
    np.testing.assert_allclose(w.jacobi.A1, slope * np.array([1.0, 2.0, 3.0]), rtol=1e-12)


def test_a_batch_keeps_batched_arrays_and_agrees_with_one_sample_at_a_time(rng):
    with ms.Graph(dtype=np.float64, seed=0):
        x = ms.core.Variable(dim=(4, 1), init=False, trainable=False)
        logits = ms.layer.fc(x, 4, 3, "ReLU")
        predict = ms.ops.SoftMax(logits)
    batch = rng.normal(size=(5, 4))
    x.set_value(batch)
    predict.forward()
    batched = predict.value
    assert type(batched) is np.ndarray and batched.shape == (5, 3, 1)
    for i in range(5):
        x.set_value(column(batch[i]))
        predict.forward()
        np.testing.assert_allclose(predict.value.A.ravel(), batched[i, :, 0], rtol=1e-12)


def test_collected_values_stay_what_they_were(rng):
    # the article's loop: pred.append(predict.value...) sample after sample, and batches
    with ms.Graph(dtype=np.float64, seed=1):
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        predict = ms.ops.SoftMax(ms.layer.fc(x, 2, 2, None))
    samples = rng.normal(size=(6, 2))
    held = []
    for sample in samples:
        x.set_value(column(sample))
        predict.forward()
        held.append(predict.value)
    batches = []
    for start in (0, 3):
        x.set_value(samples[start:start + 3])
        predict.forward()
        batches.append(predict.value)
    np.testing.assert_allclose(np.concatenate(batches)[:, :, 0],
                               np.array([v.A1 for v in held]), rtol=1e-12)
    assert len({v[0, 0] for v in held}) == 6  # not six copies of the last one


def test_feeding_a_value_back_as_the_next_input_reads_a_snapshot():
    with ms.Graph(dtype=np.float64):
        state = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        doubled = ms.ops.ScalarMultiply(_constant((1, 1), 2.0), state)
    state.set_value(column([1.0, 3.0]))
    for _ in range(4):
        doubled.forward()
        state.set_value(doubled.value)
    assert state.value.A1.tolist() == [16.0, 48.0]


def _constant(dim, number):
    node = ms.core.Variable(dim=dim, init=False, trainable=False)
    node.set_value(np.full(dim, number))
    return node


def test_refilling_the_callers_array_before_one_step_does_not_mix_batches(rng):
    def gradient(refill):
        with ms.Graph(dtype=np.float64, seed=3) as graph:
            x = ms.core.Variable(dim=(3, 1), init=False, trainable=False)
            label = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
            logits = ms.layer.fc(x, 3, 2, None)
            loss = ms.ops.loss.CrossEntropyWithSoftMax(logits, label)
            optimizer = ms.optimizer.GradientDescent(graph, loss, 0.1)
        features = rng_features.copy()
        x.set_value(features)
        label.set_value(np.eye(2)[[0, 1, 0, 1]])
        if refill:
            features[:] = 100.0  # the caller prepares its next batch at once
        optimizer.one_step()
        return optimizer.get_gradient(optimizer.params[0])

    rng_features = rng.normal(size=(4, 3))
    np.testing.assert_array_equal(gradient(refill=True), gradient(refill=False))


def test_setting_one_sample_again_and_again_is_what_a_first_setting_is(rng):
    # An input that holds one sample takes the next one on a short path: same copy, same
    # casts, same invalidation, same errors as the general one.
    def build():
        with ms.Graph(dtype=np.float64, seed=1):
            x = ms.core.Variable(dim=(3, 2), init=False, trainable=False)
            y = ms.ops.ReLU(ms.ops.Add(x, ms.core.Variable(dim=(3, 2), init=True)))
        return x, y

    x, y = build()
    samples = [np.asmatrix(rng.normal(size=(3, 2))), rng.normal(size=(3, 2)),
               np.arange(6).reshape(3, 2), rng.normal(size=(2, 3)).T,  # ints; not contiguous
               np.array([[True, False], [False, True], [True, True]])]
    for sample in samples:
        mine = np.array(sample, copy=True)
        x.set_value(mine)
        assert y.value is None  # what depends on x is emptied
        mine[...] = 100  # the caller may refill its array at once
        y.forward()
        fresh_x, fresh_y = build()
        fresh_x.set_value(np.asarray(sample))  # a first setting takes the general path
        fresh_y.forward()
        assert isinstance(y.value, np.matrix) and isinstance(x.value, np.matrix)
        np.testing.assert_array_equal(x.value, np.asarray(sample, dtype=float))
        np.testing.assert_array_equal(y.value, fresh_y.value)
    x.set_value([[1, -2], [3, -4], [5, -6]])  # a nested list, as np.asarray reads it
    y.forward()
    np.testing.assert_array_equal(x.value, [[1, -2], [3, -4], [5, -6]])
    x.set_value(rng.normal(size=(4, 3, 2)))  # a batch, then one sample again
    y.forward()
    assert y.value.shape == (4, 3, 2) and not isinstance(y.value, np.matrix)
    x.set_value(np.asmatrix(samples[0]))
    y.forward()
    assert isinstance(y.value, np.matrix) and y.value.shape == (3, 2)
    with pytest.raises(TypeError, match="expected a numeric array, got dtype <U1"):
        x.set_value(np.full((3, 2), "a"))
    with pytest.raises(ValueError, match=r"or one sample of shape \(3, 2\), got \(2, 3\)"):
        x.set_value(np.zeros((2, 3)))


def test_values_are_none_until_computed_and_after_an_input_changes():
    with ms.Graph():
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        y = ms.ops.ReLU(x)
    assert x.value is None and y.value is None
    x.set_value(column([1.0, -1.0]))
    assert y.value is None
    y.forward()
    first = y.value
    assert first is y.value  # one snapshot per computation
    x.set_value(column([2.0, -2.0]))
    assert y.value is None and first.A1.tolist() == [1.0, 0.0]


# -- housekeeping ---------------------------------------------------------------------------
def test_graph_and_node_housekeeping():
    with ms.Graph(dtype=np.float64) as graph:
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False, name="x")
        w = ms.core.Variable(dim=(1, 2), init=True, trainable=True)
        y = ms.ops.MatMul(w, x)
    assert graph.node_count() == 3
    assert y.get_parents() == [w, x] and x.get_children() == [y] and w.get_children() == [y]
    assert ms.core.get_node_from_graph("x", graph=graph) is x
    x.set_value(column([1.0, 2.0]))
    y.forward()
    w.backward(y)
    assert w.jacobi is not None
    w.clear_jacobi()
    assert w.jacobi is None
    w.backward(y)
    graph.clear_jacobi()
    assert w.jacobi is None
    graph.reset_value()
    assert y.value is None and x.value is not None


def test_fc_activation_strings_follow_the_article():
    with ms.Graph():
        x = ms.core.Variable(dim=(3, 1), init=False, trainable=False)
        assert type(ms.layer.fc(x, 3, 2, "ReLU")) is ms.ops.ReLU
        assert type(ms.layer.fc(x, 3, 2, "Logistic")) is ms.ops.Logistic
        assert type(ms.layer.fc(x, 3, 2, "None")) is ms.ops.Add
        assert type(ms.layer.fc(x, 3, 2, None)) is ms.ops.Add
        assert type(ms.layer.fc(x, 3, 2, "Linear")) is ms.ops.Add
        with pytest.raises(ValueError, match="unknown activation 'logistic'"):
            ms.layer.fc(x, 3, 2, "logistic")


# -- Transpose and Welding -----------------------------------------------------------------
def test_transpose_against_numpy_and_its_three_derivatives(rng):
    with ms.Graph(dtype=np.float64) as graph:
        x = ms.core.Variable(dim=(2, 3), init=False, trainable=False)
        h = ms.core.Variable(dim=(3, 2), init=True, trainable=True)
        y = ms.ops.MatMul(ms.ops.Transpose(x), ms.ops.Transpose(h))
    batch = rng.normal(size=(4, 2, 3))
    x.set_value(batch)
    y.forward()
    np.testing.assert_allclose(y.value, np.swapaxes(batch, 1, 2) @ h.value.T, rtol=1e-12)
    gradients = []
    for engine in ("vjp", "jacobian"):  # batched VJPs against the article's dense Jacobians
        optimizer = ms.optimizer.GradientDescent(graph, y, 0.1, engine=engine)
        optimizer.one_step()
        gradients.append(optimizer.get_gradient(h))
    np.testing.assert_allclose(gradients[0], gradients[1], rtol=1e-12)
    per_sample = ms.jacobian(y, x)  # through the batched Transpose(x), per sample
    np.testing.assert_allclose(per_sample, x.backward(y, engine="jacobian"), rtol=1e-12)
    analytic = gradients[0] * 4
    numeric = np.zeros(h.dim)
    base = h.value
    for index in np.ndindex(*h.dim):
        for sign in (1, -1):
            shifted = base.copy()
            shifted[index] += sign * 1e-6
            h.set_value(shifted)
            y.forward()
            numeric[index] += sign * y.value.sum() / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_welding_follows_a_new_parent_in_forward_backward_and_the_optimizer(rng):
    with ms.Graph(dtype=np.float64, seed=4) as graph:
        inputs = [ms.core.Variable(dim=(2, 1), init=False, trainable=False) for _ in range(3)]
        u = ms.core.Variable(dim=(2, 2), init=True, trainable=True)
        steps, last = [], None
        for node in inputs:
            h = ms.ops.MatMul(u, node)
            last = h if last is None else ms.ops.Add(h, last)
            steps.append(last)
        weld = ms.ops.Welding()
        out = ms.layer.fc(weld, 2, 1, None)
        optimizer = ms.optimizer.GradientDescent(graph, out, 0.1)
    assert u not in optimizer.params  # nothing welded yet
    values = rng.normal(size=(3, 2))
    for node, value in zip(inputs, values):
        node.set_value(column(value))
    for j in (2, 0, 1):
        weld.weld(steps[j])
        optimizer.one_step()
        expected = np.asarray(u.value) @ values[: j + 1].sum(axis=0)
        np.testing.assert_allclose(weld.value.A1, expected, rtol=1e-12)
        w = optimizer.params[optimizer.params.index(u) + 1 :]  # fc's weights come after u
        assert u in optimizer.params and w
        optimizer.update()
    with pytest.raises(ValueError, match="cannot weld .* of shape \\(1, 1\\)"):
        weld.weld(out)


def _two_branches():
    with ms.Graph(dtype=np.float64, seed=6) as graph:
        x = ms.core.Variable(dim=(3, 1), init=False, trainable=False)
        y = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        a = ms.core.Variable(dim=(4, 3), init=True, trainable=True)
        b = ms.core.Variable(dim=(4, 3), init=True, trainable=True)
        branches = [ms.ops.ReLU(ms.ops.MatMul(p, x)) for p in (a, b)]
        weld = ms.ops.Welding()
        loss = ms.ops.loss.CrossEntropyWithSoftMax(ms.layer.fc(weld, 4, 2, None), y)
    for param in (a, b):
        param.set_value(graph.rng.normal(0.0, 0.5, param.dim))
    return graph, x, y, a, b, branches, weld, loss


@pytest.mark.parametrize("engine", ["vjp", "python", "jacobian"])
def test_a_parameter_welded_away_before_the_update_gets_what_it_gathered(rng, engine):
    """Sample 1 through a, weld to b, sample 2 through b, update(): a moves by the half of
    its gradient of sample 1, as the article's optimizer and torch's move it (its sum was
    dropped when it left the graph, and it did not move at all); then it is let go."""
    samples = [(column(rng.normal(size=3)), column(np.eye(2)[i])) for i in range(2)]
    gradients = []  # each sample's gradients alone, through its branch
    for branch, (xv, yv) in enumerate(samples):
        graph, x, y, a, b, branches, weld, loss = _two_branches()
        weld.weld(branches[branch])
        optimizer = ms.optimizer.GradientDescent(graph, loss, 0.1, engine=engine)
        x.set_value(xv)
        y.set_value(yv)
        optimizer.one_step()
        gradients.append({param.name: optimizer.get_gradient(param) for param in optimizer.params})
    graph, x, y, a, b, branches, weld, loss = _two_branches()
    before = {node.name: node.value.copy() for node in graph.nodes
              if isinstance(node, ms.core.Variable) and node.trainable}
    weld.weld(branches[0])
    optimizer = ms.optimizer.GradientDescent(graph, loss, 0.1, engine=engine)
    for branch, (xv, yv) in enumerate(samples):
        weld.weld(branches[branch])
        x.set_value(xv)
        y.set_value(yv)
        optimizer.one_step()
    assert a in optimizer.params and b in optimizer.params
    optimizer.update()
    for name, value in before.items():
        total = sum(step.get(name, 0) for step in gradients)
        np.testing.assert_allclose(graph.get_node(name).value, value - 0.1 * total / 2,
                                   rtol=1e-12, atol=1e-15)
    moved = a.value.copy()
    optimizer.one_step()
    optimizer.update()
    assert a not in optimizer.params and b in optimizer.params
    np.testing.assert_array_equal(a.value, moved)


def _welded_rnn(dtype, steps=6):
    with ms.Graph(dtype=dtype, seed=5) as graph:
        inputs = [ms.core.Variable(dim=(3, 1), init=False, trainable=False)
                  for _ in range(steps)]
        u = ms.core.Variable(dim=(4, 3), init=True, trainable=True)
        w = ms.core.Variable(dim=(4, 4), init=True, trainable=True)
        hiddens, last = [], None
        for x in inputs:
            h = ms.ops.MatMul(u, x)
            if last is not None:
                h = ms.ops.Add(ms.ops.MatMul(w, last), h)
            last = ms.ops.ReLU(h)
            hiddens.append(last)
        end = ms.ops.Welding()
        label = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        loss = ms.ops.loss.CrossEntropyWithSoftMax(ms.layer.fc(end, 4, 2, "None"), label)
    for param in (u, w):  # N(0, 0.001) is too small to tell a wrong gradient from none
        param.set_value(graph.rng.normal(0.0, 0.5, param.dim))
    return graph, inputs, hiddens, end, label, loss


@pytest.mark.parametrize("engine", ["vjp", "jacobian"])
def test_welding_back_and_forth_agrees_with_the_walker_at_every_step(rng, engine):
    # The compiled passes are kept per wiring and found again when a weld comes back to a
    # step: each sample's gradients and each update must be the walker's (engine="python").
    steps = 6
    sequences = rng.normal(size=(40, steps, 3))
    welds = [5, 2, 5, 3, 3, 0, 5, 2, 4, 1] * 4
    runs = []
    for name in (engine, "python"):
        graph, inputs, hiddens, end, label, loss = _welded_rnn(np.float64, steps)
        optimizer = ms.optimizer.Adam(graph, loss, 0.05, engine=name)
        seen = []
        for i, (sequence, j) in enumerate(zip(sequences, welds)):
            for x, step in zip(inputs, sequence):
                x.set_value(np.asmatrix(step).T)
            end.weld(hiddens[j])
            label.set_value(np.asmatrix(np.eye(2)[i % 2]).T)
            optimizer.one_step()
            seen.append(loss.value[0, 0])
            seen.extend(optimizer.get_gradient(param).ravel() for param in optimizer.params)
            if i % 3 == 2:
                optimizer.update()
        seen.extend(param.value.ravel() for param in optimizer.params)
        runs.append(seen)
    for mine, walker in zip(*runs):
        np.testing.assert_allclose(mine, walker, rtol=1e-9, atol=1e-12)


def test_a_re_welded_graph_computes_what_a_graph_welded_once_does(rng):
    graph, inputs, hiddens, end, label, loss = _welded_rnn(np.float32)
    optimizer = ms.optimizer.GradientDescent(graph, loss, 0.1)
    sequence = rng.normal(size=(6, 3))
    for j in [4, 1, 5, 1, 4, 0, 4]:
        for x, step in zip(inputs, sequence):
            x.set_value(np.asmatrix(step).T)
        end.weld(hiddens[j])
        label.set_value(np.asmatrix([[1.0], [0.0]]))
        optimizer.one_step()
        fresh_graph, fresh_inputs, fresh_hiddens, fresh_end, fresh_label, fresh_loss = \
            _welded_rnn(np.float32)
        for x, step in zip(fresh_inputs, sequence):
            x.set_value(np.asmatrix(step).T)
        fresh_end.weld(fresh_hiddens[j])  # its first and only wiring
        fresh_label.set_value(np.asmatrix([[1.0], [0.0]]))
        reference = ms.optimizer.GradientDescent(fresh_graph, fresh_loss, 0.1)
        assert [p.name for p in reference.params] == [p.name for p in optimizer.params]
        for param, fresh_param in zip(optimizer.params, reference.params):
            fresh_param.set_value(param.value)
        reference.one_step()
        assert loss.value[0, 0] == fresh_loss.value[0, 0]
        for param, fresh_param in zip(optimizer.params, reference.params):
            np.testing.assert_array_equal(optimizer.get_gradient(param),
                                          reference.get_gradient(fresh_param))
        optimizer.update()


def test_an_unwelded_point_says_so():
    with ms.Graph():
        weld = ms.ops.Welding(dim=(2, 1))
        out = ms.ops.ReLU(weld)
    with pytest.raises(ValueError, match="has no parent: call .*weld\\(node\\) first"):
        out.forward()


def _by_the_general_path(x, value):
    x._sample = None  # an input without a sample in its shape takes the general path
    x.set_value(value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_fed_on_the_short_path_leave_what_the_general_path_leaves(rng, dtype):
    # Inputs that hold one sample are only noted as fed; the graph marks what depends on
    # them later, once for them all (Graph.settle). Whatever a program can see in between
    # (states, values, gradients, after welds, forwards, updates, resets) must be what the
    # general path, which marks at once, gives, bit for bit.
    graphs = [_welded_rnn(dtype) for _ in range(2)]
    optimizers = [ms.optimizer.Adam(graph, loss, 0.05) for graph, *_, loss in graphs]
    choices = ["feed", "feed some", "weld", "step", "update", "read", "forward", "reset",
               "label"]
    script = [(choices[k], rng.integers(6), rng.normal(size=(6, 3)), rng.random() < 0.4)
              for k in rng.integers(len(choices), size=160)]
    script[:3] = [("feed", 0, rng.normal(size=(6, 3)), False), ("label", 0, None, False),
                  ("weld", 5, None, False)]
    for what, j, sequence, look in script:
        seen = []
        for (graph, inputs, hiddens, end, label, loss), optimizer, short in zip(
                graphs, optimizers, (True, False)):
            put = (lambda x, v: x.set_value(v)) if short else _by_the_general_path
            if what in ("feed", "feed some"):
                for x, step in list(zip(inputs, sequence))[: j + 1 if what == "feed some" else 6]:
                    put(x, np.asmatrix(step).T)
            elif what == "label":
                put(label, np.asmatrix(np.eye(2)[j % 2]).T)
            elif what == "weld":
                end.weld(hiddens[j])
            elif what == "step":
                optimizer.one_step()
                seen.append([optimizer.get_gradient(param) for param in optimizer.params])
            elif what == "update" and optimizer.samples:
                optimizer.update()
            elif what == "read":
                seen.append([None if node.value is None else np.array(node.value)
                             for node in (*hiddens, end, loss, *inputs)])
            elif what == "forward":
                hiddens[j].forward()
            elif what == "reset":
                (graph.reset_value if j < 2 else hiddens[j].reset_value)()
            if look:
                seen.append(graph.states[: graph.node_count()].copy())
        if seen:
            short, general = seen[: len(seen) // 2], seen[len(seen) // 2 :]
            for mine, theirs in zip(short, general):
                if isinstance(mine, np.ndarray):
                    np.testing.assert_array_equal(mine, theirs)
                    continue
                for a, b in zip(mine, theirs):
                    assert (a is None) == (b is None)
                    if a is not None:
                        np.testing.assert_array_equal(a, b)
    for one, other in zip(*(optimizer.params for optimizer in optimizers)):
        np.testing.assert_array_equal(one.value, other.value)


def test_what_follows_a_short_path_setting_is_emptied_before_anything_reads_or_changes():
    with ms.Graph(dtype=np.float64) as graph:
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        y = ms.ops.ReLU(x)
        weld = ms.ops.Welding(y)
        z = ms.ops.ReLU(weld)
    x.set_value(column([1.0, -2.0]))
    z.forward()
    x.set_value(column([3.0, -4.0]))  # the short path: x holds one sample already
    assert graph.unsettled
    with graph:
        late = ms.ops.ScalarMultiply(_constant((1, 1), 2.0), z)  # nodes built now
    assert not graph.unsettled and y.value is None and z.value is None
    assert late.value is None
    late.forward()
    assert late.value.A1.tolist() == [6.0, 0.0]
    x.set_value(column([5.0, -6.0]))
    weld.weld(x)  # re-wired while x's setting is pending: x's old and new followers
    assert y.value is None and z.value is None and weld.value is None
    z.forward()
    assert z.value.A1.tolist() == [5.0, 0.0] and y.value is None
    x.set_value(column([7.0, 8.0]))
    assert x.value.A1.tolist() == [7.0, 8.0]  # the input's own snapshot is renewed
    first = x.value
    x.set_value(column([9.0, 10.0]))
    assert first.A1.tolist() == [7.0, 8.0] and x.value.A1.tolist() == [9.0, 10.0]


def test_a_held_sample_refuses_what_the_general_path_refuses():
    with ms.Graph(dtype=np.float32):
        x = ms.core.Variable(dim=(3, 1), init=False, trainable=False, name="x")
        y = ms.ops.ReLU(x)
    x.set_value(column([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"x: an np.matrix is one sample, of shape \(3, 1\); "
                                         r"got \(2, 1\)$"):
        x.set_value(column([1.0, 2.0]))  # a column one short
    with pytest.raises(ValueError, match=r"x: an np.matrix is one sample, of shape \(3, 1\); "
                                         r"got \(1, 3\) \(its transpose: "
                                         r"np.asmatrix\(sample\).T\)"):
        x.set_value(np.asmatrix([1.0, 2.0, 3.0]))  # was a batch of one, its values no matrices
    with pytest.raises(ValueError, match=r"x: expected a batch of shape \(B, 3, 1\), "
                                         r"\(B, 3\) or one sample of shape \(3, 1\), got \(2, 1\)"):
        x.set_value(np.array([[1.0], [2.0]]))  # an array: the general rule
    with pytest.raises(TypeError, match="x: expected a numeric array, got dtype object"):
        x.set_value(np.asmatrix(np.array([[1], [None], [3]], dtype=object)))
    with pytest.raises(TypeError, match="x: expected a numeric array, got dtype complex128"):
        x.set_value(np.ones((3, 1), complex))
    half = np.array([[0.5], [-1.5], [2.25]], np.float16)
    x.set_value(half)  # the short path casts it as the general path (below) does
    y.forward()
    held = y.value
    fresh = ms.core.Variable(dim=(3, 1), init=False, trainable=False, graph=x.graph)
    fresh.set_value(half)  # a first setting: the general path
    np.testing.assert_array_equal(fresh.value, x.value)
    assert held.A1.tolist() == [0.5, 0.0, 2.25]
    x.set_value(np.ones((1, 3, 1)))  # a batch of one: batched arrays again
    y.forward()
    assert y.value.shape == (1, 3, 1) and not isinstance(y.value, np.matrix)


@pytest.mark.compiled
def test_passes_recorded_before_a_weld_to_a_later_step_stay_valid(recordings):
    # Welding to a step never computed before makes that step's buffers; the passes of the
    # earlier wirings do not hold them and are kept (the graph's layout counts buffers
    # replaced, not buffers made). A buffer replaced makes them point the nodes back at
    # theirs, which the nodes keep (the last KEPT_SHAPES shapes of each); one no longer
    # kept makes them record again.
    from fastgraph.node import KEPT_SHAPES

    recorded = recordings
    graph, inputs, hiddens, end, label, loss = _welded_rnn(np.float32)
    optimizer = ms.optimizer.GradientDescent(graph, loss, 0.1)
    for x in inputs:
        x.set_value(column([0.1, 0.2, 0.3]))
    label.set_value(column([1.0, 0.0]))
    for j in (1, 4, 1, 5, 4, 1, 5):
        end.weld(hiddens[j])
        optimizer.one_step()
        assert np.isfinite(optimizer.get_gradient(optimizer.params[0])).all()
    assert len(recorded) == 3  # one pass a wiring
    optimizer.samples = 0
    optimizer.one_step()
    expected = optimizer.get_gradient(optimizer.params[0])  # this wiring's, one sample
    seed = loss.buffer("seed", (1, 1))
    layout = graph.layout
    loss.buffer("seed", (2, 1))  # a buffer replaced: the passes that hold it are stale
    assert graph.layout == layout + 1
    loss.buffer("something new", (2, 1))
    assert graph.layout == layout + 1
    optimizer.samples = 0
    optimizer.one_step()  # its pass takes the seed back (and computes again)
    assert len(recorded) == 3 and loss._buffers["seed"] is seed
    np.testing.assert_array_equal(optimizer.get_gradient(optimizer.params[0]), expected)
    for rows in range(2, KEPT_SHAPES + 3):  # the first seed is no longer kept
        loss.buffer("seed", (rows, 1))
    optimizer.samples = 0
    optimizer.one_step()
    assert len(recorded) == 4 and loss._buffers["seed"] is not seed
    np.testing.assert_array_equal(optimizer.get_gradient(optimizer.params[0]), expected)

# -- metric nodes -------------------------------------------------------------------------------
def test_metric_nodes_accumulate_over_forward_calls_and_reset():
    with ms.Graph(dtype=np.float64):
        score = ms.core.Variable(dim=(1, 1), init=False, trainable=False)
        label = ms.core.Variable(dim=(1, 1), init=False, trainable=False)
        nodes = [cls(score, label) for cls in (
            ms.ops.metrics.Accuracy, ms.ops.metrics.Precision, ms.ops.metrics.Recall,
            ms.ops.metrics.F1Score, ms.ops.metrics.ROC_AUC, ms.ops.metrics.ROC)]
    scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1]
    labels = [1, -1, 1, 1, -1, -1]
    for s, y in zip(scores, labels):  # one sample at a time, as the article feeds them
        score.set_value(np.asmatrix(s))
        label.set_value(np.asmatrix(y))
        for node in nodes:
            node.forward()
    accuracy, precision, recall, f1, auc, roc = nodes
    # predicted positive: 0.9, 0.8, 0.6; truly positive: 0.9, 0.3, 0.6
    assert accuracy.value == pytest.approx(4 / 6)
    assert precision.value == pytest.approx(2 / 3) and recall.value == pytest.approx(2 / 3)
    assert f1.value == pytest.approx(2 / 3)
    assert auc.value == pytest.approx(7 / 9)
    assert accuracy.value_str() == "Accuracy: 0.6667 " and roc.value_str() == ""
    fpr, tpr = roc.value
    assert (fpr[49], tpr[49]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))  # threshold 0.5
    accuracy.reset()
    assert accuracy.value is None and accuracy.value_str() == "Accuracy: n/a "
    score.set_value(np.array(scores).reshape(6, 1, 1))  # a batch counts every sample
    label.set_value(np.array(labels).reshape(6, 1, 1))
    accuracy.forward()
    assert accuracy.value == pytest.approx(4 / 6)


def test_binary_metrics_at_their_thresholds_and_for_the_positive_class():
    """A score of exactly 0.5 is a positive prediction, an ROC point counts the scores equal
    to its threshold, and precision and recall are the positive class's: data on which each
    of those choices changes a number (with the data above, precision and recall of both
    classes are all 2/3, and no score sits at 0.5)."""
    with ms.Graph(dtype=np.float64):
        score = ms.core.Variable(dim=(1, 1), init=False, trainable=False)
        label = ms.core.Variable(dim=(1, 1), init=False, trainable=False)
        nodes = [cls(score, label) for cls in (
            ms.ops.metrics.Accuracy, ms.ops.metrics.Precision, ms.ops.metrics.Recall,
            ms.ops.metrics.F1Score, ms.ops.metrics.ROC)]
    score.set_value(np.array([0.5, 0.2, 0.9, 0.8, 0.7, 0.1]).reshape(6, 1, 1))
    label.set_value(np.array([1, -1, 1, -1, -1, -1]).reshape(6, 1, 1))
    for node in nodes:
        node.forward()
    accuracy, precision, recall, f1, roc = nodes
    assert accuracy.value == pytest.approx(4 / 6)  # predicted positive: 0.5, 0.9, 0.8, 0.7
    assert precision.value == pytest.approx(1 / 2) and recall.value == pytest.approx(1.0)
    assert f1.value == pytest.approx(2 / 3)
    fpr, tpr = roc.value
    assert tpr[49] == pytest.approx(1.0) and fpr[69] == pytest.approx(0.5)  # 0.5 and 0.7
    with ms.Graph(dtype=np.float64):  # the data of the test above, at thresholds on scores
        score = ms.core.Variable(dim=(1, 1), init=False, trainable=False)
        label = ms.core.Variable(dim=(1, 1), init=False, trainable=False)
        roc = ms.ops.metrics.ROC(score, label)
    score.set_value(np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1]).reshape(6, 1, 1))
    label.set_value(np.array([1, -1, 1, 1, -1, -1]).reshape(6, 1, 1))
    roc.forward()
    fpr, tpr = roc.value
    assert [tpr[29], tpr[59], tpr[89]] == pytest.approx([1, 2 / 3, 1 / 3])
    assert [fpr[9], fpr[19], fpr[79]] == pytest.approx([1, 2 / 3, 1 / 3])


def test_multiclass_accuracy_and_bad_labels():
    with ms.Graph():
        scores = ms.core.Variable(dim=(3, 1), init=False, trainable=False)
        one_hot = ms.core.Variable(dim=(3, 1), init=False, trainable=False)
        accuracy = ms.ops.metrics.Accuracy(scores, one_hot)
        precision = ms.ops.metrics.Precision(scores, one_hot)
    scores.set_value(np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]))
    one_hot.set_value(np.array([[0, 1, 0], [0, 0, 1]]))
    accuracy.forward()
    assert accuracy.value == 0.5
    precision.forward()
    with pytest.raises(ValueError, match="about a binary output of one row"):
        precision.value  # noqa: B018
    one_hot.set_value(np.array([[0, 1, 1], [0, 0, 1]]))
    with pytest.raises(ValueError, match="not one-hot: row 0"):
        accuracy.forward()


# -- the article's optimizer rules ----------------------------------------------------------------
def articles_rule(name, options):
    """The article's RMSProp and Adam (MatrixSlow's optimizer.py), on plain arrays: a
    parameter's state starts at its first gradient; eps inside the square root."""
    lr, eps, state = options["learning_rate"], options["eps"], {}

    def step(key, w, g):
        if name == "RMSProp":
            s = g * g if key not in state else \
                options["beta"] * state[key] + (1 - options["beta"]) * g * g
            state[key] = s
            return w - lr * g / np.sqrt(s + eps)
        b1, b2 = options["beta_1"], options["beta_2"]
        m, v = (g, g * g) if key not in state else \
            (b1 * state[key][0] + (1 - b1) * g, b2 * state[key][1] + (1 - b2) * g * g)
        state[key] = (m, v)
        return w - lr * m / np.sqrt(v + eps)

    return step


@pytest.mark.parametrize("name", ["RMSProp", "Adam"])
def test_article_conventions_follow_the_articles_formulas(rng, name):
    # Updates 1-2 welded to the first step (u and the fc layer's parameters), then a weld to
    # the last step brings w in: its state starts at its own first gradient, the others go on.
    graph, inputs, hiddens, end, label, loss = _welded_rnn(np.float64)
    end.weld(hiddens[0])
    optimizer = getattr(ms.optimizer, name)(graph, loss, 0.05, conventions="article")
    options = {"learning_rate": 0.05, "beta": 0.9, "beta_1": 0.9, "beta_2": 0.99, "eps": 1e-10}
    assert optimizer.conventions == "article"
    assert [getattr(optimizer, key) for key in ("beta", "beta_2") if hasattr(optimizer, key)] \
        in ([0.9], [0.99])
    reference, weights, counts = articles_rule(name, options), {}, []
    for i in range(6):
        for x, step in zip(inputs, rng.normal(size=(6, 3))):
            x.set_value(np.asmatrix(step).T)
        end.weld(hiddens[0] if i < 2 else hiddens[5])
        label.set_value(np.asmatrix(np.eye(2)[i % 2]).T)
        optimizer.one_step()
        optimizer.one_step()  # two samples to a mean
        expected = {}
        for param in optimizer.params:
            w = weights.get(param.name, np.asarray(param.value))
            expected[param.name] = reference(param.name, w, optimizer.get_gradient(param))
        optimizer.update()
        counts.append(len(optimizer.params))
        for param in optimizer.params:
            np.testing.assert_allclose(param.value, expected[param.name], rtol=1e-12,
                                       atol=1e-15)
            weights[param.name] = np.asarray(param.value)
    assert counts == [3, 3, 4, 4, 4, 4]


def test_which_conventions_an_optimizer_follows():
    assert ms.graph._module_graph.conventions == "article"  # where the article's programs build
    with ms.Graph() as graph:
        assert ms.default_graph.conventions == "torch"
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        loss = ms.ops.ReLU(ms.layer.fc(x, 2, 1, None))
    adam, rms = ms.optimizer.Adam(graph, loss), ms.optimizer.RMSProp(graph, loss)
    assert (adam.conventions, adam.learning_rate, adam.beta_2, adam.eps) == \
        ("torch", np.float32(0.001), 0.999, np.float32(1e-8))
    assert (rms.conventions, rms.beta, rms.eps) == ("torch", 0.99, np.float32(1e-8))
    adam = ms.optimizer.Adam(graph, loss, conventions="article")
    assert (adam.learning_rate, adam.beta_2, adam.eps) == \
        (np.float32(0.01), 0.99, np.float32(1e-10))
    assert ms.optimizer.RMSProp(graph, loss, beta=0.5, conventions="article").beta == 0.5
    with ms.Graph(conventions="article") as graph:
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        loss = ms.ops.ReLU(ms.layer.fc(x, 2, 1, None))
    assert ms.optimizer.RMSProp(graph, loss).beta == 0.9
    assert ms.optimizer.Adam(graph, loss, conventions="torch").beta_2 == 0.999
    with pytest.raises(ValueError, match="conventions must be one of 'torch', 'article', "
                                         "got 'pytorch'"):
        ms.optimizer.Adam(graph, loss, conventions="pytorch")
    with pytest.raises(ValueError, match="Graph conventions must be one of 'torch', 'article', "
                                         "got None"):
        ms.Graph(conventions=None)


def test_layers_relu_is_the_articles_leaky_one_under_the_articles_conventions():
    for conventions, slope in (("torch", 0.0), ("article", 0.1)):
        with ms.Graph(dtype=np.float64, conventions=conventions) as graph:
            x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
            hidden = ms.layer.fc(x, 2, 2, "ReLU")
            image = ms.core.Variable(dim=(3, 3), init=False, trainable=False)
            (maps,) = ms.layer.conv([image], (3, 3), 1, (1, 1), "ReLU")
        # Identity weights and zero biases: the affine maps pass their inputs on.
        weights, bias = hidden.parents[0].parents[0].parents[0], hidden.parents[0].parents[1]
        kernel, scalar = maps.parents[0].parents[0].parents[0].parents[1], \
            maps.parents[0].parents[1]
        for param, value in ((weights, np.eye(2)), (bias, np.zeros((2, 1))),
                             (kernel, np.ones((1, 1))), (scalar, np.zeros((1, 1)))):
            assert param.trainable and param.graph is graph
            param.set_value(value)
        x.set_value(column([1.0, -2.0]))
        image.set_value(np.linspace(-1, 1, 9).reshape(3, 3))
        assert type(hidden).__name__ == ("LeakyReLU" if slope else "ReLU") == \
            type(maps).__name__
        for node, given in ((hidden, np.array([[1.0], [-2.0]])),
                            (maps, np.linspace(-1, 1, 9).reshape(3, 3))):
            node.forward()
            np.testing.assert_allclose(node.value, np.where(given > 0, given, slope * given),
                                       rtol=1e-12)


# -- the article's trainer and saver ----------------------------------------------------------
def _article_problem(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(200, 4))
    labels = np.where(features[:, 0] + features[:, 1] > 0, 1, -1)
    return features, labels


def _article_graph(seed=0):
    graph = ms.Graph(dtype=np.float64, seed=seed)
    with graph:
        x = ms.core.Variable(dim=(4, 1), init=False, trainable=False, name="x")
        label = ms.core.Variable(dim=(1, 1), init=False, trainable=False, name="label")
        output = ms.layer.fc(x, 4, 1, None)
        predict = ms.ops.Logistic(output, name="predict")
        loss = ms.ops.loss.LogLoss(ms.ops.Multiply(label, output))
        optimizer = ms.optimizer.Adam(graph, loss, 0.05)
    return graph, x, label, output, predict, loss, optimizer


def _articles_loop(x, label, optimizer, features, labels, epochs=2, batch_size=16):
    """The article's own training loop: one sample per one_step(), an update every
    ``batch_size`` samples (the last partial batch carried into the next epoch)."""
    for _ in range(epochs):
        for i in range(len(features)):
            x.set_value(np.asmatrix(features[i]).T)
            label.set_value(np.asmatrix(labels[i]))
            optimizer.one_step()
            if (i + 1) % batch_size == 0:
                optimizer.update()


def test_article_trainer_equals_the_articles_single_sample_loop(capsys):
    features, labels = _article_problem()
    graph, x, label, output, _, loss, optimizer = _article_graph()
    accuracy = ms.ops.metrics.Accuracy(output, label)
    trainer = SimpleTrainer([x], label, loss, optimizer, epoches=2, batch_size=16,
                            eval_on_train=True, metrics_ops=[accuracy])
    assert isinstance(trainer, ArticleSimpleTrainer)
    trainer.train_and_eval({"x": features}, labels, {"x": features}, labels)
    batched = [p.value.copy() for p in optimizer.params]
    printed = capsys.readouterr().out
    assert "[INIT] Variable weights init finished" in printed
    assert "Epoch [2] evaluation metrics Accuracy: " in printed
    assert accuracy.value > 0.8

    # the same training, one sample per one_step(), as the article's own loop
    graph, x, label, _, _, loss, optimizer = _article_graph()
    _articles_loop(x, label, optimizer, features, labels)
    for mine, theirs in zip(batched, optimizer.params):
        np.testing.assert_allclose(mine, theirs.value, rtol=1e-9, atol=1e-12)


def _constant_graph(seed=0):
    """``_article_graph`` with the bias as the article's convolution layer makes it: a
    trainable scalar times ``ones``, an input set once with one sample."""
    graph = ms.Graph(dtype=np.float64, seed=seed)
    with graph:
        x = ms.core.Variable(dim=(4, 1), init=False, trainable=False, name="x")
        label = ms.core.Variable(dim=(1, 1), init=False, trainable=False, name="label")
        ones = ms.core.Variable(dim=(1, 1), init=False, trainable=False, name="ones")
        ones.set_value(np.asmatrix(np.ones((1, 1))))
        weights = ms.core.Variable(dim=(1, 4), init=True, trainable=True)
        bias = ms.core.Variable(dim=(1, 1), init=True, trainable=True)
        output = ms.ops.Add(ms.ops.MatMul(weights, x), ms.ops.ScalarMultiply(bias, ones))
        loss = ms.ops.loss.LogLoss(ms.ops.Multiply(label, output))
        optimizer = ms.optimizer.Adam(graph, loss, 0.05)
    return x, label, ones, output, loss, optimizer


def test_article_trainer_keeps_a_constant_input_for_every_sample(capsys):
    """An input set once with one sample (the ones of the article's convolution layer) is
    the same for every sample of the article's loop; the trainer feeding batches stopped on
    it: "the inputs ... disagree on the batch size: x holds 16, ones holds 1"."""
    features, labels = _article_problem()
    x, label, ones, output, loss, optimizer = _constant_graph()
    accuracy = ms.ops.metrics.Accuracy(output, label)
    trainer = SimpleTrainer([x], label, loss, optimizer, epoches=2, batch_size=16,
                            eval_on_train=True, metrics_ops=[accuracy], eval_batch_size=30)
    trainer.train_and_eval({"x": features}, labels, {"x": features}, labels)
    assert accuracy.value > 0.8 and "Accuracy: " in capsys.readouterr().out
    batched = [p.value.copy() for p in optimizer.params]
    assert ones.batch_size == 1 and ones.value.shape == (1, 1) and ones.value[0, 0] == 1
    x.set_value(np.asmatrix(features[0]).T)  # one sample again, as after the article's loop
    output.forward()
    assert output.value.shape == (1, 1)

    x, label, ones, _, loss, optimizer = _constant_graph()
    _articles_loop(x, label, optimizer, features, labels)
    for mine, theirs in zip(batched, optimizer.params):
        np.testing.assert_allclose(mine, theirs.value, rtol=1e-9, atol=1e-12)


def test_article_trainer_feeds_no_input_it_was_not_given_unless_it_holds_one_sample():
    features, labels = _article_problem()
    x, label, ones, _, loss, optimizer = _constant_graph()
    ones.set_value(np.ones((3, 1, 1)))  # three samples: not a constant of the program
    trainer = SimpleTrainer([x], label, loss, optimizer, epoches=1, batch_size=16)
    with pytest.raises(ValueError, match="disagree on the batch size: label holds 16, x holds 16, "
                                         "ones holds 3"):
        trainer.train({"x": features}, labels)
    assert ones.batch_size == 3


def test_article_trainer_explains_bad_data():
    features, labels = _article_problem()
    _, x, label, _, _, loss, optimizer = _article_graph()
    trainer = SimpleTrainer([x], label, loss, optimizer, epoches=1)
    with pytest.raises(ValueError, match=r"has arrays for \['y'\]; the trainer's inputs are"):
        trainer.train({"y": features}, labels)
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        trainer.train({"x": features}, labels[:10])
    with pytest.raises(TypeError, match="must be a dict"):
        trainer.train(features, labels)


def test_article_trainer_refuses_non_finite_data_and_stops_when_the_loss_is():
    """The fastgraph trainer refused NaN features; the article's went on and ended with
    NaN weights, without a word."""
    features, labels = _article_problem()
    _, x, label, _, _, loss, optimizer = _article_graph()
    before = [param.value.copy() for param in optimizer.params]
    features[3, 1] = np.nan
    trainer = SimpleTrainer([x], label, loss, optimizer, epoches=1, batch_size=4)
    with pytest.raises(ValueError, match=r"train data 'x' hold nan \(sample 3\): training needs "
                                         r"finite numbers"):
        trainer.train_and_eval({"x": features}, labels)
    features[3, 1] = 0
    bad_labels = labels.astype(float)
    bad_labels[5] = np.inf
    with pytest.raises(ValueError, match=r"train data 'labels' hold inf \(sample 5\)"):
        trainer.train({"x": features}, bad_labels)
    for param, value in zip(optimizer.params, before):
        np.testing.assert_array_equal(param.value, value)
    _, x, label, _, _, loss, _ = _article_graph()
    optimizer = ms.optimizer.GradientDescent(loss.graph, loss, 1e300)
    trainer = SimpleTrainer([x], label, loss, optimizer, epoches=3, batch_size=4)
    with pytest.raises(TrainingDiverged, match=r"the loss of samples \d+ to \d+ of epoch \d is "
                                               r"(nan|inf)"):
        trainer.train({"x": features * 1e10}, labels)


@pytest.mark.parametrize("option, value, message", [
    ("epoches", -1, "epoches must be at least 1, got -1"),  # trained 0 epochs silently
    ("epoches", "abc", "epoches must be a positive integer, got 'abc'"),
    ("batch_size", 2.9, "batch_size must be a positive integer, got 2.9"),  # became 2
])
def test_article_trainer_options(option, value, message):
    _, x, label, _, _, loss, optimizer = _article_graph()
    options = {"epoches": 1, "batch_size": 4, option: value}
    with pytest.raises(ValueError, match=message):
        SimpleTrainer([x], label, loss, optimizer, **options)


def test_article_saver_round_trip(tmp_path, capsys):
    features, labels = _article_problem()
    graph, x, label, output, predict, loss, optimizer = _article_graph()
    ms.ops.metrics.Accuracy(output, label)  # not saved, as in the article
    SimpleTrainer([x], label, loss, optimizer, epoches=1, batch_size=8).train(
        {"x": features}, labels)
    x.set_value(features)
    predict.forward()
    expected = predict.value
    saver = ms.trainer.Saver(str(tmp_path / "epoches10"))
    saver.save(graph=graph, meta={"note": "test"}, service_signature={"inputs": "x"},
               model_file_name="my_model.json", weights_file_name="my_weights.npz")
    model = json.loads((tmp_path / "epoches10" / "my_model.json").read_text())
    assert model["meta"]["note"] == "test" and model["service"] == {"inputs": "x"}
    assert {n["node_type"] for n in model["graph"]} >= {"Variable", "MatMul", "Logistic"}
    assert "Accuracy" not in {n["node_type"] for n in model["graph"]}
    with ms.Graph(dtype=np.float64) as restored:
        meta, service = ms.trainer.Saver(str(tmp_path / "epoches10")).load(
            model_file_name="my_model.json", weights_file_name="my_weights.npz")
        assert meta["note"] == "test" and service == {"inputs": "x"}
        x2 = ms.get_node_from_graph("x")
        predict2 = ms.get_node_from_graph("predict")
    assert restored.node_count() == graph.node_count() - 1
    x2.set_value(features)
    predict2.forward()
    np.testing.assert_array_equal(predict2.value, expected)
    assert "Load and restore model from" in capsys.readouterr().out


def test_article_saver_refuses_a_pickle(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"graph": []}))
    np.savez(tmp_path / "weights.npz", w=np.array([object()], dtype=object))
    with pytest.raises(ms.saver.ModelFileError, match="weights.npz"):
        ms.trainer.Saver(str(tmp_path)).load()
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ms.saver.ModelFileError, match="model.json: not a model saved by Saver"):
        ms.trainer.Saver(str(tmp_path)).load()


def test_article_models():
    with ms.Graph(seed=0):
        x, logits = ms.model.multilayer_perception(4, 3, [8, 5], "ReLU")
        assert x.dim == (4, 1) and logits.dim == (3, 1) and x.name.startswith("Input/")
        x2, logits2 = ms.model.logistic_regression(4, 3)
        assert logits2.dim == (3, 1) and logits2.name.startswith("Logits/")
        x.set_value(np.ones((2, 4)))
        logits.forward()
        assert logits.value.shape == (2, 3, 1)


def test_graph_draw_places_every_node(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    with ms.Graph(dtype=np.float64) as graph:
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        w = ms.core.Variable(dim=(1, 2), init=True, trainable=True)
        y = ms.ops.MatMul(w, x)
    x.set_value(column([1.0, 2.0]))
    y.forward()
    w.backward(y)
    ax = graph.draw()
    assert len(ax.texts) == graph.node_count() and "[2.236]" in ax.texts[1].get_text()
    ax.figure.savefig(tmp_path / "graph.png")
    assert (tmp_path / "graph.png").stat().st_size > 0


def test_the_articles_lookups_by_name_and_scope():
    """The article calls get_node_from_graph("W", "Hidden") (a name scope second), and its
    core has get_trainable_variables_from_graph and update_node_value_in_graph."""
    with ms.Graph() as graph:
        x = ms.core.Variable((3, 1), trainable=False, name="x")
        with ms.name_scope("Hidden"):
            w = ms.core.Variable((2, 3), init=True, trainable=True, name="W")
        b = ms.core.Variable((2, 1), init=True, trainable=True, name="b")
        ms.ops.Add(ms.ops.MatMul(w, x), b)
        assert ms.core.get_node_from_graph("W", "Hidden") is w
        assert ms.core.get_node_from_graph("W", name_scope="Hidden", graph=graph) is w
        assert ms.core.get_node_from_graph("x", graph) is x  # the graph second, as before
        assert ms.core.get_trainable_variables_from_graph() == [w, b]
        assert ms.core.get_trainable_variables_from_graph("W", "Hidden") is w
        with pytest.raises(ValueError, match="^x is not a trainable Variable$"):
            ms.core.get_trainable_variables_from_graph("x")
        with pytest.raises(KeyError, match="no node named 'Hidden/b'"):
            ms.core.get_trainable_variables_from_graph("b", "Hidden")
        ms.core.update_node_value_in_graph("W", np.ones((2, 3)), "Hidden")
        np.testing.assert_array_equal(w.value, 1)
        with pytest.raises(ValueError, match=r"Hidden/W: expected a value of shape \(2, 3\)"):
            ms.core.update_node_value_in_graph("W", np.ones((3, 2)), "Hidden")
