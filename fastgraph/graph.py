"""The graph: it holds the nodes, names them, and keeps the tapes that replace recursion.

A *tape* is the list of a node's ancestors in topological order (parents before children),
built once by an iterative depth-first search and cached until a node is added to the graph.
A *plan* is the backward half of a tape: the nodes that lie on some path from a set of
sources (trainable variables, or a node asked for its Jacobian) to a target, in reverse
order, each with the parent slots through which a gradient has to flow. Both engines walk
the same plans, so neither recurses and neither knows an operator by name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

# A node's state. Forward computes every node whose state is not COMPUTED (which is 0).
COMPUTED = 0
OUTDATED = 1  # a parameter it depends on changed: the old value stays readable until then
EMPTY = 2  # never computed, or an input changed: ``value`` is None, as in the article

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Graph:
    """A computational graph: the nodes, their dtype, and the cached tapes.

    ``with Graph() as g:`` makes ``g`` the default graph inside the block, so nodes built
    there without ``graph=`` land in it. ``dtype`` is float32 by default; float64 is for
    checks that need the precision. ``seed`` seeds the generator that initialises weights.
    """

    def __init__(self, dtype=np.float32, seed=None):
        self.dtype = np.dtype(dtype)
        if self.dtype not in _SUPPORTED_DTYPES:
            raise ValueError(f"Graph dtype must be float32 or float64, got {self.dtype}")
        self.nodes = []
        self.rng = np.random.default_rng(seed)
        self._names = {}
        self._version = 0
        self._tapes = {}
        self._plans = {}
        self._descendants = {}
        self._gradient_holders = []
        # During a per-sample pass, operators keep the batch axis of the gradients of
        # parents that have none (see Operator.unbroadcast) instead of summing over it.
        self.per_sample = False

    # -- membership ---------------------------------------------------------------------
    def add_node(self, node, name=None):
        """Register ``node`` and return its unique name (``scope/Class:index`` by default)."""
        if name is None:
            name = f"{type(node).__name__}:{self.node_count()}"
        name = _scoped(name)
        if name in self._names:
            raise ValueError(f"a node named {name!r} already exists in this graph")
        self._names[name] = node
        self.nodes.append(node)
        self._version += 1
        return name

    def node_count(self):
        return len(self.nodes)

    def get_node(self, name):
        try:
            return self._names[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in this graph") from None

    # -- the article's housekeeping ------------------------------------------------------
    def clear_jacobi(self):
        for node in self.nodes:
            node.jacobi = None

    def reset_value(self):
        """Forget every computed value (inputs and parameters keep theirs)."""
        for node in self.nodes:
            if node.parents:
                node.state = EMPTY

    # -- gradients held by reference ----------------------------------------------------
    def hold_gradients(self, holder):
        """``holder`` reads gradient buffers of the last backward pass without copying them;
        before the next pass overwrites them, ``holder.release_gradients()`` is called."""
        self._gradient_holders.append(holder)

    def drop_gradients(self, holder):
        """``holder`` no longer reads the gradient buffers."""
        self._gradient_holders.remove(holder)

    def release_gradients(self):
        """Called by a backward pass before it writes: holders copy what they still need."""
        while self._gradient_holders:
            self._gradient_holders.pop().release_gradients()

    # -- tapes and plans -----------------------------------------------------------------
    def tape(self, target):
        """The :class:`Tape` of ``target`` (cached until the graph changes)."""
        cached = self._tapes.get(target)
        if cached is None or cached[0] != self._version:
            cached = (self._version, Tape(target))
            self._tapes[target] = cached
        return cached[1]

    def plan(self, target, sources):
        """The backward plan from ``target`` down to ``sources`` (see :class:`Plan`)."""
        key = (target, sources if isinstance(sources, tuple) else tuple(sources))
        cached = self._plans.get(key)
        if cached is None or cached[0] != self._version:
            cached = (self._version, Plan.build(self.tape(target).nodes, target, sources))
            self._plans[key] = cached
        return cached[1]

    def downstream(self, nodes):
        """Every node that depends on any of ``nodes`` (a tuple), each once (cached)."""
        key = nodes
        cached = self._descendants.get(key)
        if cached is None or cached[0] != self._version:
            union = {}
            for node in nodes:
                union.update(dict.fromkeys(self.descendants(node)))
            cached = (self._version, list(union))
            self._descendants[key] = cached
        return cached[1]

    def descendants(self, node):
        """Every node that depends on ``node`` (cached; used to invalidate values)."""
        cached = self._descendants.get(node)
        if cached is None or cached[0] != self._version:
            seen, stack, order = {node}, [node], []
            while stack:
                for child in stack.pop().children:
                    if child not in seen:
                        seen.add(child)
                        order.append(child)
                        stack.append(child)
            cached = (self._version, order)
            self._descendants[node] = cached
        return cached[1]

    # -- default graph -------------------------------------------------------------------
    def __enter__(self):
        _default_stack.append(self)
        return self

    def __exit__(self, *exc):
        _default_stack.remove(self)

    def __repr__(self):
        return f"Graph({self.node_count()} nodes, dtype={self.dtype.name})"


def _topological_order(target):
    order, done, stack = [], set(), [(target, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if node in done:
            continue
        done.add(node)
        stack.append((node, True))
        stack.extend((parent, False) for parent in reversed(node.parents) if parent not in done)
    return order


class Tape:
    """``target`` and its ancestors in topological order, and the inputs among them."""

    def __init__(self, target):
        self.target = target
        self.nodes = _topological_order(target)
        self.inputs = [node for node in self.nodes if node.is_input]

    def batch_size(self):
        """The batch size of the inputs on this tape (None when there are none)."""
        size = None
        for node in self.inputs:  # the fast path: every input set, all of one size
            flat = node.flat
            if flat is None or (size is not None and flat.shape[0] != size):
                self._explain_batch_sizes()
            size = flat.shape[0]
        return size

    def _explain_batch_sizes(self):
        sizes = {}
        for node in self.inputs:
            if node.batch_size is None:
                raise ValueError(
                    f"{node.name} has no value: call {node.name}.set_value() before computing "
                    f"{self.target.name}"
                )
            sizes[node.name] = node.batch_size
        if len(set(sizes.values())) > 1:
            held = ", ".join(f"{name} holds {size}" for name, size in sizes.items())
            raise ValueError(f"the inputs of {self.target.name} disagree on the batch size: {held}")

    @contextlib.contextmanager
    def feeding(self):
        """Let a pass give the inputs other rows: yields ``feed(rows)``, where ``rows`` maps
        an input's ``(B, features)`` batch to the rows to use; restores the batch after."""
        saved = [(node, node.flat) for node in self.inputs]

        def feed(rows):
            for node, flat in saved:
                node.set_value(rows(flat).reshape(-1, *node.dim))

        try:
            yield feed
        finally:
            for node, flat in saved:
                node.set_value(flat.reshape(-1, *node.dim))

    def forward(self):
        """Compute every node on the tape that is not up to date, parents first.

        Returns the batch size of the inputs (None when the tape has none).
        """
        batch_size = self.batch_size()
        for node in self.nodes:
            if node.state:
                node.compute()
                node.state = COMPUTED
        return batch_size


@dataclass
class Plan:
    """What a backward pass from ``target`` to ``sources`` visits.

    ``nodes``: every node on a path from a source to the target (their gradients or
    Jacobians are cleared before a pass). ``steps``: in reverse topological order, each node
    that passes something back, with the ``(slot, parent)`` pairs that receive it; a parent
    that appears in two slots receives two contributions.
    """

    nodes: list
    steps: list

    @classmethod
    def build(cls, tape, target, sources):
        on_path = set(sources)
        for node in tape:
            if any(parent in on_path for parent in node.parents):
                on_path.add(node)
        if target not in on_path:
            names = ", ".join(source.name for source in sources) or "no sources"
            raise ValueError(f"{target.name} does not depend on {names}")
        nodes = [node for node in tape if node in on_path]
        steps = []
        for node in reversed(nodes):
            slots = [(i, parent) for i, parent in enumerate(node.parents) if parent in on_path]
            if slots:
                steps.append((node, slots))
        return cls(nodes, steps)


# -- the default graph and name scopes ------------------------------------------------------
_default_stack = [Graph()]
_scope_stack = []


def get_default_graph():
    """The graph that nodes built without ``graph=`` join."""
    return _default_stack[-1]


def get_node_from_graph(name, graph=None):
    """The node called ``name`` in ``graph`` (default: the default graph), or KeyError."""
    return (graph or get_default_graph()).get_node(name)


@contextlib.contextmanager
def name_scope(scope):
    """Prefix the names of nodes built inside the block: ``hidden/MatMul:3``."""
    _scope_stack.append(scope)
    try:
        yield
    finally:
        _scope_stack.pop()


def _scoped(name):
    return "/".join([*_scope_stack, name])
