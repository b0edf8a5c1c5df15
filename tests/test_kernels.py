"""The BLAS backends, the batch iterator and the profiler."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import engines
from fastgraph.datasets import Batches
from fastgraph.kernels import blas

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
    assert rows[("forward", "MatMul")] == 2 and rows[("backward", "MatMul")] == 3
    walker = engine == "python" or engines._executor() is engines.vjp  # (its fallbacks)
    assert rows[("backward", "Add")] == (4 if walker else 2)
    assert rows[("update", "Adam")] == 1 and rows[("feed", "set_value")] == 1
    total = sum(micros for *_, micros, _ in profile.rows())
    assert total == pytest.approx(profile.step_seconds * 1e6)
    assert "one training step" in profile.table()
    assert not any("compute" in vars(node) for node in model.graph.nodes)  # timers removed
