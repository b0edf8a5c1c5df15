"""The graph: it holds the nodes, names them, and keeps the tapes that replace recursion.

A *tape* is the list of a node's ancestors in topological order (parents before children),
built once by an iterative depth-first search and cached until the graph changes (a node
added, or re-wired by ``Welding``). A *plan* is the backward half of a tape: the nodes that
lie on some path from a set of sources (trainable variables, or a node asked for its
Jacobian) to a target, in reverse order, each with the parent slots through which a
gradient has to flow and whether it arrives summed over the batch. The engines walk the
same plans (``fastgraph.engines``), so none recurses and none knows an operator by name.

Every node's state lives in one array of the graph (``Graph.states``), so that invalidating
what depends on an input is one compiled call and a compiled pass can read and set states
without Python. An input given one sample into the one it holds (the article's per-sample
loop, dozens of inputs a sample for a recurrent network) only notes that it was fed: the
graph marks what depends on every input fed since in one call (``Graph.settle``) before
anything reads or changes a state.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from .kernels.elementwise import raise_states, settle_fed
from .kernels.program import located
from .threads import threads

# A node's state. Forward computes every node whose state is not COMPUTED (which is 0).
COMPUTED = 0
OUTDATED = 1  # a parameter it depends on changed: the old value stays readable until then
EMPTY = 2  # never computed, or an input changed: ``value`` is None, as in the article

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Whose rules a graph follows where fastgraph's and the article's differ: torch.optim's
#: RMSProp and Adam and a plain ReLU in layers, or the article's (see ``Graph``).
CONVENTIONS = ("torch", "article")

#: How many tapes, plans and compiled programs a graph keeps (least recently used go first):
#: enough for every target a training loop uses, bounded for a loop over many targets.
CACHE_SIZE = 256
WIRINGS_KEPT = 4096  # wirings and frozen sets numbered before the numbering starts over


class Cache(OrderedDict):
    """Tapes, plans and compiled passes by key, least recently used first; ``checked``: the
    graph's count of dropped buffers when its passes were last looked over for ones that
    can no longer run (``engines.compiled``)."""

    checked = -1


class ReadOnlyList(list):
    """A graph's list of nodes, or a node's parents or children: read like a list, changed
    only by the graph (its own edits go through ``list``'s methods). Changing one by hand
    left the graph's states, caches and compiled passes stale: wrong values, no error."""

    __slots__ = ("owner", "kind")

    #: What to do instead, by kind.
    INSTEAD = {
        "nodes": "build nodes into the graph, or start over with graph.clear()",
        "parents": "re-wire the node with graph.rewire(node, parents) (a Welding's weld())",
        "children": "build a node on it, or re-wire one with graph.rewire(node, parents)",
    }

    def __init__(self, items, owner, kind):
        super().__init__(items)
        self.owner, self.kind = owner, kind

    def _refuse(self, *args, **kwargs):
        owner = "Graph.nodes" if self.kind == "nodes" else \
            f"the {self.kind} of {getattr(self.owner, 'name', self.owner)}"
        raise TypeError(f"{owner} are changed only by the graph; {self.INSTEAD[self.kind]}")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self):
        return list, (list(self),)


class _Nodes(ReadOnlyList):
    """``Graph.nodes``: ``clear()`` is the article's way to start over (MatrixSlow's
    programs call ``default_graph.nodes.clear()``): it is ``Graph.clear()``."""

    __slots__ = ()

    def clear(self):
        self.owner.clear()


def _set_nodes(graph, value):
    """``graph.nodes = []`` is ``clear()``; nothing else may be assigned."""
    if isinstance(value, (list, tuple)) and not value:
        graph.clear()
    else:
        raise TypeError("Graph.nodes is changed only by the graph: build nodes into it, or "
                        "start over with graph.clear() (graph.nodes = [] does the same)")


def _set_dtype(graph, dtype):
    """A graph's dtype is given when it is made: its nodes' buffers and compiled passes
    are of it (assigned later, products met two dtypes: a gemm error)."""
    if hasattr(graph, "_dtype"):
        raise AttributeError("Graph.dtype is fixed when the graph is made (its nodes' "
                             "buffers and compiled passes are of it): make a Graph(dtype=...)")
    graph._dtype = dtype


def _set_conventions(graph, conventions):
    """Which rules the graph follows where the article's and torch's differ: checked when
    set (later too: "Article" made optimizers fail with a KeyError, and layer.fc quietly
    take torch's weights)."""
    if conventions not in CONVENTIONS:
        raise ValueError(f"Graph conventions must be one of "
                         f"{', '.join(map(repr, CONVENTIONS))}, got {conventions!r}")
    graph._conventions = conventions


class _Detached:
    """The ``graph`` of a node that ``Graph.clear()`` removed: any use of the node says so,
    where it used to share a state slot and a name with the nodes built after."""

    __slots__ = ("removed", "__weakref__")

    def __init__(self, name):
        self.removed = name

    def __getattr__(self, attribute):
        self.refuse()

    def refuse(self):
        raise RuntimeError(f"{self.removed} was removed from its graph by Graph.clear(): "
                           "build it again")


def refuse_removed(node):
    """Raise :class:`_Detached`'s RuntimeError when ``node`` is one that ``Graph.clear()``
    removed (a use of it that would otherwise be told it belongs to another graph)."""
    graph = getattr(node, "graph", None)
    if isinstance(graph, _Detached):
        graph.refuse()


class GraphInUse(RuntimeError):
    """A thread used a graph (fed, computed, updated, saved or loaded it) while another
    thread was doing so (see :meth:`Graph.claim`)."""


class Graph:
    """A computational graph: the nodes, their dtype, and the cached tapes.

    ``with Graph() as g:`` makes ``g`` the default graph inside the block, so nodes built
    there without ``graph=`` land in it. ``dtype`` is float32 by default; float64 is for
    checks that need the precision. ``seed`` seeds the generator that initialises weights.
    ``conventions``: where fastgraph's rules differ from the article's, which this graph
    follows: "torch" (``torch.optim``'s RMSProp and Adam, a plain ReLU in ``layer.fc`` and
    ``layer.conv``) or "article" (the article's RMSProp and Adam, its leaky ReLU in those
    layers). A ``Graph()`` follows torch's; the module-level default graph, in which the
    article's programs build (they make no graph of their own), follows the article's.
    """

    nodes = property(attrgetter("_nodes"), _set_nodes)
    dtype = property(attrgetter("_dtype"), _set_dtype)
    conventions = property(attrgetter("_conventions"), _set_conventions)

    def __init__(self, dtype=np.float32, seed=None, conventions="torch"):
        try:  # np.dtype(None) is float64 (and equals it): None is refused, not a default
            checked = None if dtype is None else np.dtype(dtype)
        except (TypeError, ValueError):
            checked = None
        if checked is None or checked not in _SUPPORTED_DTYPES:
            got = dtype if checked is None else checked
            raise ValueError(f"Graph dtype must be float32 or float64, got {got}")
        self.dtype = checked
        self.conventions = conventions
        self._nodes = _Nodes((), self, "nodes")
        try:
            if isinstance(seed, (bool, np.bool_)):  # True is 1 to NumPy
                raise TypeError("a bool")
            self.rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as error:  # NumPy's words name no seed
            raise ValueError(f"Graph seed must be None or a non-negative integer, got "
                             f"{seed!r} ({error})") from None
        self._states = np.empty(16, np.int8)  # node.index -> COMPUTED, OUTDATED or EMPTY
        # Per node, one row each (one array: settle() is one compiled call of few arguments):
        # the pass that computed it, whether it is an input fed on the short path since the
        # last settle() (``Variable.set_value``: one sample into an input that holds one),
        # and settle()'s scratch (the nodes it reached, its stack).
        self._table = np.zeros((4, 16), np.int64)
        self._computed, self._fed = self._table[0], self._table[1]
        self.passes = 1  # counts passes that compute values (see mark_computed)
        self.unsettled = False  # an input was fed on the short path since the last settle()
        self._edges = {}  # graph version -> every node's children (see settle)
        self._settling = _NOT_SETTLED  # what settle() last used (see there)
        self.layout = 0  # counts reallocated buffers: compiled passes recorded the old ones
        _GRAPHS.add(self)  # (a forked child records every graph's passes again)
        self._names = {}
        # What cached tapes, plans and passes are valid for: the nodes added so far, and the
        # parents of every re-wired node. A wiring seen before finds its passes again (the
        # article's RNN welds its output to one of a few dozen time steps, sample by sample).
        self._wiring = {}  # node index -> parent indices, for re-wired nodes
        self._frozen = set()  # the indices of frozen parameters (trainable set to False)
        # The version: (nodes added, the number of the wiring and frozen set), those numbered
        # as first seen, so that the version is hashed and compared in constant time (it
        # keys the caches every step looks in). A state seen before finds its passes again:
        # the article's RNN welds its output to one of a few dozen time steps, sample by
        # sample, and a GAN freezes one half of the network and thaws it, step by step.
        self._wirings = {((), ()): 0}
        self._changes = 0  # nodes added, clear()s: never repeats
        self._version = (0, 0)
        self._cache = Cache()  # ((kind, *key), version) -> value
        self.training_passes = Cache()  # an engine caller's passes, when it keeps none
        # {inputs: (block, indices, layout, version, downstream)} of ``feed.set_values``: on
        # the graph, whose nodes the keys are (a process-wide weak dictionary kept them alive)
        self.feed_blocks = {}
        self.dropped = 0  # buffers that nodes stopped keeping (Node._take): passes died
        self._downstream = {}  # (nodes, itself) -> (version, indices), see invalidate
        self._reach = {}  # (node, version) -> its index and its followers' (see rewire)
        self._same_indices = {}  # an input's downstream indices, one array per content
        self._user = threading.RLock()  # held by the thread inside a pass, update or feed
        self.claims = 0  # how deep that thread's claims are (0: no thread holds the graph)
        self.deferred = {}  # compiled passes whose additions wait (engines.compiled), in order

    # -- membership ---------------------------------------------------------------------
    def add_node(self, node, name=None):
        """Register ``node`` and return its unique name (``scope/Class:index`` by default),
        holding the graph (a node added under another thread's pass would change its
        arrays under it)."""
        self.claim("adding {}", type(node).__name__)
        try:
            return self._add_node(node, name)
        finally:
            self.release()

    def _add_node(self, node, name):
        if getattr(node, "index", None) is not None:  # already a member (of this graph?)
            where = "this graph" if node.graph is self else "another graph"
            raise ValueError(f"add_node: {node.name} is a node of {where} already (a node "
                             "joins the graph it is built in, once)")
        if self.unsettled:  # before the edges change
            self.settle()
        if name is None:  # the next free "Class:count" (a user may have taken one)
            count = self.node_count()
            name = _scoped(f"{type(node).__name__}:{count}")
            while name in self._names:
                count += 1
                name = _scoped(f"{type(node).__name__}:{count}")
        elif not isinstance(name, str):
            raise TypeError(f"a node's name must be a string, got {name!r}")
        else:
            name = _checked_name(_scoped(name), self)
        self._names[name] = node
        node.index = len(self._nodes)
        if node.index == len(self._states):
            self._states = np.concatenate([self._states, np.empty_like(self._states)])
            self._table = np.concatenate([self._table, np.zeros_like(self._table)], axis=1)
            self._computed, self._fed = self._table[0], self._table[1]
        self._states[node.index] = EMPTY
        list.append(self._nodes, node)
        self._changed()
        return name

    def _changed(self):
        """A new version of the graph that no earlier one had (a node added, a clear()):
        every cached tape, plan and pass is rebuilt."""
        self._changes += 1
        self._version = (self._changes, self._version[1])

    def _restamp(self):
        """The version after a re-wiring or a parameter frozen or thawed: the number of
        this wiring and frozen set, the same as when they were last seen (unless so many
        were seen that the numbering started over, under a new version)."""
        self._version = self._stamp(self._wiring)

    def _stamp(self, wiring):
        """The version of the wiring ``wiring`` (node index -> its parents' indices) with
        the present frozen set (see ``_restamp``)."""
        key = (tuple(sorted(wiring.items())), tuple(sorted(self._frozen)))
        if key not in self._wirings and len(self._wirings) >= WIRINGS_KEPT:
            self._wirings = {key: 0}
            self._changes += 1
        return (self._changes, self._wirings.setdefault(key, len(self._wirings)))

    def freeze(self, node, frozen):
        """Note that the parameter ``node`` is frozen (or thawed): its optimizers leave it
        from their next step on (``Variable.trainable`` calls this)."""
        self.claim("{}.trainable", node.name)
        try:
            node._trainable = not frozen
            (self._frozen.add if frozen else self._frozen.discard)(node.index)
            self._restamp()
        finally:
            self.release()

    def rename(self, node, name):
        """Give ``node`` the name ``name`` (``node.name = name`` does this): refused if
        another node has it."""
        self.claim("renaming {}", node.name)
        try:
            name = _checked_name(name, self, node)
            del self._names[node.name]
            self._names[name] = node
            return name
        finally:
            self.release()

    def clear(self):
        """Start over: remove every node (``graph.nodes.clear()``, as the article's programs
        write it). The removed nodes say so if used again; an optimizer of them too."""
        self.claim("clear")
        try:
            for compiled_pass in list(self.deferred):  # the optimizers' sums, whole: they
                compiled_pass.complete()  # may still be read (gradient_buffer)
            for node in self._nodes:
                node._graph = _Detached(node.name)
            list.clear(self._nodes)
            self._names.clear()
            self._wiring.clear()
            self._frozen.clear()
            self._wirings = {((), ()): 0}
            for cache in (self._edges, self._cache, self._downstream, self._reach,
                          self._same_indices, self.deferred, self.training_passes,
                          self.feed_blocks):
                cache.clear()
            self._settling = _NOT_SETTLED
            self.unsettled = False  # the inputs' notes of one-sample feeds go too: a new
            self._table[:] = 0  # node at a fed index was marked computed by the next settle
            self.layout += 1
            self._changed()
            self._version = (self._changes, 0)  # the number of ((), ()) in the new numbering
        finally:
            self.release()

    def node_count(self):
        return len(self.nodes)

    def get_node(self, name):
        if not isinstance(name, str):
            raise TypeError(f"a node's name is a string, got {type(name).__name__} {name!r:.60}")
        try:
            return self._names[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in this graph") from None

    def rewire(self, node, parents, caller="rewire"):
        """Give ``node`` new ``parents`` (the article's ``Welding``): the child lists follow,
        and every tape, plan and compiled program that could contain the old edges is
        rebuilt when next used.

        Refused with a ValueError (a TypeError for what is not a node, or a count of
        parents the operator does not take), before anything changes: a leaf (an input or
        a parameter takes no parents), a parent without a shape yet, a parent that
        depends on ``node`` (a cycle), parents whose shapes ``node.infer_dim()`` rejects,
        and a new shape or batch axis for a node that others are built on. ``caller``
        names the call in the messages (``Welding.weld`` passes "weld")."""
        self.claim("{}", caller)
        try:
            self._rewire(node, parents, caller)
        finally:
            self.release()

    def _rewire(self, node, parents, caller):
        if isinstance(parents, (str, bytes)) or not hasattr(parents, "__iter__"):
            raise TypeError(f"{caller}: the parents of {getattr(node, 'name', node)} must be a "
                            f"list of nodes, got {type(parents).__name__}")
        parents = list(parents)
        self._check_rewiring(node, parents, caller)
        old = node.parents
        node._parents = _parents_of(node, parents)  # what infer_dim() reads: put back unless
        # it all fits
        try:
            try:
                dim = node.infer_dim()
            except ValueError as error:  # the operator's words: which shapes do not fit
                names = ", ".join(parent.name for parent in parents)
                raise ValueError(f"{caller}: {node.name} cannot take {names}: {error}") \
                    from None
            batched = any([parent.batched for parent in parents])
            if node.children and (dim != node.dim or batched != node.batched):
                raise ValueError(_changes_followers(node, parents, dim, batched, caller))
        except BaseException:
            node._parents = old
            raise
        new, node._parents = node._parents, old
        # The changes, in an order that a Ctrl-C (Python raises it where it looks for one:
        # as a call returns, as a function starts) can stop at any point of: the values
        # made stale first; each parent's children made right whatever they hold, so that
        # the same weld again repairs a stopped one; then the wiring, its version and the
        # node's own facts, in plain stores that no such point separates.
        if self.unsettled:  # the inputs fed so far, along the edges they were fed with
            self.settle()
        self.invalidate([node], EMPTY, itself=True)  # (its downstream: the same either way)
        for parent in old:  # as many times in each list as it is a parent (nodes compare
            if list.count(parent.children, node) > new.count(parent):  # by identity)
                list.remove(parent.children, node)
        for parent in new:
            if list.count(parent.children, node) < new.count(parent):
                list.append(parent.children, node)
        if dim != node.dim and node.flat is not None:  # its buffer has the old width
            self.layout += 1  # (first: passes look again at their buffers)
            node._drop_buffers()
        source = None  # the parent whose batch size its value takes
        for parent in parents:
            if parent.batched:
                source = parent
                break
        wiring = tuple([parent.index for parent in parents])
        version = self._stamp({**self._wiring, node.index: wiring})
        node._parents = new
        self._wiring[node.index] = wiring
        self._version = version
        node.batched = batched
        node._batch_source = source
        node._node_dim = dim

    def _check_rewiring(self, node, parents, caller):
        """Raise unless ``node`` may take ``parents`` (see ``rewire``); changes nothing."""
        if getattr(node, "graph", None) is not self:
            if not hasattr(node, "parents"):
                raise TypeError(f"{caller}: expected a node to re-wire, got "
                                f"{type(node).__name__}")
            refuse_removed(node)
            raise ValueError(f"{caller}: {node.name} belongs to another graph")
        from .node import Variable  # (node imports graph)

        if isinstance(node, Variable):  # a parameter, frozen or not, or an input
            kind = "an input" if node.is_input else "a parameter"
            raise ValueError(f"{caller}: {node.name} is {kind} and takes no parents; "
                             "re-wire an operator or a Welding")
        arity = getattr(node, "arity", None)
        if (arity is not None and len(parents) != arity) or not parents:
            expected = f"{arity} parent node(s)" if arity is not None else "parent nodes"
            raise TypeError(f"{caller}: {node.name} takes {expected}, got {len(parents)}")
        key = (node, self._version)
        reach = self._reach.get(key)
        if reach is None:
            if len(self._reach) >= CACHE_SIZE:
                self._reach.clear()
            # The walk that invalidating the node after the last re-wiring kept.
            reach = frozenset(self.downstream_indices(node, itself=True).tolist())
            self._reach[key] = reach
        for parent in parents:
            if getattr(parent, "graph", None) is not self:
                if not hasattr(parent, "parents"):
                    raise TypeError(f"{caller}: {node.name} takes nodes as parents, got "
                                    f"{type(parent).__name__}")
                refuse_removed(parent)
                raise ValueError(f"{parent.name} belongs to another graph than {node.name}")
            if parent.dim is None:
                raise ValueError(f"{caller}: {node.name} cannot take {parent.name}, which has "
                                 f"no shape yet: give {type(parent).__name__}(dim=...) or "
                                 "weld it first")
            if parent.index in reach:
                cycle = " -> ".join(n.name for n in [*_path(node, parent), node])
                taken = "itself" if parent is node else f"{parent.name}, which depends on it"
                raise ValueError(f"{caller}: {node.name} cannot take {taken}: {cycle} would "
                                 "be a cycle")

    # -- states --------------------------------------------------------------------------
    @property
    def states(self):
        """node.index -> COMPUTED, OUTDATED or EMPTY (an int8 array that compiled passes
        read and write), with what the inputs fed on the short path owe done first."""
        if self.unsettled:
            self.settle()
        return self._states

    @property
    def computed(self):
        """node.index -> the pass that last computed (or set) the node's value."""
        if self.unsettled:
            self.settle()
        return self._computed

    def settle(self):
        """Finish the settings of the inputs fed one sample each on the short path since
        the last call (``Variable.set_value``): mark them set by a new pass and everything
        downstream of any of them EMPTY, as each ``set_value`` would have, in one compiled
        call that reaches each node once. Whatever reads or changes states does this first
        (``states``, ``computed``, a new node, a re-wiring)."""
        self.unsettled = False
        self.passes += 1
        version, states, address, _ = self._settling
        # One identity check covers the table too: ``add`` makes the states and the table
        # again together, and the edges are the wiring's (``_version``).
        if version is not self._version or states is not self._states:
            edges = self._edges.get(self._version)
            if edges is None:
                if len(self._edges) >= CACHE_SIZE:
                    self._edges.clear()
                edges = self._edges[self._version] = _children(self.nodes)
            arrays = (self._table, self._states, *edges)  # (kept alive with the header)
            header = np.array([located(self._table), len(self._states),
                               located(self._states), located(edges[0]),
                               len(edges[0]) - 1, located(edges[1]), len(edges[1])],
                              np.int64)
            address = located(header)
            self._settling = (self._version, self._states, address, (header, arrays))
        # The compiled function itself (settling is never part of a recorded pass), given
        # the address of its arrays' addresses: 0.4 us to call, where six arrays took 0.9.
        settle_fed.dispatcher(address, self.passes, EMPTY)

    def invalidate(self, nodes, state, itself=False):
        """Raise the state of everything downstream of ``nodes`` (and of ``nodes`` too, with
        ``itself``) to at least ``state``: EMPTY after an input changed, OUTDATED after a
        parameter did (a value that was EMPTY stays EMPTY)."""
        # The compiled function itself: invalidating is never part of a recorded pass, and
        # the recorder's hook costs more than the call (a weld, an update, a set).
        raise_states.dispatcher(self.states, self.downstream_indices(*nodes, itself=itself),
                                state)

    def downstream_indices(self, *nodes, itself=False):
        """The indices of the nodes that depend on ``nodes`` (kept until the graph changes)."""
        if len(nodes) == 1 and not itself:  # an input set: its node keeps them, per wiring
            node = nodes[0]
            found = node.downstream.get(self._version)
            if found is None:
                if len(node.downstream) >= CACHE_SIZE:
                    node.downstream.clear()
                # Sorted and shared between wirings that give the same set: the article's
                # RNN re-welds every sample, and each input has two sets, not one a wiring
                # (80 inputs x 34 wirings of arrays pushed each other out of the caches).
                found = np.sort(_indices(self.downstream(nodes)))
                if len(self._same_indices) >= 16 * CACHE_SIZE:
                    self._same_indices.clear()
                found = self._same_indices.setdefault(found.tobytes(), found)
                node.downstream[self._version] = found
            return found
        key = (nodes, itself, self._version)  # an optimizer's parameters, a re-wired node
        found = self._downstream.get(key)
        if found is None:
            if len(self._downstream) > CACHE_SIZE:
                self._downstream.clear()
            found = self._downstream[key] = _indices(self.downstream(nodes, itself))
        return found

    def mark_computed(self, node):
        """Record that ``node`` was just computed (its value snapshot, if any, is stale)."""
        self.states[node.index] = COMPUTED
        self.computed[node.index] = self.passes

    # -- the article's housekeeping ------------------------------------------------------
    def clear_jacobi(self):
        for node in self.nodes:
            node.jacobi = None

    def reset_value(self):
        """Forget every computed value (inputs and parameters keep theirs)."""
        self.claim("reset_value")
        try:
            for node in self.nodes:
                if node.parents:
                    node.state = EMPTY
        finally:
            self.release()

    def draw(self, ax=None):
        """The article's picture of the graph (matplotlib): each node in the column of its
        depth, labelled with its kind and shape, red as deep as the norm of its ``jacobi``
        (grey without one). Returns the axes; ``fastgraph.viz.write_graph`` makes DOT."""
        import matplotlib.pyplot as plt

        if ax is None:
            ax = plt.figure(figsize=(12, 8)).add_subplot(111)
        elif not all(hasattr(ax, name) for name in ("plot", "scatter", "annotate", "axis")):
            raise TypeError(f"draw: ax must be matplotlib Axes (or None for a new figure), "
                            f"got {type(ax).__name__} {ax!r:.60}")
        depth = {}  # parents first: a welded node may have been built after its child
        for node in _topological_order(*self.nodes):
            depth[node] = 1 + max((depth[parent] for parent in node.parents), default=-1)
        rows = {}
        where = {}
        for node in self.nodes:
            rows[depth[node]] = rows.get(depth[node], -1) + 1
            where[node] = (depth[node], -rows[depth[node]])
        for node in self.nodes:
            for parent in node.parents:
                (x0, y0), (x1, y1) = where[parent], where[node]
                ax.plot([x0, x1], [y0, y1], color="#014b66", linewidth=1, zorder=1)
        norms = [None if node.jacobi is None else float(np.linalg.norm(node.jacobi))
                 for node in self.nodes]
        top = max((norm for norm in norms if norm is not None), default=0.0) or 1.0
        colours = ["#999999" if norm is None else plt.cm.Reds(0.2 + 0.8 * norm / top)
                   for norm in norms]
        xs, ys = zip(*(where[node] for node in self.nodes)) if self.nodes else ((), ())
        ax.scatter(xs, ys, s=900, c=colours, edgecolors="#666666", zorder=2)
        for node, norm in zip(self.nodes, norms):
            label = f"{type(node).__name__}\n{node.dim[0]}x{node.dim[1]}" if node.dim else \
                type(node).__name__
            if norm is not None:
                label += f"\n[{norm:.3f}]"
            ax.annotate(label, where[node], ha="center", va="center", fontsize=6, zorder=3)
        ax.axis("off")
        return ax

    # -- tapes, plans and what else is cached per graph structure ----------------------------
    def cached(self, key, build):
        """``build()``, kept under ``key`` for the graph's present structure (least recently
        used first out, past CACHE_SIZE entries)."""
        key = (key, self._version)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        value = self._cache[key] = build()
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return value

    def tape(self, target):
        """The :class:`Tape` of ``target`` (cached until the graph changes)."""
        return self.cached(("tape", target), lambda: Tape(target))

    def plan(self, target, sources, per_sample=False):
        """The backward plan from ``target`` down to ``sources`` (see :class:`Plan`)."""
        sources = tuple(sources)
        return self.cached(("plan", target, sources, per_sample),
                           lambda: Plan.build(self.tape(target).nodes, target, sources,
                                              per_sample))

    def downstream(self, nodes, itself=False):
        """Every node that depends on any of ``nodes``, each once (and ``nodes``, with
        ``itself``)."""
        seen = set(nodes)
        order = list(nodes) if itself else []
        stack = list(nodes)
        while stack:
            for child in stack.pop().children:
                if child not in seen:
                    seen.add(child)
                    order.append(child)
                    stack.append(child)
        return order

    # -- default graph -------------------------------------------------------------------
    def __reduce__(self):
        raise TypeError("a fastgraph Graph is not copied or pickled (its nodes hold compiled "
                        "passes and buffers): save it with fastgraph.saver.save and load it")

    def __enter__(self):
        _context.graphs.append(self)
        return self

    def __exit__(self, *exc):
        # Leave the innermost block of this graph: in ``with g1: with g2: with g1:`` the
        # last exit must leave g2 the default again, not take the outer g1 away.
        graphs = _context.graphs
        for i in range(len(graphs) - 1, -1, -1):
            if graphs[i] is self:
                del graphs[i]
                break

    # -- one thread at a time -----------------------------------------------------------
    def claim(self, what, *names):
        """Hold the graph for the calling thread while it does ``what`` (a pass, an
        update, a feed: ``what.format(*names)``, made only for the error), until
        :meth:`release`; a thread may claim it again inside. A graph's values and the
        buffers of its passes are shared, so another thread feeding, computing or updating
        it meanwhile would read and write them under it: that is refused with
        :class:`GraphInUse`, before anything is changed, rather than made to wait (waiting
        would still interleave one thread's feed with another's pass). The outermost claim
        of a thread also sets a fixed thread count in it (``threads.here``).

        A Ctrl-C can land between taking the lock and counting the claim (or between the
        count and the release), where Python checks for one after a call returns: the
        thread then holds the lock once more than it counts, and other threads would find
        the graph in use for good. The thread's next outermost claim gives such a hold back
        (the count itself is never left wrong: it changes with no call beside it)."""
        if not self.claims and self._user._is_owned():  # held by this thread, counted by
            self._user._release_save()  # none: an interrupted claim (every hold released)
        if not self._user.acquire(False):
            raise GraphInUse(
                f"{what.format(*names)}: {self!r} is in use by another thread (it is feeding, "
                f"computing or updating it now); a graph is used by one thread at a time: give "
                f"each thread its own graph, or hold a lock around each thread's use of it")
        if not self.claims:  # (this thread's count: it holds the lock) outermost: a Ctrl-C
            threads.here()  # in here() leaves the lock held, uncounted: given back as above
        self.claims += 1

    def release(self):
        """End the calling thread's :meth:`claim`."""
        self.claims -= 1
        self._user.release()

    def __repr__(self):
        return f"Graph({self.node_count()} nodes, dtype={self.dtype.name})"


def each_whole(items, action):
    """``action(item)`` for every item, in order, even when a Ctrl-C lands between two (or
    inside one, where Python looks for it): the item it stopped is done again and the rest
    are done, then the KeyboardInterrupt is raised, so that several inputs or parameters set
    together are never left half old, half new. A second Ctrl-C is raised at once."""
    items = list(items)
    stopped, k = None, 0
    while k < len(items):
        try:
            action(items[k])
        except KeyboardInterrupt as error:
            if stopped is not None:
                raise
            stopped = error
            continue
        k += 1
    if stopped is not None:
        raise stopped


def _topological_order(*targets):
    """``targets`` and their ancestors, each once, parents before children."""
    order, done, stack = [], set(), [(target, False) for target in reversed(targets)]
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
        saved = [(node, node.flat.copy()) for node in self.inputs]  # set_value copies into flat
        graph = self.target.graph
        single = getattr(graph, "single_sample", False)  # how values read (node.value)

        def feed(rows):
            for node, flat in saved:
                node.set_value(rows(flat).reshape(-1, *node.dim))

        try:
            yield feed
        finally:
            each_whole(saved, lambda pair: pair[0].set_value(pair[1].reshape(-1, *pair[0].dim)))
            graph.single_sample = single

    def forward(self):
        """Compute every node on the tape that is not up to date, parents first (the
        readable reference of the compiled pass). Returns the batch size of the inputs
        (None when the tape has none)."""
        batch_size = self.batch_size()
        graph = self.target.graph
        graph.passes += 1
        states = graph.states
        for node in self.nodes:
            if states[node.index]:
                node.compute()
                graph.mark_computed(node)
        return batch_size


@dataclass
class Plan:
    """What a backward pass from ``target`` to ``sources`` visits.

    ``nodes``: every node on a path from a source to the target (their gradients are cleared
    before a pass). ``steps``: in reverse topological order, each node that passes something
    back, with the ``(slot, parent, summed)`` triples that receive it; a parent that appears
    in two slots receives two contributions. ``summed``: the parent has no batch axis while
    the node has one, so its contribution is the sum over the batch (``vjp_summed``) -- except
    in a ``per_sample`` plan, which keeps every sample's contribution (``vjp``). There a node
    of no batch axis on the way (``W @ W`` in ``W @ W @ x``) passes back one row per sample
    too: its VJP reads its own one row of values for every row of the upstream, as the
    kernels read a one-row operand.
    """

    nodes: list
    steps: list
    sources: tuple
    per_sample: bool

    @classmethod
    def build(cls, tape, target, sources, per_sample=False):
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
            slots = [(i, parent, node.batched and not parent.batched and not per_sample)
                     for i, parent in enumerate(node.parents) if parent in on_path]
            if slots:
                steps.append((node, slots))
        return cls(nodes, steps, tuple(sources), per_sample)


def _path(start, end):
    """The nodes on a shortest path from ``start`` down to ``end`` (which depends on it)."""
    previous, queue = {start: None}, [start]
    for node in queue:
        if node is end:
            break
        for child in node.children:
            if child not in previous:
                previous[child] = node
                queue.append(child)
    path = [end]
    while previous[path[-1]] is not None:
        path.append(previous[path[-1]])
    return path[::-1]


def _changes_followers(node, parents, dim, batched, caller):
    """Why ``node`` may not take ``parents``: the nodes built on it expect its shape and
    batch axis as they are."""
    names = ", ".join(parent.name for parent in parents)
    children = list(dict.fromkeys(child.name for child in node.children))
    if dim != node.dim:
        change = f"shape {node.dim} to {dim}"
    else:
        change = ("a batch axis to none (none of them depends on an input)" if node.batched
                  else "no batch axis to one")
    return (f"{caller}: with {names} as parents {node.name} would go from {change}, but "
            f"{', '.join(children)} {'is' if len(children) == 1 else 'are'} built on it as "
            "it is")


def _indices(nodes):
    return np.fromiter((node.index for node in nodes), np.int64, len(nodes))


def _children(nodes):
    """Every node's children, as ``(first, children)``: node i's are
    ``children[first[i]:first[i + 1]]`` (indices)."""
    first = np.zeros(len(nodes) + 1, np.int64)
    np.cumsum([len(node.children) for node in nodes], out=first[1:])
    children = np.fromiter((child.index for node in nodes for child in node.children),
                           np.int64, first[-1])
    return first, children


#: ``Graph._settling`` before a first settle: ``(version, states, header address, kept)``.
_NOT_SETTLED = (None, None, 0, None)


# -- the default graph and name scopes ------------------------------------------------------
#: Every graph alive (``fastgraph.threads``: a child forked from a process that used GNU
#: OpenMP records every graph's compiled passes again, on its plain kernels).
_GRAPHS = weakref.WeakSet()


class _Context(threading.local):
    """Each thread's own ``with Graph():`` blocks and name scopes: a block entered in one
    thread does not decide where another thread's nodes go."""

    def __init__(self):
        self.graphs = []
        self.scopes = []


_context = _Context()
# The default graph outside any ``with`` block, in every thread: the article's default_graph.
# Its initial weights come from NumPy's global generator, as the article's do, so that a
# program that calls ``np.random.seed(0)`` first starts from the same weights at every run.
_module_graph = Graph(conventions="article")
_module_graph.rng = np.random


def get_default_graph():
    """The graph that nodes built without ``graph=`` join: the innermost ``with Graph():``
    block of the calling thread, or the module-wide graph outside any block."""
    graphs = _context.graphs
    return graphs[-1] if graphs else _module_graph


def get_node_from_graph(name, name_scope=None, graph=None):
    """The node called ``name`` (``name_scope/name`` with a scope, as the article looks it
    up) in ``graph`` (default: the default graph), or KeyError. A graph given second (this
    function's older form) is taken as the graph."""
    if isinstance(name_scope, Graph):
        graph, name_scope = name_scope, None
    if name_scope and isinstance(name, str):
        name = f"{name_scope}/{name}"
    return (graph or get_default_graph()).get_node(name)


def get_trainable_variables_from_graph(node_name=None, name_scope=None, graph=None):
    """The article's lookup of parameters: every trainable Variable of ``graph`` (default:
    the default graph) with no ``node_name``, else the one so named (KeyError if there is
    none, ValueError if it is not a parameter)."""
    if node_name is None:
        return [node for node in (graph or get_default_graph()).nodes
                if getattr(node, "trainable", False)]
    node = get_node_from_graph(node_name, name_scope, graph)
    if not getattr(node, "trainable", False):
        raise ValueError(f"{node.name} is not a trainable Variable")
    return node


def update_node_value_in_graph(node_name, new_value, name_scope=None, graph=None):
    """The article's way to give a named node a value: its ``set_value``, which checks the
    shape and says what it expected."""
    get_node_from_graph(node_name, name_scope, graph).set_value(new_value)


@contextlib.contextmanager
def name_scope(scope):
    """Prefix the names of nodes built inside the block: ``hidden/MatMul:3``."""
    if not isinstance(scope, str) or not scope:
        raise ValueError(f"name_scope takes a non-empty string, got {scope!r}")
    scopes = _context.scopes
    scopes.append(scope)
    try:
        yield
    finally:
        scopes.pop()


def _scoped(name):
    return "/".join([*_context.scopes, name])


def _checked_name(name, graph, node=None):
    """``name`` for a node of ``graph`` (``node`` itself may hold it): a string, without
    NUL (no file keeps one), that no other node has."""
    if not isinstance(name, str):
        raise TypeError(f"a node's name must be a string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"a node's name cannot hold a NUL character, got {name!r}")
    if graph._names.get(name, node) is not node:
        raise ValueError(f"a node named {name!r} already exists in this graph")
    return name


def _parents_of(node, parents):
    return ReadOnlyList(parents, node, "parents")
