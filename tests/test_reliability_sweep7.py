"""A seventh sweep of bad inputs: attributes and lists a user changes on live objects (the
article's readers do), data in the other byte order, arrays that alias an input's buffer.
Each was trusted by compiled code, ignored, or ended in an internal error."""

import re

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.datasets import Batches


def _data(samples=10, width=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((samples, width)).astype(np.float32), rng.integers(0, classes, samples)


def _expected(features, labels, rows, classes=3):
    return features[rows], np.eye(classes, dtype=np.float32)[labels[rows]]


def test_a_new_batch_size_takes_effect_from_the_next_pass():
    """A batch-size schedule: the buffers were sized once, and the kernel that fills them
    checks no bounds (batches of 4 of 256 rows, then a crash)."""
    features, labels = _data(40)
    batches = Batches(features, labels, 4, classes=3, shuffle=False)
    assert [len(x) for x, _ in batches] == [4] * 10
    batches.batch_size = 256  # more than the data: one batch of all of it
    (x, y), = list(batches)
    np.testing.assert_array_equal(x, features)
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[labels])
    batches.batch_size = 16.0
    assert [len(x) for x, _ in batches] == [16, 16, 8] and batches.batch_size == 16
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match=r"^batch_size must be"):
            batches.batch_size = bad
    assert batches.batch_size == 16


def test_a_new_batch_size_in_feed_fills_the_inputs_with_the_right_rows():
    features, labels = _data(40)
    with fg.Graph() as graph:
        x = fg.Variable((6, 1), trainable=False)
        one_hot = fg.Variable((3, 1), trainable=False)
    batches = Batches(features, labels, 4, classes=3, shuffle=False)
    assert list(batches.feed(x, one_hot))[:2] == [4, 4]
    batches.batch_size = 32
    seen = []
    for size in batches.feed(x, one_hot):
        seen.append(size)
        assert x.flat.shape == (size, 6)
    assert seen == [32, 8]
    np.testing.assert_array_equal(x.flat, features[32:])
    np.testing.assert_array_equal(graph is x.graph, True)


def test_an_order_longer_than_the_data_gets_buffers_that_hold_its_batches():
    """Each sample several times in one batch (an order of 50 indices of 10 samples, batch
    100): the buffers were sized for the 10 samples and the kernel wrote past them."""
    features, labels = _data(10)
    batches = Batches(features, labels, 100, classes=3)
    order = np.arange(50) % 10
    (x, y), = list(batches.iterate(order))
    want_x, want_y = _expected(features, labels, order)
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


@pytest.mark.parametrize("name", ["features", "labels", "scale", "dtype"])
def test_what_the_batches_were_checked_on_is_read_only(name):
    features, labels = _data()
    batches = Batches(features, labels, 4, classes=3)
    with pytest.raises(AttributeError, match=rf"^Batches\.{name} is fixed when the batches "
                       r"are made .*make a new Batches for other data$"):
        setattr(batches, name, getattr(batches, name))
    with pytest.raises(ValueError, match="read-only"):
        batches.labels[0] = 10 ** 6  # in place neither: labels past the classes
    with pytest.raises(ValueError, match="read-only"):
        batches.features[0, 0] = np.nan


def test_shuffle_is_a_flag():
    features, labels = _data()
    with pytest.raises(ValueError, match=r"^Batches: shuffle must be True or False, got str "):
        Batches(features, labels, 4, classes=3, shuffle="no")


def test_big_endian_data_and_orders_give_the_batches_of_native_ones():
    features, labels = _data(12)
    order = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.int64)
    native = Batches(features, labels, 4, classes=3)
    big = Batches(features.astype(">f4"), labels.astype(">i8"), 4, classes=3)
    for (a, b), (c, d) in zip(native.iterate(order), big.iterate(order.astype(">i8"))):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    with fg.Graph():
        x = fg.Variable((6, 1), trainable=False)
        one_hot = fg.Variable((3, 1), trainable=False)
    assert list(big.feed(x, one_hot, order=order.astype(">u4"))) == [4, 4]
    np.testing.assert_array_equal(x.flat, features[order[4:]])


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i4"])
def test_big_endian_values_are_numbers_like_any_other(dtype):
    """A big-endian batch (a file written on such a machine) reached the kernels as it was:
    a Numba typing error from set_value, set_values and fg.jacobian."""
    values = np.arange(24).reshape(4, 6, 1) % 7
    results = []
    for given in (values.astype(dtype.replace(">", "=")), values.astype(dtype)):
        with fg.Graph(seed=0):
            x = fg.Variable((6, 1), trainable=False)
            w = fg.Variable((2, 6), init=True)
            out = fg.ops.MatMul(w, x)
        x.set_value(given)
        out.forward()
        first = out.value.copy()
        fg.set_values([x], [given[:1]])
        results.append((first, fg.jacobian(out, x).copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def _stepped(rule, **options):
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((2, 3), init=True)
        loss = fg.ops.Dot(fg.ops.MatMul(w, x), fg.ops.MatMul(w, x))
    optimizer = rule(graph, loss, **options)
    x.set_value(np.ones((4, 3, 1)))
    optimizer.one_step()
    optimizer.update()
    return optimizer, w


LIVE_SETTINGS = [
    (fg.optimizer.Adam, "beta_1", 1.0, r"^beta_1 must be a number in \[0, 1\), got 1\.0$"),
    (fg.optimizer.Adam, "beta_2", "0.9", r"^beta_2 must be a number in \[0, 1\), got '0\.9'$"),
    (fg.optimizer.Adam, "eps", 0.0, r"^eps must be a positive number, got 0\.0$"),
    (fg.optimizer.Adam, "conventions", "Article", r"^conventions must be one of 'torch', "),
    (fg.optimizer.AdaGrad, "eps", -1.0, r"^eps must be a positive number, got -1\.0$"),
    (fg.optimizer.RMSProp, "beta", 2.0, r"^beta must be a number in \[0, 1\), got 2\.0$"),
    (fg.optimizer.RMSProp, "eps", float("nan"), r"^eps must be a positive number, got nan "),
    (fg.optimizer.Momentum, "momentum", float("nan"), r"^momentum must be a number in "),
]


@pytest.mark.parametrize("rule, name, bad, message", LIVE_SETTINGS)
def test_a_rules_settings_are_checked_when_changed_on_a_live_optimizer(rule, name, bad,
                                                                        message):
    """As the constructor and learning_rate's setter check them: set later, beta_1 = 1 was
    a ZeroDivisionError, eps = 0 and momentum = NaN made the parameters NaN, and
    conventions="Article" fell back to torch's rules."""
    optimizer, w = _stepped(rule)
    before = getattr(optimizer, name)
    with pytest.raises(ValueError, match=message):
        setattr(optimizer, name, bad)
    assert getattr(optimizer, name) == before
    setattr(optimizer, name, 0.5 if name != "conventions" else "article")  # a good one
    optimizer.one_step()
    optimizer.update()
    assert np.isfinite(w.value).all()


@pytest.mark.parametrize("rule, state", [(fg.optimizer.Adam, "m"), (fg.optimizer.Adam, "v"),
                                         (fg.optimizer.Momentum, "velocity"),
                                         (fg.optimizer.AdaGrad, "square_sum"),
                                         (fg.optimizer.RMSProp, "square_avg")])
def test_a_rules_state_is_an_array_of_one_number_per_parameter_number(rule, state):
    """A state array the update's kernel reads without bounds checks: one of 10 numbers
    (a reset with the wrong length) was a segfault, a dict a Numba typing error."""
    optimizer, w = _stepped(rule)
    array = getattr(optimizer, state)
    message = (rf"^{rule.__name__}\.{state} must be a writable, contiguous float32 array of 6 "
               rf"numbers \(one per parameter number\), got ")
    for bad in (np.zeros(10, np.float32), np.zeros(6), {}, np.zeros(12, np.float32)[::2],
                np.zeros((1, 6), np.float32)):
        with pytest.raises(ValueError, match=message):
            setattr(optimizer, state, bad)
        assert getattr(optimizer, state) is array
    setattr(optimizer, state, np.zeros(6, np.float32))  # a reset of the right shape
    optimizer.one_step()
    optimizer.update()
    assert np.isfinite(w.value).all()


def test_set_value_of_a_view_of_the_inputs_own_buffer():
    """x.flat is a live buffer (the README says so): setting x to a reordered view of it
    copied element by element over what it was still to read."""
    with fg.Graph():
        x = fg.Variable((3, 1), trainable=False)
    values = np.arange(12.0).reshape(4, 3, 1)
    x.set_value(values)
    x.set_value(x.flat[:, ::-1])  # each sample's features flipped
    np.testing.assert_array_equal(x.flat, values[:, ::-1, 0])
    x.set_value(x.flat[::-1])  # the batch reversed
    np.testing.assert_array_equal(x.flat, values[::-1, ::-1, 0])


def test_set_values_of_the_inputs_own_values_shifted_in_time():
    """The recurrent programs' inputs set from their own block, one step on."""
    with fg.Graph():
        steps = [fg.Variable((2, 1), trainable=False) for _ in range(4)]
    values = np.arange(32.0).reshape(4, 4, 2, 1)
    fg.set_values(steps, values)
    block = steps[0].flat.base
    assert block is not None and all(step.flat.base is block for step in steps)
    fg.set_values(steps, block[::-1].reshape(4, 4, 2, 1))
    for step, want in zip(steps, values[::-1]):
        np.testing.assert_array_equal(step.flat, want[:, :, 0])


# -- the graph's lists, and attributes the library read once ------------------------------
def _one_sample_relu():
    with fg.Graph() as graph:
        q = fg.Variable((2, 1), trainable=False)
        r = fg.ops.ReLU(q)
    return graph, q, r


def test_nodes_parents_and_children_are_changed_only_by_the_graph():
    """Edited by hand they left states, caches and compiled passes stale (a re-wiring by
    hand gave 31 where graph.rewire gives 40)."""
    with fg.Graph() as graph:
        a = fg.Variable((1, 1), trainable=False)
        b = fg.Variable((1, 1), trainable=False)
        r = fg.ops.ReLU(a)
    edits = [(lambda: r.get_parents().append(b), r"^the parents of ReLU:2 are changed only "
              r"by the graph; re-wire the node with graph\.rewire\(node, parents\)"),
             (lambda: r.parents.clear(), r"^the parents of ReLU:2 are changed only"),
             (lambda: r.parents.__setitem__(0, b), r"^the parents of ReLU:2 are changed only"),
             (lambda: b.children.append(r), r"^the children of Variable:1 are changed only "),
             (lambda: a.children.remove(r), r"^the children of Variable:0 are changed only "),
             (lambda: graph.nodes.append(b), r"^Graph\.nodes are changed only by the graph; "
              r"build nodes into the graph, or start over with graph\.clear\(\)$"),
             (lambda: graph.nodes.remove(b), r"^Graph\.nodes are changed only"),
             (lambda: setattr(graph, "nodes", [a]), r"^Graph\.nodes is changed only")]
    for edit, message in edits:
        with pytest.raises(TypeError, match=message):
            edit()
    assert r.parents == [a] and a.children == [r] and b.children == []
    assert graph.nodes == [a, b, r] and isinstance(graph.nodes.copy(), list)
    graph.rewire(r, [b])  # the way that works
    assert r.parents == [b] and a.children == [] and b.children == [r]


@pytest.mark.parametrize("how", ["clear()", "nodes.clear()", "nodes = []"])
def test_a_graph_cleared_starts_over_and_its_old_nodes_say_so(how):
    """MatrixSlow's programs start over with default_graph.nodes.clear(): the graph kept
    its state slots and caches (keyed by the node count), so a new model of as many nodes
    computed ReLU([5, 6]) = [1, 1], an old one's value."""
    graph, q, r = _one_sample_relu()
    q.set_value(np.ones((2, 1)))
    r.forward()
    optimizer_graph = graph
    {"clear()": lambda: graph.clear(), "nodes.clear()": lambda: graph.nodes.clear(),
     "nodes = []": lambda: setattr(graph, "nodes", [])}[how]()
    assert graph.nodes == [] and graph.node_count() == 0
    with graph:
        q2 = fg.Variable((2, 1), trainable=False)
        r2 = fg.ops.ReLU(q2)
    assert q2.name == "Variable:0"  # the names are free again
    for sample in ([1.0, 1.0], [5.0, -6.0], [7.0, 8.0]):
        q2.set_value(np.array(sample).reshape(2, 1))
        r2.forward()
        np.testing.assert_array_equal(np.asarray(r2.value).ravel(), np.maximum(sample, 0))
    for use in (lambda: q.set_value(np.ones((2, 1))), lambda: r.forward(), lambda: r.value):
        with pytest.raises(RuntimeError, match=r"^(Variable:0|ReLU:1) was removed from its "
                           r"graph by Graph\.clear\(\): build it again$"):
            use()
    assert optimizer_graph is graph


def test_an_optimizer_of_a_cleared_model_says_so():
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((1, 3), init=True)
        loss = fg.ops.Dot(fg.ops.MatMul(w, x), fg.ops.MatMul(w, x))
    optimizer = fg.optimizer.Adam(graph, loss)
    x.set_value(np.ones((2, 3, 1)))
    optimizer.one_step()
    optimizer.update()
    graph.clear()
    with pytest.raises(RuntimeError, match=r"^the target of this Adam, Dot:\d, was removed "
                       r"from its graph by Graph\.clear\(\): make a new optimizer"):
        optimizer.one_step()


def test_add_node_of_a_node_that_has_a_graph_is_refused():
    graph, q, r = _one_sample_relu()
    with fg.Graph() as other:
        pass
    with pytest.raises(ValueError, match=r"^add_node: Variable:0 is a node of this graph "
                       r"already \(a node joins the graph it is built in, once\)$"):
        graph.add_node(q)
    with pytest.raises(ValueError, match=r"^add_node: ReLU:1 is a node of another graph "):
        other.add_node(r)
    assert [node.name for node in graph.nodes] == ["Variable:0", "ReLU:1"]
    assert other.node_count() == 0


def test_a_node_renamed_is_found_and_saved_under_its_new_name(tmp_path):
    """node.name = ... (layer.fc takes no name=) left the graph's index under the old name:
    lookups failed, and the article's Saver.load restored the weights into a new node."""
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        out = fg.layer.fc(x, 2, 3, None)
    weights = out.parents[0].parents[0]
    out.name, weights.name = "logits", "fc_weights"
    assert graph.get_node("logits") is out and graph.get_node("fc_weights") is weights
    with pytest.raises(KeyError):
        graph.get_node("Add:4")
    with pytest.raises(ValueError, match=r"^a node named 'x' already exists in this graph$"):
        out.name = "x"
    with pytest.raises(TypeError, match=r"^a node's name must be a string, got 3$"):
        out.name = 3
    assert out.name == "logits"
    out.name = "logits"  # its own name again: fine
    path = tmp_path / "model.fgz"
    fg.saver.save(path, graph)
    loaded, _ = fg.saver.load(path)
    np.testing.assert_array_equal(loaded.get_node("fc_weights").value, weights.value)


def test_freezing_a_parameter_takes_it_out_of_the_optimizers_next_step():
    """The article's optimizer reads trainable at every step: w.trainable = False freezes
    w. It was read once: the optimizer kept updating w, whose value then read as a cached,
    unchanging snapshot."""
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w1 = fg.Variable((2, 3), init=True)
        w2 = fg.Variable((1, 2), init=True)
        loss = fg.ops.Dot(fg.ops.MatMul(w2, fg.ops.MatMul(w1, x)),
                          fg.ops.MatMul(w2, fg.ops.MatMul(w1, x)))
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    x.set_value(np.ones((4, 3, 1)))

    def step():
        optimizer.one_step()
        optimizer.update()

    step()
    w1.trainable = False
    frozen, moving = w1.flat.copy(), w2.value
    step()
    step()
    np.testing.assert_array_equal(w1.flat, frozen)
    np.testing.assert_array_equal(w1.value, frozen.reshape(2, 3))
    assert not np.array_equal(w2.value, moving)
    assert optimizer.params == (w2,)
    with pytest.raises(ValueError, match=r"expected a value of shape \(2, 3\), got "
                       r"\(4, 2, 3\)"):  # still a parameter: no batch
        w1.set_value(np.ones((4, 2, 3)))
    w1.trainable = True  # thawed
    step()
    assert not np.array_equal(w1.flat, frozen) and set(optimizer.params) == {w1, w2}
    with pytest.raises(ValueError, match=r"^Variable:0 is an input \(made with "
                       r"trainable=False\): it cannot become a parameter"):
        x.trainable = True
    with pytest.raises(ValueError, match=r"^Variable: trainable must be True or False"):
        w1.trainable = "no"
    assert graph is x.graph


def test_an_optimizers_target_and_an_operators_options_are_fixed():
    """Assigned later, the compiled executor kept the old target (slope) while the walker
    took the new one: two answers."""
    graph, q, r = _one_sample_relu()
    with graph:
        w = fg.Variable((2, 1), init=True)
        loss = fg.ops.Dot(fg.ops.Add(q, w), fg.ops.Add(q, w))
        other = fg.ops.Dot(w, w)
        leaky = fg.ops.LeakyReLU(q, slope=0.1)
    optimizer = fg.optimizer.Adam(graph, loss)
    for assign, message in [
            (lambda: setattr(optimizer, "target", other), r"^Adam\.target is fixed when the "
             r"optimizer is made \(its sums and states belong to it\): make a new optimizer$"),
            (lambda: setattr(optimizer, "graph", fg.Graph()), r"^Adam\.graph is fixed "),
            (lambda: setattr(leaky, "slope", 0.5), r"^slope of LeakyReLU:\d+ is fixed when "
             r"the node is made \(its compiled passes use it\): make a new LeakyReLU$")]:
        with pytest.raises(AttributeError, match=message):
            assign()
    assert optimizer.target is loss and leaky.slope == 0.1
    pool = fg.ops.MaxPool2D(fg.Variable((16, 1), trainable=False, graph=graph), image_shape=(4, 4),
                            kernel_size=2)
    with pytest.raises(AttributeError, match=r"^stride of MaxPool2D:\d+ is fixed"):
        pool.stride = (1, 1)
    with pytest.raises(AttributeError, match=r"^Variable:0\.value is read-only \(a snapshot "
                       r"of what the graph computed\): give it one with Variable:0\.set_value"):
        q.value = np.ones((2, 1))


def test_a_nodes_graph_must_be_a_graph():
    for bad, shown in (("g", "str 'g'"), (0, "int 0"), ([], "list []")):
        with pytest.raises(TypeError, match=rf"^Variable: graph must be a fastgraph Graph or "
                           rf"None, got {re.escape(shown)}$"):
            fg.Variable((1, 1), graph=bad)


def test_a_graphs_dtype_is_fixed():
    """Assigned on a built graph, products met two dtypes (a gemm error after a warning)."""
    graph, q, r = _one_sample_relu()
    with pytest.raises(AttributeError, match=r"^Graph\.dtype is fixed when the graph is made "):
        graph.dtype = np.float64
    assert graph.dtype == np.float32


def test_one_hot_takes_memory_for_its_rows_only():
    """np.eye(classes) asked for classes squared numbers: 3.5 EiB for 10**9 classes."""
    from fastgraph.datasets import mnist

    rows = mnist.one_hot(np.array([3, 0, 999_999]), classes=1_000_000, dtype=np.float32)
    assert rows.shape == (3, 1_000_000) and rows.sum() == 3
    assert rows[0, 3] == rows[1, 0] == rows[2, 999_999] == 1
    np.testing.assert_array_equal(mnist.one_hot(np.array([1, 0]), 3),
                                  np.array([[0, 1, 0], [1, 0, 0]], np.float32))
    assert mnist.one_hot(np.array([], np.int64), 4).shape == (0, 4)


def test_clear_right_after_a_one_sample_feed_leaves_no_note_behind():
    """The short path notes a fed input in the graph's table; clear() left the note, and
    the next settle() marked the new node at that index computed: ReLU([-5, -6]) read
    [3, 4], and an input never given a value an AttributeError."""
    with fg.Graph() as graph:
        fg.Variable((2, 1), trainable=False)
        fed = fg.Variable((2, 1), trainable=False)  # index 1
        fed.set_value(np.ones((2, 1)))
        fed.set_value(np.full((2, 1), 2.0))  # the short path: noted, not yet settled
    graph.clear()
    with graph:
        a = fg.Variable((2, 1), trainable=False)
        out = fg.ops.ReLU(a)  # index 1
    for sample in ([3.0, 4.0], [-5.0, -6.0], [7.0, -8.0]):
        a.set_value(np.array(sample).reshape(2, 1))
        out.forward()
        np.testing.assert_array_equal(np.asarray(out.value).ravel(), np.maximum(sample, 0))
    with graph:
        fed = fg.Variable((2, 1), trainable=False)  # index 2
    fed.set_value(np.ones((2, 1)))
    fed.set_value(np.ones((2, 1)))  # noted again, at index 2
    graph.clear()
    with graph:
        fg.Variable((2, 1), trainable=False).set_value(np.ones((2, 1)))
        fg.Variable((2, 1), trainable=False).set_value(np.ones((2, 1)))
        unset = fg.Variable((2, 1), trainable=False)  # index 2, never given a value
    with pytest.raises(ValueError, match=r"^Variable:2 has no value: call Variable:2\.set_value"):
        fg.ops.ReLU(unset).forward()


def test_an_optimizer_and_a_feed_of_removed_nodes_say_so_at_any_call():
    """update() of an optimizer made before clear() changed the removed weights and marked
    a new node outdated; a feed started before it marked new nodes as fed."""
    features, labels = _data(16)
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((6, 1), trainable=False)
        one_hot = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((3, 6), init=True)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(fg.ops.MatMul(w, x), one_hot)
    optimizer = fg.optimizer.Adam(graph, loss)
    feed = Batches(features, labels, 4, classes=3).feed(x, one_hot)
    next(feed)
    optimizer.one_step()
    before = w.flat.copy()
    graph.clear()
    removed = r"^(the target of this Adam, CrossEntropyWithSoftMax:\d, was removed|Variable" \
              r":\d was removed from its graph by Graph\.clear\(\))"
    for call in (optimizer.update, lambda: optimizer.get_gradient(w), lambda: next(feed),
                 lambda: fg.set_values([x], np.ones((1, 4, 6, 1)))):
        with pytest.raises(RuntimeError, match=removed):
            call()
    np.testing.assert_array_equal(w.flat, before)


def test_adam_counts_each_parameters_own_updates_as_torch_does():
    """A parameter thawed (or brought by a re-wiring) after k updates: torch's Adam starts
    its bias correction at 1; the optimizer's one count made its first update 0.48 lr
    after 10 updates, 2.5 lr after 1000."""
    for k in (0, 10, 1000):
        with fg.Graph(dtype=np.float64) as graph:
            x = fg.Variable((1, 1), trainable=False)
            w = fg.Variable((1, 1))
            b = fg.Variable((1, 1))
            loss = fg.ops.Add(fg.ops.MatMul(w, x), b)  # constant gradients of 1
        x.set_value(np.ones((1, 1)))
        w.set_value(np.zeros((1, 1)))
        b.set_value(np.zeros((1, 1)))
        w.trainable = False
        optimizer = fg.optimizer.Adam(graph, loss, learning_rate=0.01)
        for _ in range(k):
            optimizer.one_step()
            optimizer.update()
        w.trainable = True
        optimizer.one_step()
        optimizer.update()
        # a constant gradient g: m_hat = g, v_hat = g^2, so the first step is lr / (1 + eps/g)
        assert w.flat[0, 0] == pytest.approx(-0.01 / (1 + 1e-8), rel=1e-12), k
        assert b.flat[0, 0] == pytest.approx(-0.01 * (k + 1) / (1 + 1e-8), rel=1e-9), k


def test_a_graphs_conventions_are_checked_when_set():
    graph, q, r = _one_sample_relu()
    with pytest.raises(ValueError, match=r"^Graph conventions must be one of 'torch', "
                       r"'article', got 'Article'$"):
        graph.conventions = "Article"
    graph.conventions = "article"
    assert graph.conventions == "article"


def test_every_parameter_frozen_is_said_so():
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((1, 3), init=True)
        out = fg.ops.MatMul(w, x)
    optimizer = fg.optimizer.GradientDescent(graph, out)
    x.set_value(np.ones((2, 3, 1)))
    w.trainable = False
    with pytest.raises(ValueError, match=r"^MatMul:2 depends on no trainable Variable now: "
                       r"every parameter it reads is frozen \(trainable=False\); thaw one$"):
        optimizer.one_step()
    w.trainable = True
    optimizer.one_step()
    optimizer.update()


def test_graphs_and_nodes_are_not_copied():
    """copy.deepcopy ended in a ctypes error (and llvmlite's tracebacks), copy.copy of a
    node made a twin sharing its index, name and buffers."""
    import copy
    import pickle

    graph, q, r = _one_sample_relu()
    for attempt in (lambda: copy.copy(q), lambda: copy.deepcopy(r), lambda: pickle.dumps(q)):
        with pytest.raises(TypeError, match=r"^(Variable:0|ReLU:1) is not copied or pickled "):
            attempt()
    for attempt in (lambda: copy.copy(graph), lambda: copy.deepcopy(graph),
                    lambda: pickle.dumps(graph)):
        with pytest.raises(TypeError, match=r"^a fastgraph Graph is not copied or pickled "):
            attempt()
