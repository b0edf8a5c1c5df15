"""Nodes: the article's ``Node`` and ``Variable``, holding whole batches.

Every node has a per-sample shape ``dim = (rows, cols)``, as in the article. A node that
depends on an input is *batched*: its value carries a leading batch axis, ``(B, rows, cols)``.
A node that depends only on parameters has no batch axis: its value is ``(rows, cols)``.

Internally a value lives in ``node.flat``, a C-contiguous ``(B, rows * cols)`` matrix
(``(1, rows * cols)`` for an unbatched node) that the next computation overwrites: the
engine, the operators and the trainers read ``flat`` (and ``_value``, its view in the
article's shape). For the column vectors of a network, ``flat`` is the ``(B, features)``
matrix that a single BLAS GEMM multiplies; a kernel never needs a copy to see it.

What a user reads is ``node.value``: a snapshot, copied on the first access after each
computation and never overwritten afterwards, so values collected step by step stay what
they were. Its type follows the article's single-sample rule: when the inputs were last set
with one sample in its own shape (``x.set_value(np.asmatrix(features).T)``), every value is
a ``(rows, cols)`` ``np.matrix`` (``value[0, 0]`` a scalar, ``.A``, ``.A1``, ``.T``, ``*``
as in the article); when they were set with a batch ``(B, rows, cols)``, values are batched
arrays ``(B, rows, cols)``. Underneath both are the same batched computation (one sample is
a batch of one).

Gradients follow the same layout: during a backward pass ``node.grad`` holds the
vector-Jacobian product of the target with respect to this node, shaped like ``node.flat``.
"""

from __future__ import annotations

from operator import attrgetter

import numpy as np

from . import checks
from .graph import (
    EMPTY,
    Graph,
    ReadOnlyList,
    _Detached,
    _parents_of,
    get_default_graph,
    refuse_removed,
)
from .kernels import aligned_empty
from .kernels.elementwise import feed_input

#: The most numbers a node's value may have: what NumPy can index in float64 (its arrays'
#: sizes in bytes are ``intp``s). A larger ``dim`` is refused by name, not by NumPy.
MOST_NUMBERS = np.iinfo(np.intp).max // 8

#: How many shapes of each of its buffers (its output, each scratch array) a node keeps
#: after using another: a training batch, an evaluation batch, a last partial batch, one
#: sample.
KEPT_SHAPES = 4

#: The role of a node's output among its arrays (the others are ``buffer``'s keys).
FLAT = object()  # (an object of its own: no buffer key can be it)

# The arrays ``Variable.set_value`` copies on its short path (one sample in its own shape).
_MATRIX, _ARRAY = np.matrix, np.ndarray


def fixed(name):
    """An option of a node set when it is made (a slope, a stride: what the node's compiled
    passes were recorded with): assigning it later is an AttributeError that says so, where
    the compiled executor kept the old value and the walker took the new one."""
    return checks.set_once(name, lambda node: (
        f"{name} of {node.name} is fixed when the node is made (its compiled passes use "
        f"it): make a new {type(node).__name__}"))


def _rename(node, name):
    """``node.name = ...``: set by the graph when the node is made; assigned later, the
    graph renames the node (refused if another node has the name), so lookups and savers
    find it under the new one."""
    if hasattr(node, "_name"):
        name = node.graph.rename(node, name)
    node._name = name


def _changed_by_the_graph(node, kind):
    return (f"the {kind} of {_name_of(node)} are changed only by the graph; "
            f"{ReadOnlyList.INSTEAD[kind]}")


def _name_of(node):
    """A node's name, or its kind's before the graph named it (an attribute refused in a
    subclass's constructor)."""
    return getattr(node, "_name", type(node).__name__)


def _other_graph(parent, parents, graph):
    """Why ``parent`` cannot join a node built in ``graph`` with ``parents``: names are unique
    only within a graph, so the parents of that graph are named beside it."""
    here = [other.name for other in parents if other.graph is graph]
    where = (f"than {', '.join(here)}" if here else "than the graph it is built in (the "
             "innermost `with Graph():`, or graph=)")
    return f"its parent {parent.name} belongs to another graph {where}"


def _fixed_dim(node):
    if getattr(node, "_node_dim", None) is None:  # a Welding() with no shape yet
        return (f"{_name_of(node)} has no shape yet: give {type(node).__name__}(dim=...), "
                "build a layer on it, or weld it")
    return (f"dim of {_name_of(node)} is fixed when the node is made (its buffers and the "
            f"nodes built on it have its shape): make a new {type(node).__name__}")


class Node:
    """Base of every node. Operators subclass it and define, side by side:

    - ``compute()``: the batched forward, writing ``self.output()``;
    - ``vjp(slot, upstream)``: the batched vector-Jacobian product for the parent in
      ``self.parents[slot]``, shaped like that parent's ``flat`` (summed over the batch when
      the parent has no batch axis and this node has one);
    - ``dense_jacobian(slot)``: the article's dense Jacobian of this node's value with
      respect to that parent, for the single sample the graph holds
      (``dimension() x parent.dimension()``, row-major flattening).

    The article's ``get_jacobi(parent)`` is the sum of ``dense_jacobian`` over the slots where
    ``parent`` appears; slots make a node that uses one parent twice (``MatMul(a, a)``) exact.
    """

    is_input = False
    name = property(attrgetter("_name"), _rename)
    # What the graph's structure is made of: set when the node is made, changed only by the
    # graph (a re-wiring, ``clear()``); assigned by hand, the graph's states, caches and
    # compiled passes went stale (the compiled executor kept the old wiring: wrong values).
    # (The value a node has is taken again, changing nothing: MatrixSlow's Variable writes
    # self.dim = dim after Node.__init__, and a port may keep the line.)
    parents = checks.set_once("parents", lambda node: _changed_by_the_graph(node, "parents"),
                              same_taken=True)
    children = checks.set_once("children", lambda node: _changed_by_the_graph(node, "children"),
                               same_taken=True)
    graph = checks.set_once("graph", lambda node: (
        f"the graph of {_name_of(node)} is fixed when the node is made: build the node into "
        "the other graph"), same_taken=True)
    dim = checks.set_once("dim", _fixed_dim, attribute="_node_dim", same_taken=True)

    def __init__(self, *parents, graph=None, name=None):
        for parent in parents:
            if not isinstance(parent, Node):
                raise TypeError(
                    f"{type(self).__name__} takes nodes as parents, got {type(parent).__name__}"
                )
        if graph is None:
            graph = parents[0].graph if parents else get_default_graph()
        elif not isinstance(graph, Graph):
            if isinstance(graph, _Detached):  # a removed node's (a layer built on one)
                graph.refuse()
            raise TypeError(f"{type(self).__name__}: graph must be a fastgraph Graph or None, "
                            f"got {type(graph).__name__} {graph!r:.60}")
        for parent in parents:
            if parent.graph is not graph:
                refuse_removed(parent)
                raise ValueError(f"{type(self).__name__}: {_other_graph(parent, parents, graph)}")
            if parent.dim is None:  # a Welding() that has no shape yet
                raise ValueError(f"{type(self).__name__}: {parent.name} has no shape yet: give "
                                 f"{type(parent).__name__}(dim=...) or weld it first")
        # (the private attributes, written here: what a subclass gave before calling this
        # constructor is replaced, as it was before these were read-only)
        self._graph = graph
        self._parents = _parents_of(self, parents)
        self._children = ReadOnlyList((), self, "children")
        self.batched = any(parent.batched for parent in parents)
        self._node_dim = self.infer_dim()
        self.jacobi = None
        self.grad = None
        self.grad_owned = False
        self.flat = None
        self._value = None
        self._snapshot = None
        self._snapshot_pass = 0
        self._buffers = {}
        self._kept = {}  # (FLAT or a buffer's key, shape) -> an array it held (see output)
        self.downstream = {}  # graph version -> indices of the nodes that depend on this
        # The parent whose batch size this node's value takes (None: no batch axis).
        self._batch_source = next((parent for parent in parents if parent.batched), None)
        self.name = graph.add_node(self, name)
        for parent in parents:
            list.append(parent.children, self)

    def infer_dim(self):
        """The per-sample shape of this node, checked against its parents' shapes."""
        kind = type(self).__name__
        article = any("get_jacobi" in vars(cls) for cls in type(self).__mro__
                      if cls.__module__.split(".")[0] != "fastgraph")
        article = " (the article's compute() setting self.value and get_jacobi() are not " \
            "what it calls)" if article else ""
        raise TypeError(f"{kind} defines no infer_dim(): a fastgraph operator subclasses "
                        f"fastgraph.ops.Operator and defines infer_dim() (its shape), "
                        f"compute() (into self.output()), vjp() and dense_jacobian(){article}; "
                        "see fastgraph/ops for examples")

    def __reduce__(self):  # copy.copy made a twin that shared its index, name and buffers
        raise TypeError(f"{self.name} is not copied or pickled (a node belongs to its graph): "
                        "build another, or save the graph with fastgraph.saver.save")

    def config(self):
        """The constructor's keyword options beside the parents (for saving a graph)."""
        return {}

    # -- values -----------------------------------------------------------------------------
    @property
    def state(self):
        """COMPUTED (0), OUTDATED or EMPTY (see ``fastgraph.graph``; kept in the graph's
        ``states`` array, which compiled passes read and write)."""
        return self.graph.states[self.index]

    @state.setter
    def state(self, state):
        self.graph.states[self.index] = state

    @property
    def value(self):
        """A snapshot of this node's value that the next computation will not overwrite.

        ``(B, rows, cols)`` for a batched node, ``(rows, cols)`` otherwise; a ``(rows, cols)``
        ``np.matrix`` when the inputs hold one sample given in its own shape (the article's
        programs). None before the node is computed and after an input it depends on is set,
        as in the article. After an optimizer update it still holds the value computed
        before it. Made on the first access after each computation and kept until the node
        is computed again (a parameter's, which optimizers update in place, at each access).
        """
        if self.state == EMPTY:
            return None
        computed = self.graph.computed[self.index]  # which pass wrote the buffer last
        if self._snapshot is None or self._snapshot_pass != computed:
            snapshot = self._take_snapshot()
            if self.parents or self.is_input:  # optimizers write parameters in place
                self._snapshot, self._snapshot_pass = snapshot, computed
            return snapshot
        return self._snapshot

    @value.setter
    def value(self, value):
        how = ("set the inputs it depends on" if self.parents else
               f"give it one with {self.name}.set_value(...)")
        raise AttributeError(f"{self.name}.value is read-only (a snapshot of what the graph "
                             f"computed): {how}")

    trainable = False

    def _take_snapshot(self):
        flat = self.flat
        if self.single_sample():
            return flat.reshape(self.dim).copy().view(np.matrix)
        shape = (flat.shape[0], *self.dim) if self.batched else self.dim
        return flat.reshape(shape).copy()

    def single_sample(self):
        """True when values read as the article's matrices: the inputs were last set with one
        sample in its own shape (and this node holds one sample)."""
        return getattr(self.graph, "single_sample", False) and (
            not self.batched or self.flat.shape[0] == 1)

    @property
    def batch_size(self):
        """Rows of ``flat`` (None before any value); 1 for a node without a batch axis."""
        return None if self.flat is None else self.flat.shape[0]

    def dimension(self):
        return self.dim[0] * self.dim[1]

    def shape(self):
        """The per-sample shape ``(rows, cols)``."""
        return self.dim

    def set_value(self, value):
        raise TypeError(
            f"{self.name} is computed by {type(self).__name__}; set the inputs it depends on"
        )

    def reset_value(self, recursive=True):
        """Mark this node and everything downstream as not computed (a leaf keeps its value).
        ``recursive`` is the article's argument: its ``False`` cleared this node alone, which
        left what depends on it reading a value made from the old one; both mark all."""
        checks.flag("reset_value: recursive", recursive)
        graph = self.graph
        graph.claim("{}.reset_value", self.name)
        try:
            graph.invalidate([self], EMPTY, itself=bool(self.parents or self.flat is None))
        finally:
            graph.release()

    def forward(self):
        """Compute this node's value, and any ancestor's that is not up to date first."""
        from .engines import forward

        forward(self)

    def backward(self, result, engine="vjp"):
        """The article's ``backward``: fill ``self.jacobi`` with the Jacobian of ``result``.

        Per sample: ``(B, result.dimension(), self.dimension())`` when ``result`` has a batch
        axis, ``(result.dimension(), self.dimension())`` when it has none. ``engine="vjp"``
        computes it with batched VJPs (``fastgraph.jacobian``); ``"jacobian"`` with the
        article's dense per-sample algorithm. Both give the same numbers.
        """
        from .engines import jacobian as dense
        from .jacobians import jacobian

        if engine not in ("vjp", "jacobian"):
            raise ValueError(f"unknown engine {engine!r}: choose one of 'vjp', 'jacobian'")
        self.graph.claim("{}.backward", self.name)
        try:
            jacobi = jacobian(result, self) if engine == "vjp" else dense.jacobian(result, self)
        finally:
            self.graph.release()
        if result.single_sample():  # the article's (m, n) matrix for its one sample
            jacobi = np.array(jacobi.reshape(jacobi.shape[-2:])).view(np.matrix)
        self.jacobi = jacobi
        return self.jacobi

    def clear_jacobi(self):
        self.jacobi = None

    def get_parents(self):
        return self.parents

    def get_children(self):
        return self.children

    def get_jacobi(self, parent):
        """Dense Jacobian of this node with respect to ``parent``, for the one sample held."""
        slots = [slot for slot, node in enumerate(self.parents) if node is parent]
        if not slots:
            raise ValueError(f"{getattr(parent, 'name', repr(parent))} is not a parent of "
                             f"{self.name}")
        return sum(self.dense_jacobian(slot) for slot in slots)

    def sample(self):
        """This node's value for the single sample the graph holds, as a (rows, cols) matrix."""
        value = None if self.state == EMPTY else self._value  # live: for the engines
        if value is None:
            raise ValueError(f"{self.name} has no value: run forward() first")
        if not self.batched:
            return value
        if value.shape[0] != 1:
            raise ValueError(
                f"dense Jacobians work on one sample; {self.name} holds a batch of {value.shape[0]}"
            )
        return value[0]

    # -- buffers: allocated for each batch size, reused on every other step ---------------
    # A compiled pass holds the buffers its recording saw: ``graph.layout`` counts the buffers
    # replaced, after which a pass may hold a stale one. A buffer made for the first time
    # replaces none (the article's RNN, welded to a later step, computes nodes it never did):
    # the passes recorded before never saw it and stay valid. A replaced buffer is kept, by
    # its role and shape (the last ``KEPT_SHAPES`` shapes of each role): when that shape
    # comes back (a loop that alternates training batches and an evaluation), the node
    # takes it again, so there is one array per node, role and shape, and the passes
    # recorded with it can point the nodes back at theirs (``compiled.Pass.valid``) rather
    # than be recorded again.
    def output(self):
        """This node's ``flat`` output buffer, sized for the current batch."""
        rows = 1 if self._batch_source is None else self._batch_source.flat.shape[0]
        flat = self.flat
        if flat is None or flat.shape[0] != rows:
            self._hold(self._kept_or_new(FLAT, (rows, self.dimension())))
        return self.flat

    def buffer(self, key, shape):
        """A scratch array kept between steps, reallocated only when ``shape`` changes (and
        taken back, not reallocated, when a shape it had before comes back)."""
        array = self._buffers.get(key)
        if array is None or array.shape != shape:
            self._take(key, self._kept_or_new(key, shape))
            array = self._buffers[key]
        return array

    def _hold(self, flat):
        self._take(FLAT, flat)
        shape = (flat.shape[0], *self.dim) if self.batched else self.dim
        self._value = flat.reshape(shape)

    def _take(self, role, array):
        """Make ``array`` this node's ``role`` (``FLAT``, or a key of ``buffer``): the array
        it replaces is kept for its shape, and the graph's layout moves on."""
        current = self.flat if role is FLAT else self._buffers.get(role)
        if current is array:
            return
        kept = self._kept
        if kept.get((role, array.shape)) is array:
            del kept[(role, array.shape)]
        if current is not None:
            graph = self.graph
            graph.layout += 1
            if kept.pop((role, current.shape), current) is not current:
                graph.dropped += 1  # another array of that shape (a reshape's parent's)
            kept[(role, current.shape)] = current
            same = [key for key in kept if key[0] == role]
            if len(same) > KEPT_SHAPES:  # the oldest goes
                del kept[same[0]]
                graph.dropped += 1
        if role is FLAT:
            self.flat = array
        else:
            self._buffers[role] = array

    def _kept_or_new(self, role, shape):
        """The array this node keeps for ``role`` and ``shape``, or a new one."""
        array = self._kept.get((role, shape))
        return aligned_empty(shape, self.graph.dtype) if array is None else array

    def _drop_buffers(self):
        """Forget the output and every kept array (the node's shape changed)."""
        self.flat = self._value = self._snapshot = None
        self._kept.clear()
        self.graph.dropped += 1

    def __repr__(self):
        return f"<{self.name} {self.dim[0]}x{self.dim[1]}{' batched' if self.batched else ''}>"


def _set_trainable(node, value):
    """``Variable.trainable``. Given when the node is made, it says what the node is: a
    parameter (True) or an input (False, which takes batches). Set later on a parameter, it
    freezes it (False: optimizers leave it from their next step on, as the article's
    optimizer, which reads the flag at every step, does) or thaws it; an input cannot
    become a parameter."""
    value = checks.flag("Variable: trainable", value)
    if not hasattr(node, "_trainable"):
        node._trainable = value
        return
    if node.is_input:
        if value:
            raise ValueError(f"{node.name} is an input (made with trainable=False): it cannot "
                             "become a parameter; make a Variable with trainable=True")
        return
    if value != node._trainable:
        node.graph.freeze(node, not value)  # the optimizers take their parameters again


class Variable(Node):
    """A leaf: a trainable parameter (no batch axis) or an input (``trainable=False``).

    ``init=True`` draws the value from N(0, 0.001), as the article does.

    A parameter's ``set_value`` takes exactly ``dim`` and writes into its existing array, so
    optimizers keep their references. An input's ``set_value`` takes ``(B, rows, cols)``,
    ``(B, rows)`` when ``cols == 1``, or exactly ``dim`` (one sample, B = 1, and from then on
    the graph's values read as the article's ``np.matrix``). The array is copied into a
    buffer the input owns (kept between calls, reallocated only when the batch size
    changes), so the caller may refill its own array at once.
    """

    trainable = property(attrgetter("_trainable"), _set_trainable)

    def __init__(self, dim, init=False, trainable=True, graph=None, name=None):
        self._dim = _check_dim(dim)
        self.trainable = checks.flag("Variable: trainable", trainable)
        init = checks.flag("Variable: init", init)
        self._sample = None  # an input holding one sample: flat seen in the sample's shape
        self._numeric = None  # the dtype of the last value taken on the short path
        rows, cols = self._dim  # the shapes of a batch of one (see set_value)
        self._batch_of_one = ((1, rows, cols), (1, rows)) if cols == 1 else ((1, rows, cols),)
        super().__init__(graph=graph, name=name)
        self.batched = self.is_input = not self.trainable
        if init:
            self.set_value(self.graph.rng.normal(0.0, 0.001, self.dim))

    def infer_dim(self):
        return self._dim

    def config(self):
        return {"dim": list(self.dim), "trainable": not self.is_input}  # a frozen one too

    def compute(self):
        raise ValueError(f"{self.name} has no value: call {self.name}.set_value() first")

    def set_value(self, value):
        sample = self._sample
        kind = value.__class__
        graph = self.graph
        if (kind is _MATRIX or kind is _ARRAY) and sample is not None and not graph.claims \
                and value.shape == self._dim and (value.dtype is self._numeric
                                                   or value.dtype.kind in "biuf"):
            # The short path. The article's per-sample loop sets every input once a sample,
            # often dozens of them (the RNN's steps): a sample in its own shape (an array or
            # np.matrix), into an input that holds one already, is copied (cast as the
            # kernel of the general path casts) and the input noted as fed. What depends on
            # it is marked EMPTY by the graph's next settle(), once for every input fed
            # meanwhile; whatever reads or changes a state settles first. It takes no claim
            # of the graph (a fifth of its time), only sees that no thread holds one: when
            # one does (a pass of another thread, or of this one), the general path below
            # claims the graph, or is refused.
            self._numeric = value.dtype  # a numeric dtype seen last: the next check is `is`
            sample[...] = value
            graph._fed[self.index] = 1
            graph.unsettled = True
            graph.single_sample = True
            return
        if kind is _ARRAY and sample is not None and not graph.claims \
                and value.dtype is graph.dtype and value.shape in self._batch_of_one:
            # The short path for a batch of one in a batch's shape, ``x.set_value(rows[i:i +
            # 1])``, which took the general path (the MNIST MLP's one-sample loop fed that
            # way: 28.2 us a sample against 19.0 for columns): of the graph's dtype only
            # (nothing to cast, so no number beyond its range to refuse), into an input that
            # holds a batch of one; the values still read as a batch.
            sample[...] = value.reshape(self._dim)
            graph._fed[self.index] = 1
            graph.unsettled = True
            graph.single_sample = False
            return
        if kind is _MATRIX and value.shape != self._dim and self.is_input:
            # the article's sample (np.mat(sample).T): never a batch (a row of 4 numbers set
            # into a (4, 1) input became a batch of one, its values then no matrices)
            flipped = value.shape[::-1] == self._dim
            hint = " (its transpose: np.asmatrix(sample).T)" if flipped else ""
            raise ValueError(f"{self.name}: an np.matrix is one sample, of shape {self._dim}; "
                             f"got {value.shape}{hint}")
        graph.claim("{}.set_value", self.name)
        try:
            self._set_claimed(value)
        finally:
            graph.release()

    def _set_claimed(self, value):
        """``set_value`` past its short path, holding the graph (a sample that the short
        path would take while a claim is held comes here too: the general copy serves it)."""
        array = checks.as_array(value, f"{self.name}: the values")
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{self.name}: expected a numeric array, got dtype {array.dtype}")
        if array.dtype.kind == "f" and array.dtype.itemsize > 8:  # long double: refused here
            beyond = checks.first_beyond(array, self.graph.dtype)  # where the cast below
            if beyond is not None:  # would make it infinite, as float64 is after it
                batch = self.is_input and array.shape != self.dim
                raise checks.beyond_range(self.name, array[beyond], self.graph.dtype,
                                          beyond[0] if batch else None)
        array = checks.kernel_numbers(array, self.graph.dtype)  # float16, long double
        graph = self.graph
        graph.passes += 1
        if not self.is_input:
            self._check_parameter(array)
            # What depends on it is marked stale before the copy, not after: a Ctrl-C as
            # the copy returns then costs a recomputation, never an old value read as new.
            graph.invalidate([self], EMPTY)
            if self.flat is None:
                self._hold(aligned_empty((1, self.dimension()), self.graph.dtype))
            np.copyto(self._value, array, casting="unsafe")
            graph.mark_computed(self)
        else:
            self._set_input(array)

    def _check_parameter(self, array):
        if array.shape != self.dim:
            raise ValueError(
                f"{self.name}: expected a value of shape {self.dim}, got {array.shape}"
            )
        beyond = checks.first_beyond(array, self.graph.dtype)
        if beyond is not None:
            raise checks.beyond_range(self.name, array[beyond].item(), self.graph.dtype)

    def _set_input(self, array):
        rows, cols = self.dim
        single = array.shape == self.dim
        if single:
            batch = 1
        elif (array.ndim == 3 and array.shape[1:] == self.dim) or (
                array.ndim == 2 and cols == 1 and array.shape[1] == rows):
            batch = array.shape[0]
        else:
            accepted = f"(B, {rows}, {cols})" + (f", (B, {rows})" if cols == 1 else "")
            raise ValueError(
                f"{self.name}: expected a batch of shape {accepted} or one sample of shape "
                f"{self.dim}, got {array.shape}"
            )
        if batch == 0:
            raise ValueError(f"{self.name}: the batch is empty")
        flat = self.flat
        fresh = flat is None or flat.shape[0] != batch
        if fresh:  # held once filled (a refused value leaves the input as it was)
            flat = self._kept_or_new(FLAT, (batch, rows * cols))
        graph = self.graph
        downstream = self.downstream.get(graph._version)  # kept by the graph, per wiring
        if downstream is None:
            downstream = graph.downstream_indices(self)
        # One kernel call copies the batch (any numeric dtype, cast), marks this input
        # computed and everything downstream EMPTY: this is the article's per-sample loop.
        source = array.reshape(batch, rows * cols)
        if not fresh and np.may_share_memory(source, flat):  # a view of the input's own
            source = source.copy()  # buffer (x.flat[::-1]): the copy would read what it wrote
        beyond = feed_input(source, flat, graph.states, downstream, EMPTY, graph.computed,
                            self.index, graph.passes)
        if beyond >= 0:  # nothing was changed
            sample, column = divmod(int(beyond), rows * cols)
            raise checks.beyond_range(self.name, source[sample, column].item(), graph.dtype,
                                      None if single else sample)
        if fresh:
            self._hold(flat)
            self._sample = flat.reshape(self.dim) if batch == 1 else None
        graph.single_sample = single


def _check_dim(dim):
    try:
        rows, cols = (int(size) for size in dim)
        ok = (rows, cols) == tuple(dim) and rows > 0 and cols > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"dim must be a pair of positive integers (rows, cols), got {dim!r}")
    if rows * cols > MOST_NUMBERS:
        raise ValueError(f"dim {dim!r:.80}: more numbers than an array can hold "
                         f"({MOST_NUMBERS:,} at most)")
    return (rows, cols)
