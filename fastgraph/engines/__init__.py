"""The two ways to differentiate a graph, behind one interface.

``gradients(target, params)`` returns, for each parameter, the gradient of the sum of
``target`` over the batch (shaped like ``param.flat``), and the number of samples.

- ``vjp``: the tape runs forward once over the whole batch, then the operators' batched
  vector-Jacobian products run in reverse. This is fastgraph.
- ``jacobian``: the article's algorithm, one sample at a time with dense Jacobians. It is
  the reference that tests hold the fast engine against, and the benchmarks' baseline.
"""

from . import jacobian, vjp

ENGINES = {"vjp": vjp.gradients, "jacobian": jacobian.gradients}


def get_engine(name):
    """The ``gradients`` function of the engine called ``name``."""
    try:
        return ENGINES[name]
    except (KeyError, TypeError):
        choices = ", ".join(repr(key) for key in ENGINES)
        raise ValueError(f"unknown engine {name!r}: choose one of {choices}") from None
