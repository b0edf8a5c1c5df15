"""Optimizers, in the article's shape: ``one_step()`` accumulates, ``update()`` applies.

``one_step()`` runs forward and backward over whatever batch the inputs hold and adds the
gradient of the summed loss to a running sum; ``get_gradient(node)`` is that sum divided by
the samples counted; ``update()`` applies the rule to every trainable variable the target
depends on, in one fused Numba kernel per parameter, and clears the sums. Feeding a batch
of B samples to one ``one_step()`` gives exactly what B article-style calls give.
"""

import numbers

import numpy as np

from .engines import get_engine
from .graph import COMPUTED, OUTDATED
from .kernels import optimizers as kernels
from .node import Node, Variable


class Optimizer:
    """Base class: ``(graph, target, learning_rate, engine="vjp")``."""

    def __init__(self, graph, target, learning_rate, engine="vjp"):
        self._gradients = get_engine(engine)
        if not isinstance(target, Node) or target.graph is not graph:
            raise ValueError(f"the target must be a node of the optimizer's graph, got {target!r}")
        if not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        self.graph = graph
        self.target = target
        self.learning_rate = float(learning_rate)
        self.engine = engine
        tape = graph.tape(target)
        self.params = tuple(node for node in tape.nodes
                            if isinstance(node, Variable) and node.trainable)
        if not self.params:
            raise ValueError(
                f"{target.name} does not depend on any trainable Variable: nothing to optimise"
            )
        for param in self.params:
            if param.flat is None:
                raise ValueError(
                    f"{param.name} has no value: give it one (init=True or set_value) first"
                )
        self._index = {param: i for i, param in enumerate(self.params)}
        self._weights = tuple(param.flat for param in self.params)
        self._sums = self.zeros()
        self._coefficients = np.empty(8, graph.dtype)  # refilled at every update
        self._held = None  # the engine's own gradient arrays, while they are the whole sum
        self.samples = 0
        self.steps = 0

    def zeros(self):
        """A tuple of zero arrays, one per parameter shaped like its ``flat``: sums, state."""
        return tuple(np.zeros_like(param.flat) for param in self.params)

    def coefficients(self, *values):
        """The scalars of an update as one array in the parameters' dtype (see the kernels)."""
        self._coefficients[: len(values)] = values
        return self._coefficients

    def one_step(self):
        """Forward and backward over the batch the inputs hold; add to the gradient sums."""
        gradients, samples = self._gradients(self.target, self.params)
        if self.samples == 0:
            # The usual case, one batch per update: read the engine's arrays in place (no
            # copy, less memory traffic); the graph calls release_gradients() before a later
            # backward pass overwrites them.
            self._held = tuple(gradients)
            if not all(gradient.flags.c_contiguous for gradient in self._held):  # kernels' type
                self._held = tuple(np.ascontiguousarray(gradient) for gradient in self._held)
            self.graph.hold_gradients(self)
        else:
            self.release_gradients()  # no-op when a backward pass already asked for it
            for total, gradient in zip(self._sums, gradients):
                np.add(total, gradient, out=total)
        self.samples += samples

    def release_gradients(self):
        """Copy held gradient arrays into the optimizer's own sums."""
        if self._held is not None:
            for total, gradient in zip(self._sums, self._held):
                np.copyto(total, gradient)
            self._held = None

    def _gradient_sums(self):
        return self._sums if self._held is None else self._held

    def get_gradient(self, node):
        """The mean gradient over the samples accumulated so far, shaped like ``node.value``."""
        if node not in self._index:
            raise KeyError(f"{getattr(node, 'name', node)} is not a parameter of this optimizer")
        if self.samples == 0:
            raise RuntimeError("no gradient accumulated: call one_step() first")
        return (self._gradient_sums()[self._index[node]] / self.samples).reshape(node.dim)

    def update(self):
        """Apply the mean of the accumulated gradients, then start a new accumulation."""
        if self.samples == 0:
            raise RuntimeError("update() needs a gradient: call one_step() first")
        self.steps += 1
        self.apply(self._weights, self._gradient_sums(), 1.0 / self.samples)
        self.samples = 0
        if self._held is not None:
            self._held = None
            self.graph.drop_gradients(self)
        for node in self.graph.downstream(self.params):
            if node.state == COMPUTED:
                node.state = OUTDATED

    def apply(self, weights, gradients, scale):
        """Update every parameter in place from its gradient sum times ``scale``."""
        raise NotImplementedError


class GradientDescent(Optimizer):
    def __init__(self, graph, target, learning_rate=0.01, engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)

    def apply(self, weights, gradients, scale):
        kernels.gradient_descent(weights, gradients, self.coefficients(scale, self.learning_rate))


class Momentum(Optimizer):
    """Heavy-ball momentum as ``torch.optim.SGD(momentum=...)``: v = mu v + g; w -= lr v."""

    def __init__(self, graph, target, learning_rate=0.01, momentum=0.9, engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)
        self.momentum = _fraction("momentum", momentum)
        self.velocity = self.zeros()

    def apply(self, weights, gradients, scale):
        kernels.momentum(weights, gradients, self.velocity,
                         self.coefficients(scale, self.learning_rate, self.momentum))


class AdaGrad(Optimizer):
    """s += g^2; w -= lr g / (sqrt(s) + eps), as ``torch.optim.Adagrad``."""

    def __init__(self, graph, target, learning_rate=0.01, eps=1e-10, engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)
        self.eps = float(eps)
        self.square_sum = self.zeros()

    def apply(self, weights, gradients, scale):
        kernels.adagrad(weights, gradients, self.square_sum,
                        self.coefficients(scale, self.learning_rate, self.eps))


class RMSProp(Optimizer):
    """s = beta s + (1 - beta) g^2; w -= lr g / (sqrt(s) + eps), as ``torch.optim.RMSprop``."""

    def __init__(self, graph, target, learning_rate=0.01, beta=0.99, eps=1e-8, engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)
        self.beta = _fraction("beta", beta)
        self.eps = float(eps)
        self.square_avg = self.zeros()

    def apply(self, weights, gradients, scale):
        kernels.rmsprop(weights, gradients, self.square_avg, self.coefficients(
            scale, self.learning_rate, self.beta, 1.0 - self.beta, self.eps))


class Adam(Optimizer):
    """Adam with bias correction, eps outside the square root, as ``torch.optim.Adam``."""

    def __init__(self, graph, target, learning_rate=0.001, beta_1=0.9, beta_2=0.999, eps=1e-8,
                 engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)
        self.beta_1 = _fraction("beta_1", beta_1)
        self.beta_2 = _fraction("beta_2", beta_2)
        self.eps = float(eps)
        self.m = self.zeros()
        self.v = self.zeros()

    def apply(self, weights, gradients, scale):
        t = self.steps
        kernels.adam(weights, gradients, self.m, self.v, self.coefficients(
            scale, self.learning_rate / (1.0 - self.beta_1**t), self.beta_1, 1.0 - self.beta_1,
            self.beta_2, 1.0 - self.beta_2, 1.0 / np.sqrt(1.0 - self.beta_2**t), self.eps))


def _fraction(name, value):
    if not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)
