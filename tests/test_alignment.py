"""The arrays that kernels read and write begin at a cache line (``kernels.ALIGNMENT``): node
values and buffers, parameters, gradient sums, optimizer states, batches. NumPy's large
arrays begin 16 bytes into a page, where every 64-byte load of a row spans two lines."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.engines import compiled
from fastgraph.kernels import ALIGNMENT, aligned_empty, aligned_zeros


def _aligned(array):
    return array.ctypes.data % ALIGNMENT == 0


@pytest.mark.parametrize("shape", [(128, 784), (1, 200_704), 7, (3, 0), (5, 3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_aligned_arrays_are_numpy_arrays_at_a_cache_line(shape, dtype):
    empty, zeros = aligned_empty(shape, dtype), aligned_zeros(shape, dtype)
    wanted = np.zeros(shape, dtype)
    for array in (empty, zeros):
        assert type(array) is np.ndarray and array.dtype == dtype
        assert array.shape == wanted.shape and array.flags.c_contiguous
        assert array.flags.writeable and _aligned(array)
    np.testing.assert_array_equal(zeros, wanted)
    empty[...] = 3  # its own memory: writing it changes no other array
    assert not np.shares_memory(empty, zeros)


def test_an_aligned_array_is_what_its_views_go_back_to_with_its_own_size():
    """The compiled passes find an array's memory by following ``base`` (``compiled._owner``)
    and move a recorded call from one memory to another of the same size: the aligned
    numbers are that memory, not the larger byte array they lie in."""
    array = aligned_empty((64, 100), np.float32)
    owner = compiled._owner(array)
    assert compiled._owner(array.reshape(1, -1)[:, 10:]) is owner
    assert owner.nbytes == array.nbytes and owner.ctypes.data == array.ctypes.data


@pytest.mark.parametrize("hidden", [(100, 20), (256, 128)])
def test_a_network_s_arrays_begin_at_a_cache_line(hidden):
    model = fg.models.mlp(784, hidden, 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001)
    rng = np.random.default_rng(0)
    batches = fg.datasets.Batches(rng.integers(0, 256, (96, 784), dtype=np.uint8),
                                  rng.integers(0, 10, 96), 32, scale=1 / 255)
    for _ in batches.feed(model.x, model.one_hot):
        optimizer.one_step()
        optimizer.update()
    for x, y in batches:
        assert _aligned(x) and _aligned(y)
    arrays = [(node.name, node.flat) for node in model.graph.nodes]
    arrays += [(f"{node.name} {key}", buffer) for node in model.graph.nodes
               for key, buffer in node._buffers.items()]
    arrays += [("gradient sums", optimizer._buffer), ("m", optimizer.m), ("v", optimizer.v)]
    assert [name for name, array in arrays if array is not None and not _aligned(array)] == []


@pytest.mark.compiled
def test_the_first_step_after_an_update_writes_the_sums_without_a_copy():
    """A parameter's gradient buffer and its sum in the optimizer's buffer are of one size,
    so the first step after an update has the backward write the sums directly (moved:
    ``compiled.Pass._first``), with no pass of copies after it."""
    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001)
    rng = np.random.default_rng(1)
    model.x.set_value(rng.random((16, 784, 1), np.float32))
    model.one_hot.set_value(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)])
    optimizer.one_step()
    optimizer.update()
    optimizer.one_step()
    (training,) = compiled.passes(model.graph, optimizer)
    code, _, _ = training.variants[True]
    assert len(code) == training.backward_stop - training.forward_stop
