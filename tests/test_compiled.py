"""The compiled tape against the Python walker and the article's dense engine.

Random graphs come from a hypothesis strategy that builds DAGs out of every operator family:
shared parents, diamonds, parameters used twice, nodes with and without a batch axis. On
each, the three paths must agree on forward values, gradients and per-sample Jacobians.
Then: each kind of graph change rebuilds the compiled pass and gives a fresh graph's
numbers; forward() along a long chain; memory that stays flat (the 100,000-node chain is
in test_graph.py).
"""

import gc
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgraph as fg
from fastgraph import engines
from fastgraph.engines import compiled, vjp
from fastgraph.engines import jacobian as dense
from fastgraph.ops import loss
from tests.helpers import NumpyDouble, with_executor

SHAPES = [(3, 1), (2, 2)]


def _away_from_kinks(rng, shape):
    u = rng.normal(size=shape)
    return np.sign(u) * (0.2 + np.abs(u))


def _unary(op):
    return lambda pool, rng, draw: op(draw(pool))


def _same_shape(op):
    def make(pool, rng, draw):
        first = draw(pool)
        return op(first, draw([node for node in pool if node.dim == first.dim]))
    return make


def _matmul(pool, rng, draw):
    first = draw(pool)
    fitting = [node for node in pool if node.dim[0] == first.dim[1]]
    return fg.ops.MatMul(first, draw(fitting)) if fitting else None


def _reshape(pool, rng, draw):
    node = draw(pool)
    return fg.ops.Reshape(node, (node.dim[1], node.dim[0]))


def _concat(pool, rng, draw):
    return fg.ops.Concat(draw(pool), draw(pool))


def _scalar_multiply(pool, rng, draw):
    scalars = [node for node in pool if node.dim == (1, 1)]
    if not scalars:
        return None
    return fg.ops.ScalarMultiply(draw(scalars), draw(pool))


def _convolve(pool, rng, draw):
    maps = [node for node in pool if node.dim == (2, 2)]
    return fg.ops.Convolve(draw(maps), draw(maps)) if maps else None


def _max_pooling(pool, rng, draw):
    maps = [node for node in pool if node.dim == (2, 2)]
    return fg.ops.MaxPooling(draw(maps), size=(2, 2), stride=(1, 1)) if maps else None


def _add_scalar(pool, rng, draw):
    scalars = [node for node in pool if node.dim == (1, 1)]
    return fg.ops.AddScalar(draw(pool), draw(scalars)) if scalars else None


MAKERS = [
    _unary(fg.ops.ReLU), _unary(lambda n: fg.ops.LeakyReLU(n, slope=0.1)),
    _unary(fg.ops.Logistic), _unary(fg.ops.Tanh), _unary(fg.ops.SoftMax), _unary(fg.ops.Step),
    _unary(loss.LogLoss), _unary(loss.PerceptionLoss),
    _same_shape(fg.ops.Add), _same_shape(fg.ops.Multiply), _same_shape(fg.ops.Dot),
    _same_shape(loss.MeanSquaredError), _matmul, _reshape, _concat, _scalar_multiply,
    _unary(fg.ops.Transpose), _convolve, _max_pooling, _add_scalar,
]


@st.composite
def random_graphs(draw):
    """(graph, target, inputs with their batches, parameters): a random DAG over MAKERS."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    batch = draw(st.integers(1, 3))
    graph = fg.Graph(dtype=np.float64, seed=seed)
    pick = lambda options: options[draw(st.integers(0, len(options) - 1))]  # noqa: E731
    with graph:
        inputs, params = [], []
        for i in range(draw(st.integers(1, 2))):
            x = fg.Variable(pick(SHAPES), trainable=False, name=f"x{i}")
            x.set_value(_away_from_kinks(rng, (batch, *x.dim)))
            inputs.append(x)
        for i in range(draw(st.integers(1, 3))):
            w = fg.Variable(pick(SHAPES + [(1, 1)]), name=f"w{i}")
            w.set_value(_away_from_kinks(rng, w.dim))
            params.append(w)
        labels = fg.Variable((3, 1), trainable=False, name="labels")
        labels.set_value(rng.dirichlet(np.ones(3), size=batch)[:, :, None])
        pool = inputs + params
        for _ in range(draw(st.integers(2, 9))):
            node = pick(MAKERS)(pool, rng, pick)
            if node is not None:
                pool.append(node)
        columns = [node for node in pool[len(inputs) + len(params):] if node.dim == (3, 1)]
        if columns and draw(st.booleans()):
            pool.append(loss.CrossEntropyWithSoftMax(pick(columns), labels))
        # The target: every node made, folded into one (1, 1) sum, so all of them count.
        made = pool[len(inputs) + len(params):] or [fg.ops.Dot(pool[0], pool[0])]
        terms = [node if node.dim == (1, 1) else fg.ops.Dot(node, node) for node in made]
        target = terms[0] if len(terms) == 1 else fg.ops.Add(*terms)
    return graph, target, inputs + [labels], params


def _forget_values(graph):
    graph.reset_value()


def _gradients(engine, target, params):
    sums = [np.zeros_like(param.flat) for param in params]
    engines.get_engine(engine)(target, params, sums, True)
    return sums


relevant = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@relevant
@given(random_graphs())
def test_random_graphs_agree_on_values_gradients_and_jacobians(case):
    graph, target, inputs, params = case
    reachable = set(graph.tape(target).nodes)
    params = [param for param in params if param in reachable]
    sources = [node for node in inputs if node in reachable and node.name != "labels"]

    _forget_values(graph)
    target.forward()
    compiled_value = target.flat.copy()
    _forget_values(graph)
    walked_value = with_executor("python", lambda: (target.forward(),
                                                                   target.flat.copy())[1])
    np.testing.assert_allclose(compiled_value, walked_value, rtol=1e-12, atol=1e-12)

    if params:
        fast = _gradients("vjp", target, params)
        walked = _gradients("python", target, params)
        reference = _gradients("jacobian", target, params)
        for a, b, c in zip(fast, walked, reference):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(a, c, rtol=1e-8, atol=1e-8)

    for wrt in sources + params:  # a parameter's paths may pass through nodes of no batch axis
        got = fg.jacobian(target, wrt)
        expected = dense.jacobian(target, wrt)
        walked = with_executor("python", lambda wrt=wrt: fg.jacobian(target, wrt))
        np.testing.assert_allclose(got, walked, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8, err_msg=wrt.name)


# -- rebuilds: every kind of change gives the numbers of a graph built fresh ------------------
def _network(dtype=np.float64, seed=0, hidden=(5,)):
    graph = fg.Graph(dtype=dtype, seed=seed)
    with graph:
        x = fg.Variable((6, 1), trainable=False, name="x")
        one_hot = fg.Variable((3, 1), trainable=False, name="one_hot")
        node, size = x, 6
        for width in hidden:
            node, size = fg.layer.fc(node, size, width, "ReLU"), width
        logits = fg.layer.fc(node, size, 3, None)
        cost = loss.CrossEntropyWithSoftMax(logits, one_hot, name="loss")
    return graph, x, one_hot, logits, cost


def _batch(rng, size):
    return rng.normal(size=(size, 6)), np.eye(3)[rng.integers(0, 3, size)]


def _train(steps, rng, batch_sizes, rule=fg.optimizer.Adam, dtype=np.float64, engine="vjp"):
    graph, x, one_hot, _, cost = _network(dtype)
    optimizer = rule(graph, cost, 0.01, engine=engine)
    for step in range(steps):
        features, labels = _batch(rng, batch_sizes[step % len(batch_sizes)])
        x.set_value(features)
        one_hot.set_value(labels)
        optimizer.one_step()
        optimizer.update()
    return [param.flat.copy() for param in optimizer.params]


@pytest.mark.parametrize("batch_sizes", [[4], [4, 7, 1], [3, 3, 5]])
def test_batch_size_changes_rebuild_the_pass(batch_sizes):
    got = _train(9, np.random.default_rng(1), batch_sizes)
    expected = _train(9, np.random.default_rng(1), batch_sizes, engine="python")
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", [fg.optimizer.GradientDescent, fg.optimizer.Momentum,
                                  fg.optimizer.AdaGrad, fg.optimizer.RMSProp, fg.optimizer.Adam])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_optimizer_and_dtype_matches_the_walker(rule, dtype):
    got = _train(6, np.random.default_rng(2), [5], rule, dtype)
    expected = _train(6, np.random.default_rng(2), [5], rule, dtype, engine="python")
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("rule", [fg.optimizer.GradientDescent, fg.optimizer.Adam])
def test_steps_on_one_batch_set_once_recompute_what_the_update_changed(rng, rule):
    """No new batch between the steps: only the update marks the forward values stale
    (outdated, not empty), and the pass must recompute them. A pass that skipped outdated
    nodes kept the first step's loss (7.61, 7.61, 7.61 against the walker's 7.61, 4.97,
    3.23): every test fed a new batch each step."""
    features, labels = _batch(rng, 8)

    def losses():
        graph, x, one_hot, logits, cost = _network()
        optimizer = rule(graph, cost, 0.1)
        x.set_value(features)
        one_hot.set_value(labels)
        seen = []
        for _ in range(5):
            optimizer.one_step()
            seen.append(float(cost.flat.sum()))
            optimizer.update()
        logits.forward()
        return seen, logits.flat.copy()

    (compiled_losses, compiled_logits) = with_executor("compiled", losses)
    (walked_losses, walked_logits) = with_executor("python", losses)
    np.testing.assert_allclose(compiled_losses, walked_losses, rtol=1e-12)
    np.testing.assert_allclose(compiled_logits, walked_logits, rtol=1e-12, atol=1e-12)
    assert all(later < earlier for earlier, later in zip(compiled_losses, compiled_losses[1:]))


def test_accumulating_several_steps_before_an_update(rng):
    """Steps 2.. add into the sums (the first writes them directly): B one-sample steps ==
    one batch of B."""
    graph, x, one_hot, _, cost = _network()
    features, labels = _batch(rng, 5)
    batched = fg.optimizer.GradientDescent(graph, cost, 0.1)
    x.set_value(features)
    one_hot.set_value(labels)
    batched.one_step()
    single = fg.optimizer.GradientDescent(graph, cost, 0.1)
    for b in range(5):
        x.set_value(features[b].reshape(6, 1))
        one_hot.set_value(labels[b].reshape(3, 1))
        single.one_step()
    assert single.samples == batched.samples == 5
    for param in batched.params:
        np.testing.assert_allclose(single.get_gradient(param), batched.get_gradient(param),
                                   rtol=1e-12, atol=1e-14)


def test_a_node_added_after_training_is_followed(rng):
    graph, x, one_hot, logits, cost = _network()
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    features, labels = _batch(rng, 4)
    x.set_value(features)
    one_hot.set_value(labels)
    optimizer.one_step()
    with graph:
        scaled = fg.ops.Add(logits, logits)
        doubled = loss.CrossEntropyWithSoftMax(scaled, one_hot)
    second = fg.optimizer.GradientDescent(graph, doubled, 0.1)
    second.one_step()
    reference = fg.optimizer.GradientDescent(graph, doubled, 0.1, engine="jacobian")
    reference.one_step()
    for param in second.params:
        np.testing.assert_allclose(second.get_gradient(param), reference.get_gradient(param),
                                   rtol=1e-9, atol=1e-12)


def test_rewiring_a_node_is_followed(rng):
    """The article's Welding: re-attaching a node between steps changes what the pass reads."""
    with fg.Graph(dtype=np.float64) as graph:
        a = fg.Variable((2, 1), trainable=False, name="a")
        b = fg.Variable((2, 1), trainable=False, name="b")
        w = fg.Variable((2, 2), name="w")
        w.set_value(rng.normal(size=(2, 2)))
        passthrough = fg.ops.Add(a)
        target = fg.ops.Dot(fg.ops.MatMul(w, passthrough), fg.ops.MatMul(w, passthrough))
    a.set_value(np.array([[[1.0], [2.0]]]))
    b.set_value(np.array([[[-3.0], [0.5]]]))
    optimizer = fg.optimizer.GradientDescent(graph, target, 0.1)
    optimizer.one_step()
    from_a = optimizer.get_gradient(w).copy()
    optimizer.update()
    w.set_value(w.value - 0 * w.value)  # unchanged weights, but a new pass is due anyway
    graph.rewire(passthrough, [b])
    optimizer.samples = 0
    optimizer.one_step()
    from_b = optimizer.get_gradient(w)
    weights = w.value
    for source, got in ((np.array([1.0, 2.0]), from_a), (np.array([-3.0, 0.5]), from_b)):
        expected = 2 * np.outer(weights @ source, source)  # d |W s|^2 / dW
        if got is from_a:
            continue  # the weights moved after the first step; check the second exactly
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert not np.allclose(from_a, from_b)


def test_a_kernel_error_in_the_compiled_pass_names_the_node(rng):
    graph, x, one_hot, _, cost = _network(hidden=(4, 4, 4, 4, 4))
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    features, labels = _batch(rng, 4)
    x.set_value(features)
    one_hot.set_value(labels)
    optimizer.one_step()
    labels[2] = [0.5, 0.7, 0.0]
    one_hot.set_value(labels)
    with pytest.raises(ValueError, match="the labels of sample 2 in one_hot are not one-hot"):
        optimizer.one_step()


@pytest.mark.parametrize("executor", ["compiled", "python"])
def test_forward_of_every_node_of_a_long_chain_is_linear(monkeypatch, executor):
    """forward() on each node in turn: each finds one stale node and computes it, in either
    executor (the walker built a tape of each node's whole ancestry: quadratic)."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((1, 1), trainable=False)
        x.set_value(np.ones((1, 1, 1)))
        nodes = [x]
        for _ in range(10_000):
            nodes.append(fg.ops.Add(nodes[-1], x))
    for node in nodes[1:]:
        node.forward()
    assert nodes[-1].flat[0, 0] == 10_001
    assert len(graph._cache) <= 64  # nothing kept per node


def test_memory_stays_flat_over_many_steps(rng):
    graph, x, one_hot, _, cost = _network(np.float32)
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    features, labels = _batch(rng, 8)

    def steps(count):
        for _ in range(count):
            x.set_value(features)
            one_hot.set_value(labels)
            optimizer.one_step()
            optimizer.update()

    steps(100)
    gc.collect()
    tracemalloc.start()
    steps(3000)  # CPython's free lists fill up (they hold up to 2,000 tuples of each size)
    before = tracemalloc.get_traced_memory()[0]
    steps(10_000)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 16 * 1024, f"grew by {after - before} bytes over 10,000 steps"


def test_small_stale_sets_are_computed_without_a_pass(rng):
    graph, x, one_hot, logits, cost = _network()
    with graph:
        probabilities = fg.ops.SoftMax(logits)
    optimizer = fg.optimizer.Adam(graph, cost, 0.01)
    features, labels = _batch(rng, 4)
    x.set_value(features)
    one_hot.set_value(labels)
    optimizer.one_step()
    passes = len(graph._cache)
    probabilities.forward()  # only the softmax is stale
    assert len(graph._cache) == passes
    np.testing.assert_allclose(probabilities.flat.sum(axis=1), 1)
    assert vjp._stale_ancestors(probabilities, vjp.FEW) == []


@pytest.mark.compiled
def test_later_steps_add_each_gradient_in_place(rng):
    """After the first step, every parameter of the network is added into its sum by the
    kernel that makes its gradient (beta = 1): no separate pass of additions."""
    graph, x, one_hot, _, cost = _network()
    optimizer = fg.optimizer.GradientDescent(graph, cost, 0.1)
    features, labels = _batch(rng, 1)
    x.set_value(features)
    one_hot.set_value(labels)
    optimizer.one_step()
    optimizer.one_step()
    (training,) = compiled.passes(graph, optimizer)
    code, _, _ = training.variants[False]
    assert len(code) == training.backward_stop - training.forward_stop
    once = _gradients("python", cost, list(optimizer.params))  # the walker, same sample
    for param, gradient in zip(optimizer.params, once):
        np.testing.assert_allclose(optimizer.get_gradient(param), gradient.reshape(param.dim),
                                   rtol=1e-12, atol=1e-14)


def test_kernels_called_by_another_thread_are_not_recorded():
    import threading

    from fastgraph.kernels import program
    from fastgraph.kernels.elementwise import fill

    other = np.zeros((2, 2))
    with program.recording(np.float64) as calls:
        mine = np.zeros((1, 3))
        fill(mine, 1.0)
        thread = threading.Thread(target=fill, args=(other, 2.0))
        thread.start()
        thread.join()
    assert [kernel.__name__ for kernel, _, _ in calls.calls] == ["fill"]
    assert calls.arrays == [mine] and (other == 2).all() and (mine == 1).all()


@pytest.mark.compiled
def test_a_wiring_seen_before_reuses_its_pass(rng):
    """Re-wiring back and forth (the article's RNN welds to one of a few time steps, sample
    after sample) records one pass per wiring, and each gives the walker's numbers."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((2, 2), name="w")
        w.set_value(rng.normal(size=(2, 2)))
        steps = [x]
        for _ in range(3):
            steps.append(fg.ops.Tanh(fg.ops.MatMul(w, steps[-1])))
        point = fg.ops.Add(steps[1])
        target = fg.ops.Dot(point, point)
    optimizer = fg.optimizer.GradientDescent(graph, target, 0.1)
    x.set_value(rng.normal(size=(3, 2, 1)))
    for step in [1, 3, 1, 2, 3, 1]:
        graph.rewire(point, [steps[step]])
        optimizer.samples = 0
        optimizer.one_step()
        expected = _gradients("python", target, [w])[0]
        np.testing.assert_allclose(optimizer.get_gradient(w), expected.reshape(2, 2) / 3,
                                   rtol=1e-12)
    assert len(compiled.passes(graph, optimizer)) == 3


@pytest.mark.compiled
def test_an_operator_without_kernels_runs_on_the_walker_with_a_warning(rng):
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False)
        w = fg.Variable((2, 2))
        w.set_value(rng.normal(size=(2, 2)))
        target = fg.ops.Dot(*[NumpyDouble(fg.ops.MatMul(w, x))] * 2)
    x.set_value(rng.normal(size=(3, 2, 1)))
    optimizer = fg.optimizer.GradientDescent(graph, target, 0.1)
    with pytest.warns(UserWarning, match=r"running this graph in Python, not compiled: "
                                         r"NumpyDouble:\d+ \(NumpyDouble\) computed its value"):
        optimizer.one_step()
    expected = _gradients("jacobian", target, [w])[0]
    np.testing.assert_allclose(optimizer.get_gradient(w), expected.reshape(2, 2) / 3, rtol=1e-12)
    optimizer.samples = 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        optimizer.one_step()


@pytest.mark.compiled
def test_a_weight_shared_by_many_nodes_gathers_its_gradient_in_place(rng):
    """An RNN's weights get one contribution per time step: after the first two, each is
    added by the kernel that makes it (no separate additions), with the walker's numbers."""
    with fg.Graph(dtype=np.float64) as graph:
        inputs = [fg.Variable((3, 1), trainable=False) for _ in range(6)]
        u = fg.Variable((3, 3))
        u.set_value(rng.normal(size=(3, 3)) * 0.5)
        state = inputs[0]
        for x in inputs[1:]:
            state = fg.ops.Tanh(fg.ops.Add(fg.ops.MatMul(u, state), x))
        target = fg.ops.Dot(state, state)
    for x in inputs:
        x.set_value(rng.normal(size=(4, 3, 1)))
    optimizer = fg.optimizer.GradientDescent(graph, target, 0.1)
    optimizer.one_step()
    (training,) = compiled.passes(graph, optimizer)
    backward = training.program.kernels[training.forward_stop:training.backward_stop]
    names = [kernel.__name__ for kernel, _ in backward]
    assert names.count("add_into") == 0  # the first two parts are summed by add_rows
    expected = _gradients("python", target, [u])[0]
    np.testing.assert_allclose(optimizer.get_gradient(u), expected.reshape(3, 3) / 4,
                               rtol=1e-12)


def test_setting_inputs_after_welding_back_reuses_what_depends_on_them(rng, monkeypatch):
    """Each input keeps what depends on it per wiring: welding back and forth does not walk
    the graph again at every set_value."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False)
        steps = [fg.ops.Tanh(x)]
        steps.append(fg.ops.Tanh(steps[-1]))
        point = fg.ops.Add(steps[0])
    x.set_value(np.ones((1, 2, 1)))
    for step in (1, 0):
        graph.rewire(point, [steps[step]])
        x.set_value(np.ones((1, 2, 1)))
    walks = []
    monkeypatch.setattr(graph, "downstream", lambda *args: walks.append(args) or [])
    for step in (1, 0, 1, 0):
        graph.rewire(point, [steps[step]])
        point.forward()
        assert point.state == 0
        x.set_value(np.ones((1, 2, 1)))
        assert point.state == 2  # emptied: the indices kept for this wiring include it
    assert not [args for args in walks if args[0] == (x,)]


@pytest.mark.compiled
def test_a_float32_replay_gives_the_walkers_bits(rng):
    """The replay passes each kernel the scalars the walker passed, with their types (a
    LeakyReLU's slope of 0.1 stays float64 in a float32 graph, as it was), to the code the
    walker ran: the same numbers to the last bit."""
    with fg.Graph(dtype=np.float32) as graph:
        x = fg.Variable((7, 1), trainable=False)
        weights = [fg.Variable((7, 7)) for _ in range(3)]  # (no sums fused into a product)
        node = x
        for w in weights:
            w.set_value(rng.normal(size=(7, 7)))
            node = fg.ops.LeakyReLU(fg.ops.MatMul(w, node), slope=0.1)
        target = fg.ops.Dot(node, node)
    x.set_value(rng.normal(size=(16, 7, 1)))
    got = _gradients("vjp", target, weights)
    values = node.flat.copy()
    assert compiled.passes(graph)
    graph.invalidate([x], fg.graph.OUTDATED)
    expected = _gradients("python", target, weights)
    np.testing.assert_array_equal(node.flat, values)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
