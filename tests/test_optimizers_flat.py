"""The optimizers' flat update: a table of weight addresses, flat gradient sums and states.

Each rule's update is held against its formula written by hand with NumPy, per parameter,
for all five rules and both conventions; parameters that join after the first update (a
re-welded node) take their place in the flat buffers while the others keep their state;
``set_value`` and a saved and loaded model are updated where their values are; and one
compiled kernel serves graphs with any number of parameters.
"""

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import fastgraph as fg
from fastgraph.kernels import optimizers as kernels
from fastgraph.kernels import owned_rows
from fastgraph.threads import threads
from tests.helpers import RULE_OPTIONS, welded_tanh

OPTIONS = RULE_OPTIONS
CASES = [(name, "torch") for name in OPTIONS] + [("RMSProp", "article"), ("Adam", "article")]


class ByHand:
    """One rule's update written out per parameter, with its state per parameter: torch's
    bias correction counts the parameter's own updates, as torch.optim.Adam's per-parameter
    step does (``t``, the optimizer's count, is the same for a parameter updated at every
    step), ``first`` whether the article's rule sees this parameter for the first time (its
    state starts at g, g^2)."""

    def __init__(self, name, conventions, options):
        self.name, self.article, self.options = name, conventions == "article", options
        self.state = {}

    def step(self, key, w, g, t):
        o, first = self.options, key not in self.state
        s = self.state.setdefault(key, {"a": np.zeros_like(w), "b": np.zeros_like(w), "t": 0})
        s["t"] += 1
        t = s["t"]  # this parameter's own updates
        lr = o["learning_rate"]
        if self.name == "GradientDescent":
            return w - lr * g
        if self.name == "Momentum":
            s["a"] = o["momentum"] * s["a"] + g
            return w - lr * s["a"]
        if self.name == "AdaGrad":
            s["a"] = s["a"] + g * g
            return w - lr * g / (np.sqrt(s["a"]) + o["eps"])
        if self.name == "RMSProp":
            beta = 0.0 if self.article and first else o["beta"]
            s["a"] = beta * s["a"] + (1 - beta) * g * g
            if self.article:
                return w - lr * g / np.sqrt(s["a"] + o["eps"])
            return w - lr * g / (np.sqrt(s["a"]) + o["eps"])
        b1, b2 = o["beta_1"], o["beta_2"]
        if self.article and first:
            b1 = b2 = 0.0
        s["a"] = b1 * s["a"] + (1 - b1) * g
        s["b"] = b2 * s["b"] + (1 - b2) * g * g
        if self.article:
            return w - lr * s["a"] / np.sqrt(s["b"] + o["eps"])
        m_hat, v_hat = s["a"] / (1 - b1**t), s["b"] / (1 - b2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + o["eps"])

    def states(self, key):
        """The optimizer's state names and this rule's arrays for them."""
        names = {"Momentum": ("velocity",), "AdaGrad": ("square_sum",),
                 "RMSProp": ("square_avg",), "Adam": ("m", "v")}.get(self.name, ())
        return {name: self.state[key][slot] for name, slot in zip(names, "ab")}


def _optimizer(name, conventions, graph, target):
    extra = {"conventions": conventions} if name in ("RMSProp", "Adam") else {}
    return getattr(fg.optimizer, name)(graph, target, **OPTIONS[name], **extra)


def _network(rng, dtype=np.float64):
    """Three layers, six parameters of different sizes (a bias of one number among them)."""
    with fg.Graph(dtype=dtype) as graph:
        x = fg.Variable((4, 1), trainable=False)
        t = fg.Variable((1, 1), trainable=False)
        node, params = x, []
        for rows, cols in ((5, 4), (3, 5), (1, 3)):
            w, b = fg.Variable((rows, cols)), fg.Variable((rows, 1))
            w.set_value(rng.normal(size=(rows, cols)))
            b.set_value(rng.normal(size=(rows, 1)))
            params += [w, b]
            node = fg.ops.Add(fg.ops.MatMul(w, node), b)
            if rows > 1:
                node = fg.ops.Tanh(node)
        loss = fg.ops.loss.MeanSquaredError(node, t)
    return graph, x, t, params, loss


@pytest.mark.parametrize("name, conventions", CASES)
def test_every_parameter_updates_as_its_formula_by_hand(rng, name, conventions):
    graph, x, t, params, loss = _network(rng)
    optimizer = _optimizer(name, conventions, graph, loss)
    hand = ByHand(name, conventions, OPTIONS[name])
    for step in range(1, 5):
        x.set_value(rng.normal(size=(6, 4)))
        t.set_value(rng.normal(size=(6, 1)))
        optimizer.one_step()
        expected = {}
        for param in params:
            gradient = optimizer.get_gradient(param)
            expected[param] = hand.step(param, param.value.copy(), gradient, step)
        optimizer.update()
        for param in params:
            np.testing.assert_allclose(param.value, expected[param], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{param.name} at update {step}")
            for state, array in hand.states(param).items():
                np.testing.assert_allclose(optimizer.state(state, param), array, rtol=1e-12,
                                           atol=1e-14, err_msg=f"{state} of {param.name}")


@contextlib.contextmanager
def on_threads(count, optimizer, monkeypatch):
    """``optimizer``'s updates on ``count`` threads (the tests run on one)."""
    monkeypatch.setattr(threads, "most", count)
    optimizer.threads.fixed, optimizer.threads.counts = True, (count, count)
    threads.use(count)
    try:
        yield
    finally:
        threads.use(1)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba has one thread here")
@pytest.mark.parametrize("name, conventions", CASES)
def test_a_parameter_updated_on_every_core_updates_as_its_formula(rng, monkeypatch, name,
                                                                    conventions):
    """A weight matrix of more than ``PARALLEL_MIN`` numbers takes the kernels' parallel
    loop on two threads (its weights were once left unchanged there, silently)."""
    rows = 130
    assert rows * rows >= kernels.PARALLEL_MIN
    with fg.Graph(dtype=np.float64) as graph:
        x, t = fg.Variable((rows, 1), trainable=False), fg.Variable((1, 1), trainable=False)
        w, v = fg.Variable((rows, rows)), fg.Variable((1, rows))
        w.set_value(rng.normal(0.0, 0.1, size=(rows, rows)))
        v.set_value(rng.normal(size=(1, rows)))
        hidden = fg.ops.Tanh(fg.ops.MatMul(w, x))
        loss = fg.ops.loss.MeanSquaredError(fg.ops.MatMul(v, hidden), t)
    optimizer = _optimizer(name, conventions, graph, loss)
    hand = ByHand(name, conventions, OPTIONS[name])
    with on_threads(2, optimizer, monkeypatch):
        for step in (1, 2):
            x.set_value(rng.normal(size=(3, rows)))
            t.set_value(rng.normal(size=(3, 1)))
            optimizer.one_step()
            expected = {param: hand.step(param, param.value.copy(),
                                         optimizer.get_gradient(param), step)
                        for param in (w, v)}
            assert numba.get_num_threads() == 2
            optimizer.update()
            for param, value in expected.items():
                np.testing.assert_allclose(param.value, value, rtol=1e-12, atol=1e-14,
                                           err_msg=f"{param.name} at update {step}")
    rule = getattr(kernels, RULES[name])
    assert rule.every_core.dispatcher.overloads  # the parallel loops ran


RULES = {"GradientDescent": "gradient_descent", "Momentum": "momentum", "AdaGrad": "adagrad",
         "RMSProp": "rmsprop", "Adam": "adam"}
STATES = {"gradient_descent": 0, "momentum": 1, "adagrad": 1, "rmsprop": 1, "adam": 2}
COEFFICIENTS = {"gradient_descent": 2, "momentum": 3, "adagrad": 3, "rmsprop": 6, "adam": 9}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba has one thread here")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", sorted(STATES))
def test_one_core_and_every_core_give_the_same_bits(rng, rule, dtype):
    """The two compilations of a rule, and every_core on one and on two threads: the same
    weights and states bit for bit, for parameters above and below ``PARALLEL_MIN``."""
    sizes = [kernels.PARALLEL_MIN + 37, 100, 2000, 20, kernels.PARALLEL_MIN * 2 + 1, 10]
    weights = [rng.standard_normal(size).astype(dtype) for size in sizes]
    gradients = rng.standard_normal(sum(sizes)).astype(dtype)
    states = [np.abs(rng.standard_normal(sum(sizes))).astype(dtype)
              for _ in range(STATES[rule])]
    c = (np.abs(rng.standard_normal(COEFFICIENTS[rule])) * 0.5 + 0.1).astype(dtype)
    c[0] = 1 / 64
    kernel = getattr(kernels, rule)
    results = []
    before = numba.get_num_threads()
    try:
        for compiled, count in ((kernel.one_core, 1), (kernel.every_core, 1),
                                (kernel.every_core, 2)):
            numba.set_num_threads(count)
            w = [array.copy() for array in weights]
            s = [array.copy() for array in states]
            table = np.array([(a.ctypes.data, start, a.size) for a, start in
                              zip(w, np.cumsum([0] + sizes[:-1]))], np.int64)
            compiled(table, gradients, *s, c)
            results.append(np.concatenate(w + s))
    finally:
        numba.set_num_threads(before)
    assert not np.array_equal(results[0][:sizes[0]], weights[0])  # it did update
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


@pytest.mark.parametrize("rows", [1, 7, 8, 9, 16, 100, 137, 256, 263])
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_owned_rows_cover_a_parameter_once_in_order(rows, parts):
    """The threads' shares of a parameter's rows: together every row once, in order, each
    an equal share to a row."""
    owned = [owned_rows(rows, parts, part) for part in range(parts)]
    assert owned[0][0] == 0 and owned[-1][1] == rows
    for (_, stop), (start, _) in zip(owned, owned[1:]):
        assert stop == start
    for start, stop in owned:
        assert rows // parts <= stop - start <= -(-rows // parts)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba has one thread here")
@pytest.mark.parametrize("rows, columns", [(100, 784), (256, 784), (128, 256)])
def test_the_update_loop_gives_each_thread_the_rows_it_owns(rows, columns):
    """The premise of ``owned_rows``: Numba's static schedule runs a ``prange`` loop over a
    parameter's numbers as one equal chunk per thread, in thread order, so on two threads
    thread t updates the numbers of exactly the rows that ``owned_rows`` gives it (and
    ``gemm_owned`` makes and reads on it)."""
    from numba import njit, prange

    @njit(parallel=True)
    def who(out):
        for j in prange(out.size):
            out[j] = numba.get_thread_id()

    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        ran = np.full(rows * columns, -1, np.int64)
        who(ran)
    finally:
        numba.set_num_threads(before)
    for part in range(2):
        start, stop = owned_rows(rows, 2, part)
        assert (ran[start * columns:stop * columns] == part).all()


def test_a_call_runs_the_compilation_for_the_threads_it_runs_on_now(monkeypatch):
    """On one thread, one_core (a process fixed to one, or the thread chooser's first steps
    in one that may use more); on more, every_core; a Python thread that set no count runs
    on Numba's, every core (here stand-ins that say which ran)."""
    from fastgraph.threads import threads

    rule = kernels.OnThreads(kernels.adam.one_core.py_func)
    kernels._RULES.remove(rule)
    ran = []
    monkeypatch.setattr(rule, "one_core", lambda *args: ran.append("one"))
    monkeypatch.setattr(rule, "every_core", lambda *args: ran.append("every"))
    now = {"count": 1}
    monkeypatch.setattr(type(threads), "current", property(lambda self: now["count"]))
    # The parallel form being compiled by the worker in the background: a call that needs
    # it waits for the worker (never two processes compiling one function at once).
    waited = []
    monkeypatch.setattr(kernels.ahead, "background_done", lambda wait=False: waited.append(wait))
    monkeypatch.setattr(threads, "most", 1)
    rule(1)
    monkeypatch.setattr(threads, "most", 2)
    rule(2)  # the chooser's first steps
    assert waited == []
    now["count"] = 2
    rule(3)
    now["count"] = None
    rule(4)
    assert ran == ["one", "one", "every", "every"] and waited == [True, True]


@pytest.mark.parametrize("setting", ["1", "2"])
def test_a_process_compiles_the_update_forms_it_runs(setting):
    """In a fresh process, steps on one thread (as in auto mode at first) compile and run
    the plain update only; where more threads may run, the parallel one is compiled before
    they do (``compile_parallel_forms``, which the thread chooser calls before its first
    trial of them), and runs on two. A process fixed to one thread never compiles it: its
    parallel kernel is the plain twin (``Kernel.dispatcher``)."""
    code = """
import json
import numba
import numpy as np
import fastgraph as fg
from fastgraph.kernels import optimizers
from fastgraph.threads import threads
model = fg.models.mlp(784, (100, 20), 10, seed=0)
optimizer = fg.optimizer.Adam(model.graph, model.loss)
optimizer.threads.fixed, optimizer.threads.counts = True, (1, 1)  # as its first steps
threads.use(1)
seen = []

def step():
    model.x.set_value(np.zeros((64, 784), np.float32))
    model.one_hot.set_value(np.eye(10, dtype=np.float32)[np.arange(64) % 10])
    optimizer.one_step()
    optimizer.update()
    every, one = optimizers.adam.every_core.dispatcher, optimizers.adam.one_core.dispatcher
    seen.append([len(every.overloads), len(one.overloads), every is one])

for _ in range(2):
    step()
if threads.most > 1:
    optimizers.compile_parallel_forms()
    seen.append("compiled")
    optimizer.threads.counts = (2, 2)
    threads.use(2)
    step()
print(json.dumps(seen))
"""
    env = {**os.environ, "FASTGRAPH_THREADS": setting, "NUMBA_NUM_THREADS": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    if setting == "1":  # the parallel kernel is its plain twin: one form, ever
        assert seen == [[1, 1, True]] * 2
    else:  # the plain form for one thread, the parallel one compiled before two run it
        assert seen == [[0, 1, False]] * 2 + ["compiled", [1, 1, False]]


@pytest.mark.parametrize("name, conventions", [("Momentum", "torch"), ("RMSProp", "article"),
                                               ("Adam", "torch"), ("Adam", "article")])
def test_a_parameter_that_joins_later_takes_its_place_and_the_others_keep_their_state(
        rng, name, conventions):
    """A welding point re-attached to a branch with a new parameter ``u`` (which comes
    before ``b`` among the parameters): every buffer is laid out again, the old parameters'
    sums and states move with them, u's state starts as its rule says; welded back, u keeps
    its state."""
    graph, x, target, weld, branches, (u, w, b), loss = welded_tanh(rng)
    with graph:
        optimizer = _optimizer(name, conventions, graph, loss)
    hand = ByHand(name, conventions, OPTIONS[name])
    assert u not in optimizer.params
    for step, branch in enumerate([0, 0, 1, 1, 0, 1], start=1):
        weld.weld(branches[branch])
        x.set_value(rng.normal(size=(3, 2)))
        target.set_value(rng.normal(size=(3, 1)))
        optimizer.one_step()
        if branch:  # u before b: b's sums and state move to another place in the buffers
            assert optimizer.params.index(u) < optimizer.params.index(b)
        expected = {param: hand.step(param, param.value.copy(), optimizer.get_gradient(param),
                                     step) for param in optimizer.params}
        optimizer.update()
        for param, value in expected.items():
            np.testing.assert_allclose(param.value, value, rtol=1e-12, atol=1e-14,
                                       err_msg=f"{param.name} at update {step}")
            for state, array in hand.states(param).items():
                np.testing.assert_allclose(optimizer.state(state, param), array, rtol=1e-12,
                                           atol=1e-14, err_msg=f"{state} of {param.name}")


def test_set_value_between_updates_is_what_the_next_update_changes(rng):
    graph, x, t, params, loss = _network(rng)
    optimizer = fg.optimizer.Momentum(graph, loss, learning_rate=0.1, momentum=0.5)
    x.set_value(rng.normal(size=(6, 4)))
    t.set_value(rng.normal(size=(6, 1)))
    optimizer.one_step()
    optimizer.update()
    w = params[2]
    new = rng.normal(size=w.dim)
    w.set_value(new)  # in place: the address the update writes stays the parameter's
    optimizer.one_step()
    gradient = optimizer.get_gradient(w)
    velocity = 0.5 * optimizer.state("velocity", w) + gradient
    optimizer.update()
    np.testing.assert_allclose(w.value, new - 0.1 * velocity, rtol=1e-12)


def test_a_saved_model_trains_on_where_it_was_loaded(rng, tmp_path):
    """The loaded graph's parameters are new arrays: a new optimizer updates those, and the
    original graph trained alike gives the same numbers."""
    model = fg.models.mlp(12, (5,), 3, dtype=np.float64, seed=1)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    features, labels = rng.random((8, 12)), np.eye(3)[rng.integers(0, 3, 8)]
    for _ in range(3):
        model.x.set_value(features)
        model.one_hot.set_value(labels)
        optimizer.one_step()
        optimizer.update()
    fg.saver.save(tmp_path / "model.npz", model.graph)
    graph, _ = fg.saver.load(tmp_path / "model.npz")
    by_name = {node.name: node for node in graph.nodes}
    pairs = [(param, by_name[param.name]) for param in optimizer.params]
    saved = []
    for param, loaded in pairs:
        np.testing.assert_array_equal(loaded.value, param.value)
        saved.append(loaded.value)
    runs = []
    for x, one_hot, loss in ((model.x, model.one_hot, model.loss),
                             (by_name["x"], by_name["one_hot"], by_name[model.loss.name])):
        fresh = fg.optimizer.Adam(x.graph, loss, 0.01)
        x.set_value(features)
        one_hot.set_value(labels)
        fresh.one_step()
        fresh.update()
        runs.append(fresh)
    for (param, loaded), before in zip(pairs, saved):
        assert not np.array_equal(loaded.value, before)  # the update changed the loaded ones
        np.testing.assert_array_equal(loaded.value, param.value)
    assert all(param.graph is graph for param in runs[1].params)


def test_one_compiled_update_serves_any_number_of_parameters(rng):
    """Graphs of two and of eight parameters: the float32 Adam kernel is compiled once."""
    for hidden in ((), (6, 5, 4)):
        model = fg.models.mlp(7, hidden, 3, seed=2)
        optimizer = fg.optimizer.Adam(model.graph, model.loss)
        assert len(optimizer.params) == 2 * (len(hidden) + 1)
        model.x.set_value(rng.random((4, 7), np.float32))
        model.one_hot.set_value(np.eye(3, dtype=np.float32)[[0, 1, 2, 0]])
        optimizer.one_step()
        optimizer.update()
    float32 = [signature for signature in kernels.adam.one_core.dispatcher.overloads
               if str(signature[1].dtype) == "float32"]
    assert len(float32) == 1, float32


def test_state_names_a_parameter_and_a_state_of_the_rule(rng):
    graph, x, t, params, loss = _network(rng)
    optimizer = fg.optimizer.Adam(graph, loss)
    assert optimizer.state("m", params[0]).shape == params[0].dim
    with pytest.raises(KeyError, match="Adam keeps no state 'velocity'; its states: m, v"):
        optimizer.state("velocity", params[0])
    with pytest.raises(KeyError, match="is not a parameter of this optimizer"):
        optimizer.state("m", x)


#: An AVX-512 processor for Numba to compile for (``NUMBA_CPU_NAME``, ``NUMBA_CPU_FEATURES``),
#: whatever processor runs the test: the code is only read, never run.
AVX512 = ("skylake-avx512", "+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,"
          "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe,+avx512f,+avx512vl,+avx512bw,"
          "+avx512dq,+avx512cd")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 code")
def test_the_parallel_updates_store_their_states_without_a_scatter(tmp_path):
    """Each rule's parallel loop, compiled for an AVX-512 processor, is vectorised into plain
    loads and stores: no gather or scatter. A state kept or zeroed by a short-circuit
    ``and`` (``_decayed``) was a branch that LLVM turned into masked loads and a scatter of
    Adam's state (``vscatterqps``), and the update of the MLP ran at half speed on an
    Intel Xeon (47-51 against 24-29 us on two threads); the code for an AVX2 processor was
    fine."""
    code = """
import json
import numba
from numba import types
from fastgraph.kernels import optimizers as kernels
table, vector = types.Array(types.int64, 2, "C"), types.Array(types.float32, 1, "C")
found = {}
for name, states in (("gradient_descent", 0), ("momentum", 1), ("adagrad", 1),
                     ("rmsprop", 1), ("adam", 2)):
    kernel = getattr(kernels, name).every_core
    compiled = numba.njit(**{**kernel._options, "cache": False})(kernel.py_func)
    signature = (table, vector) + (vector,) * states + (vector,)
    compiled.compile(signature)
    code = compiled.inspect_asm(signature)
    found[name] = {word: code.count(word) for word in ("scatter", "gather", "vmulps")}
print(json.dumps(found))
"""
    env = {**os.environ, "NUMBA_CPU_NAME": AVX512[0], "NUMBA_CPU_FEATURES": AVX512[1],
           "NUMBA_CACHE_DIR": str(tmp_path), "FASTGRAPH_THREADS": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for name, counts in found.items():
        assert counts["vmulps"] > 0 or name == "gradient_descent", (name, counts)  # vectorised
        assert counts["scatter"] == 0 and counts["gather"] == 0, (name, counts)
