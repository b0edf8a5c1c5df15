"""Optimizers, in the article's shape: ``one_step()`` accumulates, ``update()`` applies.

``one_step()`` runs forward and backward over whatever batch the inputs hold and adds the
gradient of the summed loss to a running sum that the optimizer owns (the engine writes
into it: the first step after an update writes it, later ones add to it);
``get_gradient(node)`` is that sum divided by the samples counted; ``update()`` applies the
rule to every trainable variable the target depends on, in one fused Numba kernel call, and
starts a new sum. Feeding a batch of B samples to one ``one_step()`` gives exactly what B
article-style calls give.

The update's arrays are flat, so that its kernel is compiled once whatever the number of
parameters: the gradient sums are one buffer (``gradient_buffer``), each state of a rule
(Adam's ``m`` and ``v``, ...) is one 1-D array laid out like it, and the weights, which stay
where their nodes keep them, are passed by address in a table with each parameter's start
and size in those buffers (``fastgraph.kernels.optimizers``).
"""

import contextlib
import math
from operator import attrgetter

import numpy as np

from . import checks
from .engines import get_engine
from .engines.compiled import complete, forget
from .graph import CONVENTIONS, OUTDATED, Cache, Graph
from .kernels import ahead, aligned_zeros
from .kernels import optimizers as kernels
from .node import Node, Variable
from .threads import Chooser, threads

#: Elements after the gradient sums in ``Optimizer.gradient_buffer``, free for callers
#: (``fastgraph.distributed`` ships the sample count and a fingerprint of the settings there).
SPARE = 6
LAYOUTS_KEPT = 4  # parameter sets whose sums an optimizer keeps for when they come back


_UNSET = object()


def _checked(name, check):
    """A rule's setting (or state array), checked by ``check(optimizer, name, value)``
    whenever it is set: by the constructor, or later on a live optimizer (a momentum
    warm-up, a beta schedule), as ``learning_rate`` is; then the step's coefficients that
    the learning rate makes with it (Adam's ``beta_1``) are checked, and on an error the
    setting keeps the value it had. A property over ``_<name>``."""
    attribute = "_" + name

    def set_checked(optimizer, value):
        previous = getattr(optimizer, attribute, _UNSET)
        setattr(optimizer, attribute, check(optimizer, name, value))
        try:
            optimizer._check_rate(optimizer.learning_rate)
        except ValueError:
            if previous is _UNSET:
                delattr(optimizer, attribute)
            else:
                setattr(optimizer, attribute, previous)
            raise

    return property(attrgetter(attribute), set_checked)


def _fraction_setting(optimizer, name, value):
    return checks.fraction(name, value)


def _positive_setting(optimizer, name, value):
    return checks.positive_number(name, value, optimizer.graph.dtype)


def _conventions_setting(optimizer, name, value):
    return _conventions(optimizer.graph, value)


def _state_array(optimizer, name, value):
    """A state of the rule (Adam's ``m``, ``v``, ...) is read by the update's kernel, which
    checks no bounds: an array of one number per parameter number, in the graph's dtype,
    contiguous and writable, or an error (a short one was written past)."""
    expected = optimizer._buffer.size - SPARE
    if not (isinstance(value, np.ndarray) and value.dtype == optimizer.graph.dtype
            and value.shape == (expected,) and value.flags.c_contiguous
            and value.flags.writeable):
        got = (f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray)
               else type(value).__name__)
        raise ValueError(f"{type(optimizer).__name__}.{name} must be a writable, contiguous "
                         f"{np.dtype(optimizer.graph.dtype).name} array of {expected:,} numbers "
                         f"(one per parameter number), got {got}; to start it again, fill it "
                         f"in place ({name}[:] = 0)")
    return value


def _set_once(name):
    """``graph`` and ``target``: the sums, states and passes of an optimizer belong to
    them, so they are given once, to the constructor (assigned later, the compiled executor
    kept the old target and the walker took the new one)."""
    return checks.set_once(name, lambda optimizer: (
        f"{type(optimizer).__name__}.{name} is fixed when the optimizer is made (its sums "
        "and states belong to it): make a new optimizer"))


class Optimizer:
    """Base class: ``(graph, target, learning_rate, engine="vjp")``."""

    graph = _set_once("graph")
    target = _set_once("target")
    #: The gradients' engine, chosen when the optimizer is made (assigned later, it was
    #: taken and ignored).
    engine = checks.set_once("engine", lambda optimizer: (
        f"{type(optimizer).__name__}.engine is fixed when the optimizer is made (its "
        f"gradients are computed by the engine chosen then): make a new optimizer with "
        "engine=..."))
    #: The trainable parameters the target depends on, which the optimizer follows itself
    #: (a re-wiring, a parameter frozen or thawed): assigned, the sums, states and table laid
    #: out for the others no longer matched them (``params = ()`` failed in ``update()``).
    params = checks.set_once("params", lambda optimizer: (
        f"{type(optimizer).__name__}.params are the trainable parameters its target depends "
        "on, which it follows itself: freeze one with trainable=False, or make a new "
        "optimizer"))
    #: The rule's settings besides the learning rate (data-parallel ranks compare them).
    settings = ()

    def __init__(self, graph, target, learning_rate, engine="vjp"):
        self._gradients = get_engine(engine)
        if not isinstance(graph, Graph):
            hint = " (pass its graph: node.graph)" if isinstance(graph, Node) else ""
            raise TypeError(f"{type(self).__name__}: graph must be a fastgraph Graph, got "
                            f"{type(graph).__name__} {graph!r:.60}{hint}")
        if not isinstance(target, Node):
            raise TypeError(f"the target must be a node of the optimizer's graph, got {target!r}")
        if target.graph is not graph:
            raise ValueError(f"the target {target.name} is a node of another graph than the "
                             "optimizer's")
        if not getattr(target, "differentiable", True):  # a metric (ops.metrics): say so now
            raise target.not_differentiable()
        self.graph = graph
        self.target = target
        self.learning_rate = learning_rate  # checked by the property
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
        self._layouts = {}  # the sums and tables of other parameter sets (_keep_layout)
        self._prefixes = {}  # (id(sums), n) -> (sums, sums[:n]): see _follow_graph
        self._passes = Cache()  # what the compiled engine recorded for this optimizer
        self._sums = self._contiguous_sums()
        self._parked = {}  # the states of parameters the target no longer depends on
        self._stepped = (self.params, self._sums)  # the parameters one_step() computes, sums
        self._structure = graph._version  # see _follow_graph
        self._coefficients = np.empty(9, graph.dtype)  # refilled at every update
        self._largest = float(np.finfo(graph.dtype).max)  # (what a coefficient may be)
        self.samples = 0
        self.steps = 0
        self.threads = Chooser()  # the thread count of the steps, by their times
        ahead.expect(self._update_calls)  # (compiled with the first pass, on an empty cache)
        ahead.expect_later(self._later_update_calls)  # (and after it: see kernels.ahead)

    def __reduce__(self):
        # copy.copy made a twin that added into the same gradient sums and stepped the same
        # states (two updates of one accumulation); deepcopy and pickle reached the graph.
        raise TypeError(f"a fastgraph {type(self).__name__} optimizer is not copied or pickled "
                        "(it keeps the gradient sums and states of its graph's parameters): "
                        f"make another with {type(self).__name__}(graph, loss, ...), or save "
                        "the parameters with fastgraph.saver.save")

    @property
    def learning_rate(self):
        """The learning rate: a positive finite number, checked whenever it is set (a rate of
        0, infinity or NaN could only leave the parameters as they are or make them NaN)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        rate = checks.positive_number("learning_rate", value, self.graph.dtype)
        self._check_rate(rate)
        self._learning_rate = rate

    def _rate_factor(self):
        """The most that a step's coefficients multiply the learning rate by (1, but for
        torch's Adam, whose bias correction divides it by 1 - beta_1 at a parameter's first
        update), the settings that make it and its formula, in words."""
        return 1.0, "", "lr"

    def _check_rate(self, rate):
        """Refuse, by name, a learning rate whose step coefficient is infinite in the
        graph's dtype (Adam's lr / (1 - beta_1): 1e38 gave 1e39, every weight inf in float32,
        after a NumPy warning from the cast): checked when the rate or a setting that
        scales it is set, so a rate set later or decayed is covered too."""
        factor, settings, formula = self._rate_factor()
        if factor == 1.0:
            return
        dtype = np.dtype(self.graph.dtype)
        with np.errstate(over="ignore"):
            coefficient = dtype.type(rate * factor)
        if not np.isfinite(coefficient):
            raise ValueError(
                f"{type(self).__name__}: learning_rate {rate:g}{settings} makes the "
                f"coefficient of a parameter's first step, {formula}, {rate * factor:g}, "
                f"which is infinite in {dtype.name}: give a learning rate below "
                f"{float(np.finfo(dtype).max) / factor:.3g}")

    def _contiguous_sums(self, previous=None):
        """The gradient sums: one array per parameter, all views of ``gradient_buffer`` (with
        what ``previous``, a map from parameter to array, held for those it names). Also
        lays out the update's table: a row per parameter, ``(address of its weights, start,
        size)``; ``_weights`` keeps the arrays at those addresses alive."""
        kept = self._layouts.pop(self.params, None)
        if kept is not None and all(weights is param.flat  # the same weight buffers still
                                    for weights, param in zip(kept[2], self.params)):
            self._buffer, sums, self._weights, self._starts, self._table = kept
            self._buffer[:] = 0
        else:
            sizes = [param.flat.size for param in self.params]
            self._buffer = aligned_zeros(sum(sizes) + SPARE, self.graph.dtype)
            starts = np.cumsum([0, *sizes[:-1]])
            sums = tuple(self._buffer[start:start + size].reshape(1, size)
                         for start, size in zip(starts, sizes))
            self._weights = tuple(param.flat for param in self.params)
            self._starts = {param: (start, size)
                            for param, start, size in zip(self.params, starts, sizes)}
            self._table = np.array([(weights.ctypes.data, start, size) for weights, start, size
                                    in zip(self._weights, starts, sizes)],
                                   np.int64).reshape(-1, 3)
        for param, total in zip(self.params, sums):
            if previous and param in previous:
                np.copyto(total, previous[param])
        return sums

    def _keep_layout(self):
        """Keep the present parameters' sums and table for when the same parameters come
        back (a GAN freezes half of its network and thaws it step by step): the compiled
        passes recorded with those sums are found again rather than recorded anew."""
        layouts = self._layouts
        if len(layouts) >= LAYOUTS_KEPT:
            oldest = next(iter(layouts))
            sums = layouts.pop(oldest)[1]
            forget(self._passes, sums)  # the passes that add into its sums (or a prefix)
            self._prefixes = {key: found for key, found in self._prefixes.items()
                              if found[0] is not sums}
        layouts[self.params] = (self._buffer, self._sums, self._weights, self._starts,
                                self._table)

    @property
    def gradient_buffer(self):
        """Every parameter's gradient sum in one flat array (``gradient_sums`` are its
        views), then ``SPARE`` free elements."""
        complete(self.graph, self._sums)
        return self._buffer

    @property
    def gradient_sums(self):
        """The gradient sums accumulated since the last update, one ``(1, n)`` array per
        parameter, all views of the contiguous ``gradient_buffer`` (whose last ``SPARE``
        elements are free for a caller that ships the sums with a few more numbers, as
        ``fastgraph.distributed`` does with the sample count and the settings). Written in
        place by the engines; ``update()`` reads them. The compiled engine may keep the last few
        one-sample weight gradients aside and add them with one product
        (``kernels.blas.outer_staged``): reading the sums here (or ``gradient_buffer``,
        ``get_gradient``, ``update``) adds them first."""
        complete(self.graph, self._sums)
        return self._sums

    def zeros(self):
        """A state of the rule: zeros, one number per parameter number, flat (each
        parameter's numbers where its gradient sum is in ``gradient_buffer``)."""
        return aligned_zeros(self._buffer.size - SPARE, self.graph.dtype)

    def state(self, name, node):
        """The part of the state ``name`` (one of ``state_names``) that belongs to parameter
        ``node``, shaped like its value: a view, which the next update changes."""
        if name not in self.state_names:
            raise KeyError(f"{type(self).__name__} keeps no state {name!r}; its states: "
                           f"{', '.join(self.state_names) or 'none'}")
        if node not in self._index:
            raise KeyError(f"{getattr(node, 'name', node)} is not a parameter of this optimizer")
        start, size = self._starts[node]
        return getattr(self, name)[start:start + size].reshape(node.dim)

    def coefficients(self, *values):
        """The scalars of an update as one array in the parameters' dtype (see the kernels).
        ValueError, before the kernel runs, for one that the dtype cannot hold (NumPy would
        warn of an overflow in the cast and the kernel make every weight infinite): the
        rules' own are checked when their settings are set; a rule of one's own may make
        any."""
        if max(values) > self._largest or min(values) < -self._largest:  # (< 1 us an update)
            number, value = max(enumerate(values), key=lambda item: abs(item[1]))
            raise ValueError(
                f"{type(self).__name__}: coefficient {number} of the update is {value:g}, "
                f"which is infinite in {np.dtype(self.graph.dtype).name} (learning_rate "
                f"{self.learning_rate:g}): nothing was applied; give a smaller learning rate")
        self._coefficients[: len(values)] = values
        return self._coefficients

    #: The names of the flat arrays of state a rule keeps (besides the sums).
    state_names = ()
    #: The update kernel that ``apply`` calls (``kernels.optimizers``), with ``(table,
    #: gradient buffer, *states, coefficients)``: compiled ahead on an empty cache
    #: (``kernels.ahead``); None for a rule of one's own.
    rule = None

    def _update_calls(self):
        """The kernel calls of the first update (see ``kernels.ahead``)."""
        if self.rule is None:
            return []
        states = [getattr(self, name) for name in self.state_names]
        return [(self.rule.chosen(), (self._table, self._buffer, *states, self._coefficients),
                 None)]

    def _later_update_calls(self):
        """The calls of the first update on more threads, where the first runs on one
        (``kernels.optimizers.OnThreads``): what the thread chooser's first trial needs."""
        if self.rule is None or threads.most == 1 or self.rule.chosen() is self.rule.every_core:
            return []
        return [(self.rule.every_core, call[1], None) for call in self._update_calls()]

    def _follow_graph(self):
        """After a node was re-wired (the article's ``Welding``), the target may depend on
        other parameters, as the article's optimizer, which takes every trainable variable
        of the graph, sees them: take the new ones in with zero sums and state. A parameter
        that leaves keeps its state for when it comes back, as torch's optimizers, which
        keep state per parameter, do (the article's updates it all the same, with a zero
        gradient: README, "Where results may still differ"). If it leaves during an accumulation,
        it stays until the update, which applies the gradient it gathered before it left
        (as both do); the next ``one_step()`` lets it go."""
        self._check_not_removed()
        self._structure = self.graph._version
        reachable = self.graph.cached(("parameters", self.target), lambda: tuple(
            node for node in self.graph.tape(self.target).nodes
            if isinstance(node, Variable) and node.trainable))
        if not reachable:  # (the plan would say the target "depends on no sources")
            self._structure = None  # looked at again at the next step
            frozen = any(isinstance(node, Variable) and not node.is_input
                         for node in self.graph.tape(self.target).nodes)
            raise ValueError(f"{self.target.name} depends on no trainable Variable now: " + (
                "every parameter it reads is frozen (trainable=False); thaw one" if frozen
                else "it reads no parameter since a re-wiring (a Welding welded to a branch "
                "of inputs alone); weld it back to one that reads a parameter"))
        leaving = () if self.samples == 0 else tuple(
            param for param in self.params if param not in reachable)
        if leaving:
            self._structure = None  # let them go at the first one_step() after the update
        params = reachable + leaving
        if params != self.params:
            self._lay_out(params)
        if not leaving:
            self._stepped = (self.params, self._sums)
        else:  # one tuple of the sums' first ones, made once: the compiled passes are found by it
            prefix = self._prefixes.get((id(self._sums), len(reachable)))
            if prefix is None or prefix[0] is not self._sums:
                prefix = self._prefixes[(id(self._sums), len(reachable))] = (
                    self._sums, self._sums[:len(reachable)])
            self._stepped = (reachable, prefix[1])

    def _check_not_removed(self):
        if self.target.graph is not self.graph:
            raise RuntimeError(f"the target of this {type(self).__name__}, "
                               f"{self.target.name}, was removed from its graph by "
                               "Graph.clear(): make a new optimizer for the new model")

    def _lay_out(self, params):
        """Sums, table and states for ``params``, each parameter's kept."""
        complete(self.graph, self._sums)
        old, old_starts = self._index, self._starts
        previous = {param: self._sums[i] for param, i in old.items()}
        states = {name: getattr(self, name) for name in self.state_names}
        for param, (start, size) in old_starts.items():
            if param not in params and states:
                self._parked[param] = {name: state[start:start + size].copy()
                                       for name, state in states.items()}
        self._keep_layout()
        self._params = params
        self._sums = self._contiguous_sums(previous)
        self._index = {param: i for i, param in enumerate(params)}
        for name, before in states.items():  # each parameter's state moves to its new place
            after = self.zeros()
            for param, (start, size) in self._starts.items():
                if param in old_starts:
                    at = old_starts[param][0]
                    after[start:start + size] = before[at:at + size]
                elif param in self._parked:
                    after[start:start + size] = self._parked[param][name]
            setattr(self, name, after)
        for param in params:
            self._parked.pop(param, None)

    def one_step(self):
        """Forward and backward over the batch the inputs hold; add to the gradient sums."""
        graph = self.graph
        graph.claim("{}.one_step", type(self).__name__)
        try:
            if self._structure != graph._version:
                self._follow_graph()
            if self.samples == 0:
                self.threads.starting()  # (the step is timed from here to the update)
            params, sums = self._stepped
            self.samples += self._gradients(self.target, params, sums, self.samples == 0,
                                            self._passes)
        except KeyboardInterrupt:
            # A Ctrl-C lands where Python looks for one, mostly as the pass returns: its
            # batch may be in the sums and not in the count. The accumulation is dropped
            # (as discard() does): the next one_step() starts a new one.
            complete(graph, self._sums)
            self.samples = 0
            raise
        finally:
            graph.release()

    def get_gradient(self, node):
        """The mean gradient over the samples accumulated so far, shaped like ``node.value``."""
        if isinstance(node, str):  # a name where the node goes (the article keys some by name)
            raise TypeError(f"get_gradient takes the parameter node, got the str {node!r:.60}: "
                            f"give the node (graph.get_node({node!r:.60}))")
        if node not in self._index:
            raise KeyError(f"{getattr(node, 'name', node)} is not a parameter of this optimizer")
        graph = self.graph
        graph.claim("{}.get_gradient", type(self).__name__)  # not while another thread steps
        try:
            if self._structure != graph._version:  # (a clear() changed it)
                self._check_not_removed()
            if self.samples == 0:  # (checked holding the graph: another update may end one)
                raise RuntimeError("no gradient accumulated: call one_step() first")
            complete(graph, self._sums)
            return (self._sums[self._index[node]] / self.samples).reshape(node.dim)
        finally:
            graph.release()

    def update(self):
        """Apply the mean of the accumulated gradients, then start a new accumulation."""
        graph = self.graph
        graph.claim("{}.update", type(self).__name__)
        try:
            if self._structure != graph._version:  # (a clear() changed it)
                self._check_not_removed()
            if self.samples == 0:  # (checked holding the graph: another update may end one)
                raise RuntimeError("update() needs a gradient: call one_step() first")
            complete(self.graph, self._sums)
            # Counted and marked stale before the rule's kernels run, not after: a Ctrl-C
            # lands where Python looks for one, mostly as a kernel returns, and the
            # parameters must not then look not updated (a second update() applying the
            # same gradients again, values computed from the old ones read as current).
            # One landing in the few statements before the kernel drops the accumulation.
            self.steps += 1
            graph.invalidate(self.params, OUTDATED)
            try:
                self.apply(self._table, self._buffer, 1.0 / self.samples)
            except KeyboardInterrupt:
                self.samples = 0
                raise
            self.samples = 0
            self.threads.tick()
        finally:
            graph.release()

    def discard(self):
        """Drop the gradients accumulated since the last update, applying nothing: the next
        ``one_step()`` starts a new accumulation (the trainers call this when a batch's loss
        is not finite, so that a training started again does not apply it)."""
        graph = self.graph
        graph.claim("{}.discard", type(self).__name__)
        try:
            complete(graph, self._sums)  # (no staged addition is left to land later)
            self.samples = 0
        finally:
            graph.release()

    def apply(self, table, gradients, scale):
        """Update the parameters of ``table`` (rows of ``(address, start, size)``) in place
        from their gradient sums in ``gradients`` (flat) times ``scale``."""
        raise NotImplementedError


class GradientDescent(Optimizer):
    """Plain gradient descent as ``torch.optim.SGD``: w -= lr g (lr 0.01 unless given)."""

    rule = kernels.gradient_descent

    def __init__(self, graph, target, learning_rate=0.01, engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)

    def apply(self, table, gradients, scale):
        kernels.gradient_descent(table, gradients, self.coefficients(scale, self.learning_rate))


class Momentum(Optimizer):
    """Heavy-ball momentum as ``torch.optim.SGD(momentum=...)``: v = mu v + g; w -= lr v."""

    state_names = ("velocity",)
    settings = ("momentum",)
    momentum = _checked("momentum", _fraction_setting)
    velocity = _checked("velocity", _state_array)

    rule = kernels.momentum

    def __init__(self, graph, target, learning_rate=0.01, momentum=0.9, engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)
        self.momentum = _fraction("momentum", momentum)
        self.velocity = self.zeros()

    def apply(self, table, gradients, scale):
        kernels.momentum(table, gradients, self.velocity,
                         self.coefficients(scale, self.learning_rate, self.momentum))


class AdaGrad(Optimizer):
    """s += g^2; w -= lr g / (sqrt(s) + eps), as ``torch.optim.Adagrad``."""

    state_names = ("square_sum",)
    settings = ("eps",)
    eps = _checked("eps", _positive_setting)
    square_sum = _checked("square_sum", _state_array)

    rule = kernels.adagrad

    def __init__(self, graph, target, learning_rate=0.01, eps=1e-10, engine="vjp"):
        super().__init__(graph, target, learning_rate, engine)
        self.eps = checks.positive_number("eps", eps, graph.dtype)
        self.square_sum = self.zeros()

    def apply(self, table, gradients, scale):
        kernels.adagrad(table, gradients, self.square_sum,
                        self.coefficients(scale, self.learning_rate, self.eps))


class RMSProp(Optimizer):
    """s = beta s + (1 - beta) g^2; w -= lr g / (sqrt(s) + eps), as ``torch.optim.RMSprop``
    (beta 0.99, eps 1e-8 unless given).

    ``conventions="article"`` gives the article's RMSProp instead: a parameter's s starts at
    its first g^2, w -= lr g / sqrt(s + eps), beta 0.9 and eps 1e-10 unless given. None
    takes the graph's ``conventions`` (see ``fastgraph.Graph``): torch's for a ``Graph()``,
    the article's for the module-level default graph, where the article's programs build.
    """

    state_names = ("square_avg",)
    settings = ("beta", "conventions", "eps")
    beta = _checked("beta", _fraction_setting)
    eps = _checked("eps", _positive_setting)
    conventions = _checked("conventions", _conventions_setting)
    square_avg = _checked("square_avg", _state_array)
    DEFAULTS = {"torch": {"beta": 0.99, "eps": 1e-8}, "article": {"beta": 0.9, "eps": 1e-10}}

    rule = kernels.rmsprop

    def __init__(self, graph, target, learning_rate=0.01, beta=None, eps=None, engine="vjp",
                 conventions=None):
        super().__init__(graph, target, learning_rate, engine)
        self.conventions = _conventions(graph, conventions)
        defaults = self.DEFAULTS[self.conventions]
        self.beta = _fraction("beta", defaults["beta"] if beta is None else beta)
        self.eps = checks.positive_number("eps", defaults["eps"] if eps is None else eps,
                                          graph.dtype)
        self.square_avg = self.zeros()
        self._started = set()  # parameters updated at least once (see _first_updates)

    def apply(self, table, gradients, scale):
        article = self.conventions == "article"
        outside, inside = (0.0, self.eps) if article else (self.eps, 0.0)
        with _whole(groups := _first_updates(self, article, table)):
            for first, rows in groups:
                beta = 0.0 if first else self.beta  # first: s = g^2
                kernels.rmsprop(rows, gradients, self.square_avg, self.coefficients(
                    scale, self.learning_rate, beta, 1.0 - beta, outside, inside))


class _ByConventions:
    """A default that the optimizer's conventions decide (None would be an error)."""

    def __repr__(self):
        return "<by conventions>"


_BY_CONVENTIONS = _ByConventions()


class Adam(Optimizer):
    """Adam with bias correction, eps outside the square root, as ``torch.optim.Adam``
    (learning rate 0.001, beta_1 0.9, beta_2 0.999, eps 1e-8 unless given).

    ``conventions="article"`` gives the article's Adam instead: a parameter's m and v start
    at its first g and g^2, no bias correction, w -= lr m / sqrt(v + eps), learning rate
    0.01, beta_1 0.9, beta_2 0.99 and eps 1e-10 unless given. None takes the graph's
    ``conventions``, as for ``RMSProp``.
    """

    state_names = ("m", "v")
    settings = ("beta_1", "beta_2", "conventions", "eps")
    beta_1 = _checked("beta_1", _fraction_setting)
    beta_2 = _checked("beta_2", _fraction_setting)
    eps = _checked("eps", _positive_setting)
    conventions = _checked("conventions", _conventions_setting)
    m = _checked("m", _state_array)
    v = _checked("v", _state_array)
    DEFAULTS = {"torch": {"learning_rate": 0.001, "beta_2": 0.999, "eps": 1e-8},
                "article": {"learning_rate": 0.01, "beta_2": 0.99, "eps": 1e-10}}

    rule = kernels.adam

    def __init__(self, graph, target, learning_rate=_BY_CONVENTIONS, beta_1=0.9, beta_2=None,
                 eps=None, engine="vjp", conventions=None):
        conventions = _conventions(graph, conventions)
        defaults = self.DEFAULTS[conventions]
        super().__init__(graph, target, defaults["learning_rate"]
                         if learning_rate is _BY_CONVENTIONS else learning_rate, engine)
        self.conventions = conventions
        self.beta_1 = _fraction("beta_1", beta_1)
        self.beta_2 = _fraction("beta_2", defaults["beta_2"] if beta_2 is None else beta_2)
        self.eps = checks.positive_number("eps", defaults["eps"] if eps is None else eps,
                                          graph.dtype)
        self.m = self.zeros()
        self.v = self.zeros()
        self._started = set()  # parameters updated at least once (see _first_updates)
        self._updates = {}  # parameter -> its updates so far (see _steps_of)

    def _rate_factor(self):
        # (while the constructor sets the learning rate, before the settings: checked as
        # each is set)
        if getattr(self, "_conventions", "article") == "article" or not hasattr(self, "_beta_1"):
            return 1.0, "", "lr"
        return 1.0 / (1.0 - self._beta_1), f" with beta_1 {self._beta_1!r}", "lr / (1 - beta_1)"

    def apply(self, table, gradients, scale):
        if self.conventions == "article":
            with _whole(groups := _first_updates(self, True, table)):
                for first, rows in groups:
                    beta_1, beta_2 = (0.0, 0.0) if first else (self.beta_1, self.beta_2)
                    kernels.adam(rows, gradients, self.m, self.v, self.coefficients(
                        scale, self.learning_rate, beta_1, 1.0 - beta_1, beta_2,
                        1.0 - beta_2, 1.0, 0.0, self.eps))
            return
        with _whole(groups := _steps_of(self, table)):
            for t, rows in groups:
                kernels.adam(rows, gradients, self.m, self.v, self.coefficients(
                    scale, self.learning_rate / (1.0 - self.beta_1**t), self.beta_1,
                    1.0 - self.beta_1, self.beta_2, 1.0 - self.beta_2,
                    1.0 / math.sqrt(1.0 - self.beta_2**t), self.eps, 0.0))


def _whole(groups):
    """Around an update's kernels: when it runs more than one (parameters at different
    counts), a Ctrl-C meanwhile waits until all have run (``files.interrupts_deferred``),
    so that an update is never half applied; one kernel needs nothing (it runs whole)."""
    if len(groups) < 2:
        return contextlib.nullcontext()
    from .files import interrupts_deferred  # (loaded when first needed)

    return interrupts_deferred()


def _conventions(graph, conventions):
    if conventions is None:
        return getattr(graph, "conventions", "torch")  # not a Graph: the base class says so
    if conventions not in CONVENTIONS:
        raise ValueError(f"conventions must be one of {', '.join(map(repr, CONVENTIONS))}, "
                         f"got {conventions!r}")
    return conventions


def _steps_of(optimizer, table):
    """Torch's Adam counts each parameter's own updates for its bias correction (a parameter
    that joins later, brought by a re-wiring or thawed, starts at 1, or goes on from its own
    count if it was updated before it was frozen): ``(t, rows)`` pairs,
    the rows of the update's ``table`` whose parameters are at their ``t``-th update (one
    pair, all the rows, unless some joined later)."""
    counts = optimizer._updates
    params = optimizer.params
    for param in params:
        counts[param] = counts.get(param, 0) + 1
    first = counts[params[0]]
    if all(counts[param] == first for param in params):
        return [(first, table)]
    by_count = {}
    for row, param in enumerate(params):
        by_count.setdefault(counts[param], []).append(row)
    return [(t, table[rows]) for t, rows in by_count.items()]


def _first_updates(optimizer, article, table):
    """The article's rules start a parameter's state at its first gradient (it may join
    later, when a re-wired node brings it). Returns ``(first, rows)`` pairs: the rows of the
    update's ``table`` of the parameters updated for the first time, and those of the
    others. Under torch's rules: every row, never first (state starts at 0)."""
    if not article:
        return [(False, table)]
    params = optimizer.params
    fresh = [i for i, param in enumerate(params) if param not in optimizer._started]
    optimizer._started.update(params)
    if not fresh:
        return [(False, table)]
    if len(fresh) == len(params):
        return [(True, table)]
    rest = sorted(set(range(len(params))) - set(fresh))
    return [(True, table[fresh]), (False, table[rest])]


def _fraction(name, value):
    return checks.fraction(name, value)
