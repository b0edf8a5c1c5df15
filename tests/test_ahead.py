"""Compiling ahead (fastgraph/kernels/ahead.py): the survey of a pass lists what recording
it compiles and changes no value; a worker process that fails, hangs or talks nonsense never
holds this process up nor changes a number; and, on an empty cache, the worker compiles part
of the MNIST MLP's first step, which this process then loads instead of compiling."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given

import fastgraph as fg
from fastgraph.engines import compiled
from fastgraph.kernels import ahead, blas
from fastgraph.kernels.elementwise import add_into, copy_rows
from tests.test_compiled import random_graphs, relevant
from tests.test_startup import MLP_STEP

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_spare_worker(monkeypatch):
    """No test here meets a spare worker that this process's earlier compiling started
    (``ahead._spare``, put back afterwards): ``_Worker.start`` hands that one out before it
    starts the test's own (fake) worker, and a warm real worker took the fake groups of a
    test of failing workers as its own (flaky: only after an earlier test had compiled,
    e.g. once a kernel's source had changed)."""
    monkeypatch.setattr(ahead, "_spare", None)


# -- the survey -------------------------------------------------------------------------------
def _recorded_and_surveyed(graph, target, params):
    tape = graph.tape(target)
    plan = graph.plan(target, params)
    sums = tuple(np.zeros_like(param.flat) for param in params)
    surveyed = {(kernel, kinds) for kernel, _, (kinds, _) in compiled._survey(tape, plan, None)}
    recorded = compiled.Pass(tape, plan, params=params, sums=sums)
    return set(recorded.program.kernels), surveyed


@pytest.mark.compiled
@relevant
@given(random_graphs())
def test_the_survey_lists_every_kernel_call_the_recording_makes(case):
    graph, target, _, params = case
    reachable = set(graph.tape(target).nodes)
    params = [param for param in params if param in reachable]
    if not params:
        return
    recorded, surveyed = _recorded_and_surveyed(graph, target, params)
    # What the recording has more: the copies and additions into the sums, which the survey
    # leaves out (the backward mostly writes the sums itself).
    assert {kernel for kernel, _ in recorded - surveyed} <= {add_into, copy_rows}
    # ... and less: additions it folded into the call that made the part.
    assert {kernel for kernel, _ in surveyed - recorded} <= {add_into}


@pytest.mark.compiled
@relevant
@given(random_graphs())
def test_the_survey_changes_no_value_and_no_state(case):
    graph, target, _, params = case
    params = [param for param in params if param in set(graph.tape(target).nodes)]
    target.forward()
    nodes = graph.tape(target).nodes
    values = [node.flat.copy() for node in nodes]
    states, computed = graph.states.copy(), graph.computed.copy()
    plan = graph.plan(target, params) if params else None
    jobs = compiled._survey(graph.tape(target), plan, None)
    assert jobs  # (it saw the calls)
    for node, value in zip(nodes, values):
        np.testing.assert_array_equal(node.flat, value, err_msg=node.name)
    np.testing.assert_array_equal(graph.states, states)
    np.testing.assert_array_equal(graph.computed, computed)
    from fastgraph import kernels
    assert getattr(kernels.recording, "recorder", None) is None


@pytest.mark.compiled
def test_the_survey_stops_at_an_operator_that_is_not_fastgraphs():
    class Doubled(fg.ops.ReLU):
        """A user's operator (a class of this module): the survey cannot know what its
        compute does, and stops before it."""

    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((3, 3))
        y = fg.ops.Logistic(Doubled(fg.ops.MatMul(w, x)))
    x.set_value(np.ones((2, 3, 1)))
    w.set_value(np.eye(3))
    kernels = [kernel.__name__ for kernel, _, _ in compiled._survey(graph.tape(y), None, None)]
    assert kernels and "logistic" not in kernels and "relu" not in kernels


# -- the worker, as this process sees it ------------------------------------------------------
class _Group:
    """A stand-in for ahead.Group: counts its compiles, which take ``seconds``."""

    def __init__(self, name, seconds=0.0):
        self.where, self.signatures, self.compiled = ("nowhere", name, None), [], 0
        self.seconds, self.function = seconds, name

    def compile(self):
        time.sleep(self.seconds)
        self.compiled += 1


def _script(text):
    return (sys.executable, "-c", text)


#: Fake workers: each reads its input as the real one does, or not at all.
SILENT_EXIT = _script("pass")
NEVER_READS = _script("import time; time.sleep(60)")
STARTS_LAST_AND_HANGS = _script(
    "import os, struct, sys, time\n"
    "kind, size = struct.unpack('<cQ', os.read(0, 9)); os.read(0, size)\n"
    "os.write(1, b's 3\\n'); time.sleep(60)")
BEGINS_A_FIRST_ONE_AND_HANGS = _script("import os, time; os.write(1, b'b 0\\n'); time.sleep(60)")
TALKS_NONSENSE = _script(
    "import os, time\n"
    "os.write(1, b'hello\\ns x\\nd\\n\\x00\\xff\\n'); time.sleep(60)")


@pytest.mark.parametrize("command", [SILENT_EXIT, NEVER_READS, STARTS_LAST_AND_HANGS,
                                     BEGINS_A_FIRST_ONE_AND_HANGS, TALKS_NONSENSE,
                                     ("/nonexistent/python",)],
                         ids=["exits", "never-reads", "hangs-mid-function",
                              "hangs-in-a-first-one", "nonsense", "cannot-start"])
def test_a_worker_that_fails_leaves_every_function_compiled_here(command, monkeypatch):
    monkeypatch.setattr(ahead._Worker, "command", command)
    monkeypatch.setattr(ahead, "FINISH_TIMEOUT", 0.5)
    started = []
    real_start = ahead._Worker.start.__func__

    def start(cls, *args):
        worker = real_start(cls, *args)
        started.append(worker)
        return worker

    monkeypatch.setattr(ahead._Worker, "start", classmethod(start))
    # (long enough, for the one that says it started the last, that it has said so)
    seconds = 0.4 if command == STARTS_LAST_AND_HANGS else 0.0
    groups = [_Group(f"g{k}", seconds) for k in range(4)]
    began = time.monotonic()
    theirs = ahead.compile_ahead(groups)
    assert time.monotonic() - began < 10  # (the fake workers sleep 60 s)
    if command == STARTS_LAST_AND_HANGS:  # it said it started the last: left to it
        assert [group.compiled for group in groups] == [1, 1, 1, 0] and theirs == set()
    else:
        assert [group.compiled for group in groups] == [1, 1, 1, 1] and theirs == set()
    for worker in started:
        if worker is not None:
            assert worker.process.poll() is not None  # collected, not left running


def _later_group():
    group = _Group("later")
    group.signatures = [(("a signature",), None)]
    return group


@pytest.mark.parametrize("command", [SILENT_EXIT, NEVER_READS, BEGINS_A_FIRST_ONE_AND_HANGS,
                                     TALKS_NONSENSE],
                         ids=["exits", "never-reads", "hangs-in-it", "nonsense"])
def test_a_worker_that_fails_in_the_background_is_stopped_and_left_behind(command,
                                                                          monkeypatch):
    """What the worker compiles after the pass (``expect_later``): one that exits, never
    reads, hangs or talks nonsense is no longer waited for after ``FINISH_TIMEOUT``, and is
    stopped; its work is left to this process (the callers compile it when they call it)."""
    monkeypatch.setattr(ahead._Worker, "command", command)
    monkeypatch.setattr(ahead, "FINISH_TIMEOUT", 0.5)
    monkeypatch.setattr(ahead, "_background", None)
    worker = ahead._Worker.spawn()
    ahead._in_background(worker, [_later_group()])
    began = time.monotonic()
    while not ahead.background_done():
        assert ahead._background is worker
        time.sleep(0.02)
    assert time.monotonic() - began < 5  # (the fake workers sleep 60 s)
    assert ahead._background is None and worker.process.poll() is not None


def test_waiting_for_the_background_worker_ends_when_it_has_compiled_it_all(monkeypatch):
    """A worker that says it compiled the work it was sent after the pass: done, stopped;
    waiting for it takes as long as it compiles, not ``FINISH_TIMEOUT``."""
    monkeypatch.setattr(ahead._Worker, "command", _script(
        "import os, struct, time\n"
        "kind, size = struct.unpack('<cQ', os.read(0, 9)); os.read(0, size)\n"
        "os.write(1, b'b 0\\n'); time.sleep(0.3); os.write(1, b'e 0\\n'); time.sleep(60)"))
    monkeypatch.setattr(ahead, "FINISH_TIMEOUT", 30.0)
    monkeypatch.setattr(ahead, "_background", None)
    worker = ahead._Worker.spawn()
    ahead._in_background(worker, [_later_group()])
    assert ahead._background is worker and not ahead.background_done()
    began = time.monotonic()
    assert ahead.background_done(wait=True)
    assert time.monotonic() - began < 10 and worker.process.poll() is not None


def test_a_worker_still_at_what_it_was_sent_first_is_not_kept_in_the_background(
        monkeypatch):
    """This process compiles the replay loop and the first update itself when it calls
    them and the worker has not: a worker that has not finished them is stopped after the
    pass as before, not given more, so one function is never compiled by two processes."""
    monkeypatch.setattr(ahead._Worker, "command", NEVER_READS)
    monkeypatch.setattr(ahead, "_background", None)
    worker = ahead._Worker.spawn()
    try:
        first = _Group("first")
        first.signatures = [(("a signature",), None)]
        worker.first_of_all([first])  # (sent first, never said done)
        ahead._in_background(worker, [_later_group()])
        assert ahead._background is None and worker.first == ["'first'"]
    finally:
        worker.close()


def test_a_forked_child_leaves_its_parents_background_worker_alone(monkeypatch):
    monkeypatch.setattr(ahead._Worker, "command", NEVER_READS)
    monkeypatch.setattr(ahead, "_background", None)
    worker = ahead._Worker.spawn()
    ahead._in_background(worker, [_later_group()])
    try:
        monkeypatch.setattr(worker, "owner", -1)  # as a child sees its parent's
        assert ahead.background_done() and ahead._background is None
        ahead._background = worker
        ahead._stop_background()
        assert ahead._background is None and worker.process.poll() is None  # not stopped
    finally:
        worker.close()


def test_a_function_another_process_cannot_find_is_compiled_here(monkeypatch):
    monkeypatch.setattr(ahead._Worker, "command", NEVER_READS)
    groups = [_Group("a"), _Group("b")]
    groups[1].where = None  # made in __main__, say
    assert ahead.compile_ahead(groups) == set()
    assert [group.compiled for group in groups] == [1, 1]


def test_where_names_a_kernel_and_each_form_of_an_update_for_another_process():
    from fastgraph.kernels import elementwise, optimizers, program

    assert ahead._where(elementwise.relu) == ("fastgraph.kernels.elementwise", "relu", None)
    assert ahead._where(program.execute_pass) == ("fastgraph.kernels.program", "execute_pass",
                                                  None)
    for variant in ("every_core", "one_core"):
        where = ahead._where(getattr(optimizers.adam, variant))
        assert where == ("fastgraph.kernels.optimizers", "adam", variant)
        assert ahead._find(where) is getattr(optimizers.adam, variant)


@pytest.mark.parametrize("value, expected", [("auto", True), ("1", True), (" 0 ", False),
                                             ("", True)])
def test_the_setting(value, expected, monkeypatch):
    monkeypatch.setenv("FASTGRAPH_COMPILE_WORKER", value)
    assert ahead.setting() is expected


def test_a_bad_setting_is_named(monkeypatch):
    monkeypatch.setenv("FASTGRAPH_COMPILE_WORKER", "yes")
    with pytest.raises(ValueError, match="FASTGRAPH_COMPILE_WORKER='yes'.*'auto', '1'.*'0'"):
        ahead.setting()


def test_one_thread_means_no_worker(monkeypatch):
    from fastgraph.threads import threads

    monkeypatch.delenv("FASTGRAPH_COMPILE_WORKER", raising=False)
    monkeypatch.setattr(threads, "most", 1)
    assert not ahead.enabled()
    monkeypatch.setattr(threads, "most", 2)
    assert ahead.enabled() is (os.name == "posix")


@pytest.mark.compiled
def test_a_warm_process_surveys_nothing(monkeypatch):
    graph, *_ = _mlp_graph()
    monkeypatch.setattr(ahead, "_decided", False)
    monkeypatch.setattr(ahead, "_expected", [])
    compiled.execute_pass.compile(compiled._replay_types())  # (in this process: warm)
    surveyed = []
    ahead.decide(lambda: surveyed.append(1) or [], compiled.execute_pass,
                 compiled._replay_types())
    assert surveyed == [] and not ahead.pending()


def _mlp_graph():
    graph = fg.Graph(dtype=np.float32, seed=0)
    with graph:
        x = fg.Variable((4, 1), trainable=False)
        y = fg.Variable((2, 1), trainable=False)
        cost = fg.ops.loss.CrossEntropyWithSoftMax(fg.layer.fc(x, 4, 2, None), y)
    return graph, x, y, cost


# -- on an empty cache ------------------------------------------------------------------------
FIRST_STEP = """
import json, sys, time
from numba.core import event
compiles = []

class Listener(event.Listener):
    def on_start(self, ev):
        self.depth = getattr(self, "depth", 0) + 1
        if self.depth == 1:
            compiles.append(ev.data["dispatcher"].__qualname__)

    def on_end(self, ev):
        self.depth -= 1

event.register("numba:compile", Listener())
import numpy as np
import fastgraph as fg
from fastgraph.kernels import ahead
model = fg.models.mlp(seed=0)
optimizer = fg.optimizer.Adam(model.graph, model.loss)
model.x.set_value(np.linspace(0, 1, 64 * 784, dtype=np.float32).reshape(64, 784))
model.one_hot.set_value(np.eye(10, dtype=np.float32)[np.arange(64) % 10])
before = len(compiles)
optimizer.one_step()
optimizer.update()
first = compiles[before:]
background = ahead._background is not None
ahead.background_done(wait=True)
from fastgraph.kernels import optimizers
before = len(compiles)
assert optimizers.compile_parallel_forms()
print(json.dumps({"compiled": first, "report": ahead.report, "background": background,
                  "parallel_update_compiled": compiles[before:],
                  "loss": float(model.loss.value.sum()),
                  "weights": [float(np.abs(p.flat).sum()) for p in optimizer.params]}))
"""


def _first_step(cache, worker):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(cache),
           "FASTGRAPH_COMPILE_WORKER": worker, "FASTGRAPH_THREADS": "auto"}
    env.pop("FASTGRAPH_EXECUTOR", None)
    result = subprocess.run([sys.executable, "-c", FIRST_STEP], env=env, capture_output=True,
                            text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.compiled
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or os.name != "posix",
                    reason="a worker compiles beside a process that may use two cores")
def test_on_an_empty_cache_the_worker_compiles_part_of_the_first_step(tmp_path):
    cold = _first_step(tmp_path / "cache", "auto")
    report = cold["report"]
    assert report["worker"] and report["here"]  # each did a part
    # The worker compiles first what the process said it runs: the replay loop (at import)
    # and the optimizer's update on one thread (the chooser's first steps); then the pass's
    # kernels from the back.
    assert report["worker"][:2] == ["execute_pass", "adam_one_core"]
    # (the pass's first kernel, the first layer's product in parts, is this process's: by
    # kernels MKL generates for them, or by gemm_owned where it generates none: on AMD's
    # processors, or with OpenBLAS)
    first = "gemm_split_generated" if blas.generates_code() else f"gemm_owned_{blas.BACKEND}"
    assert first in report["here"]
    # This process loaded what the worker compiled, and compiled nothing the survey missed
    # (but the recorder's own address_of, which the survey calls).
    assert set(cold["compiled"]) - {"address_of"} <= set(report["here"])
    assert not set(cold["compiled"]) & set(report["worker"])
    # The parallel update (two threads' steps) was left to the worker, compiled after the
    # pass while this process went on: this process loaded it from the cache.
    assert cold["background"] and "adam" not in cold["compiled"]
    assert cold["parallel_update_compiled"] == []
    warm = _first_step(tmp_path / "cache", "0")  # (loaded: the same machine code)
    assert warm["compiled"] == [] and warm["report"] is None and not warm["background"]
    assert warm["parallel_update_compiled"] == []
    assert (cold["loss"], cold["weights"]) == (warm["loss"], warm["weights"])


# -- the spare worker, started at the first compile -------------------------------------------
class _Dispatcher:
    def __init__(self, module):
        self.__module__ = module


@pytest.mark.compiled  # (the walker records no pass: no worker beside it)
def test_a_compile_of_fastgraphs_before_the_first_pass_starts_a_worker(monkeypatch):
    monkeypatch.setattr(ahead._Worker, "command", NEVER_READS)
    monkeypatch.setattr(ahead, "_decided", False)
    monkeypatch.setattr(ahead, "_spare", None)
    monkeypatch.delenv("FASTGRAPH_COMPILE_WORKER", raising=False)
    monkeypatch.setattr(ahead, "enabled", lambda: True)
    ahead._on_compile(_Dispatcher("numpy.user_code"))  # someone else's function: no
    assert ahead._spare is None
    ahead._on_compile(_Dispatcher("fastgraph.kernels.elementwise"))
    spare = ahead._spare
    assert spare is not None and spare.process.poll() is None
    ahead._on_compile(_Dispatcher("fastgraph.kernels.softmax"))  # one is enough
    assert ahead._spare is spare
    # A first pass that finds the replay loop cached (a partly warm cache) stops it.
    graph, *_ = _mlp_graph()
    compiled.execute_pass.compile(compiled._replay_types())
    ahead.decide(lambda: [], compiled.execute_pass, compiled._replay_types())
    assert spare.process.poll() is not None and ahead._spare is None


def test_no_worker_after_the_first_pass_or_when_turned_off(monkeypatch):
    monkeypatch.setattr(ahead._Worker, "command", NEVER_READS)
    monkeypatch.setattr(ahead, "_spare", None)
    monkeypatch.setattr(ahead, "_decided", True)
    ahead._on_compile(_Dispatcher("fastgraph.kernels.elementwise"))
    assert ahead._spare is None
    monkeypatch.setattr(ahead, "_decided", False)
    monkeypatch.setenv("FASTGRAPH_COMPILE_WORKER", "0")
    ahead._on_compile(_Dispatcher("fastgraph.kernels.elementwise"))
    assert ahead._spare is None


def _gone(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[:2] == ["State:", "Z"] for line in status)  # (exited)
    except FileNotFoundError:
        return True


@pytest.mark.compiled
@pytest.mark.skipif(not os.path.isdir("/proc/self") or len(os.sched_getaffinity(0)) < 2,
                    reason="reads /proc; a worker starts where there are two cores")
def test_a_worker_no_pass_came_for_exits_with_its_process(tmp_path):
    code = """
import numpy as np
import fastgraph
from fastgraph.kernels import ahead, elementwise
elementwise.fill(np.zeros((2, 2)), 1.0)  # compiled (an empty cache): a worker starts
print(ahead._spare.process.pid)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(tmp_path),
           "FASTGRAPH_COMPILE_WORKER": "1", "FASTGRAPH_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    pid = int(result.stdout.split()[-1])
    deadline = time.monotonic() + 30
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def test_the_workers_own_compiles_start_no_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))  # (cycle_counter compiles)
    monkeypatch.setenv("FASTGRAPH_THREADS", "2")  # (conftest's 1 would turn it off there)
    monkeypatch.setattr(ahead, "_spare", None)
    monkeypatch.setattr(ahead.numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    probe = ahead.Group(None, ("tests.helpers", "probe_compile", None))
    probe.signatures = [((str(tmp_path / "probe.json"),), None)]
    here = _Group("here", seconds=3.0)  # (time for the worker to start and take the probe)
    assert ahead.compile_ahead([here, probe]) == {1}
    assert json.loads((tmp_path / "probe.json").read_text()) == {"decided": True,
                                                                 "spare": False}


# -- helper hD's probe (findings F1-F5, and mutants of ahead.py the tests above let live) ------
TWO_CORES = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or os.name != "posix",
                               reason="a worker compiles beside a process that may use two cores")


def _env(cache, **more):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(cache),
           "FASTGRAPH_COMPILE_WORKER": "auto", "FASTGRAPH_THREADS": "auto", **more}
    env.pop("FASTGRAPH_EXECUTOR", None)
    return env


#: A cold first training step of the MNIST MLP (test_startup's); prints ahead.report as JSON.
STEP = """
import json
import fastgraph as fg
from fastgraph.kernels import ahead
{before}
""" + MLP_STEP.replace("{", "{{").replace("}", "}}") + """
print(json.dumps(ahead.report))
"""


# -- 1. HIGH: a worker that dies kills, by SIGPIPE, a process that restored SIGPIPE ---------
@pytest.mark.parametrize("worker", ["pass", "import os, time; os.close(0); time.sleep(60)"],
                         ids=["exits", "closes-its-input"])
def test_a_worker_that_died_does_not_kill_a_process_that_restored_sigpipe(tmp_path, worker):
    # `signal.signal(SIGPIPE, SIG_DFL)` is the usual idiom of a script piped into `head`; a
    # worker that exits (cannot import, is killed, runs out of memory) then made take()'s
    # os.write end the training process silently (status -13, no traceback).
    code = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        from fastgraph.kernels import ahead

        class Group:
            where, signatures, compiled = ("nowhere", "g", None), [], 0

            def compile(self):
                time.sleep(0.3)  # (long enough for the worker to have exited)
                self.compiled += 1

        ahead._Worker.command = (sys.executable, "-c", WORKER)  # gone at once
        ahead.FINISH_TIMEOUT = 0.5
        groups = [Group() for _ in range(4)]
        assert ahead.compile_ahead(groups) == set()
        print([group.compiled for group in groups])
    """).replace("WORKER", repr(worker))
    result = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path),
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.split("\n")[0] == "[1, 1, 1, 1]"


# -- 2. a worker starts workers of its own (and `python -m __main__`) ----------------------
SPY = (sys.executable, "-c", textwrap.dedent("""
    import os, runpy, subprocess
    real = subprocess.Popen.__init__

    def spy(self, args, *more, **options):
        with open(os.environ["SPAWNED"], "a") as out:
            out.write(repr(args) + "\\n")
        return real(self, args, *more, **options)

    subprocess.Popen.__init__ = spy
    runpy.run_module("fastgraph.kernels.ahead", run_name="__main__", alter_sys=True)
"""))


@pytest.mark.compiled
@TWO_CORES
def test_the_worker_starts_no_process_of_its_own(tmp_path):
    spawned = tmp_path / "spawned"
    before = f"ahead._Worker.command = {SPY!r}"
    result = subprocess.run([sys.executable, "-c", STEP.format(before=before)],
                            env=_env(tmp_path / "cache", SPAWNED=str(spawned)),
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # (nothing of the worker's on this process's stderr either)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["worker"]  # the worker compiled...
    assert not spawned.exists(), spawned.read_text()  # ... and started nothing


# -- 3. the worker imports the fastgraph of the current directory ---------------------------
@pytest.mark.compiled
@TWO_CORES
def test_the_worker_imports_this_process_fastgraph_not_the_current_directory(tmp_path):
    # A directory holding another fastgraph (an older checkout, say) as the current one:
    # `python -m` puts it first on the worker's path.
    marker = tmp_path / "imported"
    other = tmp_path / "work" / "fastgraph"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('the other fastgraph')\nraise ImportError\n")
    script = tmp_path / "run" / "step.py"
    script.parent.mkdir()
    script.write_text(STEP.format(before=""))
    result = subprocess.run([sys.executable, str(script)], env=_env(tmp_path / "cache"),
                            capture_output=True, text=True, cwd=tmp_path / "work", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()
    assert json.loads(result.stdout.strip().splitlines()[-1])["worker"]


# -- 4. MEDIUM: a bad setting is refused once, then ignored ---------------------------------
@pytest.mark.compiled
def test_a_bad_setting_is_refused_every_time_not_once(monkeypatch):
    monkeypatch.setattr(ahead, "_decided", False)
    monkeypatch.setattr(ahead, "_expected", [])
    monkeypatch.setenv("FASTGRAPH_COMPILE_WORKER", "yes")
    graph, *_ = _mlp_graph()
    for _ in range(2):  # (a notebook cell run again, a loop that catches and retries)
        with pytest.raises(ValueError, match="FASTGRAPH_COMPILE_WORKER='yes'"):
            ahead.decide(lambda: [], compiled.execute_pass, compiled._replay_types())


# -- mutants that tests/test_ahead.py lets live ---------------------------------------------
def test_the_worker_talking_nonsense_while_this_process_compiles_is_ignored(monkeypatch):
    # (tests/test_ahead.py's "nonsense" worker is never read: its groups take no time)
    monkeypatch.setattr(ahead._Worker, "command", (sys.executable, "-c", (
        "import os, time\nos.write(1, b'hello\\ns x\\nd\\n\\x00\\xff\\ns -1\\nd 1e3\\n')\n"
        "time.sleep(60)")))
    monkeypatch.setattr(ahead, "FINISH_TIMEOUT", 0.5)
    groups = [_Group(f"g{k}", 0.3) for k in range(4)]
    assert ahead.compile_ahead(groups) == set()
    assert [group.compiled for group in groups] == [1, 1, 1, 1]


def test_a_spare_that_has_exited_is_replaced(monkeypatch):
    monkeypatch.setattr(ahead._Worker, "command", (sys.executable, "-c", "pass"))
    spare = ahead._Worker.spawn()
    spare.process.wait()
    monkeypatch.setattr(ahead, "_spare", spare)
    monkeypatch.setattr(ahead._Worker, "command", (sys.executable, "-c",
                                                   "import time; time.sleep(60)"))
    worker = ahead._Worker.start([("m", "a", None), ("m", "b", None)], [[], []])
    try:
        assert worker is not spare and worker.process.poll() is None
    finally:
        worker.close()


def test_expect_after_the_first_pass_keeps_nothing(monkeypatch):
    monkeypatch.setattr(ahead, "_decided", True)
    monkeypatch.setattr(ahead, "_expected", [])
    graph, _, _, cost = _mlp_graph()
    for _ in range(3):  # (an optimizer made at every trial of a search)
        fg.optimizer.Adam(graph, cost)
    assert ahead._expected == []


def test_expect_keeps_an_optimizer_weakly(monkeypatch):
    import gc
    import weakref

    monkeypatch.setattr(ahead, "_decided", False)
    monkeypatch.setattr(ahead, "_expected", [])
    graph, _, _, cost = _mlp_graph()
    optimizer = fg.optimizer.Adam(graph, cost)
    gone = weakref.ref(optimizer)
    del optimizer
    gc.collect()
    assert gone() is None and all(reference() is None for reference in ahead._expected)


@pytest.mark.compiled
def test_a_group_compiles_the_adapter_of_each_signature(monkeypatch):
    from fastgraph.kernels import elementwise, program
    from fastgraph.kernels.program import signature

    kinds, dtype = "Cf", np.dtype(np.float32)
    key = (kinds, dtype.name, "none")
    monkeypatch.setattr(program, "_adapters", {k: v for k, v in program._adapters.items()
                                               if k != key})
    group = ahead.Group(elementwise.fill, ahead._where(elementwise.fill))
    group.signatures = [(signature(kinds, dtype), (kinds, dtype))]
    group.compile()
    assert key in program._adapters


def test_the_worker_is_told_the_cache_directory_this_process_uses(monkeypatch, tmp_path):
    # numba.config.CACHE_DIR set in the process (a .numba_config.yaml, or by hand) rather
    # than by the environment: the worker must write where this process reads.
    seen = tmp_path / "seen"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "here"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(ahead._Worker, "command", (sys.executable, "-c", (
        f"import os; open({str(seen)!r}, 'w').write(os.environ.get('NUMBA_CACHE_DIR', ''))")))
    worker = ahead._Worker.spawn()
    worker.process.wait()
    worker.close()
    assert seen.read_text() == str(tmp_path / "here")


# -- 5. LOW: a spare worker idles beside a process that never records a compiled pass --------
@pytest.mark.compiled
@TWO_CORES
@pytest.mark.parametrize("setting", [{"FASTGRAPH_EXECUTOR": "python"},
                                     {"FASTGRAPH_BLAS": "numpy"}], ids=["walker", "numpy-blas"])
def test_no_worker_idles_beside_a_process_that_records_no_pass(tmp_path, setting):
    # (the walker runs every pass: the worker started at the first compile, ~100 MB and
    # 0.7 s of CPU importing fastgraph, then waits for the whole run for work never sent)
    code = STEP.format(before="").replace("print(json.dumps(ahead.report))",
                                          "print(ahead._spare is None)")
    result = subprocess.run([sys.executable, "-c", code],
                            env={**_env(tmp_path / "cache"), **setting},
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True"]


def test_no_spare_after_the_first_pass_where_a_worker_may_run(monkeypatch):
    # (tests/test_ahead.py's test_no_worker_after_the_first_pass_or_when_turned_off passes
    # by enabled() alone under FASTGRAPH_THREADS=1: the _decided check is not what it sees)
    monkeypatch.setattr(ahead._Worker, "command", (sys.executable, "-c",
                                                   "import time; time.sleep(60)"))
    monkeypatch.setattr(ahead, "_spare", None)
    monkeypatch.setattr(ahead, "_decided", True)
    monkeypatch.setattr(ahead, "enabled", lambda: True)
    ahead._on_compile(_Dispatcher("fastgraph.kernels.elementwise"))
    spare = ahead._spare
    ahead._closed(spare)
    assert spare is None


def test_a_bad_setting_stops_the_import():
    result = subprocess.run([sys.executable, "-c", "import fastgraph"],
                            env={**os.environ, "PYTHONPATH": str(REPO),
                                 "FASTGRAPH_COMPILE_WORKER": "sometimes"},
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode != 0
    assert "ValueError: FASTGRAPH_COMPILE_WORKER='sometimes'" in result.stderr


# -- what the worker compiles first, and the frames it is sent --------------------------------
@pytest.mark.compiled
def test_the_replay_loop_sent_first_has_the_types_every_graph_calls_it_with():
    (function, argtypes, _), = compiled._replay_calls()
    graph, *_ = _mlp_graph()
    assert function is compiled.execute_pass
    assert argtypes == compiled._replay_types()


def test_the_worker_reads_frames_however_they_arrive():
    import socket
    import struct

    mine, theirs = socket.socketpair()
    frames = ahead._Frames(theirs.fileno())
    data = (struct.pack("<cQ", b"E", 3) + b"abc" + struct.pack("<cQQ", b"T", 8, 7)
            + struct.pack("<cQ", b"M", 0))
    assert frames.next(0.0) is None  # nothing yet
    mine.sendall(data[:5])  # a header in two pieces
    assert frames.next(0.05) is None
    mine.sendall(data[5:])
    assert frames.next(0.0) == (b"E", b"abc")
    assert frames.next(0.0) == (b"T", struct.pack("<Q", 7))
    assert frames.next(0.0) == (b"M", b"")
    mine.close()
    assert frames.next(1.0) is None and frames.ended
    theirs.close()


@pytest.mark.compiled
def test_what_is_sent_first_is_sent_once(monkeypatch):
    from fastgraph.kernels import elementwise
    from fastgraph.kernels.program import signature

    monkeypatch.setattr(ahead._Worker, "command", NEVER_READS)
    worker = ahead._Worker.spawn()
    try:
        group = ahead.Group(elementwise.fill, ahead._where(elementwise.fill))
        group.signatures = [(signature("Cf", np.float64), None)]
        worker.first_of_all([group])
        worker.first_of_all([group])  # (asked again at every compile before the first pass)
        assert worker.first == ["fill"]
        nowhere = _Group("nowhere")
        nowhere.where = None  # (another process cannot find it: kept here)
        worker.first_of_all([nowhere])
        assert worker.first == ["fill"]
    finally:
        worker.close()


# -- helper hE's probe of what is compiled first ----------------------------------------------
OVERLAP = textwrap.dedent("""
    import numpy as np
    from fastgraph.kernels import ahead, elementwise
    from fastgraph.kernels.program import signature

    worker = ahead._Worker.spawn()
    first = ahead.Group(elementwise.fill, ahead._where(elementwise.fill))
    first.signatures = [(signature("Cf", np.float64), None)]
    worker.first_of_all([first])
    while 0 not in worker.begun:  # the worker is compiling fill(float64), sent first
        worker.read(timeout=5.0)
    ahead._spare = worker
    theirs = ahead.Group(elementwise.fill, ahead._where(elementwise.fill))
    theirs.signatures = [(signature("Cf", np.float32), None)]  # the pass's: another signature
    original = ahead.Group.compile
    def compile(group):
        alive = worker.process.poll() is None  # (closed: stopped, waited for)
        if alive:
            worker.read()
        print("overlap" if alive and worker.begun - worker.ready - worker.missed else "apart")
        return original(group)
    ahead.Group.compile = compile
    ahead.compile_ahead([theirs])
""")


@pytest.mark.compiled
def test_a_function_sent_first_is_never_compiled_by_both_processes_at_once(tmp_path):
    # Functions are given out by dispatcher (the module's text): two processes adding
    # signatures of one function to Numba's cache at once can number their files alike.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "FASTGRAPH_THREADS": "auto",
           "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", OVERLAP], env=env, capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "overlap" not in result.stdout


@pytest.mark.compiled
def test_a_signature_sent_first_is_not_sent_again_with_a_new_one(monkeypatch):
    from fastgraph.kernels import elementwise
    from fastgraph.kernels.program import signature

    monkeypatch.setattr(ahead._Worker, "command", NEVER_READS)
    worker = ahead._Worker.spawn()
    try:
        frames, send = [], worker.frame
        monkeypatch.setattr(worker, "frame", lambda kind, functions: (
            frames.append(functions[1]), send(kind, functions))[1])
        group = ahead.Group(elementwise.fill, ahead._where(elementwise.fill))
        group.signatures = [(signature("Cf", np.float64), None)]
        worker.first_of_all([group])
        group.signatures = group.signatures + [(signature("Cf", np.float32), None)]
        worker.first_of_all([group])  # (a second optimizer, of another dtype)
        assert frames == [[[(signature("Cf", np.float64), None)]],
                          [[(signature("Cf", np.float32), None)]]]  # each signature once
    finally:
        worker.close()
