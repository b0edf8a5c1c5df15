"""Numbers a float32 graph cannot hold: finite float64 values beyond float32's range became
infinite when set, with no word from the compiled copy (a batch, a first sample,
``set_values``, a saved model loaded) and only NumPy's warning for a parameter. Now each is
refused by name, and nothing is changed."""

import warnings

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.saver import ModelFileError

BEYOND = r"is beyond the range of float32 \(largest 3.403e\+38\)"


def graph(dtype=np.float32):
    with fg.Graph(dtype=dtype) as g:
        x = fg.core.Variable((3, 1), init=False, trainable=False, name="x")
        w = fg.core.Variable((1, 3), init=True, trainable=True, name="w")
        y = fg.ops.MatMul(w, x, name="y")
    return g, x, w, y


def test_a_batch_beyond_float32_is_refused_and_changes_nothing():
    _, x, _, y = graph()
    before = np.arange(6.0).reshape(2, 3, 1)
    x.set_value(before)
    y.forward()
    computed = y.flat.copy()
    values = before.copy()
    values[1, 2, 0] = -1e39
    with pytest.raises(ValueError, match=r"^x: -1e\+39 \(sample 1\) " + BEYOND):
        x.set_value(values)
    np.testing.assert_array_equal(x.flat, before.reshape(2, 3))
    y.forward()
    np.testing.assert_array_equal(y.flat, computed)


def test_a_first_sample_and_set_values_beyond_float32_are_refused():
    _, x, _, _ = graph()
    with pytest.raises(ValueError, match=r"^x: 1e\+40 " + BEYOND):
        x.set_value(np.asmatrix([[1e40], [0.0], [0.0]]))
    assert x.flat is None
    with pytest.raises(ValueError, match=r"^set_values: x: 1e\+300 \(sample 1\) " + BEYOND):
        fg.set_values([x], np.array([[[[1.0], [2.0], [3.0]], [[0.0], [1e300], [0.0]]]]))


def test_the_largest_numbers_that_round_into_float32_and_infinities_pass():
    _, x, _, _ = graph()
    largest = float(np.finfo(np.float32).max)
    x.set_value(np.array([[[largest * (1 + 2**-25)], [np.inf], [np.nan]]] * 2))
    assert x.flat[0, 0] == np.float32(largest) and np.isinf(x.flat[0, 1])
    _, x64, w64, _ = graph(np.float64)
    x64.set_value(np.full((2, 3, 1), 1e300))
    w64.set_value(np.full((1, 3), 1e300))


def test_a_parameter_beyond_float32_is_refused_and_keeps_its_value():
    _, _, w, _ = graph()
    before = w.value.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's "overflow encountered in cast" was all
        with pytest.raises(ValueError, match=r"^w: 1e\+300 " + BEYOND):
            w.set_value(np.full((1, 3), 1e300))
    np.testing.assert_array_equal(w.value, before)


@pytest.mark.parametrize("saver", ["fgz", "article"])
def test_saved_weights_beyond_float32_do_not_load_into_a_float32_graph(tmp_path, saver):
    g64, _, w64, _ = graph(np.float64)
    w64.set_value(np.array([[1.0, -1e300, 2.0]]))
    g32, _, w32, _ = graph()
    before = w32.value.copy()
    with pytest.raises(ModelFileError, match=r"w: -1e\+300 " + BEYOND):
        if saver == "fgz":
            fg.saver.save(tmp_path / "m.fgz", g64)
            loaded, _ = fg.saver.load(tmp_path / "m.fgz")
            fg.trainer.Saver(str(tmp_path)).save(loaded)  # (the fgz graph is float64)
            fg.trainer.Saver(str(tmp_path)).load(g32)
        else:
            fg.trainer.Saver(str(tmp_path)).save(g64)
            fg.trainer.Saver(str(tmp_path)).load(g32)
    np.testing.assert_array_equal(w32.value, before)


def test_one_sample_on_the_short_path_says_so_through_numpy():
    """The short path (an input holding one sample, set again) casts with NumPy, which
    warns; a compiled check there would cost a third of the set (documented)."""
    _, x, _, _ = graph()
    x.set_value(np.asmatrix([[1.0], [0.0], [0.0]]))
    with pytest.warns(RuntimeWarning, match="overflow encountered in cast"):
        x.set_value(np.asmatrix([[1e40], [0.0], [0.0]]))


@pytest.mark.parametrize("shape", [(3, 3, 1), (3, 1, 3)], ids=["one sample each", "batches of one"])
def test_set_values_of_single_samples_beyond_float32_changes_no_input(shape):
    """Input by input, the first inputs were set before the third refused its value (or, one
    sample each into inputs holding one, it became inf with a NumPy warning)."""
    with fg.Graph():
        inputs = [fg.Variable((3, 1), trainable=False, name=f"x{i}") for i in range(3)]
        total = fg.ops.Add(*inputs)
    fg.set_values(inputs, np.zeros(shape))
    total.forward()
    values = np.ones(shape)
    values[2, 0, 0] = 1e39
    with pytest.raises(ValueError, match=r"^set_values: x2: 1e\+39 is beyond the range of "
                                         r"float32"):
        fg.set_values(inputs, values)
    for node in inputs:
        np.testing.assert_array_equal(np.asarray(node.value), 0, err_msg=node.name)
    np.testing.assert_array_equal(np.asarray(total.value), 0)  # still computed, not emptied
