"""The recurrent network of the article's book, one training step, in fastgraph, JAX, PyTorch.

    python -m benchmarks.recurrent [--repeats 5] [--steps 200] [--json recurrent.json]

The network (MatrixSlow's chapter-7 program, with the issue's single output layer): 96 time
steps of ``h_t = ReLU(U x_t + W h_{t-1} + b)`` with inputs of 16 and a state of 12, then a
fully connected layer 12-2 and softmax cross-entropy; Adam (lr 0.005); batch 16; float32.
fastgraph runs it the article's way, as a graph of 583 small nodes with one input node per
time step (the 96 steps' batches set by one ``fg.set_values`` call, which is what 96
``set_value`` calls do, without 96 trips through Python); JAX as its users write it, ``lax.scan``
over time inside one jitted step (forward, backward and Adam); PyTorch as its users write
it, ``nn.RNN(nonlinearity="relu")`` + ``nn.Linear`` + ``torch.optim.Adam``.

Each framework's step time is the median over ``--repeats`` rounds of ``--steps`` steps on
one fixed batch, the frameworks taking turns round by round (a noisy neighbour hurts
everyone alike); the ratios are what to read.
"""

import argparse
import json
import statistics
import time

import numpy as np

SEQUENCE, INPUTS, STATE, CLASSES, BATCH, LEARNING_RATE = 96, 16, 12, 2, 16, 0.005


def data(rng, batch=BATCH):
    """Noisy sine or square waves, as the article's program makes them: (B, 96, 16), one-hot."""
    t = np.arange(0, 10, 10 / SEQUENCE)
    waves = np.stack([np.sin(t), np.sign(np.sin(t))])
    classes = rng.integers(0, CLASSES, batch)
    x = waves[classes][:, :, None] + rng.normal(0, 0.6, (batch, SEQUENCE, INPUTS))
    return x.astype(np.float32), np.eye(CLASSES, dtype=np.float32)[classes]


def initial(rng):
    """The same starting weights for everyone: U (12, 16), W (12, 12), b, V (2, 12), c."""
    def glorot(rows, cols):
        limit = np.sqrt(6 / (rows + cols))
        return rng.uniform(-limit, limit, (rows, cols)).astype(np.float32)
    return (glorot(STATE, INPUTS), glorot(STATE, STATE), np.zeros(STATE, np.float32),
            glorot(CLASSES, STATE), np.zeros(CLASSES, np.float32))


class Fastgraph:
    name = "fastgraph"

    def __init__(self, init):
        import fastgraph as fg

        self.fg = fg
        u, w, b, v, c = init
        with fg.Graph() as graph:
            self.inputs = [fg.Variable((INPUTS, 1), trainable=False) for _ in range(SEQUENCE)]
            weights = [fg.Variable(value.shape) for value in (u, w)]
            bias = fg.Variable((STATE, 1))
            for node, value in zip([*weights, bias], (u, w, b.reshape(-1, 1))):
                node.set_value(value)
            state = None
            for x in self.inputs:
                h = fg.ops.Add(fg.ops.MatMul(weights[0], x), bias)
                if state is not None:
                    h = fg.ops.Add(fg.ops.MatMul(weights[1], state), h)
                state = fg.ops.ReLU(h)
            out_w, out_b = fg.Variable((CLASSES, STATE)), fg.Variable((CLASSES, 1))
            out_w.set_value(v)
            out_b.set_value(c.reshape(-1, 1))
            logits = fg.ops.Add(fg.ops.MatMul(out_w, state), out_b)
            self.label = fg.Variable((CLASSES, 1), trainable=False)
            self.loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, self.label)
        self.graph = graph
        self.optimizer = fg.optimizer.Adam(graph, self.loss, LEARNING_RATE)

    def step(self, x, y):
        self.fg.set_values(self.inputs, x.swapaxes(0, 1))  # input t gets x[:, t]
        self.label.set_value(y)
        self.optimizer.one_step()
        self.optimizer.update()
        return self.loss.flat.sum()


class Jax:
    name = "jax"

    def __init__(self, init):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        params = tuple(jnp.asarray(p) for p in init)
        zeros = tuple(jnp.zeros_like(p) for p in params)
        self.state = (params, zeros, zeros, 0)

        def loss(params, x, y):
            u, w, b, v, c = params

            def cell(h, x_t):
                h = jax.nn.relu(x_t @ u.T + h @ w.T + b)
                return h, None

            h, _ = jax.lax.scan(cell, jnp.zeros((x.shape[0], STATE), x.dtype),
                                jnp.swapaxes(x, 0, 1))
            logits = h @ v.T + c
            return -(y * jax.nn.log_softmax(logits)).sum()

        def step(state, x, y):
            params, m, s, t = state
            value, grads = jax.value_and_grad(loss)(params, x, y)
            t = t + 1
            grads = tuple(g / x.shape[0] for g in grads)
            m = tuple(0.9 * a + 0.1 * g for a, g in zip(m, grads))
            s = tuple(0.999 * a + 0.001 * g * g for a, g in zip(s, grads))
            size = LEARNING_RATE / (1 - 0.9**t)
            correction = jnp.sqrt(1 - 0.999**t)
            params = tuple(p - size * a / (jnp.sqrt(b) / correction + 1e-8)
                           for p, a, b in zip(params, m, s))
            return (params, m, s, t), value

        self._step = jax.jit(step)

    def step(self, x, y):
        self.state, value = self._step(self.state, x, y)
        return self.jax.block_until_ready(value)


class Torch:
    name = "pytorch"

    def __init__(self, init):
        import torch

        self.torch = torch
        u, w, b, v, c = (torch.from_numpy(p.copy()) for p in init)
        self.rnn = torch.nn.RNN(INPUTS, STATE, nonlinearity="relu", batch_first=True)
        self.out = torch.nn.Linear(STATE, CLASSES)
        with torch.no_grad():
            self.rnn.weight_ih_l0.copy_(u)
            self.rnn.weight_hh_l0.copy_(w)
            self.rnn.bias_ih_l0.copy_(b)
            self.rnn.bias_hh_l0.zero_()
            self.out.weight.copy_(v)
            self.out.bias.copy_(c)
        parameters = [*self.rnn.parameters(), *self.out.parameters()]
        self.optimizer = torch.optim.Adam(parameters, lr=LEARNING_RATE)
        self.criterion = torch.nn.CrossEntropyLoss()

    def step(self, x, y):
        torch = self.torch
        x, y = torch.from_numpy(x), torch.from_numpy(y.argmax(axis=1))
        self.optimizer.zero_grad(set_to_none=True)
        _, h = self.rnn(x)
        loss = self.criterion(self.out(h[0]), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def compare(repeats=5, steps=200, names=("fastgraph", "jax", "pytorch")):
    """{name: {"ms": median ms per step, "runs": [...]}} plus skipped peers' reasons."""
    rng = np.random.default_rng(0)
    init = initial(rng)
    x, y = data(rng)
    frameworks, report = [], {}
    for cls in (Fastgraph, Jax, Torch):
        if cls.name not in names:
            continue
        try:
            framework = cls(init)
            for _ in range(3):  # compile, record, warm up
                framework.step(x, y)
        except ImportError as error:
            report[cls.name] = {"skipped": str(error)}
            continue
        frameworks.append(framework)
        report[cls.name] = {"runs": []}
    for _ in range(repeats):
        for framework in frameworks:
            began = time.perf_counter()
            for _ in range(steps):
                framework.step(x, y)
            report[framework.name]["runs"].append((time.perf_counter() - began) / steps * 1e3)
    for framework in frameworks:
        entry = report[framework.name]
        entry["ms"] = statistics.median(entry["runs"])
    return report


def describe(report):
    lines = ["recurrent net (96 steps, 16 -> 12, ReLU, fc 12-2, Adam), batch 16: ms per step"]
    base = report.get("fastgraph", {}).get("ms")
    for name, entry in report.items():
        if "skipped" in entry:
            lines.append(f"{name:<10} skipped: {entry['skipped']}")
            continue
        runs = ", ".join(f"{run:.3f}" for run in entry["runs"])
        ratio = f"{entry['ms'] / base:6.2f}x" if base else ""
        lines.append(f"{name:<10} {entry['ms']:8.3f} ms  {ratio}  (runs: {runs})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    report = compare(args.repeats, args.steps)
    print(describe(report))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(report, stream, indent=2)


if __name__ == "__main__":
    main()
