"""The BLAS backends, the batch iterator and the profiler."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import engines
from fastgraph.datasets import Batches
from fastgraph.kernels import blas
from tests.helpers import turned_products

GEMM_CHECK = """
import numpy as np
from fastgraph.kernels import blas
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    a, b = rng.normal(size=(5, 7)).astype(dtype), rng.normal(size=(7, 3)).astype(dtype)
    f_a, f_b, row = a.T.copy().T, b.T.copy().T, np.ascontiguousarray(a[:1])
    for left, right in ((a, b), (f_a, b), (a, f_b), (row, b)):
        out = rng.normal(size=(left.shape[0], 3)).astype(dtype)
        before = out.copy()
        scale = 1e-5 * np.abs(left).max() * np.abs(right).max() * left.shape[1]
        blas.gemm(left, False, right, False, out, 0.0)
        np.testing.assert_allclose(out, left @ right, rtol=1e-5, atol=scale)
        out[:] = before
        blas.gemm(left, False, right, False, out, 1.0)
        np.testing.assert_allclose(out, before + left @ right, rtol=1e-5, atol=scale)
print(blas.BACKEND)
"""


@pytest.mark.parametrize("backend", ["mkl", "openblas", "numpy"])
def test_every_blas_backend_multiplies_correctly(backend):
    if backend == "mkl" and blas.BACKEND != "mkl":
        pytest.skip("MKL is not installed here")
    environment = {**os.environ, "FASTGRAPH_BLAS": backend}
    result = subprocess.run(
        [sys.executable, "-c", GEMM_CHECK],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == backend


def test_unknown_blas_backend_is_refused():
    environment = {**os.environ, "FASTGRAPH_BLAS": "atlas"}
    result = subprocess.run(
        [sys.executable, "-c", "import fastgraph"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode != 0 and "FASTGRAPH_BLAS='atlas': choose mkl, openblas or numpy" in (
        result.stderr
    )


@pytest.mark.compiled
def test_gemm_rejects_a_strided_operand():
    a = np.ones((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="operand a is neither C- nor F-contiguous"):
        blas.gemm(a, False, np.ones((3, 2)), False, np.empty((4, 2)), 0.0)


def test_batches_cover_the_data_once_per_pass():
    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    batches = Batches(images, labels, 4, classes=3, scale=0.5, seed=1)
    assert len(batches) == 3
    for _ in range(2):
        seen_x, seen_y = [], []
        for x, y in batches:
            assert x.dtype == np.float32 and x.shape[1] == 4 and y.shape[1] == 3
            seen_x.append(x.copy())
            seen_y.append(y.argmax(axis=1))
        rows = np.concatenate(seen_x)
        assert [len(x) for x in seen_x] == [4, 4, 2]
        order = (rows[:, 0] / 0.5 / 4).astype(int)  # which image each row came from
        assert sorted(order) == list(range(10))
        np.testing.assert_array_equal(np.concatenate(seen_y), labels[order])
        np.testing.assert_array_equal(rows, images.reshape(10, 4)[order] * 0.5)
    in_order = [x.copy() for x, _ in Batches(images, labels, 4, classes=3, shuffle=False)]
    np.testing.assert_array_equal(np.concatenate(in_order), images.reshape(10, 4))


def test_batches_check_their_input():
    with pytest.raises(ValueError, match="labels must be integer classes"):
        Batches(np.zeros((3, 2)), np.zeros(3), 2)
    with pytest.raises(ValueError, match="3 samples but 2 labels"):
        Batches(np.zeros((3, 2)), np.zeros(2, int), 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), found 0 to 12"):
        Batches(np.zeros((3, 2)), np.array([0, 12, 3]), 2)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Batches(np.zeros((3, 2)), np.zeros(3, int), 0)


@pytest.mark.parametrize("engine", ["vjp", "python"])
def test_profiler_accounts_for_the_step(rng, engine):
    """Each call counted once: two layers Add(MatMul(W, x), b), each Add passing back to its
    product and its bias (the walker's 4 calls; the compiled pass records the 2 that run a
    kernel); the products to their weights and the second to the hidden layer (on the
    walker, Operator's vjp_summed, which calls the timed vjp, was counted too: 6 Adds)."""
    model = fg.models.mlp(20, (8,), 3, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, engine=engine)
    features, labels = rng.random((64, 20)), np.eye(3)[rng.integers(0, 3, 64)]

    def feed(step):
        model.x.set_value(features)
        model.one_hot.set_value(labels)

    profile = fg.profiler.profile_steps(optimizer, feed, steps=30, warmup=2)
    rows = {(phase, kind): calls for phase, kind, calls, _, _ in profile.rows()}
    walker = engine == "python" or engines._executor() is engines.vjp  # (its fallbacks)
    # (the compiled pass counts kernel calls: a product made as its transpose is two)
    turned = 0 if walker else turned_products(64, ((8, 20), (3, 8)))
    assert rows[("forward", "MatMul")] == 2 + turned and rows[("backward", "MatMul")] == 3
    assert rows[("backward", "Add")] == (4 if walker else 2)
    assert rows[("update", "Adam")] == 1 and rows[("feed", "set_value")] == 1
    total = sum(micros for *_, micros, _ in profile.rows())
    assert total == pytest.approx(profile.step_seconds * 1e6)
    assert "one training step" in profile.table()
    assert not any("compute" in vars(node) for node in model.graph.nodes)  # timers removed


KERNEL_FORM = """
from fastgraph.kernels import convolution, data
for kernel in (convolution.conv_shifted, convolution.max_pool_2x2, data.gather_batch):
    print(kernel.dispatcher.py_func.__name__, kernel.dispatcher.targetoptions.get("parallel"))
"""


@pytest.mark.parametrize("setting, parallel", [("1", False), ("2", True)])
def test_a_process_fixed_to_one_thread_compiles_the_plain_loops_of_parallel_kernels(
        setting, parallel):
    """A kernel of ``prange`` loops is, in a process that never runs more than one thread,
    its plain twin (2.5-4x quicker to compile; the same numbers, as tests/test_fork.py
    holds a forked child's training to its parent's); with more threads, the parallel
    kernel. Its dispatcher is only made here, nothing compiled."""
    env = {**os.environ, "FASTGRAPH_THREADS": setting, "NUMBA_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", KERNEL_FORM], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    names = ["conv_shifted", "max_pool_2x2", "gather_batch"]
    expected = [f"{name}_one_core None" if not parallel else f"{name} True" for name in names]
    assert result.stdout.split("\n")[:3] == expected


#: A small network of every ``prange`` kernel's operator (both convolution paths, general,
#: 2x2, average and the article's pooling, a batch gather, per-sample products, a layer
#: whose weights' products are split between the threads), trained a few batches, then its
#: per-sample gradients and two Jacobians (the second's product skipping each sample's
#: inactive units): saved to argv[1].
EVERY_PARALLEL_KERNEL = """
import sys
import numpy as np
import fastgraph as fg
from fastgraph import layer, ops

graph = fg.Graph(dtype=np.float32, seed=0)
with graph:
    x = fg.Variable((64, 3), init=False, trainable=False, name="x")
    y = fg.Variable((3, 1), init=False, trainable=False, name="y")
    node = layer.conv2d(x, 4, 3, image_shape=(8, 8), padding=1)
    node = ops.ReLU(layer.max_pool2d(node, 3, stride=1, padding=1))
    node = layer.conv2d(node, 6, 3, image_shape=(8, 8), stride=2, padding=1)
    node = ops.AvgPool2D(node, (4, 4), 2)
    node = ops.ReLU(layer.max_pool2d(node, 2))
    z = fg.Variable((6, 6), init=False, trainable=False, name="z")  # the article's pooling
    pooled = ops.Reshape(ops.MaxPooling(z, (3, 3), (2, 2)), (9, 1))
    wide = layer.fc(ops.Reshape(x, (192, 1)), 192, 96, "ReLU")  # 18,432 weights: split
    logits = ops.Add(ops.Add(layer.fc(ops.Reshape(node, (6, 1)), 6, 3, None),
                             layer.fc(pooled, 9, 3, None)), layer.fc(wide, 96, 3, None))
    loss = ops.loss.CrossEntropyWithSoftMax(logits, y)
    optimizer = fg.optimizer.Adam(graph, loss, 0.01)
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (48, 192)).astype(np.uint8), rng.integers(0, 3, 48)
maps = rng.normal(size=(48, 6, 6)).astype(np.float32)
for step, _ in enumerate(
        fg.datasets.Batches(images, labels, 16, classes=3, scale=1 / 255, seed=0).feed(x, y)):
    z.set_value(maps[16 * step:16 * step + 16])
    optimizer.one_step()
    optimizer.update()
x.set_value((images[:16] / 255.0).reshape(16, 64, 3))
y.set_value(np.eye(3)[labels[:16]].reshape(16, 3, 1))
z.set_value(maps[:16])
parts = [p.value.ravel() for p in optimizer.params]
parts += [g.ravel() for g in fg.per_sample_gradients(loss, optimizer.params)]
parts.append(fg.jacobian(logits, x).ravel())
parts.append(fg.jacobian(wide, x).ravel())  # (96 rows a sample: its zero columns skipped)
np.save(sys.argv[1], np.concatenate([np.asarray(p, np.float64).ravel() for p in parts]))
import json
from fastgraph import kernels
print(json.dumps([kernel.dispatcher.py_func.__name__ for kernel in kernels._PARALLEL
                  if "dispatcher" in kernel.__dict__ and kernel.dispatcher.overloads]))
"""


def test_the_parallel_kernels_compute_what_their_plain_twins_do(tmp_path):
    """The suite runs on one thread, where every kernel of ``prange`` loops is its plain
    twin: here a process on two threads runs the parallel kernels themselves (every one a
    training step, per-sample gradients and a Jacobian call), and gives the numbers of a
    process on one thread, bit for bit."""
    results, compiled = {}, {}
    for setting in ("1", "2"):
        env = {**os.environ, "FASTGRAPH_THREADS": setting, "NUMBA_NUM_THREADS": "2"}
        path = tmp_path / f"threads-{setting}.npy"
        done = subprocess.run([sys.executable, "-c", EVERY_PARALLEL_KERNEL, str(path)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[setting] = np.load(path)
        compiled[setting] = set(json.loads(done.stdout.strip().splitlines()[-1]))
    twins, ran = compiled["1"], compiled["2"]  # the kernels that ran, by compiled name
    assert {"conv_shifted", "conv_weight_vjp_shifted", "im2col", "col2im", "pad_channels",
            "max_pool", "max_pool_2x2", "max_pool_vjp", "avg_pool", "avg_pool_vjp",
            "max_pool_map_rows", "gather_inputs", "outer_rows", "adam"} <= ran, ran
    assert blas.BACKEND != "mkl" or {"gemm_owned_mkl", "_grouped_product"} <= ran, ran
    # (on one thread the optimizer calls Adam's plain form itself: ``OnThreads``; a process
    # of one thread makes the split products whole, with no parts to generate kernels for;
    # on AMD's processors MKL generates none: gemm_owned makes the parts)
    generated = blas.BACKEND == "mkl" and blas.generates_code()
    assert ("gemm_split_generated" in ran) == generated, ran
    assert twins == {f"{name}_one_core" for name in ran - {"adam", "gemm_split_generated"}}, \
        twins
    np.testing.assert_array_equal(results["2"], results["1"])



@pytest.fixture
def two_threads():
    """Numba's count for this thread set to two (the suite's steps may have set one)."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two threads")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield
    numba.set_num_threads(before)


def test_each_piece_of_a_shared_out_board_is_taken_once(two_threads):
    """``kernels.take`` is one atomic step: two threads taking pieces as fast as they can,
    from their own shares and then from each other's, are handed each piece exactly once.
    (With the exchange written as a load and a store, 36,000-128,000 of 200,000 pieces went
    to both threads.)"""
    from numba import njit, prange

    from fastgraph.kernels import BOARD_BYTES, share_out, stack_bytes, take

    @njit(parallel=True)
    def hand_out(n, taken):
        board = stack_bytes(BOARD_BYTES)
        share_out(board, n, 2)
        for part in prange(2):
            piece = take(board, part, 2)
            while piece >= 0:
                taken[part, piece] += 1
                piece = take(board, part, 2)

    taken = np.zeros((2, 200_000), np.int64)
    hand_out(200_000, taken)
    np.testing.assert_array_equal(taken.sum(0), 1)


def test_a_thread_takes_its_own_share_first_then_the_end_of_a_slower_ones(two_threads):
    """Thread 1 waits until thread 0 has taken one piece, and thread 0 then waits until
    thread 1 has nothing left to take: thread 1 makes its own share in order (the pieces
    Numba's static schedule gives it, as the update does: ``owned_rows``), then takes over
    thread 0's from the end."""
    from numba import njit, prange

    from fastgraph.kernels import BOARD_BYTES, _load_share, share_out, stack_bytes, take

    @njit(parallel=True)
    def hand_out(n, order, counts, flags):
        board = stack_bytes(BOARD_BYTES)
        share_out(board, n, 2)
        for part in prange(2):
            waited = 0  # (each wait bounded: a failure, not a hang)
            while part == 1 and _load_share(flags.ctypes.data) == 0 and waited < 10 ** 9:
                waited += 1  # thread 1 starts once thread 0 has its first piece
            piece = take(board, part, 2)
            while piece >= 0:
                order[part, counts[part]] = piece
                counts[part] += 1
                if part == 0:
                    flags[0] = 1
                    while _load_share(flags.ctypes.data + 8) == 0 and waited < 10 ** 9:
                        waited += 1  # thread 0 goes on once thread 1 has finished
                piece = take(board, part, 2)
            if part == 1:
                flags[1] = 1

    order, counts, flags = np.zeros((2, 10), np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64)
    hand_out(10, order, counts, flags)
    assert list(order[0, :counts[0]]) == [0]
    assert list(order[1, :counts[1]]) == [5, 6, 7, 8, 9, 4, 3, 2, 1]
