"""Programs (``fastgraph.kernels.program``): recorded calls replayed through shared adapters.

A replayed call runs the kernel's own machine code through an adapter chosen by the kinds
of its arguments, the graph's dtype and what the kernel returns. These tests hold replays
against the same calls made from Python for every kind of argument, check that an adapter
is never shared by two of those keys, and that a replay compiles no kernel a second time.
"""

import numpy as np
import pytest

from fastgraph.kernels import kernel, program
from tests.helpers import replay

# -- small kernels, one per kind of argument ---------------------------------------------------


@kernel
def _scaled_sum(a, b, out, scale, flag, count):
    """out = a * scale + b * count, negated with ``flag``: every kind of argument."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            value = a[i, j] * scale + b[i, j] * count
            out[i, j] = -value if flag else value


@kernel
def _first_negative_row(a):
    """The first row with a negative entry, or -1: a kernel that returns a status."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j] < 0:
                return i
    return -1


@kernel
def _divide_rows(a, out, rows):
    """out = a / rows; raises when ``rows`` is 0: a kernel that fails."""
    if rows == 0:
        raise ValueError("no rows")
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[i, j] / rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.3, np.float32(0.3), np.float64(0.3)])
@pytest.mark.parametrize("flag", [True, False, np.bool_(True)])
def test_every_kind_of_argument_replays_as_the_python_call(rng, dtype, scale, flag):
    a = rng.normal(size=(3, 4)).astype(dtype)
    b_storage = rng.normal(size=(4, 3)).astype(dtype)
    b = b_storage.T  # F-contiguous
    expected = np.zeros((3, 4), dtype)
    _scaled_sum(a, b, expected, scale, flag, 3)
    out = np.zeros((3, 4), dtype)
    with program.recording(dtype) as calls:
        calls.replay_only = True
        _scaled_sum(a, b, out, scale, flag, np.int64(3))
    assert calls.calls[0][1] == "CFC" + program._SCALAR_KINDS[type(scale)] + "bi"
    assert not out.any()  # recorded, not run
    status, _ = replay(calls)
    assert status == -1
    np.testing.assert_array_equal(out, expected)


def test_an_adapter_is_never_shared_by_two_keys():
    """The cached adapter's name holds everything its code depends on; C and F matrices
    share one (passed alike, with their strides)."""
    keys = [("CCf", "float32", "none"), ("CCf", "float64", "none"), ("CCg", "float32", "none"),
            ("CCf", "float32", "int64"), ("CCfi", "float32", "none"), ("CCb", "float32", "none"),
            ("CCi", "float32", "none"), ("CC", "float32", "none"), ("", "float32", "none")]
    names = {program.adapter_name(*key) for key in keys}
    assert len(names) == len(keys)
    addresses = {program.adapter(kinds, dtype, result) for kinds, dtype, result in keys}
    assert len(addresses) == len(keys)
    assert program.adapter("CCf", np.float32, "none") == program.adapter("CCf", "float32", "none")
    assert program.adapter("FCf", "float32", "none") == program.adapter("CCf", "float32", "none")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_adapter_replays_every_transposition(rng, dtype):
    def product(a, b, out):  # a kernel whose argument layouts differ call by call
        _scaled_sum(a, b, out, 1.0, False, 1)

    def c():
        return rng.normal(size=(2, 3)).astype(dtype)

    def f():
        return rng.normal(size=(3, 2)).astype(dtype).T

    operands = [(c(), f()), (f(), c()), (f(), f())]
    outs = [np.zeros((2, 3), dtype) for _ in operands]
    with program.recording(dtype) as calls:
        calls.replay_only = True
        for (a, b), out in zip(operands, outs):
            product(a, b, out)
    assert [kinds for _, kinds, _ in calls.calls] == ["CFCfbi", "FCCfbi", "FFCfbi"]
    assert replay(calls)[0] == -1
    assert len(set(replay(calls)[1].code[:, 0])) == 1
    for (a, b), out in zip(operands, outs):
        np.testing.assert_allclose(out, a + b, rtol=1e-6)


def test_a_replay_compiles_no_kernel_twice(rng):
    """The replay calls the code the Python call compiled: no second specialization."""
    a = rng.normal(size=(2, 3)).astype(np.float32)
    out = np.zeros((2, 3), np.float32)
    with program.recording(np.float32) as calls:
        _scaled_sum(a, a, out, 0.5, False, 2)
    overloads = len(_scaled_sum.dispatcher.overloads)
    status, compiled = replay(calls)
    assert status == -1 and len(_scaled_sum.dispatcher.overloads) == overloads
    code, _, library = program.machine_code(_scaled_sum, "CCCfbi", np.float32)
    assert compiled.code[0, 3] == code and library in compiled.libraries


def test_calls_no_variant_runs_are_not_compiled(rng):
    """Only the rows handed out are compiled: a call recorded but never replayed costs
    nothing (an accumulation a pass does not need)."""
    a = rng.normal(size=(2, 2))
    with program.recording(np.float64) as calls:
        _first_negative_row(a)
        calls.replay_only = True
        _scaled_sum(a, a, a.copy(), np.float32(1.0), True, 1)  # a signature never called
    key = program.signature("CCCgbi", np.float64)
    assert key not in _scaled_sum.dispatcher.overloads
    compiled = program.Program(calls)
    compiled.rows((0, 1))
    assert key not in _scaled_sum.dispatcher.overloads
    assert compiled.code[1, 0] == 0
    compiled.rows((1, 2))
    assert key in _scaled_sum.dispatcher.overloads and compiled.code[1, 0] != 0


def test_a_kernel_status_and_a_raised_error_stop_the_replay_at_their_row(rng):
    a = np.abs(rng.normal(size=(3, 2)))
    out = np.zeros((3, 2))
    with program.recording(np.float64) as calls:
        calls.replay_only = True
        _first_negative_row(a)
        _divide_rows(a, out, 0)
        _divide_rows(a, out, 2)
    assert replay(calls)[0] == 1
    assert not out.any()  # stopped before the last call
    a[2, 1] = -1.0
    assert replay(calls)[0] == 0


def test_an_unaligned_or_strided_array_is_not_recordable():
    storage = np.zeros(8 * 6 + 1, np.uint8)
    unaligned = storage[1:].view(np.float64).reshape(2, 3)
    assert not unaligned.flags.aligned
    with pytest.raises(program.NotRecordable, match="_first_negative_row was given an unaligned"):
        with program.recording(np.float64):
            _first_negative_row(unaligned)
    with pytest.raises(program.NotRecordable, match="_first_negative_row was given a strided"):
        with program.recording(np.float64):
            _first_negative_row(np.zeros((4, 4))[::2])


def test_a_kernel_returning_something_else_is_not_recordable():
    @kernel
    def _half(a):
        return a[0, 0] / 2

    a = np.ones((1, 1))
    with program.recording(np.float64) as calls:
        _half(a)
    with pytest.raises(program.NotRecordable, match="_half returns float64"):
        program.Program(calls).rows((0, 1))


CACHED_REPLAY = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from fastgraph.kernels import program
import replayed

rng = np.random.default_rng(0)
errors = []
for dtype in (np.float32, np.float64):
    for scale in (0.5, np.float32(0.5)):
        a, b = rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=(2, 3)).astype(dtype).T
        out = np.zeros((3, 2), dtype)
        with program.recording(dtype) as calls:
            calls.replay_only = True
            replayed.scaled(a, b, out, scale)
            replayed.first_negative(np.abs(a))
        compiled = program.Program(calls)
        code = compiled.rows((0, 2))
        steps = np.array([[0, 0, 2]], np.int64)
        status = program.execute(code, compiled.ints, compiled.reals, steps,
                                  np.ones(1, np.int8), np.zeros(1, np.int64), 1, code[:0],
                                  compiled.ints, compiled.reals, program.NO_CYCLES)
        if status != -1 or not np.allclose(out, a * dtype(0.5) + b, rtol=1e-6):
            errors.append((np.dtype(dtype).name, type(scale).__name__, int(status)))
hits = {"-".join(key): found.cache_hits for key, found in program._adapters.items()}
print(json.dumps({"errors": errors, "hits": hits}))
"""

KERNELS = """
from fastgraph.kernels import kernel


@kernel
def scaled(a, b, out, s):
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[i, j] * s + b[i, j]


@kernel
def first_negative(a):
    for i in range(a.shape[0]):
        if a[i, 0] < 0:
            return i
    return -1
"""


def test_adapters_cached_on_disk_serve_a_new_process_under_their_own_keys(tmp_path):
    """A second process loads every adapter from the disk cache (none compiled), each
    under the key it was made for (float32 and float64, float and float32 scalars, a
    status), and replays the same numbers."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "replayed.py").write_text(KERNELS)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = [json.loads(subprocess.run(
        [sys.executable, "-c", CACHED_REPLAY, str(tmp_path)], env=env, capture_output=True,
        text=True, check=True).stdout) for _ in range(2)]
    assert runs[0]["errors"] == runs[1]["errors"] == []
    assert sorted(runs[0]["hits"]) == sorted(runs[1]["hits"]) == sorted(
        f"{kinds}-{dtype}-{result}" for dtype in ("float32", "float64")
        for kinds, result in (("CCCf", "none"), ("CCCg", "none"), ("C", "int64")))
    assert set(runs[0]["hits"].values()) == {0} and set(runs[1]["hits"].values()) == {1}


@pytest.mark.parametrize("read_between", [False, True])
def test_an_addition_is_fused_into_its_writer_only_when_nothing_reads_the_total_between(
        rng, read_between):
    """``fuse_additions`` makes ``outer(u, v, part, 0)`` then ``add_into(total, part)`` one
    ``outer(u, v, total, 1)`` (when the total was made before), which moves the addition to
    the writer's place: a call between them that reads the total must then keep the two (it
    would see the sum too early)."""
    from fastgraph.kernels.elementwise import add_into, copy_rows, outer

    u, v = rng.normal(size=(1, 3)), rng.normal(size=(1, 4))
    start = rng.normal(size=(3, 4))
    total, part, seen = np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((3, 4))
    with program.recording(np.float64) as calls:
        calls.replay_only = True
        copy_rows(start, total)  # the total is made first, as a first contribution is
        outer(u, v, part, 0.0)
        if read_between:
            copy_rows(total, seen)
        add_into(total, part)
    recorded = list(calls.calls)
    fused = program.fuse_additions(calls, 0, len(calls.calls), add_into)
    assert fused == (0 if read_between else 1)
    assert (calls.calls == recorded) == read_between
    status, _ = replay(calls)
    assert status == -1
    np.testing.assert_allclose(total, start + np.outer(u, v), rtol=1e-14)
    if read_between:
        np.testing.assert_array_equal(seen, start)


@pytest.mark.compiled
def test_touching_finds_what_a_scan_of_the_calls_finds(rng):
    """``Program.touching`` searches the arguments sorted by address (a scan of every call
    for every parameter made the first step quadratic in the parameters): on a training
    pass of an MLP, for every array its calls pass and views of parts of them, it gives the
    calls and arguments that a plain scan gives, in order."""
    import fastgraph as fg
    from fastgraph.engines import compiled
    from fastgraph.kernels.program import INTS_PER_ARGUMENT

    model = fg.models.mlp(6, (5, 4), 3, dtype=np.float64, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    model.x.set_value(rng.normal(size=(7, 6)))
    model.one_hot.set_value(np.eye(3)[rng.integers(0, 3, 7)])
    optimizer.one_step()
    optimizer.update()
    optimizer.one_step()
    (training,) = compiled.passes(model.graph, optimizer)
    program = training.program

    def scanned(array, start, stop):
        low, high = array.ctypes.data, array.ctypes.data + array.nbytes
        found = {}
        for call in range(start, stop):
            offset = program.code[call, 1]
            for i, kind in enumerate(program.kernels[call][1]):
                if kind in "CF" and low <= program.ints[offset + INTS_PER_ARGUMENT * i] < high:
                    found.setdefault(call, []).append(i)
        return found

    ranges = [(0, len(program)), (training.forward_stop, training.backward_stop), (2, 5)]
    arrays = [array for array in program.arrays if array.size]
    arrays += [array[1:] for array in arrays if array.shape[0] > 1]  # a part of a buffer
    assert len(arrays) > 20
    for start, stop in ranges:
        for array in arrays:
            assert program.touching(array, start, stop) == scanned(array, start, stop)
