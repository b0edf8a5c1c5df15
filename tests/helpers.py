"""Small builders shared by the tests."""

import os
import threading

import numpy as np

import fastgraph as fg


def turned_products(batch, layers):
    """How many of the layers' forward products (``(units, inputs)`` each, on a float32
    batch) are made as their transpose (``kernels.blas.flips``): each one kernel call more
    in a compiled pass (the copy back), which the profiler counts under its MatMul."""
    from fastgraph.kernels import blas

    return sum(blas.flips(batch, units, inputs, np.float32) for units, inputs in layers)


def mnist_network(dtype=np.float64, seed=0, hidden=(100, 20), activation="ReLU"):
    """The article's network: x -> fc ReLU -> fc ReLU -> fc -> softmax / cross-entropy."""
    graph = fg.Graph(dtype=dtype, seed=seed)
    with graph:
        x = fg.Variable(dim=(784, 1), init=False, trainable=False, name="x")
        one_hot = fg.Variable(dim=(10, 1), init=False, trainable=False, name="one_hot")
        layer, size = x, 784
        for width in hidden:
            layer, size = fg.layer.fc(layer, size, width, activation), width
        logits = fg.layer.fc(layer, size, 10, None)
        predict = fg.ops.SoftMax(logits)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, one_hot)
    return graph, x, one_hot, logits, predict, loss


def welded_tanh(rng):
    """A welding point that can be re-attached to ``tanh(x)`` or to ``tanh(u @ x)`` (a branch
    with a parameter of its own), then ``w @ weld + b`` against a target by mean squared
    error: ``(graph, x, target, weld, branches, (u, w, b), loss)``, welded to the first."""
    with fg.Graph(dtype=np.float64) as graph:
        x = fg.Variable((2, 1), trainable=False)
        u = fg.Variable((2, 2))
        u.set_value(rng.normal(size=(2, 2)))
        branches = [fg.ops.Tanh(x), fg.ops.Tanh(fg.ops.MatMul(u, x))]
        weld = fg.ops.Welding(branches[0])
        w, b = fg.Variable((1, 2)), fg.Variable((1, 1))
        w.set_value(rng.normal(size=(1, 2)))
        b.set_value(rng.normal(size=(1, 1)))
        target = fg.Variable((1, 1), trainable=False)
        loss = fg.ops.loss.MeanSquaredError(fg.ops.Add(fg.ops.MatMul(w, weld), b), target)
    return graph, x, target, weld, branches, (u, w, b), loss


def with_executor(name, action):
    """``action()`` with ``FASTGRAPH_EXECUTOR`` set to ``name`` (``python``: the walker), the
    setting as it was afterwards."""
    previous = os.environ.get("FASTGRAPH_EXECUTOR")
    os.environ["FASTGRAPH_EXECUTOR"] = name
    try:
        return action()
    finally:
        if previous is None:
            del os.environ["FASTGRAPH_EXECUTOR"]
        else:
            os.environ["FASTGRAPH_EXECUTOR"] = previous


#: Options for each of the five update rules that the optimizer tests share (values away
#: from the defaults, so that a rule that ignored one would be seen).
RULE_OPTIONS = {
    "GradientDescent": {"learning_rate": 0.05},
    "Momentum": {"learning_rate": 0.02, "momentum": 0.8},
    "AdaGrad": {"learning_rate": 0.1, "eps": 1e-10},
    "RMSProp": {"learning_rate": 0.01, "beta": 0.95, "eps": 1e-8},
    "Adam": {"learning_rate": 0.05, "beta_1": 0.85, "beta_2": 0.99, "eps": 1e-8},
}


def replay(calls):
    """Run every recorded call (``program.recording``) as the forward pass of one node,
    through the compiled replay loop: ``(status, program)``, status -1 or the failing row."""
    from fastgraph.kernels import program

    compiled = program.Program(calls)
    code = compiled.rows((0, len(compiled)))
    steps = np.array([[0, 0, len(compiled)]], np.int64)
    status = program.execute(code, compiled.ints, compiled.reals, steps,
                              np.ones(1, np.int8), np.zeros(1, np.int64), 1, code[:0],
                              compiled.ints, compiled.reals, program.NO_CYCLES)
    return status, compiled


# -- threads ---------------------------------------------------------------------------------
class Holder(threading.Thread):
    """A thread that claims ``graph`` and holds it until the ``with`` block ends."""

    def __init__(self, graph):
        super().__init__(daemon=True)
        self.graph, self.held, self.go = graph, threading.Event(), threading.Event()

    def run(self):
        self.graph.claim("the holder's pass")
        try:
            self.held.set()
            self.go.wait(30)
        finally:
            self.graph.release()

    def __enter__(self):
        self.start()
        assert self.held.wait(30)
        return self

    def __exit__(self, *exc):
        self.go.set()
        self.join(30)
        assert not self.is_alive()


def in_a_thread(action):
    """``action()``'s result, run in a new Python thread."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", action()))
    thread.start()
    thread.join(60)
    return result["value"]


def refused_without_waiting(call, fifo):
    """``call()``'s exception, raised at once: opening a FIFO with no writer waited forever
    (a thread is given 20 s, then the FIFO gets a writer so that it does not stay blocked)."""
    import pytest

    outcome = {}

    def run():
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        with open(fifo, "wb"):  # releases the blocked open
            pass
        thread.join(20)
        pytest.fail(f"{call} waited on the FIFO {fifo}")
    assert "error" in outcome, f"{call} read a FIFO without an error"
    return outcome["error"]


def small_network(dtype=np.float64):
    """x (3, 1) and a one-hot label (2, 1), w (2, 3) of known values, logits, the loss."""
    with fg.Graph(dtype=dtype, seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        label = fg.Variable((2, 1), trainable=False, name="label")
        w = fg.Variable((2, 3), name="w")
        w.set_value(np.arange(6, dtype=float).reshape(2, 3) / 10)
        logits = fg.ops.MatMul(w, x, name="logits")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, label, name="loss")
    return graph, x, label, w, logits, loss


class NumpyDouble(fg.ops.base.Operator):
    """An operator outside the protocol (NumPy arithmetic, no kernel), as a user may write:
    the compiled executor cannot record it, so its graphs run on the walker."""

    arity = 1

    def infer_dim(self):
        return self.parents[0].dim

    def compute(self):
        np.multiply(self.parents[0].flat, 2, out=self.output())

    def vjp(self, slot, upstream):
        return upstream * 2

    def dense_jacobian(self, slot):
        return 2 * self.identity()


class FakeClock:
    """A clock whose steps take what ``cost(count, step)`` says for the thread count in use
    and the step's number (tests of the thread chooser, ``fastgraph.threads.Chooser``)."""

    def __init__(self, cost, between=None):
        self.now, self.cost, self.chooser, self.steps = 0.0, cost, None, 0
        self.between = between  # (step) -> what the program does between update and step

    def __call__(self):
        return self.now

    def step(self):
        count = self.chooser.count
        if self.between is not None:  # (feeding, an evaluation, a checkpoint, ...)
            self.now += self.between(self.steps)
            self.chooser.starting()  # the accumulation's first one_step()
        self.now += self.cost(count, self.steps)
        self.steps += 1
        self.chooser.tick()
        return count


def chosen_counts(cost, steps, monkeypatch, most=2, between=None):
    """The thread counts a chooser picks over ``steps`` steps timed by ``cost(count,
    step)``, on ``most`` cores, and the chooser; ``between(step)``: the time the program
    spends before each step's first one_step(), if any."""
    from fastgraph.threads import Chooser, threads

    monkeypatch.setattr(threads, "most", most)
    monkeypatch.setattr(threads, "fixed", None)
    monkeypatch.setattr(threads, "use", lambda count: None)
    clock = FakeClock(cost, between)
    clock.chooser = Chooser(clock)
    clock.chooser.tick()  # the first update: the clock starts
    return [clock.step() for _ in range(steps)], clock.chooser


def linear_loss(graph):
    """In ``graph``: ``x (2, 1) -> w x + b`` against a target by mean squared error, one
    sample of ones against 0 fed: ``(w, b, loss)``."""
    with graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        w = fg.Variable((1, 2), init=True, name="w")
        b = fg.Variable((1, 1), init=True, name="b")
        t = fg.Variable((1, 1), trainable=False, name="t")
        loss = fg.ops.loss.MeanSquaredError(fg.ops.Add(fg.ops.MatMul(w, x), b), t)
    x.set_value(np.ones((1, 2, 1)))
    t.set_value(np.zeros((1, 1, 1)))
    return w, b, loss


def one_sample_mlp():
    """784-8-10 with ReLU, float64, for the article's one-sample loop (its steps defer the
    weight gradients): ``(graph, x, y, loss)``."""
    graph = fg.Graph(dtype=np.float64, seed=0)
    with graph:
        x = fg.Variable((784, 1), init=False, trainable=False)
        y = fg.Variable((10, 1), init=False, trainable=False)
        loss = fg.ops.loss.CrossEntropyWithSoftMax(
            fg.layer.fc(fg.layer.fc(x, 784, 8, "ReLU"), 8, 10, None), y)
    return graph, x, y, loss


class _ProbeCompile:
    """A function as ``kernels.ahead`` gives one to a worker, for ``tests/test_ahead.py``:
    compiling it compiles a fastgraph function for real (``cycle_counter``, on an empty
    cache), then writes to the file named by its one argument type whether the worker's
    ``kernels.ahead`` took that compile for a reason to start a worker of its own."""

    __module__ = __name__

    def compile(self, argtypes):
        import json

        from fastgraph.kernels import ahead, program

        program.cycle_counter()
        with open(argtypes[0], "w") as file:
            json.dump({"decided": ahead._decided, "spare": ahead._spare is not None}, file)


probe_compile = _ProbeCompile()
