"""``blas.gemm(a, ta, b, tb, out, beta)``: C-contiguous storage and transpose flags.

Every transposition, both dtypes and both betas against NumPy, in Python calls and in a
compiled program's replay; operands BLAS cannot read are refused by name; and the products
of a graph, whatever their transpositions, share one compiled specialization per dtype (the
point of the flags: one compile at start-up instead of one per layout).
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgraph as fg
from fastgraph.kernels import blas, program
from tests.helpers import replay

FLAGS = [(False, False), (False, True), (True, False), (True, True)]
COMPILED = blas.BACKEND != "numpy"  # the numpy backend is plain Python: no specializations


def _operands(rng, dtype, ta, tb, m=5, k=7, n=3):
    """C-contiguous storage of op(a) (m, k) and op(b) (k, n) for the flags, and their ops."""
    a = rng.normal(size=(k, m) if ta else (m, k)).astype(dtype)
    b = rng.normal(size=(n, k) if tb else (k, n)).astype(dtype)
    return a, b, (a.T if ta else a), (b.T if tb else b)


def _tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12,
                                                                       "atol": 1e-12}


@pytest.fixture
def two_threads(monkeypatch):
    """``fastgraph.threads``, in a process of two threads (the tests run in processes held to
    one: ``conftest.py``; MKL's process-wide count follows ``most``), the calling thread's
    count set back afterwards. Skipped where Numba runs one thread."""
    import numba

    from fastgraph.threads import threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only here")
    monkeypatch.setattr(threads, "most", 2)
    before = threads.current
    yield threads
    threads.use(before or 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta, tb", FLAGS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_every_transposition_matches_numpy(rng, dtype, ta, tb, beta):
    a, b, op_a, op_b = _operands(rng, dtype, ta, tb)
    out = rng.normal(size=(5, 3)).astype(dtype)
    expected = op_a.astype(np.float64) @ op_b + beta * out
    a_before, b_before = a.copy(), b.copy()
    blas.gemm(a, ta, b, tb, out, beta)
    np.testing.assert_allclose(out, expected, **_tolerance(dtype))
    np.testing.assert_array_equal(a, a_before)  # the operands are read, never written
    np.testing.assert_array_equal(b, b_before)


@pytest.mark.parametrize("ta, tb", FLAGS)
def test_transposed_views_and_row_slices_are_read_as_what_they_are(rng, ta, tb):
    """An F-contiguous operand (a ``.T`` view) is the transpose of its storage; a block of
    columns of a wider matrix is read with that matrix's row length; so is ``out``."""
    a, b, op_a, op_b = _operands(rng, np.float64, ta, tb)
    wide_out = rng.normal(size=(5, 8))
    out = wide_out[:, 2:5]
    expected = op_a @ op_b
    blas.gemm(np.asfortranarray(a), ta, b, tb, out, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    wide = np.zeros((b.shape[0], b.shape[1] + 4))
    wide[:, 1:1 + b.shape[1]] = b
    out[:] = 0.0
    blas.gemm(a, ta, wide[:, 1:1 + b.shape[1]], tb, out, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    untouched = wide_out.copy()
    blas.gemm(a, ta, b, tb, out, 1.0)
    np.testing.assert_array_equal(wide_out[:, [0, 1, 5, 6, 7]], untouched[:, [0, 1, 5, 6, 7]])
    np.testing.assert_allclose(out, 2 * expected, rtol=1e-12)


def test_one_row_and_one_column_operands(rng):
    """Vectors have a stride that says nothing (their other axis has one element)."""
    row, column = rng.normal(size=(1, 6)), rng.normal(size=(6, 1))
    out = np.zeros((1, 1))
    blas.gemm(row, False, column, False, out, 0.0)
    np.testing.assert_allclose(out, row @ column, rtol=1e-12)
    outer = np.zeros((6, 6))
    blas.gemm(row, True, column, True, outer, 0.0)
    np.testing.assert_allclose(outer, row.T @ column.T, rtol=1e-12)


@pytest.mark.skipif(not COMPILED, reason="the numpy backend has no compiled checks")
def test_operands_blas_cannot_read_are_refused_by_name():
    strided = np.ones((4, 6))[:, ::2]  # (4, 3), neither C- nor F-contiguous
    with pytest.raises(ValueError, match="gemm: operand a is neither C- nor F-contiguous"):
        blas.gemm(strided, False, np.ones((3, 2)), False, np.empty((4, 2)), 0.0)
    with pytest.raises(ValueError, match="gemm: operand b is neither C- nor F-contiguous"):
        blas.gemm(np.ones((2, 4)), False, strided, False, np.empty((2, 3)), 0.0)
    with pytest.raises(ValueError, match="gemm: out must have C-contiguous rows"):
        blas.gemm(np.ones((4, 2)), False, np.ones((2, 4)), False, np.empty((4, 4)).T, 0.0)
    with pytest.raises(ValueError, match="gemm: shapes do not match"):
        blas.gemm(np.ones((4, 2)), True, np.ones((2, 4)), False, np.empty((4, 4)), 0.0)
    with pytest.raises(ValueError, match="gemm: shapes do not match"):
        blas.gemm(np.ones((4, 2)), False, np.ones((2, 4)), False, np.empty((4, 3)), 0.0)
    with pytest.raises(ValueError, match="gemm: a, b and out must have one dtype"):
        blas.gemm(np.ones((4, 2)), False, np.ones((2, 4), np.float32), False,
                  np.empty((4, 4)), 0.0)


@pytest.mark.skipif(not COMPILED, reason="the numpy backend has no compiled specializations")
def test_every_transposition_shares_one_specialization(rng):
    for ta, tb in FLAGS:
        a, b, _, _ = _operands(rng, np.float32, ta, tb)
        blas.gemm(a, ta, b, tb, np.empty((5, 3), np.float32), 0.0)
        blas.gemm_owned(blas.OUT_ROWS, a, ta, b, tb, np.empty((5, 3), np.float32), 0.0)
    float32 = [signature for signature in blas.gemm_owned.dispatcher.overloads
               if str(signature[1].dtype) == "float32"]
    assert len(float32) == 1, float32  # gemm is gemm_owned's product made whole
    assert [str(argument) for argument in float32[0]] == [
        "int64", "array(float32, 2d, C)", "bool", "array(float32, 2d, C)", "bool",
        "array(float32, 2d, C)", "float64"]


@pytest.mark.skipif(not COMPILED, reason="only compiled kernels are recorded")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_a_program_replays_every_transposition(rng, dtype, beta):
    """The recorded calls (kinds i C b C b C f: gemm is gemm_owned's whole product) replay
    as the Python calls compute."""
    cases = [(*_operands(rng, dtype, ta, tb), ta, tb) for ta, tb in FLAGS]
    outs = [rng.normal(size=(5, 3)).astype(dtype) for _ in cases]
    expected = [op_a.astype(np.float64) @ op_b + beta * out
                for (_, _, op_a, op_b, _, _), out in zip(cases, outs)]
    with program.recording(dtype) as calls:
        calls.replay_only = True
        for (a, b, _, _, ta, tb), out in zip(cases, outs):
            blas.gemm(a, ta, b, tb, out, beta)
    assert [kinds for _, kinds, _ in calls.calls] == ["iCbCbCf"] * 4
    status, compiled = replay(calls)
    assert status == -1
    code = compiled.rows((0, len(compiled)))
    assert len(set(code[:, 3])) == 1  # one kernel address for the four transpositions
    for out, wanted in zip(outs, expected):
        np.testing.assert_allclose(out, wanted, **_tolerance(dtype))


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="fastgraph sets MKL's thread count only")
def test_a_product_gives_the_same_bits_on_one_thread_and_on_two(rng, two_threads):
    """MKL splits products of a few rows (5-11) between threads in a way that changes their
    last bits; gemm runs those on one thread (``SERIAL_ROWS``), so a training run gives the
    same numbers whatever the thread count (``fastgraph.threads``)."""
    differ = []
    for m in [*range(2, 17), 20, 64]:
        for n, k in ((20, 64), (84, 25), (784, 64)):
            for ta, tb in FLAGS[:3]:
                a, b, _, _ = _operands(rng, np.float32, ta, tb, m, k, n)
                outs = []
                for count in (1, 2):
                    two_threads.use(count)
                    outs.append(np.zeros((m, n), np.float32))
                    blas.gemm(a, ta, b, tb, outs[-1], 0.0)
                if not np.array_equal(*outs):
                    differ.append((m, n, k, ta, tb))
    assert not differ


#: Layers' products (batch, units, inputs): the MNIST networks' and others around them.
NETWORK_PRODUCTS = [(64, 100, 784), (128, 256, 784), (128, 128, 256), (64, 256, 784),
                    (17, 100, 784), (1000, 100, 784), (64, 300, 784), (128, 512, 784)]


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="fastgraph sets MKL's thread count only")
@pytest.mark.parametrize("batch, units, inputs", NETWORK_PRODUCTS)
def test_a_layer_s_products_give_the_same_bits_on_one_thread_and_on_two(
        rng, two_threads, batch, units, inputs):
    """A layer's forward product x @ W.T and weight gradient upstream.T @ x, split by W's
    rows as MatMul makes them (``gemm_owned``), and its input gradient upstream @ W, made
    whole: the same bits on one thread and on two. On an Intel Xeon (AVX-512) the forward
    product of 784 inputs to 256 or more units, made whole on one thread and in two parts
    on two, summed in another order, until the parts were the process's on any count; and
    to 512 or more, while MKL's batch call made the parts (it split a part of more than 256
    units between its threads), until each part was an MKL call on one thread."""
    x = rng.normal(size=(batch, inputs)).astype(np.float32)
    w = rng.normal(size=(units, inputs)).astype(np.float32)
    upstream = rng.normal(size=(batch, units)).astype(np.float32)
    products = {  # name: (along, a, ta, b, tb, shape of out)
        "forward": (blas.OUT_COLUMNS, x, False, w, True, (batch, units)),
        "weight gradient": (blas.OUT_ROWS, upstream, True, x, False, (units, inputs)),
        "input gradient": (blas.WHOLE, upstream, False, w, False, (batch, inputs))}
    differ = []
    for name, (along, a, ta, b, tb, shape) in products.items():
        made = []
        for count in (1, 2):
            two_threads.use(count)
            made.append(np.zeros(shape, np.float32))
            blas.gemm_owned(along, a, ta, b, tb, made[-1], 0.0)
        if not np.array_equal(*made):
            differ.append(name)
    assert not differ


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="fastgraph sets MKL's thread count only")
@pytest.mark.parametrize("hidden, batch", [((256, 128), 128), ((100, 20), 64)])
def test_an_mlp_trains_to_the_same_bits_on_one_thread_and_on_two(two_threads, hidden, batch):
    """784-256-128-10 and 784-100-20-10, Adam, four steps at a fixed count each: the same
    weights on one thread and on two (the larger net's first layer's forward product, split
    by W's rows, differed in the last bits on an Intel Xeon while one thread made it whole;
    the smaller net's first layer's parts are generated kernels)."""
    import fastgraph as fg

    trained = []
    for count in (1, 2):
        two_threads.use(count)
        model = fg.models.mlp(784, hidden, 10, seed=0)
        optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
        optimizer.threads.fixed, optimizer.threads.counts = True, (count, count)
        rng = np.random.default_rng(1)
        for _ in range(4):
            model.x.set_value(rng.random((batch, 784, 1), np.float32))
            model.one_hot.set_value(np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)])
            optimizer.one_step()
            optimizer.update()
        trained.append(np.concatenate([node.flat.ravel() for node in optimizer.params]))
    assert np.any(trained[0] != 0)  # (weights, not an empty result)
    np.testing.assert_array_equal(trained[1], trained[0])


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="fastgraph sets MKL's thread count only")
def test_mkl_s_own_count_is_the_process_s_most():
    """MKL's process-wide count is ``threads.most`` once fastgraph loads MKL, and again after
    ``threads.limit`` (what ``gemm_owned`` splits a product by), while a Python thread's own
    count (``threads.use``) stays its own."""
    import os
    import subprocess
    import sys

    code = """
import ctypes, json
from fastgraph.kernels import blas
from fastgraph.threads import threads
mkl = ctypes.CDLL(blas.LIBRARY)
def process_count():
    mine = mkl.MKL_Set_Num_Threads_Local(0)
    most = mkl.MKL_Get_Max_Threads()
    mkl.MKL_Set_Num_Threads_Local(mine)
    return most
seen = [threads.most, process_count()]
threads.use(1)
seen += [process_count(), mkl.MKL_Get_Max_Threads()]
threads.limit(1)
seen += [process_count()]
print(json.dumps(seen))
"""
    seen = {}
    for setting in ("auto", "1"):
        env = {**os.environ, "FASTGRAPH_THREADS": setting, "NUMBA_NUM_THREADS": "2",
               "MKL_NUM_THREADS": "7"}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        seen[setting] = json.loads(result.stdout.split("\n")[-2])
    most = seen["auto"][0]
    assert seen["auto"] == [most, most, most, 1, 1]  # (not MKL_NUM_THREADS' 7)
    assert seen["1"] == [1, 1, 1, 1, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_sample_products_match_numpy(dtype):
    """matvec and vecmat, MatMul's products for a single sample: rows in blocks of four and
    the rest, against NumPy."""
    from fastgraph.kernels.blas import matvec, vecmat

    rng = np.random.default_rng(7)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for m, k in [(1, 1), (3, 5), (4, 4), (5, 7), (9, 1), (12, 16), (100, 784)]:
        a = rng.normal(size=(m, k)).astype(dtype)
        x, u = rng.normal(size=(1, k)).astype(dtype), rng.normal(size=(1, m)).astype(dtype)
        out, back = np.full((1, m), np.nan, dtype), np.full((1, k), np.nan, dtype)
        matvec(x, a, out)
        vecmat(u, a, back)
        np.testing.assert_allclose(out, x @ a.T, rtol=tolerance, atol=tolerance * k)
        np.testing.assert_allclose(back, u @ a, rtol=tolerance, atol=tolerance * m)


def test_a_single_sample_and_a_batch_give_one_matmul_result():
    """One sample goes through matvec/vecmat, a batch through BLAS: the same value and the
    same derivatives with respect to the input and the weight, to rounding."""
    import fastgraph as fg

    rng = np.random.default_rng(8)
    with fg.Graph(dtype=np.float64):
        w = fg.Variable((6, 9))
        x = fg.Variable((9, 1), trainable=False)
        y = fg.ops.MatMul(w, x)
        loss = fg.ops.Dot(y, y)
    w.set_value(rng.normal(size=(6, 9)))
    samples = rng.normal(size=(3, 9, 1))
    x.set_value(samples)
    batch_w, batch_x = fg.jacobian(loss, [w, x])
    batch_values = y.flat.copy()
    for b in range(3):
        x.set_value(samples[b])
        one_w, one_x = fg.jacobian(loss, [w, x])
        np.testing.assert_allclose(y.flat[0], batch_values[b], rtol=1e-12)
        np.testing.assert_allclose(one_x[0], batch_x[b], rtol=1e-12)
        np.testing.assert_allclose(one_w[0], batch_w[b], rtol=1e-12)
        np.testing.assert_allclose(one_x[0, 0], 2 * (w.flat.reshape(6, 9).T @ y.flat[0]),
                                   rtol=1e-12)


# -- gemm_owned: a parameter's products split by its rows between the threads -------------------
def _owned_operands(rng, dtype, along, ta, tb, rows=137, other=150, k=64):
    """Storage and flags of a product whose parameter has ``rows`` rows: ``out`` itself
    (OUT_ROWS: m = rows, n = other), op(b)'s transpose (OUT_COLUMNS: n = rows, k = other)
    or op(a) (A_ROWS: m = rows, k = other)."""
    m, n, k = {blas.OUT_ROWS: (rows, other, k), blas.OUT_COLUMNS: (k, rows, other),
               blas.A_ROWS: (rows, k, other)}[along]
    a, b, _, _ = _operands(rng, dtype, ta, tb, m, k, n)
    return a, b, rng.normal(size=(m, n)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("along", [blas.OUT_ROWS, blas.OUT_COLUMNS, blas.A_ROWS])
@pytest.mark.parametrize("ta, tb", FLAGS)
def test_owned_products_are_gemms_bit_for_bit_on_any_thread_count(rng, dtype, along, ta, tb,
                                                                   monkeypatch):
    """Split by the parameter's rows (no split along k), each element is the sum that gemm
    on one thread makes, in the same order: the same bits on one thread and on two, for
    either beta, with transposed views and row slices among the operands, and a parameter
    of a row count that does not split evenly."""
    import numba

    from fastgraph.kernels import PARALLEL_MIN
    from fastgraph.threads import threads

    monkeypatch.setattr(threads, "most", max(2, threads.most))
    before = threads.current
    a, b, start = _owned_operands(rng, dtype, along, ta, tb)
    assert 137 * 150 >= PARALLEL_MIN  # the parameter (137 by 150) is split
    wide = np.zeros((a.shape[0], a.shape[1] + 3), dtype)
    wide[:, 2:2 + a.shape[1]] = a
    try:
        for beta in (0.0, 1.0):
            for operand_a, operand_b in ((a, b), (wide[:, 2:2 + a.shape[1]],
                                                  np.asfortranarray(b))):
                threads.use(1)
                wanted = start.copy()  # (a layout is a different product to BLAS: the
                blas.gemm(operand_a, ta, operand_b, tb, wanted, beta)  # same operands)
                for count in {1, min(2, numba.config.NUMBA_NUM_THREADS)}:
                    threads.use(count)
                    out = start.copy()
                    blas.gemm_owned(along, operand_a, ta, operand_b, tb, out, beta)
                    np.testing.assert_array_equal(out, wanted)
    finally:
        threads.use(before or 1)
    np.testing.assert_allclose(wanted, (a.T if ta else a).astype(np.float64)
                               @ (b.T if tb else b) + start, **_tolerance(dtype))


_VERBOSE = """
import json

import numpy as np
from fastgraph.kernels import blas
from fastgraph.threads import threads
threads.use({count})
x, w = np.ones((64, 784), np.{dtype}), np.ones((100, 784), np.{dtype})
blas.gemm_owned(blas.OUT_COLUMNS, x, False, w, True, np.zeros((64, 100), np.{dtype}), 0.0)
blas.gemm_owned(blas.OUT_ROWS, np.ones((64, 100), np.{dtype}), True, x, False, w, 0.0)
"""


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="only MKL's products are split")
@pytest.mark.parametrize("setting, count, dtype, calls, threads_of_parts", [
    ("2", 2, "float32", ["SGEMM"] * 4, [0, 1]),
    ("auto", 1, "float32", ["SGEMM"] * 4, [0, 0]),
    ("1", 1, "float32", ["SGEMM", "SGEMM"], None),
    ("2", 2, "float64", ["DGEMM", "DGEMM"], None)])
def test_each_part_of_a_split_is_one_product_on_the_thread_that_owns_its_rows(
        setting, count, dtype, calls, threads_of_parts):
    """What MKL is asked (``MKL_VERBOSE``): in a process of two threads, each of the MLP's
    two products of its 100x784 weights as two products on one thread each, 50 of the
    weights' rows each, the first rows' on thread 0 and the others' on thread 1, as the
    update's loop gives them (the premise: ``test_optimizers_flat``); also when the process
    runs on one thread now, the two parts one after the other on it (the parts, not the
    count, fix the numbers); in a process held to one thread, or in float64, one product
    each, on MKL's threads."""
    import os
    import re
    import subprocess
    import sys

    import numba

    if numba.config.NUMBA_NUM_THREADS < 2 and setting != "1":
        pytest.skip("one thread only here")
    env = {**os.environ, "MKL_VERBOSE": "1", "FASTGRAPH_THREADS": setting}
    ran = subprocess.run([sys.executable, "-c", _VERBOSE.format(count=count, dtype=dtype)],
                         env=env, capture_output=True, text=True, check=True).stdout
    lines = [line for line in ran.splitlines()
             if line.startswith("MKL_VERBOSE") and "(" in line.split()[1]]
    assert [line.split()[1].split("(")[0] for line in lines] == calls, ran
    if threads_of_parts is None:
        return
    for product in (lines[:2], lines[2:]):  # the forward's parts, the weight gradient's
        parts = []
        for line in product:
            arguments = line.split()[1].split("(")[1].rstrip(")").split(",")
            assert 50 in (int(arguments[2]), int(arguments[3])), line  # m or n: 50 rows
            assert "NThr:1" in line, line
            thread = int(re.search(r"TID:(\d+)", line).group(1))
            parts.append((int(arguments[11], 16), thread))  # (the part's place in out)
        assert [thread for _, thread in sorted(parts)] == threads_of_parts, ran


@pytest.mark.skipif(not COMPILED, reason="only compiled kernels are recorded")
def test_a_program_replays_owned_products(rng):
    """Recorded (kinds i C b C b C f) and replayed on the threads: the Python call's bits."""
    cases = [(along, ta, tb, *_owned_operands(rng, np.float32, along, ta, tb))
             for along in (blas.OUT_ROWS, blas.OUT_COLUMNS) for ta, tb in FLAGS]
    outs = [start.copy() for *_, start in cases]
    with program.recording(np.float32) as calls:
        calls.replay_only = True
        for (along, ta, tb, a, b, _), out in zip(cases, outs):
            blas.gemm_owned(along, a, ta, b, tb, out, 1.0)
    assert {kinds for _, kinds, _ in calls.calls} == {"iCbCbCf"}
    assert replay(calls)[0] == -1
    for (along, ta, tb, a, b, start), out in zip(cases, outs):
        wanted = start.copy()
        blas.gemm_owned(along, a, ta, b, tb, wanted, 1.0)
        np.testing.assert_array_equal(out, wanted)


# -- grouped_product: a per-sample pass's product, each sample's zero columns skipped ---------
def _grouped_operands(rng, groups, m, units, k, share):
    """u of ``groups`` groups of ``m`` rows, each group's columns active with probability
    ``share`` (zero in all its rows otherwise, as after a ReLU), one row of the first group
    zero throughout and the last group zero everywhere; w of ``units`` rows."""
    u = rng.normal(size=(groups * m, units)).astype(np.float32)
    u *= np.repeat(rng.random((groups, units)) < share, m, axis=0)
    u[1] = 0
    u[-m:] = 0
    return u, rng.normal(size=(units, k)).astype(np.float32)


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="MKL's kernel (MatMul takes it with MKL)")
@pytest.mark.parametrize("groups, m, units, k, share", [
    (64, 10, 100, 784, 0.49),  # the MNIST MLP's Jacobian: 64 and 16 columns a block
    (9, 7, 37, 101, 0.3),  # a short block of 2 rows, 5 last columns
    (6, 12, 64, 80, 0.5),  # a block of 10 rows, then 2 on their own
    (5, 13, 17, 16, 0.4),
    (3, 5, 100, 70, 0.0),  # no column active anywhere
    (8, 10, 100, 784, 0.9)])  # most columns active: one dense GEMM
def test_a_grouped_product_is_the_product(rng, two_threads, groups, m, units, k, share):
    """Every element of ``u @ w``, on one thread and on two, with the same bits on both,
    whichever way the groups' active columns made it."""
    u, w = _grouped_operands(rng, groups, m, units, k, share)
    wanted = u.astype(np.float64) @ w.astype(np.float64)
    made = []
    for count in (1, 2):
        two_threads.use(count)
        made.append(np.full((groups * m, k), np.nan, np.float32))
        blas.grouped_product(u, w, made[-1], m)
    scale = np.abs(u).sum(axis=1, keepdims=True) @ np.abs(w).max(axis=0, keepdims=True)
    np.testing.assert_allclose(made[0], wanted, rtol=0, atol=1e-6 * scale.max() + 1e-30)
    np.testing.assert_array_equal(made[0], made[1])
    assert (made[0][-m:] == 0).all() and (made[0][1] == 0).all()


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="MKL's kernel (MatMul takes it with MKL)")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_weight_that_is_not_finite_reaches_the_grouped_product_as_it_reaches_a_gemm(
        rng, bad):
    """A group skips the rows of w of its inactive columns: a NaN or infinity there would be
    lost for it, where a dense product makes it NaN (0 * inf) wherever it meets a zero.
    Such a w is multiplied densely, as ``gemm`` multiplies it: the same NaNs and
    infinities in the same places."""
    u, w = _grouped_operands(rng, 16, 10, 100, 96, 0.49)
    skipping = (u[:, 3] == 0).reshape(16, 10).all(axis=1)
    assert skipping.any() and not skipping.all()  # (groups that skip row 3, and others)
    w[3, 7] = bad
    out, wanted = np.empty((160, 96), np.float32), np.empty((160, 96), np.float32)
    blas.grouped_product(u, w, out, 10)
    blas.gemm(u, False, w, False, wanted, 0.0)
    assert np.isnan(wanted[np.repeat(skipping, 10), 7]).all()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(wanted))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(wanted))


@pytest.mark.skipif(blas.BACKEND != "mkl", reason="MKL's kernel (MatMul takes it with MKL)")
@settings(max_examples=60, deadline=None)
@given(groups=st.integers(1, 12), m=st.integers(5, 23), units=st.integers(1, 160),
       k=st.integers(1, 300), share=st.floats(0, 1), seed=st.integers(0, 2**32 - 1),
       nans=st.integers(0, 2))
def test_grouped_products_of_any_shape_and_zeros_are_the_product(groups, m, units, k, share,
                                                                  seed, nans):
    """Random shapes (short blocks, tail columns, fewer columns than a block), random shares
    of each group's active columns (either path), rows zero within a group, and NaNs in u:
    u @ w to float32's precision, NaN in exactly the rows a NaN of u reaches."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(groups * m, units)).astype(np.float32)
    u *= np.repeat(rng.random((groups, units)) < share, m, axis=0)
    u[rng.random(groups * m) < 0.2] = 0
    for _ in range(nans):
        u[rng.integers(groups * m), rng.integers(units)] = np.nan
    w = rng.normal(size=(units, k)).astype(np.float32)
    out = np.full((groups * m, k), -7.0, np.float32)
    blas.grouped_product(u, w, out, m)
    wanted = u.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(wanted))
    bound = np.nan_to_num(np.abs(u)).sum(axis=1, keepdims=True) * np.abs(w).max() + 1e-30
    error = np.abs(np.nan_to_num(out - wanted))
    assert (error <= 1e-6 * bound).all(), float((error / bound).max())


# -- small products: kernels MKL generates for their shape ------------------------------------
MKL = blas.BACKEND == "mkl"
#: Whether MKL generates code on this processor (Intel's; on AMD's every kernel it gives is
#: its own GEMM, and a split product's parts are made without it).
GENERATES = MKL and blas.generates_code()


def _description_at(address):
    """The description kept at ``address`` (what ``small_product`` or ``split_product``
    returned)."""
    made, = [kept for kept in blas._jitted.values()
             if kept is not None and kept.ctypes.data == address]
    return made


def _refuses_another_beta(kernel, description, a, b, start, beta):
    """``kernel`` refuses ``beta`` by name and leaves ``out`` (a copy of ``start``) as it was."""
    out = start.copy()
    with pytest.raises(ValueError, match="beta must be 0 or 1"):
        kernel(description, a, b, out, beta)
    np.testing.assert_array_equal(out[1:], start[1:])


@pytest.mark.skipif(not MKL, reason="MKL generates the kernels")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta, tb", FLAGS)
def test_a_small_product_is_made_by_a_kernel_generated_for_its_shape(rng, dtype, ta, tb):
    """For each flag pair and both betas: the product, against float64; beta 0 overwrites
    what ``out`` held (a NaN too); the description says what it was made for; another beta
    is refused."""
    for m, k, n in [(16, 16, 12), (1, 1, 1), (5, 7, 3), (64, 100, 20)]:
        a, b, op_a, op_b = _operands(rng, dtype, ta, tb, m, k, n)
        start = rng.normal(size=(m, n)).astype(dtype)
        start[0, 0] = np.nan
        description = blas.small_product(a, ta, b, tb, start)
        assert description != 0
        made = _description_at(description)
        assert list(made[:blas._SERIAL]) == [ta, tb, m, n, k, blas.WHOLE, 1]
        if not GENERATES:  # MKL's own GEMM: on one thread for a few rows or much work
            assert made[blas._SERIAL] == (1 < m < blas.SERIAL_ROWS
                                          or m * n * k >= blas.SERIAL_MACS)
        assert len(made) == blas.JIT_HEADER + blas.JIT_PART_SLOTS and all(made[-4:])
        for beta in (0.0, 1.0):
            out = start.copy()
            blas.gemm_generated(description, a, b, out, beta)
            wanted = op_a.astype(np.float64) @ op_b + (beta * start if beta else 0)
            np.testing.assert_allclose(out[1:], wanted[1:], **_tolerance(dtype))
            assert np.isnan(out[0, 0]) == (beta != 0)
        assert blas.small_product(a, ta, b, tb, start) == description  # generated once
        _refuses_another_beta(blas.gemm_generated, description, a, b, start, 0.5)


@pytest.mark.skipif(not MKL, reason="MKL generates the kernels")
@pytest.mark.parametrize("m, k, n", [(10, 64, 20), (5, 5, 20), (12, 100, 100), (64, 100, 20)])
def test_a_small_product_gives_the_same_bits_on_one_thread_and_on_two(rng, two_threads, m, k,
                                                                       n):
    """A small product's kernel on one thread and on two: one set of bits. Where MKL
    generates no code (AMD's processors) the kernel is MKL's own GEMM, which on MKL's two
    threads split an MLP's last weight gradient (10x64 by 64x20) in rows 8 and 9, and
    products of 5 rows from 500 multiply-adds, with other last bits: it runs them on one
    thread."""
    a = rng.normal(size=(k, m)).astype(np.float32)  # op(a) = a.T: a weight gradient's
    b = rng.normal(size=(k, n)).astype(np.float32)
    outs = []
    for count in (1, 2):
        two_threads.use(count)
        outs.append(np.empty((m, n), np.float32))
        description = blas.small_product(a, True, b, False, outs[-1])
        assert description != 0
        blas.gemm_generated(description, a, b, outs[-1], 0.0)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], a.T.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not MKL, reason="MKL generates the kernels")
def test_what_no_kernel_is_generated_for_takes_gemm_owned(rng, monkeypatch):
    """More than JIT_MOST multiply-adds, a transposed view, another dtype, shapes that do not
    match, a full table of shapes: no description (0), and ``product`` makes them with
    ``gemm_owned``, which refuses shapes that do not match by name."""
    a, b, op_a, op_b = _operands(rng, np.float32, False, True, 8, 9, 10)
    out = np.zeros((8, 10), np.float32)
    assert blas.small_product(a, False, b, True, out) != 0
    big = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    assert 64 ** 3 > blas.JIT_MOST
    assert blas.small_product(big[0], False, big[1], False, np.zeros((64, 64), np.float32)) == 0
    assert blas.small_product(np.asfortranarray(a), False, b, True, out) == 0
    assert blas.small_product(a.astype(np.float64), False, b, True, out) == 0
    assert blas.small_product(a, True, b, True, out) == 0  # op(a) is 9x8: no match
    monkeypatch.setattr(blas, "JIT_SHAPES_MOST", len(blas._jitted))
    fresh = np.zeros((7, 10), np.float32)
    assert blas.small_product(a[:7], False, b, True, fresh) == 0
    blas.product(blas.WHOLE, a[:7], False, b, True, fresh, 0.0)  # made by gemm_owned
    np.testing.assert_allclose(fresh, op_a[:7] @ op_b, **_tolerance(np.float32))
    with pytest.raises(ValueError, match="shapes do not match"):
        blas.product(blas.WHOLE, a, True, b, True, out, 0.0)


@pytest.mark.skipif(not MKL, reason="MKL generates the kernels")
def test_no_description_is_refused(rng):
    """The 0 that small_product and split_product return where they generate nothing,
    given to the kernels anyway: refused by name, ``out`` untouched (read as an address, it
    took the process down)."""
    a, b = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)
    for kernel in (blas.gemm_generated, blas.gemm_split_generated):
        out = np.full((4, 2), 7.0, np.float32)
        with pytest.raises(ValueError, match="no description"):
            kernel(0, a, b, out, 0.0)
        np.testing.assert_array_equal(out, 7)


@pytest.mark.skipif(not MKL, reason="MKL generates the kernels")
def test_operands_a_kernel_was_not_generated_for_are_refused(rng):
    """A description used for operands of another shape, or other leading dimensions, or not
    C-contiguous: refused by name (the kernel would read and write past them), ``out``
    untouched."""
    a, b, op_a, op_b = _operands(rng, np.float32, True, False, 6, 5, 4)
    description = blas.small_product(a, True, b, False, np.zeros((6, 4), np.float32))
    other_a, other_b, _, _ = _operands(rng, np.float32, True, False, 3, 8, 2)
    out = np.ones((3, 2), np.float32)
    wide_a = np.zeros((5, 7), np.float32)  # op(a) 7x5 where 6x5 was generated
    for operands in ((other_a, other_b, out), (a, b, np.ones((6, 5), np.float32)),
                     (wide_a, b, np.ones((7, 4), np.float32)),
                     (np.asfortranarray(a), b, np.ones((6, 4), np.float32))):
        before = operands[2].copy()
        with pytest.raises(ValueError, match="other than the kernel was generated for"):
            blas.gemm_generated(description, *operands, 0.0)
        np.testing.assert_array_equal(operands[2], before)
    out = np.ones((6, 4), np.float32)
    blas.gemm_generated(description, a, b, out, 1.0)
    np.testing.assert_allclose(out, op_a @ op_b + 1, **_tolerance(np.float32))


#: Layers' products whose parts MKL generates kernels for (batch, units, inputs): the MNIST
#: MLP's first layer, parts of unequal rows (101 units), a batch of 17, a second layer.
SPLIT_PRODUCTS = [(64, 100, 784), (64, 101, 784), (17, 100, 784), (128, 128, 256)]


def _layer_products(rng, batch, units, inputs):
    """A layer's forward product and weight gradient as MatMul makes them: ``(along, a,
    ta, b, tb, out shape)``."""
    x = rng.normal(size=(batch, inputs)).astype(np.float32)
    w = rng.normal(size=(units, inputs)).astype(np.float32)
    upstream = rng.normal(size=(batch, units)).astype(np.float32)
    return [(blas.OUT_COLUMNS, x, False, w, True, (batch, units)),
            (blas.OUT_ROWS, upstream, True, x, False, (units, inputs))]


@pytest.mark.skipif(not GENERATES, reason="MKL generates code on Intel's processors")
@pytest.mark.parametrize("batch, units, inputs", SPLIT_PRODUCTS)
def test_a_split_product_s_parts_are_made_by_generated_kernels(rng, two_threads, batch, units,
                                                               inputs):
    """A product that gemm_owned splits by a parameter's rows: a description of one part per
    thread, each with its kernels; both betas against float64 (beta 0 overwrites a NaN);
    the same bits on one thread and on two; another beta refused, ``out`` untouched."""
    for along, a, ta, b, tb, shape in _layer_products(rng, batch, units, inputs):
        start = rng.normal(size=shape).astype(np.float32)
        start[0, 0] = np.nan
        description = blas.split_product(along, a, ta, b, tb, start)
        assert description != 0
        made = _description_at(description)
        m, n = shape
        k = a.shape[0] if ta else a.shape[1]
        assert list(made[:blas.JIT_HEADER]) == [ta, tb, m, n, k, along, 2, 0]
        assert len(made) == blas.JIT_HEADER + 2 * blas.JIT_PART_SLOTS
        assert all(made[blas.JIT_HEADER:])
        op_a, op_b = (a.T if ta else a), (b.T if tb else b)
        for beta in (0.0, 1.0):
            outs = []
            for count in (1, 2):
                two_threads.use(count)
                outs.append(start.copy())
                blas.gemm_split_generated(description, a, b, outs[-1], beta)
            np.testing.assert_array_equal(outs[0], outs[1])
            wanted = op_a.astype(np.float64) @ op_b + (beta * start if beta else 0)
            np.testing.assert_allclose(outs[0].ravel()[1:], wanted.ravel()[1:], rtol=1e-4,
                                       atol=1e-4)
            assert np.isnan(outs[0][0, 0]) == (beta != 0)
        _refuses_another_beta(blas.gemm_split_generated, description, a, b, start, 2.0)


@pytest.mark.skipif(not GENERATES, reason="MKL generates code on Intel's processors")
def test_a_part_with_no_rows_is_skipped(rng, two_threads):
    """A weight of one row (1 x 16,384: a parameter split by rows, fewer rows than parts):
    its first part has none, no kernels in the description, and is skipped; the product is
    right on one thread and on two."""
    for along, a, ta, b, tb, shape in _layer_products(rng, 4, 1, 16384):
        description = blas.split_product(along, a, ta, b, tb, np.zeros(shape, np.float32))
        made = _description_at(description)
        first, second = np.split(made[blas.JIT_HEADER:], 2)
        assert not first.any() and second.all()
        wanted = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
        for count in (1, 2):
            two_threads.use(count)
            out = np.full(shape, np.nan, np.float32)
            blas.gemm_split_generated(description, a, b, out, 0.0)
            np.testing.assert_allclose(out, wanted, rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(not GENERATES, reason="MKL generates code on Intel's processors")
def test_what_gets_no_split_kernels_takes_gemm_owned(rng, two_threads, monkeypatch):
    """No description (0) for: float64 (gemm_owned makes it whole), a product made whole,
    a transposed view, a process of one thread, parts MKL generates no code for (the
    784-256-128-10 net's first layer), operands of another shape; ``product`` then makes
    them with gemm_owned, to the same numbers. A split description refuses operands of
    another shape by name."""
    (along, a, ta, b, tb, shape), _ = _layer_products(rng, 64, 100, 784)
    out = np.zeros(shape, np.float32)
    description = blas.split_product(along, a, ta, b, tb, out)
    assert description != 0
    assert blas.split_product(along, a.astype(np.float64), ta, b.astype(np.float64), tb,
                              out.astype(np.float64)) == 0
    assert blas.split_product(blas.WHOLE, a, ta, b, tb, out) == 0
    assert blas.split_product(along, np.asfortranarray(a), ta, b, tb, out) == 0
    assert blas.split_product(along, a[:, :700], ta, b, tb, out) == 0  # k differs: no match
    monkeypatch.setattr(two_threads, "most", 1)
    assert blas.split_product(along, a, ta, b, tb, out) == 0
    monkeypatch.setattr(two_threads, "most", 2)
    for along, a, ta, b, tb, shape in _layer_products(rng, 128, 256, 784):
        out = np.full(shape, np.nan, np.float32)
        assert blas.split_product(along, a, ta, b, tb, out) == 0
        blas.product(along, a, ta, b, tb, out, 0.0)  # gemm_owned's parts
        wanted = np.zeros(shape, np.float32)
        blas.gemm_owned(along, a, ta, b, tb, wanted, 0.0)
        np.testing.assert_array_equal(out, wanted)
    (along, a, ta, b, tb, shape), _ = _layer_products(rng, 32, 100, 784)
    out = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match="other than the kernel was generated for"):
        blas.gemm_split_generated(description, a, b, out, 0.0)  # a batch of 32, made for 64
    np.testing.assert_array_equal(out, 1)
    (along, a, ta, b, tb, shape), _ = _layer_products(rng, 64, 100, 784)
    out = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match="a split product's description"):
        blas.gemm_generated(description, a, b, out, 0.0)
    np.testing.assert_array_equal(out, 1)


def _first_pass_of_the_process():
    """A training step of a small network: the process's first compiled pass, which surveys
    the kernels a pass calls for the compile worker (``kernels.ahead.decide``), running the
    operators once more, has run by then (in a process of its own, a test's pass is its
    first)."""
    model = fg.models.mlp(8, (4,), 3, seed=0)
    model.x.set_value(np.ones((2, 8, 1), np.float32))
    model.one_hot.set_value(np.eye(3, dtype=np.float32)[[0, 1]])
    fg.optimizer.Adam(model.graph, model.loss, 0.01).one_step()


@pytest.mark.skipif(not MKL, reason="MKL generates the kernels")
@pytest.mark.parametrize("executor", ["compiled", "python"])
def test_the_mlp_s_first_layer_is_made_in_generated_parts(two_threads, monkeypatch, executor):
    """784-100-20-10, batch 64, on two threads: its first layer's forward product and weight
    gradient are split products made by generated kernels (two parts each), its other
    products small ones, none through gemm_owned; on either executor. Where MKL generates
    no code (AMD's processors) gemm_owned makes the first layer's two in parts, its forward
    product by fastgraph's own dot products and its weight gradient by its own outer
    products (``blas.dots``, ``blas.outers``: DOTS and OUTERS, split by W's rows; without
    AVX-512, MKL's, the forward product turned, ``blas.flips``: W @ x.T, A_ROWS), and the
    small products' kernels (the
    last layer's forward product turned, ``blas.flips``) are MKL's own GEMM (which
    ``gemm_generated`` runs on one thread)."""
    import fastgraph as fg

    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    _first_pass_of_the_process()  # (else what it surveys for the compile worker is counted)
    parts, serial, owned = [], [], []

    def counted(kernel):
        def call(description, *args):
            made = {kept.ctypes.data: kept for kept in blas._jitted.values() if kept is not None}
            parts.append(int(made[description][blas._PARTS]))
            serial.append(int(made[description][blas._SERIAL]))
            return kernel(description, *args)
        return call

    for name in ("gemm_generated", "gemm_split_generated"):
        monkeypatch.setattr(blas, name, counted(getattr(blas, name)))
    gemm_owned = blas.gemm_owned
    monkeypatch.setattr(blas, "gemm_owned",
                        lambda *args: (owned.append(args[0]), gemm_owned(*args)))
    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    rng = np.random.default_rng(0)
    model.x.set_value(rng.random((64, 784, 1), np.float32))
    model.one_hot.set_value(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)])
    optimizer.one_step()
    # forward: 3 products; backward: 3 weight gradients, 2 input gradients
    if GENERATES:
        assert sorted(parts) == [1] * 6 + [2, 2] and not owned
    else:
        assert parts == [1] * 6 and serial == [1] * 6  # (of 12,800 multiply-adds or more)
        own = blas.dots(64, 100, 784, np.float32)  # (AVX-512?)
        assert sorted(owned) == sorted([blas.DOTS, blas.OUTERS] if own else
                                       [blas.A_ROWS, blas.OUT_ROWS])


@pytest.mark.skipif(not MKL, reason="MKL generates the kernels")
@pytest.mark.parametrize("executor", ["compiled", "python"])
def test_a_recurrent_net_s_products_are_generated_kernels(monkeypatch, executor):
    """The article's recurrent cell on a batch of 16 (16x16 by 16x12, 16x12 by 12x12 and
    their gradients, a weight shared by every time step): every product is a generated
    kernel's, on either executor, and training gives the numbers cblas gives (allclose)."""
    calls = {"generated": 0, "owned": 0}

    def counted(name, kernel):
        def call(*args):
            calls[name] += 1
            return kernel(*args)
        return call

    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)

    def train(most):
        monkeypatch.setattr(blas, "JIT_MOST", most)
        rng = np.random.default_rng(0)
        with fg.Graph(seed=0) as graph:
            inputs = [fg.Variable((16, 1), trainable=False) for _ in range(4)]
            u, w, bias = fg.Variable((12, 16), init=True), fg.Variable((12, 12), init=True), \
                fg.Variable((12, 1), init=True)
            state = None
            for x in inputs:
                h = fg.ops.Add(fg.ops.MatMul(u, x), bias)
                if state is not None:
                    h = fg.ops.Add(fg.ops.MatMul(w, state), h)
                state = fg.ops.ReLU(h)
            label = fg.Variable((12, 1), trainable=False)
            loss = fg.ops.loss.MeanSquaredError(state, label)
            optimizer = fg.optimizer.Adam(graph, loss, 0.01)
        for _ in range(5):
            for x in inputs:
                x.set_value(rng.normal(size=(16, 16, 1)).astype(np.float32))
            label.set_value(rng.normal(size=(16, 12, 1)).astype(np.float32))
            optimizer.one_step()
            optimizer.update()
        return [node.value.copy() for node in (u, w, bias)]

    monkeypatch.setattr(blas, "gemm_generated", counted("generated", blas.gemm_generated))
    monkeypatch.setattr(blas, "gemm_owned", counted("owned", blas.gemm_owned))
    made = train(blas.JIT_MOST)
    # a step's products: 4 + 3 forward, 3 input gradients, 4 + 3 weight gradients; the
    # compiled executor calls them from Python in the pass it records, then replays them
    steps = 5 if executor == "python" else 1
    assert calls == {"generated": steps * 17, "owned": 0}
    plain = train(0)  # every product through gemm_owned (cblas)
    assert calls == {"generated": steps * 17, "owned": steps * 17}
    for one, other in zip(made, plain):
        np.testing.assert_allclose(one, other, rtol=1e-5, atol=1e-6)


# -- products made as their transpose (blas.flips, blas.turned_product) -----------------------
@pytest.mark.parametrize("m, n, k, turned", [
    (64, 10, 20, True),     # the MNIST MLP's last layer
    (64, 100, 784, True),   # its first
    (17, 10, 64, True),     # n below 16: any m of 16 or more
    (16, 12, 16, False),    # the recurrent benchmark's: k below 20
    (16, 12, 19, False),
    (8, 10, 100, False),    # m below 16
    (64, 3, 784, False),    # n below 4
    (128, 256, 784, False),  # n a multiple of 16
    (50, 100, 784, False),  # n above 16: m a multiple of 16 only
    (64, 20, 100, False),   # ... and k of 256 or more
])
def test_flips_turns_the_shapes_measured_faster_turned_where_mkl_generates_no_code(
        monkeypatch, m, n, k, turned):
    """The choice depends on the shapes and the dtype (float32 only), and is MKL's alone:
    never made where MKL generates code for its shapes (``generates_code``), nor on another
    backend (OpenBLAS makes these shapes fast as they are)."""
    monkeypatch.setattr(blas, "generates_code", lambda: False)
    monkeypatch.setattr(blas, "BACKEND", "mkl")
    assert blas.flips(m, n, k, np.float32) is turned
    assert blas.flips(m, n, k, np.float64) is False
    for backend in ("openblas", "numpy"):
        monkeypatch.setattr(blas, "BACKEND", backend)
        assert blas.flips(m, n, k, np.float32) is False
    monkeypatch.setattr(blas, "BACKEND", "mkl")
    monkeypatch.setattr(blas, "generates_code", lambda: True)
    assert blas.flips(m, n, k, np.float32) is False


@pytest.mark.parametrize("along", [blas.WHOLE, blas.OUT_COLUMNS])
@pytest.mark.parametrize("ta, tb", FLAGS)
@pytest.mark.parametrize("m, n, k", [(64, 10, 20), (64, 100, 784), (33, 7, 50), (48, 300, 257)])
def test_a_turned_product_is_the_product(rng, two_threads, along, ta, tb, m, n, k):
    """op(b).T @ op(a).T, then its transpose: the product (numpy's, float64), the same
    bits on one thread and on two (split by op(b)'s rows where ``along`` is OUT_COLUMNS: a
    parameter of PARALLEL_MIN numbers or more is split), for every transposition, with a
    scratch array that held other numbers."""
    a, b, op_a, op_b = _operands(rng, np.float32, ta, tb, m, k, n)
    made = []
    for count in (1, 2):
        two_threads.use(count)
        out = np.full((m, n), np.nan, np.float32)
        blas.turned_product(along, a, ta, b, tb, out, np.full((n, m), 7, np.float32))
        made.append(out)
    np.testing.assert_array_equal(made[1], made[0])
    np.testing.assert_allclose(made[0], op_a.astype(np.float64) @ op_b, rtol=1e-5,
                               atol=1e-5 * np.sqrt(k))


def _one_layer_steps(monkeypatch, switch, w_value, xs):
    """MatMul(W, x) with a cross-entropy loss, W set to ``w_value``, stepped (no update)
    on each batch of ``xs`` with ``blas``'s predicate ``switch`` answering False, then
    True: ``{answer: [(y's value, W's gradient) a batch]}``."""
    units, inputs = w_value.shape
    made = {}
    for answer in (False, True):
        monkeypatch.setattr(blas, switch, lambda *args, answer=answer: answer)
        with fg.Graph(seed=0) as graph:
            x = fg.Variable((inputs, 1), trainable=False)
            w = fg.Variable((units, inputs))
            w.set_value(w_value)
            y = fg.ops.MatMul(w, x)
            loss = fg.ops.loss.CrossEntropyWithSoftMax(y, fg.Variable((units, 1),
                                                                      trainable=False))
        label = next(node for node in graph.nodes if node not in (x, w, y, loss))
        optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)  # (no update)
        for value in xs:
            x.set_value(value)
            label.set_value(np.eye(units, dtype=np.float32)[np.arange(len(value)) % units])
            optimizer.one_step()
            made.setdefault(answer, []).append((y.value.copy(), optimizer.get_gradient(w).copy()))
    return made


def _assert_the_layer_s_products(made, xs, w_value, atol):
    for (value, gradient), (plain, plain_gradient), x_value in zip(made[True], made[False], xs):
        np.testing.assert_allclose(value, plain, rtol=1e-5, atol=atol)
        np.testing.assert_allclose(value[..., 0], x_value[..., 0].astype(np.float64)
                                   @ w_value.T, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gradient, plain_gradient, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("executor", ["compiled", "python"])
@pytest.mark.parametrize("batch, units, inputs", [(64, 10, 20), (64, 100, 784), (40, 12, 30)])
def test_a_layer_whose_forward_product_flips_computes_x_w_t(monkeypatch, rng, executor, batch,
                                                           units, inputs):
    """MatMul(W, x) on a batch, its forward product turned (``flips``, forced here on any
    processor): x @ W.T, the value the unturned product gives (allclose), and the same
    gradient of W, on either executor; a batch of another size (a new scratch array) and
    back."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    transposed = []
    transpose_rows = blas.transpose_rows  # (the copy back: out as one row of m * n)
    monkeypatch.setattr(blas, "transpose_rows", lambda *args: (
        transposed.append((args[2], args[1])), transpose_rows(*args)))
    w_value = rng.normal(size=(units, inputs)).astype(np.float32)
    xs = [rng.normal(size=(size, inputs, 1)).astype(np.float32) for size in (batch, 16, batch)]
    monkeypatch.setattr(blas, "dots", lambda *args: False)  # (which would come first)
    made = _one_layer_steps(monkeypatch, "flips", w_value, xs)
    assert sorted(set(transposed)) == sorted({(size, units) for size in (batch, 16)})
    _assert_the_layer_s_products(made, xs, w_value, 1e-5)


def _assert_own_products_chosen(monkeypatch, choice, shape, taken):
    """``choice(*shape, dtype)`` (``dots``, ``outers``, ``combinations``) depends on the
    shapes and the dtype (float32 only), and is made against MKL's GEMM alone: never where
    MKL generates code for the parts (``generates_code``), nor on another backend, nor on a
    processor without AVX-512 (``wide_vectors``: the blocks' sums would not fit in its
    registers)."""
    monkeypatch.setattr(blas, "generates_code", lambda: False)
    monkeypatch.setattr(blas, "BACKEND", "mkl")
    monkeypatch.setattr(blas, "wide_vectors", lambda: True)
    assert choice(*shape, np.float32) is taken
    assert choice(*shape, np.float64) is False
    monkeypatch.setattr(blas, "wide_vectors", lambda: False)
    assert choice(*shape, np.float32) is False
    monkeypatch.setattr(blas, "wide_vectors", lambda: True)
    for backend in ("openblas", "numpy"):
        monkeypatch.setattr(blas, "BACKEND", backend)
        assert choice(*shape, np.float32) is False
    monkeypatch.setattr(blas, "BACKEND", "mkl")
    monkeypatch.setattr(blas, "generates_code", lambda: True)
    assert choice(*shape, np.float32) is False


# -- forward products by fastgraph's own dot products (blas.dots, gemm_owned's DOTS) --------
@pytest.mark.parametrize("m, n, k, taken", [
    (64, 100, 784, True),    # the MNIST MLP's first layer
    (128, 256, 784, True),   # 784-256-128-10's first
    (128, 128, 256, True),   # ... and its second
    (16, 100, 784, True),    # a batch of 16
    (8, 100, 784, False),    # below 16 samples
    (64, 100, 255, False),   # below 256 inputs
    (64, 16, 784, False),    # a parameter below PARALLEL_MIN numbers: not split
    (64, 10, 20, False),     # the MLP's last layer (turned: blas.flips)
])
def test_dots_takes_the_shapes_measured_faster_where_mkl_generates_no_code(monkeypatch, m, n,
                                                                           k, taken):
    _assert_own_products_chosen(monkeypatch, blas.dots, (m, n, k), taken)


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("m, n, k", [(64, 100, 784), (37, 101, 300), (5, 130, 129),
                                     (3, 2, 9), (64, 22, 784)])
def test_dot_products_are_the_product_with_the_same_bits_on_one_thread_and_on_two(
        rng, two_threads, m, n, k):
    """``gemm_owned(DOTS, x, False, W, True, out, 0)``: x @ W.T (numpy's, float64), every
    number written (out held NaN), batches and parts of unit counts that are no multiple
    of four (the rows left over), a row slice of a wider matrix as x, and the same bits on
    one thread as on two (the parts are the process's: each number is summed the same way
    whichever thread makes it)."""
    x = rng.normal(size=(m, k + 5)).astype(np.float32)[:, 2:2 + k]
    w = rng.normal(size=(n, k)).astype(np.float32)
    made = []
    for count in (1, 2):
        two_threads.use(count)
        out = np.full((m, n), np.nan, np.float32)
        blas.gemm_owned(blas.DOTS, x, False, w, True, out, 0.0)
        made.append(out)
    np.testing.assert_array_equal(made[1], made[0])
    np.testing.assert_allclose(made[0], x.astype(np.float64) @ w.T.astype(np.float64),
                               rtol=1e-5, atol=1e-5 * np.sqrt(k))


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
def test_dot_products_keep_nan_and_infinity_where_the_product_has_them(rng, two_threads):
    """No freedom the dot products take drops a NaN or an infinity: a NaN weight makes its
    unit's column NaN, an infinite input times a zero weight NaN, as the product does."""
    m, n, k = 40, 60, 300
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = rng.normal(size=(n, k)).astype(np.float32)
    w[7, 3] = np.nan
    x[5, 11] = np.inf
    w[:, 11] = 0.0
    w[9, 11] = 2.0
    out = np.zeros((m, n), np.float32)
    blas.gemm_owned(blas.DOTS, x, False, w, True, out, 0.0)
    with np.errstate(invalid="ignore"):
        wanted = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(wanted))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(wanted))
    assert np.isnan(out[:, 7]).all() and np.isnan(out[5]).sum() == n - 1 and out[5, 9] == np.inf


#: What each own product makes; anything else is refused with these words.
_OWN_PRODUCTS_MAKE = {
    "DOTS": r"out = a @ b\.T \(ta False, tb True, beta 0\)",
    "OUTERS": r"out = a\.T @ b \(ta True, tb False, beta 0 or 1\)",
    "COMBINATIONS": r"out = a @ b \(ta False, tb False, beta 0 or 1\)",
}


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("along, ta, tb, beta, dtype, columns", [
    ("DOTS", True, True, 0.0, np.float32, False), ("DOTS", False, False, 0.0, np.float32, False),
    ("DOTS", False, True, 1.0, np.float32, False), ("DOTS", False, True, 0.0, np.float64, False),
    ("DOTS", False, True, 0.0, np.float32, True),
    ("OUTERS", False, False, 0.0, np.float32, False),
    ("OUTERS", True, True, 0.0, np.float32, False),
    ("OUTERS", True, False, 0.5, np.float32, False),
    ("OUTERS", True, False, 0.0, np.float64, False),
    ("OUTERS", True, False, 0.0, np.float32, True),
    ("COMBINATIONS", True, False, 0.0, np.float32, False),
    ("COMBINATIONS", False, True, 0.0, np.float32, False),
    ("COMBINATIONS", False, False, 0.5, np.float32, False),
    ("COMBINATIONS", False, False, 0.0, np.float64, False),
    ("COMBINATIONS", False, False, 0.0, np.float32, True)])
def test_own_products_refuse_what_they_do_not_make(rng, along, ta, tb, beta, dtype, columns):
    """DOTS makes x @ W.T written, OUTERS u.T @ x and COMBINATIONS u @ W written or added
    to, in float32, from rows that lie contiguous: anything else is refused before a number
    is read (an F-ordered ``a``, ``columns``, too)."""
    a, b, _, _ = _operands(rng, dtype, ta, tb, m=8, k=6, n=4)
    a = np.asfortranarray(a) if columns else a
    with pytest.raises(ValueError, match=rf"^gemm: {along} makes {_OWN_PRODUCTS_MAKE[along]}, "
                                         r"float32, a and b with contiguous rows$"):
        blas.gemm_owned(getattr(blas, along), a, ta, b, tb, np.zeros((8, 4), dtype), beta)


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("executor", ["compiled", "python"])
@pytest.mark.parametrize("batch, units, inputs", [(64, 100, 784), (42, 66, 300)])
def test_a_layer_whose_forward_product_is_dot_products_computes_x_w_t(monkeypatch, rng,
                                                                      executor, batch, units,
                                                                      inputs):
    """MatMul(W, x) on a batch, its forward product by dot products (``dots``, forced here
    on any processor): x @ W.T, the value MKL's product gives (allclose), and the same
    gradient of W, on either executor; a batch of another size and back."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    owned = []
    gemm_owned = blas.gemm_owned
    monkeypatch.setattr(blas, "gemm_owned", lambda *args: (
        owned.append(args[5].shape) if args[0] == blas.DOTS else None, gemm_owned(*args)))
    w_value = rng.normal(size=(units, inputs)).astype(np.float32)
    xs = [rng.normal(size=(size, inputs, 1)).astype(np.float32) for size in (batch, 16, batch)]
    made = _one_layer_steps(monkeypatch, "dots", w_value, xs)
    assert sorted(set(owned)) == sorted({(size, units) for size in (batch, 16)})
    _assert_the_layer_s_products(made, xs, w_value, 1e-5 * np.sqrt(inputs))


def _on_one_thread_and_on_two(two_threads, along, a, ta, b, start, beta):
    """``gemm_owned(along, a, ta, b, False, out, beta)`` on one thread and on two, ``out``
    holding ``start`` (beta 1) or NaN (beta 0, so that a number not written shows): the same
    bits both times; returns the product."""
    made = []
    for count in (1, 2):
        two_threads.use(count)
        out = start.copy() if beta else np.full(start.shape, np.nan, np.float32)
        blas.gemm_owned(along, a, ta, b, False, out, beta)
        made.append(out)
    np.testing.assert_array_equal(made[1], made[0])
    return made[0]


# -- weight gradients by fastgraph's own outer products (blas.outers, gemm_owned's OUTERS) --
@pytest.mark.parametrize("m, n, k, taken", [
    (100, 784, 64, True),    # the MNIST MLP's first layer: 100 units, 784 inputs, 64 samples
    (256, 784, 128, True),   # 784-256-128-10's first
    (128, 256, 128, True),   # ... and its second
    (100, 784, 8, False),    # below 16 samples
    (300, 60, 64, False),    # below 64 inputs
    (20, 100, 64, False),    # a weight below PARALLEL_MIN numbers: not split
])
def test_outers_takes_the_weight_gradients_of_the_layers_dots_takes(monkeypatch, m, n, k,
                                                                     taken):
    _assert_own_products_chosen(monkeypatch, blas.outers, (m, n, k), taken)


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("batch, units, inputs", [(64, 100, 784), (37, 101, 300),
                                                  (64, 22, 790), (5, 130, 129), (3, 2, 9)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_outer_products_are_the_product_with_the_same_bits_on_one_thread_and_on_two(
        rng, two_threads, batch, units, inputs, beta):
    """``gemm_owned(OUTERS, u, True, x, False, out, beta)``: u.T @ x (+ out with beta 1),
    numpy's in float64, every number written (out held NaN for beta 0), units and inputs
    that are no multiple of 4, 16 or 64 (the blocks left over, the last columns one number
    at a time), a row slice of a wider matrix as u, and the same bits on one thread as on
    two."""
    u = rng.normal(size=(batch, units + 3)).astype(np.float32)[:, 1:1 + units]
    x = rng.normal(size=(batch, inputs)).astype(np.float32)
    start = rng.normal(size=(units, inputs)).astype(np.float32)
    made = _on_one_thread_and_on_two(two_threads, blas.OUTERS, u, True, x, start, beta)
    np.testing.assert_allclose(made, u.T.astype(np.float64) @ x + (start if beta else 0),
                               rtol=1e-5, atol=1e-5 * np.sqrt(batch))


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("along", ["OUTERS", "COMBINATIONS"])
def test_own_products_keep_nan_and_infinity_where_the_product_has_them(rng, two_threads,
                                                                       along):
    """``op(a) @ b`` by outer products (``a`` stored transposed: the upstream, a sample a
    row) or by combinations (``a`` as it is): a NaN in ``op(a)``'s row 7 makes row 7 NaN,
    an infinity in a column of ``b`` past the last block of 16 makes that column infinite,
    and NaN where it meets the zeros of row 9, as the product's."""
    rows, k, inputs = 60, 40, 300
    op_a = rng.normal(size=(rows, k)).astype(np.float32)
    b = rng.normal(size=(k, inputs)).astype(np.float32)
    op_a[7, 3], op_a[9, :], b[5, 290] = np.nan, 0.0, np.inf
    transposed = along == "OUTERS"
    a = np.ascontiguousarray(op_a.T) if transposed else op_a
    out = np.zeros((rows, inputs), np.float32)
    blas.gemm_owned(getattr(blas, along), a, transposed, b, False, out, 0.0)
    with np.errstate(invalid="ignore"):
        wanted = op_a.astype(np.float64) @ b
    np.testing.assert_array_equal(np.isnan(out), np.isnan(wanted))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(wanted))
    assert np.isnan(out[7]).all() and np.isnan(out[9, 290]) and np.isinf(out[0, 290])


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("executor", ["compiled", "python"])
def test_a_layer_whose_weight_gradient_is_outer_products_has_mkl_s_gradient(monkeypatch, rng,
                                                                          executor):
    """MatMul(W, x) on a batch, its weight gradient by outer products (``outers``, forced
    here on any processor): the gradient MKL's product gives, on either executor, a batch
    of another size and back, the sums added into on the second step of an accumulation."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    owned = []
    gemm_owned = blas.gemm_owned
    monkeypatch.setattr(blas, "gemm_owned", lambda *args: (
        owned.append(args[5].shape) if args[0] == blas.OUTERS else None, gemm_owned(*args)))
    w_value = rng.normal(size=(50, 400)).astype(np.float32)
    xs = [rng.normal(size=(size, 400, 1)).astype(np.float32) for size in (48, 16, 48)]
    made = _one_layer_steps(monkeypatch, "outers", w_value, xs)
    assert sorted(set(owned)) == [(50, 400)]
    _assert_the_layer_s_products(made, xs, w_value, 1e-5 * np.sqrt(400))


# -- input gradients by fastgraph's own combinations of rows (blas.combinations, COMBINATIONS) -
@pytest.mark.parametrize("m, n, k, taken", [
    (128, 256, 128, True),   # 784-256-128-10's second layer's input gradient: u (128, 128) @ W
    (128, 128, 10, True),    # ... and its third's
    (64, 784, 100, True),    # an input gradient through a first layer of 100 units
    (64, 100, 20, False),    # the MNIST MLP's second: 100 columns, no multiple of 16
    (64, 48, 100, False),    # fewer than 64 columns
    (8, 256, 128, False),    # fewer than 16 rows
    (128, 64, 16, False),    # 2^17 multiply-adds: no more than JIT_MOST
])
def test_combinations_takes_the_input_gradients_measured_faster(monkeypatch, m, n, k, taken):
    _assert_own_products_chosen(monkeypatch, blas.combinations, (m, n, k), taken)


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("samples, units, inputs", [(128, 128, 256), (37, 101, 300),
                                                    (64, 22, 790), (5, 130, 129), (3, 2, 9),
                                                    (16, 1, 64)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_combinations_are_the_product_with_the_same_bits_on_one_thread_and_on_two(
        rng, two_threads, samples, units, inputs, beta):
    """``gemm_owned(COMBINATIONS, u, False, w, False, out, beta)``: u @ w (+ out with beta
    1), numpy's in float64, every number written (out held NaN for beta 0), samples and
    inputs that are no multiple of 4, 16 or 64 (the blocks left over, the last columns one
    number at a time), a column slice of a wider matrix as u (rows longer than they are
    used), and the same bits on one thread as on two."""
    u = rng.normal(size=(samples, units + 3)).astype(np.float32)[:, 1:1 + units]
    w = rng.normal(size=(units, inputs)).astype(np.float32)
    start = rng.normal(size=(samples, inputs)).astype(np.float32)
    made = _on_one_thread_and_on_two(two_threads, blas.COMBINATIONS, u, False, w, start, beta)
    np.testing.assert_allclose(made, u.astype(np.float64) @ w + (start if beta else 0),
                               rtol=1e-5, atol=1e-5 * np.sqrt(units))


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("executor", ["compiled", "python"])
def test_a_network_whose_input_gradients_are_combinations_has_mkl_s_gradients(
        monkeypatch, executor):
    """An MLP whose layers' input gradients ``u @ W`` are made by COMBINATIONS (forced here
    on any processor and shape): every parameter's gradient that MKL's products give, on
    either executor, a batch of another size and back."""
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", executor)
    rng = np.random.default_rng(3)
    batches = [(rng.normal(size=(size, 40, 1)).astype(np.float32),
                np.eye(10, dtype=np.float32)[rng.integers(0, 10, size)]) for size in (48, 16, 48)]
    gemm_owned, made, combined = blas.gemm_owned, {}, []
    monkeypatch.setattr(blas, "gemm_owned", lambda *args: (
        combined.append(args[5].shape) if args[0] == blas.COMBINATIONS else None,
        gemm_owned(*args)))
    for answer in (False, True):
        monkeypatch.setattr(blas, "combinations", lambda *args, answer=answer: answer)
        model = fg.models.mlp(40, (72, 48), 10, seed=0)
        optimizer = fg.optimizer.GradientDescent(model.graph, model.loss, 0.1)  # (no update)
        weights = [node for node in model.graph.nodes
                   if isinstance(node, fg.Variable) and node.trainable]
        for x, one_hot in batches:
            model.x.set_value(x)
            model.one_hot.set_value(one_hot)
            optimizer.one_step()
            made.setdefault(answer, []).append([optimizer.get_gradient(w).copy()
                                                for w in weights])
    assert sorted(set(combined)) == [(16, 48), (16, 72), (48, 48), (48, 72)]
    for ours, mkl in zip(made[True], made[False]):
        for gradient, wanted in zip(ours, mkl):
            np.testing.assert_allclose(gradient, wanted, rtol=1e-4, atol=1e-6)

_OWN_PRODUCTS_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
import fastgraph as fg
from fastgraph.kernels import blas
if sys.argv[1] == "never":  # a process whose layers' products are all MKL's or OpenBLAS's
    blas.dots = blas.outers = blas.combinations = lambda *shape: False
model = fg.models.mlp(784, (100, 20), 10, seed=0)
optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
rng = np.random.default_rng(0)
for _ in range(3):  # recorded, then replayed by the compiled pass
    model.x.set_value(rng.random((64, 784, 1), np.float32))
    model.one_hot.set_value(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)])
    optimizer.one_step()
    optimizer.update()
x = rng.normal(size=(20, 300)).astype(np.float32)
w = rng.normal(size=(30, 300)).astype(np.float32)
out = np.full((20, 30), np.nan, np.float32)
before = blas._slot.value != 0
blas.gemm_owned(blas.DOTS, x, False, w, True, out, 0.0)  # the first own product asked for
print(json.dumps([before, bool(blas._slot.value), float(np.abs(out - x @ w.T).max())]))
"""


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
@pytest.mark.parametrize("case", ["never", "as it is"])
def test_the_own_products_are_compiled_only_when_a_call_asks_for_them(case):
    """``gemm_owned`` calls the own products' C function through a slot that the first call
    asking for an own product (DOTS, OUTERS, COMBINATIONS) fills (compiling it, 0.4-0.6 s on
    an empty cache): a process whose products are all MKL's or OpenBLAS's (an Intel
    processor, AVX2) compiles none, and one whose first own product comes late gets it
    right (a fresh process each)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _OWN_PRODUCTS_IN_A_FRESH_PROCESS, case],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after, error = json.loads(result.stdout.split("\n")[-2])
    assert before == (case != "never" and blas.dots(64, 100, 784, np.float32))
    assert after and error < 1e-3


_FIRST_OWN_PRODUCTS_IN_TWO_THREADS = """
import json, sys, threading, time
import numpy as np
from fastgraph.kernels import blas

paused = threading.Event()
def pause_at_the_slot(frame, event, arg):  # thread B stops just before it fills the slot
    if frame.f_code is not blas._define_own_products.__code__:
        return None
    def line(frame, event, arg):
        if event == "line" and "_slot.value = " in LINES[frame.f_lineno - 1]:
            paused.set()
            time.sleep(0.5)
        return line
    return line
LINES = open(blas._define_own_products.__code__.co_filename).readlines()

rng = np.random.default_rng(0)
x = rng.normal(size=(20, 300)).astype(np.float32)
w = rng.normal(size=(30, 300)).astype(np.float32)
errors = {}
def product(name):
    if name == "B":
        sys.settrace(pause_at_the_slot)
    else:
        paused.wait(60)
    out = np.full((20, 30), np.nan, np.float32)
    blas.gemm_owned(blas.DOTS, x, False, w, True, out, 0.0)
    errors[name] = float(np.abs(out - x @ w.T).max())
threads = [threading.Thread(target=product, args=(name,)) for name in "AB"]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps([paused.is_set(), errors, len(blas._own_products_compiled)]))
"""


@pytest.mark.skipif(not COMPILED, reason="a compiled kernel")
def test_two_threads_first_own_products_at_once():
    """Two Python threads making their first own products at once (two graphs trained in
    two threads): the one that came second found the C function compiled while the slot
    still held 0, called address 0 and ended the process (a segmentation fault). Here one
    thread pauses just before it fills the slot while the other asks: it waits, and both
    products are right, the function compiled once."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _FIRST_OWN_PRODUCTS_IN_TWO_THREADS],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    paused, errors, compiled = json.loads(result.stdout.split("\n")[-2])
    assert paused and compiled == 1
    assert errors["A"] < 1e-3 and errors["B"] < 1e-3
