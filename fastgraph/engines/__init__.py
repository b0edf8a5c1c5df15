"""The ways to differentiate a graph, behind one interface.

``gradients(target, params, sums, first)`` runs forward and backward over the batch the
inputs hold and copies (``first``) or adds each parameter's gradient of the sum of
``target`` over the batch into ``sums`` (arrays shaped like ``param.flat``); it returns the
number of samples.

- ``vjp`` (the default): batched vector-Jacobian products, run by the compiled executor
  (``compiled``): the walker's kernel calls recorded once and replayed in compiled code.
- ``python``: the same batched VJPs walked node by node in Python (``vjp``): the readable
  reference of the compiled executor. ``FASTGRAPH_EXECUTOR=python`` makes ``vjp`` use it
  everywhere (forward passes and per-sample derivatives too).
- ``jacobian``: the article's algorithm, one sample at a time with dense Jacobians. It is
  the reference that tests hold the fast engines against, and the benchmarks' baseline.
"""

import os

from ..kernels import blas
from . import compiled, jacobian, vjp

EXECUTORS = {"compiled": compiled, "python": vjp}


_chosen = {}  # the setting as read from the environment -> its module

# os.environ.get of a variable that is not set raises and catches a KeyError inside: 1-2 us,
# a tenth of a one-sample step. The mapping os.environ keeps its encoded copy in is read
# directly where CPython has it (it is what os.environ.get reads after encoding the key).
_ENVIRON = getattr(os.environ, "_data", None)
_KEY = "FASTGRAPH_EXECUTOR"
if isinstance(_ENVIRON, dict):  # its values encoded: the decoding waits for a new value
    _ENCODED_KEY = os.environ.encodekey(_KEY)

    def _setting():
        return _ENVIRON.get(_ENCODED_KEY)

    def _decoded(value):
        return None if value is None else os.environ.decodevalue(value)
else:  # pragma: no cover - another Python's os.environ
    def _setting():
        return os.environ.get(_KEY)

    def _decoded(value):
        return value


def _executor():
    """The module that runs ``vjp`` passes: compiled, unless the walker is asked for (or the
    BLAS is NumPy's own ``matmul``, which compiled code cannot call). Read at every call (a
    test or a program may change the setting), decided once per value."""
    setting = _setting()
    found = _chosen.get(setting)
    if found is None:
        name = (_decoded(setting) or "compiled").strip().lower() or "compiled"
        if name not in EXECUTORS:
            raise ValueError(f"FASTGRAPH_EXECUTOR={name!r}: choose compiled or python")
        found = _chosen[setting] = vjp if blas.BACKEND == "numpy" else EXECUTORS[name]
    return found


def _fast_gradients(target, params, sums, first, passes=None):
    return _executor().gradients(target, params, sums, first, passes)


ENGINES = {"vjp": _fast_gradients, "python": vjp.gradients, "jacobian": jacobian.gradients}


def get_engine(name):
    """The ``gradients`` function of the engine called ``name``."""
    try:
        return ENGINES[name]
    except (KeyError, TypeError):
        choices = ", ".join(repr(key) for key in ENGINES)
        raise ValueError(f"unknown engine {name!r}: choose one of {choices}") from None


def forward(node):
    """Compute ``node`` and whatever it needs that is not up to date."""
    graph = node.graph
    graph.claim("{}.forward", node.name)
    try:
        _executor().forward(node)
    finally:
        graph.release()


def per_sample(result, nodes, seeds, engine="vjp", into=None):
    """Gradients of per-sample passes (see ``compiled.per_sample``). ``into``: arrays the
    compiled engine may write the gradients in directly (it returns them where it did)."""
    module = vjp if engine == "python" else _executor()
    graph = result.graph
    graph.claim("the per-sample derivatives of {}", result.name)
    try:
        if module is compiled:
            return compiled.per_sample(result, nodes, seeds, into)
        return module.per_sample(result, nodes, seeds)
    finally:
        graph.release()
