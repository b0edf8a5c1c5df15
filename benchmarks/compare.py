"""fastgraph against hand-written NumPy, PyTorch and JAX on the same MNIST training.

    python -m benchmarks.compare [--epochs 4] [--networks 784-100-20-10,784-256-128-10]
                                 [--json runs/compare.json] [--chart runs/compare.png]
                                 [--profile]

Every framework trains the same network (ReLU hidden layers, softmax cross-entropy, Adam with
lr 0.001, float32) on the same 60,000 images held in memory, one epoch at a time in turn
(round-robin, so a noisy neighbour hurts everyone alike). Each epoch reshuffles, and each
framework gathers every batch its own best way from data already in memory: fastgraph with
its ``Batches`` iterator from the uint8 images (scaled as they are gathered); NumPy and
PyTorch by indexing float32 arrays; JAX inside its jitted step, from float32 arrays on the
device. Peers get their fair best: PyTorch with ``zero_grad(set_to_none=True)``, JAX with
the whole step (gather, forward, backward, Adam) in one ``jax.jit``.
The article's dense-Jacobian engine trains a few hundred samples and is reported in
samples/s. A peer that is not installed is reported as skipped.

fastgraph's epochs also record how many steps ran on each thread count (its thread chooser's,
``epoch_threads`` in the JSON, a line under the table), so that a run at one thread's speed
can be told from a slow machine.

Peak memory is measured in a fresh process per framework (its peak resident set, VmHWM, in a
run that loads MNIST and trains one epoch), since peaks cannot be separated in one process.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import timeit
from datetime import date
from pathlib import Path

import numpy as np

NETWORKS = {"784-100-20-10": ((100, 20), 64), "784-256-128-10": ((256, 128), 128),
            "lenet5": ("lenet5", 64)}
LEARNING_RATE = 0.001
JACOBIAN_SAMPLES = 256


def load_data():
    """(features, one_hot, test_features, test_labels, labels, images): float32 and uint8."""
    from fastgraph.datasets import mnist

    x_train, y_train, x_test, y_test = mnist.load()
    return (mnist.features(x_train), mnist.one_hot(y_train), mnist.features(x_test),
            y_test.astype(np.int64), y_train.astype(np.int64), x_train)


def he_init(rng, hidden):
    """The same initial weights for every framework: He-normal, zero biases."""
    sizes = (784, *hidden, 10)
    return [(rng.normal(0, np.sqrt(2 / n_in), (n_out, n_in)).astype(np.float32),
             np.zeros(n_out, np.float32)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]


# -- the frameworks ---------------------------------------------------------------------------
class Fastgraph:
    name = "fastgraph"

    def __init__(self, hidden, batch, data, init):
        import fastgraph as fg

        self.batch = batch
        self.images, self.labels = data[5], data[4]
        self.model = fg.models.mlp(784, hidden, 10, seed=0)
        weights = [node for node in self.model.graph.nodes
                   if isinstance(node, fg.Variable) and node.trainable]
        for (w, b), (w_node, b_node) in zip(init, zip(weights[::2], weights[1::2])):
            w_node.set_value(w)
            b_node.set_value(b.reshape(-1, 1))
        self.train_with(fg)

    def train_with(self, fg, engine="vjp"):
        """The optimizer, the batcher and the record of thread counts, for every model."""
        self.optimizer = fg.optimizer.Adam(self.model.graph, self.model.loss, LEARNING_RATE,
                                           engine=engine)
        self.Batches = fg.datasets.Batches
        self.threads = []  # each epoch's steps on each thread count (the thread chooser's)

    def epoch(self, order, limit=None):
        x, one_hot, optimizer = self.model.x, self.model.one_hot, self.optimizer
        if limit:
            order = order[:limit]
            feed = self.Batches(self.images[order], self.labels[order], self.batch,
                                scale=1 / 255, shuffle=False).feed(x, one_hot)
        else:
            feed = self.dataset().feed(x, one_hot, order)
        ran = dict(optimizer.threads.ran)
        for _ in feed:  # each batch gathered straight into x and one_hot
            optimizer.one_step()
            optimizer.update()
        self.threads.append({count: steps - ran.get(count, 0)
                             for count, steps in optimizer.threads.ran.items()
                             if steps > ran.get(count, 0)})

    def dataset(self):
        if not hasattr(self, "_batches"):
            self._batches = self.Batches(self.images, self.labels, self.batch, scale=1 / 255)
        return self._batches

    def batches(self, order):
        """The epoch's batches, in the order every framework follows."""
        return self.dataset().iterate(order)

    def predict(self, features):
        self.model.x.set_value(features)
        self.model.predict.forward()
        return self.model.predict.flat.argmax(axis=1)


class FastgraphJacobian(Fastgraph):
    name = "fastgraph jacobian"

    def __init__(self, hidden, batch, data, init):
        import fastgraph as fg

        super().__init__(hidden, batch, data, init)
        self.train_with(fg, engine="jacobian")


class HandNumpy:
    """Forward, backward and Adam written out in NumPy, as one would by hand."""

    name = "numpy"

    def __init__(self, hidden, batch, data, init):
        self.batch = batch
        self.features, self.labels = data[0], data[1]
        self.params = [array.copy() for layer in init for array in layer]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def forward(self, x):
        activations = [x]
        for i in range(0, len(self.params), 2):
            z = activations[-1] @ self.params[i].T + self.params[i + 1]
            activations.append(np.maximum(z, 0) if i + 2 < len(self.params) else z)
        return activations

    def step(self, x, y):
        activations = self.forward(x)
        logits = activations[-1]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        delta = (exp / exp.sum(axis=1, keepdims=True) - y) / len(x)
        grads = [None] * len(self.params)
        for i in range(len(self.params) - 2, -1, -2):
            grads[i] = delta.T @ activations[i // 2]
            grads[i + 1] = delta.sum(axis=0)
            if i:
                delta = (delta @ self.params[i]) * (activations[i // 2] > 0)
        self.t += 1
        correction_1, correction_2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= LEARNING_RATE * (m / correction_1) / (np.sqrt(v / correction_2) + 1e-8)

    def epoch(self, order, limit=None):
        for start in range(0, len(order), self.batch):
            rows = order[start : start + self.batch]
            self.step(self.features[rows], self.labels[rows])

    def predict(self, features):
        return self.forward(features)[-1].argmax(axis=1)


class Torch:
    name = "pytorch"

    def __init__(self, hidden, batch, data, init):
        import torch

        self.torch = torch
        self.batch = batch
        self.features = torch.from_numpy(data[0])
        self.targets = torch.from_numpy(data[4])
        layers = []
        for i, (w, b) in enumerate(init):
            linear = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(w))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear] + ([torch.nn.ReLU()] if i + 1 < len(init) else [])
        self.model = torch.nn.Sequential(*layers)
        self.loss = torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)

    def epoch(self, order, limit=None):
        index = self.torch.from_numpy(order)
        for start in range(0, len(order), self.batch):
            rows = index[start : start + self.batch]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(self.model(self.features[rows]), self.targets[rows])
            loss.backward()
            self.optimizer.step()

    def predict(self, features):
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(features)).argmax(dim=1).numpy()


def jax_adam_step(jax, jnp, loss, batch):
    """The whole training step as JAX users write it, jitted: the batch gathered by index,
    ``jax.grad`` of ``loss``, Adam as ``torch.optim.Adam`` (the other frameworks' rule)."""
    def step(params, state, xs, ys, order, start):
        rows = jax.lax.dynamic_slice_in_dim(order, start, batch)
        x, y = xs[rows], ys[rows]
        grads = jax.grad(loss)(params, x, y)
        m, v, t = state
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        step_size = LEARNING_RATE / (1 - 0.9**t)
        root = jnp.sqrt(1 - 0.999**t)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / root + 1e-8), params, m, v)
        return params, (m, v, t)

    return jax.jit(step, donate_argnums=(0, 1))


class Jax:
    name = "jax"

    def __init__(self, hidden, batch, data, init):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.batch = batch
        self.features, self.labels = jnp.asarray(data[0]), jnp.asarray(data[1])
        self.params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in init]
        def zeros():
            return jax.tree_util.tree_map(jnp.zeros_like, self.params)

        self.state = (zeros(), zeros(), jnp.zeros((), jnp.float32))

        def forward(params, x):
            for w, b in params[:-1]:
                x = jax.nn.relu(x @ w.T + b)
            w, b = params[-1]
            return x @ w.T + b

        def loss(params, x, y):
            return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(forward(params, x)), axis=1))

        self.step = jax_adam_step(jax, jnp, loss, batch)
        self.forward = jax.jit(forward)

    def epoch(self, order, limit=None):
        index = self.jnp.asarray(order)
        full = len(order) - len(order) % self.batch  # a fixed batch shape: one compilation
        params, state = self.params, self.state
        for start in range(0, full, self.batch):
            params, state = self.step(params, state, self.features, self.labels, index, start)
        self.jax.block_until_ready(params)
        self.params, self.state = params, state

    def predict(self, features):
        return np.asarray(self.forward(self.params, self.jnp.asarray(features)).argmax(axis=1))


FRAMEWORKS = {cls.name: cls for cls in (Fastgraph, HandNumpy, Torch, Jax)}


# -- LeNet-5: conv 6@5x5 pad 2, ReLU, max-pool 2, conv 16@5x5, ReLU, max-pool 2, 400-120-84-10 --
def lenet5_init(rng):
    """He-normal weights in PyTorch's layouts (convolutions (out, in, kh, kw), the first dense
    layer reading the (16, 5, 5) maps channel by channel), zero biases."""
    shapes = [(6, 1, 5, 5), (16, 6, 5, 5), (120, 400), (84, 120), (10, 84)]
    return [(rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape).astype(np.float32),
             np.zeros(shape[0], np.float32)) for shape in shapes]


class FastgraphLeNet(Fastgraph):
    """fastgraph's LeNet-5 (``models.lenet5``): images pixels-major, ``(H * W, C)``."""

    def __init__(self, hidden, batch, data, init):
        import fastgraph as fg

        self.batch = batch
        self.images, self.labels = data[5], data[4]
        self.model = fg.models.lenet5(seed=0)
        weights = [node for node in self.model.graph.nodes
                   if isinstance(node, fg.Variable) and node.trainable]
        for (w, b), (w_node, b_node) in zip(init, zip(weights[::2], weights[1::2])):
            if w.ndim == 4:  # (out, in, kh, kw) -> (out, kh * kw * in): patches are (ky, kx, c)
                w = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            elif w.shape[1] == 400:  # columns (c, y, x) -> (y, x, c), the pixels-major flatten
                w = w.reshape(-1, 16, 5, 5).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            w_node.set_value(w)
            b_node.set_value(b.reshape(-1, 1))
        self.train_with(fg)

    def predict(self, features):  # 1,000 at a time: the patch matrices grow with the batch
        return np.concatenate([super(FastgraphLeNet, self).predict(features[i : i + 1000])
                               for i in range(0, len(features), 1000)])


class FastgraphLeNetJacobian(FastgraphLeNet):
    name = "fastgraph jacobian"

    def __init__(self, hidden, batch, data, init):
        import fastgraph as fg

        super().__init__(hidden, batch, data, init)
        self.train_with(fg, engine="jacobian")


class TorchLeNet(Torch):
    """``nn.Conv2d`` and ``nn.MaxPool2d`` (oneDNN on CPU), NCHW."""

    def __init__(self, hidden, batch, data, init):
        import torch
        from torch import nn

        self.torch = torch
        self.batch = batch
        self.features = torch.from_numpy(data[0]).reshape(-1, 1, 28, 28)
        self.targets = torch.from_numpy(data[4])
        self.model = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        layers = [m for m in self.model if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            for module, (w, b) in zip(layers, init):
                module.weight.copy_(torch.from_numpy(w))
                module.bias.copy_(torch.from_numpy(b))
        self.loss = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)

    def predict(self, features):
        return super().predict(features.reshape(-1, 1, 28, 28))


class JaxLeNet(Jax):
    """``lax.conv_general_dilated`` and ``lax.reduce_window``, NCHW; the whole step jitted."""

    def __init__(self, hidden, batch, data, init):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax
        import jax.numpy as jnp
        from jax import lax

        self.jax, self.jnp = jax, jnp
        self.batch = batch
        self.features = jnp.asarray(data[0]).reshape(-1, 1, 28, 28)
        self.labels = jnp.asarray(data[1])
        self.params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in init]

        def zeros():
            return jax.tree_util.tree_map(jnp.zeros_like, self.params)

        self.state = (zeros(), zeros(), jnp.zeros((), jnp.float32))

        def conv(x, w, b, padding):
            y = lax.conv_general_dilated(x, w, (1, 1), [(padding, padding)] * 2,
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return jax.nn.relu(y + b[None, :, None, None])

        def pool(x):
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

        def forward(params, x):
            (w1, b1), (w2, b2), *dense = params
            x = pool(conv(x, w1, b1, 2))
            x = pool(conv(x, w2, b2, 0)).reshape(x.shape[0], -1)
            for w, b in dense[:-1]:
                x = jax.nn.relu(x @ w.T + b)
            w, b = dense[-1]
            return x @ w.T + b

        def loss(params, x, y):
            return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(forward(params, x)), axis=1))

        self.step = jax_adam_step(jax, jnp, loss, batch)
        self.forward = jax.jit(forward)

    def predict(self, features):
        return super().predict(features.reshape(-1, 1, 28, 28))


LENET5_FRAMEWORKS = {"fastgraph": FastgraphLeNet, "pytorch": TorchLeNet, "jax": JaxLeNet}


def frameworks_for(network):
    """The runner classes and the initial weights' maker for ``network``."""
    if network == "lenet5":
        return LENET5_FRAMEWORKS, lambda rng, hidden: lenet5_init(rng)
    return FRAMEWORKS, he_init


# -- per-sample derivatives --------------------------------------------------------------------
#: Calls made before any is timed, the same for every framework: JAX compiles in the first,
#: and fastgraph's thread chooser (fastgraph.threads), which starts a function on one thread,
#: tries every core after 8 calls and, if that trial lost to noise, again some 70 calls later
#: (then 140). Timed from the second call, a run could catch fastgraph still on one thread
#: (the Jacobian in 1.1 ms instead of 0.6-0.7: two of five runs on 2026-11-30), as the
#: epochs' timing, which leaves out the first epoch, does not.
WARM_UP_CALLS = 200


def _best_ms_in_turn(calls, number=50, repeat=5, warm_up=WARM_UP_CALLS, settle=10):
    """``{framework: {measure: (call, number or None)}}`` -> ``{framework: {measure: ms}}``:
    the best of ``repeat`` rounds of ``number`` calls each, the frameworks taking turns within
    every round (as the epochs do), so that a slow spell of the machine falls on all of them
    and not on whichever ran then (measured one after the other, the Jacobian's ratio to JAX
    went from 0.71x to 1.07x between runs a minute apart)."""
    for measures in calls.values():
        for call, _ in measures.values():
            for _ in range(warm_up):
                call()
    best = {name: dict.fromkeys(measures, float("inf")) for name, measures in calls.items()}
    for _ in range(repeat):
        for name, measures in calls.items():
            for measure, (call, count) in measures.items():
                count = count or number
                for _ in range(settle):  # threads woken, caches refilled after the others
                    call()
                seconds = timeit.timeit(call, number=count) / count
                best[name][measure] = min(best[name][measure], seconds * 1e3)
    return best


def derivatives(data, names, batch=64, hidden=(100, 20)):
    """Milliseconds for the (B, 10, 784) Jacobian of the logits with respect to the input, and
    for per-sample gradients of the loss, on the trained-from-scratch MNIST network."""
    init = he_init(np.random.default_rng(0), hidden)
    features, one_hot, labels = data[0][:batch], data[1][:batch], data[4][:batch]
    calls = {}
    if "fastgraph" in names:
        import fastgraph as fg
        from fastgraph.engines.vjp import backward

        runner = Fastgraph(hidden, batch, data, init)
        graph_model = runner.model
        graph_model.x.set_value(features)
        graph_model.one_hot.set_value(one_hot)
        graph_params = runner.optimizer.params
        plan = graph_model.graph.plan(graph_model.loss, graph_params)
        graph_model.graph.tape(graph_model.loss).forward()
        calls["fastgraph"] = {
            "jacobian_ms": (lambda: fg.jacobian(graph_model.logits, graph_model.x), None),
            "per_sample_gradients_ms": (lambda: fg.per_sample_gradients(
                graph_model.loss, graph_params, copy=False), None),
            "backward_ms": (lambda: backward(plan, graph_model.loss), 200)}
    if "jax" in names:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax
        import jax.numpy as jnp

        jax_params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in init]

        def jax_logits(params, x):
            for w, b in params[:-1]:
                x = jax.nn.relu(w @ x + b)
            w, b = params[-1]
            return w @ x + b

        def jax_loss(params, x, y):
            return -jnp.sum(y * jax.nn.log_softmax(jax_logits(params, x)))

        jax_jacobian = jax.jit(jax.vmap(jax.jacrev(jax_logits, argnums=1), in_axes=(None, 0)))
        jax_per_sample = jax.jit(jax.vmap(jax.grad(jax_loss), in_axes=(None, 0, 0)))
        jax_x, jax_y = jnp.asarray(features), jnp.asarray(one_hot)
        calls["jax"] = {
            "jacobian_ms": (lambda: jax_jacobian(jax_params, jax_x).block_until_ready(), None),
            "per_sample_gradients_ms": (lambda: jax.block_until_ready(
                jax_per_sample(jax_params, jax_x, jax_y)), None)}
    if "pytorch" in names:
        import torch
        from torch.func import functional_call, grad, jacrev, vmap

        torch_model = Torch(hidden, batch, data, init).model
        weights = {name: p.detach() for name, p in torch_model.named_parameters()}
        torch_x, torch_y = torch.from_numpy(features), torch.from_numpy(labels)

        def torch_logits(x):
            return functional_call(torch_model, weights, (x.unsqueeze(0),)).squeeze(0)

        def torch_loss(weights, x, y):
            out = functional_call(torch_model, weights, (x.unsqueeze(0),))
            return torch.nn.functional.cross_entropy(out, y.unsqueeze(0))

        calls["pytorch"] = {
            "jacobian_ms": (lambda: vmap(jacrev(torch_logits))(torch_x), None),
            "per_sample_gradients_ms": (lambda: vmap(grad(torch_loss), in_dims=(None, 0, 0))(
                weights, torch_x, torch_y), None)}
    return _best_ms_in_turn(calls)


# -- measuring --------------------------------------------------------------------------------
def available(name):
    module = {"pytorch": "torch", "jax": "jax"}.get(name)
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def compare(network, epochs, data, names, rng_seed=0):
    hidden, batch = NETWORKS[network]
    frameworks, initial = frameworks_for(network)
    init = initial(np.random.default_rng(rng_seed), hidden)
    runners = {name: frameworks[name](hidden, batch, data, init) for name in names
               if name in frameworks}
    warm = np.random.default_rng(99).permutation(len(data[0]))
    for runner in runners.values():  # compile, fill caches
        runner.epoch(warm, limit=20 * batch) if runner.name == "fastgraph" else None
    times = {name: [] for name in runners}
    rng = np.random.default_rng(rng_seed)
    for _ in range(epochs):
        order = rng.permutation(len(data[0]))
        for name, runner in runners.items():
            began = time.perf_counter()
            runner.epoch(order)
            times[name].append(time.perf_counter() - began)
    results = {}
    for name, runner in runners.items():
        # The first epoch of a compiling framework includes its compilation: report the
        # median of the others when there are any.
        timed = times[name][1:] or times[name]
        seconds = float(np.median(timed))
        accuracy = float((runner.predict(data[2]) == data[3]).mean())
        results[name] = {"seconds_per_epoch": seconds, "samples_per_second": 60000 / seconds,
                         "test_accuracy": accuracy, "epoch_seconds": times[name]}
        if getattr(runner, "threads", None):  # fastgraph: the timed epochs' thread counts
            results[name]["epoch_threads"] = [{str(count): steps for count, steps in
                                               sorted(epoch.items())}
                                              for epoch in runner.threads[-len(times[name]):]]
    results["fastgraph jacobian"] = jacobian_throughput(hidden, batch, data, init, network)
    return results


def jacobian_throughput(hidden, batch, data, init, network=None):
    kind, samples = FastgraphJacobian, JACOBIAN_SAMPLES
    if network == "lenet5":  # dense Jacobians of convolutions: thousands of rows each
        kind, samples = FastgraphLeNetJacobian, 64
    runner = kind(hidden, min(batch, 64), data, init)
    order = np.arange(len(data[4]))
    runner.epoch(order, limit=8)
    began = time.perf_counter()
    runner.epoch(order, limit=samples)
    seconds = time.perf_counter() - began
    rate = samples / seconds
    return {"seconds_per_epoch": 60000 / rate, "samples_per_second": rate,
            "test_accuracy": None, "note": f"{samples} samples"}


def peak_memory(name, network):
    """Peak resident memory (MB) of a fresh process that loads MNIST and trains one epoch."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--worker", name,
                             "--networks", network], capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]


def worker(name, network):
    data = load_data()
    hidden, batch = NETWORKS[network]
    frameworks, initial = frameworks_for(network)
    runner = frameworks[name](hidden, batch, data, initial(np.random.default_rng(0), hidden))
    runner.epoch(np.random.default_rng(0).permutation(len(data[0])))
    print(json.dumps({"peak_mb": peak_resident_mb()}))


def peak_resident_mb():
    """This process's peak resident memory. VmHWM belongs to the process image, which exec
    replaces; ru_maxrss would also count the parent that forked it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cold_start(empty_cache):
    """Seconds for ``import fastgraph`` plus a first training step in a fresh process."""
    code = ("import time; t = time.perf_counter(); import numpy as np; import fastgraph as fg; "
            "m = fg.models.mlp(seed=0); o = fg.optimizer.Adam(m.graph, m.loss); "
            "m.x.set_value(np.zeros((64, 784), np.float32)); "
            "m.one_hot.set_value(np.eye(10, dtype=np.float32)[np.arange(64) % 10]); "
            "o.one_step(); o.update(); print(time.perf_counter() - t)")
    # fastgraph's modules from their bytecode, as an installed package's (this machine sets
    # PYTHONDONTWRITEBYTECODE: each run would compile 40-odd modules from source, ~0.07 s)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "fastgraph")],
                   capture_output=True, check=True)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if empty_cache:
        import tempfile

        env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastgraph-cold-")
    else:
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    return float(result.stdout.strip())


# -- reporting --------------------------------------------------------------------------------
def table(report):
    lines = []
    for network, results in report["networks"].items():
        timed = [name for name, row in results.items() if "seconds_per_epoch" in row]
        reference = "fastgraph" if "fastgraph" in timed else (timed or ["-"])[0]
        base = results[reference]["seconds_per_epoch"] if timed else 1.0
        lines.append(f"\n{network}, batch {NETWORKS[network][1]}, Adam, float32, one epoch "
                     f"of 60,000 (median of {report['epochs'] - 1 or 1} timed epochs)")
        lines.append(f"{'framework':<20} {'s/epoch':>9} {'samples/s':>11} "
                     f"{'vs ' + reference:>13} {'test acc':>9} {'peak MB':>8}")
        for name, row in results.items():
            if row.get("skipped"):
                lines.append(f"{name:<20} {'skipped: ' + row['skipped']}")
                continue
            accuracy = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
            memory = row.get("peak_mb")
            lines.append(
                f"{name:<20} {row['seconds_per_epoch']:9.3f} {row['samples_per_second']:11,.0f}"
                f" {row['seconds_per_epoch'] / base:12.2f}x {accuracy:>9}"
                f" {'-' if memory is None else f'{memory:.0f}':>8}")
        epochs = results.get("fastgraph", {}).get("epoch_threads")
        if epochs:  # (a run at one thread's speed says so here)
            lines.append("fastgraph's epochs, steps on each thread count: " + "; ".join(
                ", ".join(f"{steps} on {count}" for count, steps in epoch.items())
                for epoch in epochs))
    if "derivatives" in report:
        lines.append("\nper-sample derivatives, 784-100-20-10, batch 64, float32 (best of 5 "
                     "rounds of 50 calls, the frameworks in turn)")
        lines.append(f"{'framework':<20} {'jacobian (64,10,784)':>22} {'per-sample grads':>17}")
        for name, row in report["derivatives"].items():
            lines.append(f"{name:<20} {row['jacobian_ms']:19.3f} ms "
                         f"{row['per_sample_gradients_ms']:14.3f} ms")
        backward_ms = report["derivatives"].get("fastgraph", {}).get("backward_ms")
        if backward_ms:
            lines.append(f"(fastgraph's ordinary backward pass of the batch: {backward_ms:.3f} ms; "
                         "per-sample gradients without a copy)")
    if "cold_start" in report:
        cold = report["cold_start"]
        lines.append(f"\ncold start (import + first step, fresh process): "
                     f"{cold['warm_cache']:.2f} s with the Numba cache warm, "
                     f"{cold['empty_cache']:.2f} s with it empty")
    return "\n".join(lines)


def chart(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = list(report["networks"])
    figure, axes = plt.subplots(1, len(networks), figsize=(6 * len(networks), 4), squeeze=False)
    for ax, network in zip(axes[0], networks):
        rows = {name: row for name, row in report["networks"][network].items()
                if not row.get("skipped") and name != "fastgraph jacobian"}
        names = list(rows)
        values = [rows[name]["seconds_per_epoch"] for name in names]
        colors = ["#2a7ab9" if name == "fastgraph" else "#aaaaaa" for name in names]
        ax.barh(names, values, color=colors)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.3f} s", va="center")
        ax.set(title=f"MNIST {network}: seconds per epoch (lower is better)", xlabel="seconds")
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


#: Where a run writes its report and chart unless told: a folder that git ignores, so that a
#: run leaves the figures kept in the repository (benchmarks/results/, the README's, which
#: benchmarks/measure.sh makes) as they are.
DEFAULT_JSON, DEFAULT_CHART = "runs/compare.json", "runs/compare.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per framework (default 4)")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--json", default=DEFAULT_JSON,
                        help=f"where the report goes (default {DEFAULT_JSON})")
    parser.add_argument("--chart", default=DEFAULT_CHART,
                        help=f"where the chart goes (default {DEFAULT_CHART})")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--no-cold-start", action="store_true")
    parser.add_argument("--no-recurrent", action="store_true",
                        help="skip the recurrent network (benchmarks.recurrent)")
    parser.add_argument("--profile", action="store_true",
                        help="also break one fastgraph training step down by phase and node")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    networks = args.networks.split(",")
    if args.worker:
        return worker(args.worker, networks[0])
    names = args.frameworks.split(",")
    # Checked before any work, and before anything is written over the results kept in
    # the repository (an unknown network failed after loading the data; --epochs 0
    # wrote NaN into compare.json, then failed drawing the chart).
    for option, given, known in (("--networks", networks, NETWORKS),
                                 ("--frameworks", names, FRAMEWORKS)):
        unknown = [name for name in given if name not in known]
        if unknown:
            parser.error(f"{option}: unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(known)}")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    data = load_data()
    report = {"date": date.today().isoformat(), "machine": machine(), "epochs": args.epochs,
              "networks": {}}
    for network in networks:
        frameworks, _ = frameworks_for(network)
        present = [name for name in names if available(name) and name in frameworks]
        results = compare(network, args.epochs, data, present)
        for name in names:
            if name not in frameworks:
                continue
            if name not in present:
                results[name] = {"skipped": "not installed (pip install -e '.[bench]')"}
            elif not args.no_memory:
                results[name]["peak_mb"] = peak_memory(name, network)
        report["networks"][network] = results
        print(table({**report, "networks": {network: results}}), flush=True)
    if not args.no_recurrent:
        from benchmarks import recurrent

        report["recurrent"] = recurrent.compare(
            names=[name for name in ("fastgraph", "jax", "pytorch") if name in names])
        print(recurrent.describe(report["recurrent"]), flush=True)
    report["derivatives"] = derivatives(data, [name for name in names if available(name)])
    if not args.no_cold_start:
        report["cold_start"] = {"warm_cache": cold_start(False), "empty_cache": cold_start(True)}
    print(table(report))
    if args.profile:
        print("\n" + profile_report(data))
        print("\n" + article_profile_report(data))
    for path in (args.json, args.chart):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    chart(report, args.chart)
    print(f"\nwrote {args.json} and {args.chart}")
    return 0


def profile_report(data, network="784-100-20-10"):
    hidden, batch = NETWORKS[network]
    runner = Fastgraph(hidden, batch, data, he_init(np.random.default_rng(0), hidden))
    batches = iter(())
    x, one_hot = runner.model.x, runner.model.one_hot

    def feed(step):  # as the timed epochs feed: each batch gathered straight into the inputs
        nonlocal batches
        if next(batches, None) is None:
            batches = runner.dataset().feed(x, one_hot,
                                            np.random.default_rng(step).permutation(60000))
            next(batches)

    return (f"profile of {network}, batch {batch} (the fastest of 15 rounds):\n"
            + alternated_profiles(runner.optimizer, feed, steps=200, every=1, first=600))


def article_profile_report(data):
    """The article's loop on its MNIST network: one sample a one_step(), an update every 32
    (``benchmarks/test_article_programs.py``'s program, with MNIST's images)."""
    import fastgraph as fg

    model = fg.models.mlp(784, (100, 20), 10, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, LEARNING_RATE)
    images, labels = data[0], data[1]

    def feed(step):  # the article's way: one sample, a (784, 1) column, and its label's
        row = step % len(images)
        model.x.set_value(images[row][:, None])
        model.one_hot.set_value(labels[row][:, None])

    return ("profile of the article's loop, 784-100-20-10, one sample a one_step(), an update "
            "every 32 (the fastest of 15 rounds):\n"
            + alternated_profiles(optimizer, feed, steps=640, every=32, first=640))


def alternated_profiles(optimizer, feed, steps, every, first):
    """15 rounds of ``steps`` profiled and ``steps`` untimed steps (an update every
    ``every``), which comes first alternating, after ``first`` untimed ones: the fastest
    round's table, and how the profiled steps compare with the untimed ones."""
    from fastgraph.profiler import profile_steps

    def untimed(count, start):  # the same loop, no timer: what the phases must add up to
        began = time.perf_counter()
        for step in range(start, start + count):
            feed(step)
            optimizer.one_step()
            if (step - start + 1) % every == 0:
                optimizer.update()
        return (time.perf_counter() - began) / count * 1e6

    # Which comes first alternates, so that a change in the load (or a thread-count trial,
    # fastgraph.threads) falls on both alike; each round's two step times give a ratio, and
    # the median ratio is the figure.
    untimed(first, 0)  # past the thread-count trials of the first steps
    profiles, plain = [], []
    for round_ in range(15):
        start = (2 * steps + 5 * every) * round_
        if round_ % 2:
            plain.append(untimed(steps, start))
        profiles.append(profile_steps(optimizer, feed, steps=steps, warmup=5 * every,
                                      update_every=every))
        if not round_ % 2:
            plain.append(untimed(steps, start + steps))
    profiled = [profile.step_seconds * 1e6 for profile in profiles]
    fastest = profiles[int(np.argmin(profiled))]
    ratio = np.median(np.array(profiled) / np.array(plain))
    return (f"{fastest.table()}\n"
            f"the same loop untimed, in alternation: {min(plain):,.1f} us a step (fastest "
            f"round); the profiled steps took {ratio:.2f}x the untimed ones (median of the "
            f"rounds' ratios; rounds, profiled/untimed: "
            + ", ".join(f"{p:,.0f}/{u:,.0f}" for p, u in zip(profiled, plain)) + " us)")


def machine():
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{info['internal_api']} {info.get('version')} ({info['num_threads']} threads)"
                for info in threadpool_info() if info["user_api"] == "blas"]
    except ImportError:
        blas = []
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas}


if __name__ == "__main__":
    sys.exit(main())
