"""A seventh sweep of bad inputs: attributes and lists a user changes on live objects (the
article's readers do), data in the other byte order, arrays that alias an input's buffer.
Each was trusted by compiled code, ignored, or ended in an internal error."""

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
