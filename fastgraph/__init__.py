"""fastgraph: the article's computational graphs, differentiated a batch at a time.

``fastgraph.default_graph`` is the graph that nodes built without ``graph=`` join: the
innermost ``with Graph():`` block, or a module-wide graph outside any block.

What a training step needs is imported with the package; the modules around it (datasets,
trainers, saving, plots, the profiler) are imported on first use (``fastgraph.trainer``),
so that ``import fastgraph`` loads no downloader (urllib, http), progress bar (tqdm) or
plotting library.
"""

import importlib
import os
import sys


def _the_command():
    """Whether this process is fastgraph's command line: its script (``fastgraph``), or
    ``python -m fastgraph.cli`` (whose ``sys.argv[0]`` is still "-m" as the package loads)."""
    argv = getattr(sys, "orig_argv", sys.argv)
    module = argv[argv.index("-m") + 1:argv.index("-m") + 2] if "-m" in argv else []
    return os.path.basename(sys.argv[0] if sys.argv else "") == "fastgraph" or \
        module == ["fastgraph.cli"]


try:
    from . import core, layer, models, ops, optimizer
    from .feed import set_values
    from .graph import Graph, GraphInUse, get_default_graph, get_node_from_graph, name_scope
    from .jacobians import jacobian, per_sample_gradients
    from .node import Node, Variable
except ValueError as error:  # a FASTGRAPH_ variable read as the modules load (threads, BLAS,
    if not ("FASTGRAPH_" in str(error) and _the_command()):  # the compile worker): the
        raise  # command line says it as it says every mistake, in one line, status 2
    print(f"fastgraph: error: {error}", file=sys.stderr)
    raise SystemExit(2) from None

__version__ = "0.1.0"

#: Submodules imported when first named: ``fastgraph.datasets`` works as an attribute, and
#: ``from fastgraph import trainer`` and ``import fastgraph.saver`` as always.
_ON_FIRST_USE = ("datasets", "distributed", "metrics", "model", "profiler", "saver", "trainer",
                 "viz")

__all__ = [
    "Graph", "GraphInUse", "Node", "Variable", "core", "datasets", "get_default_graph",
    "get_node_from_graph", "jacobian", "layer", "metrics", "model", "models", "name_scope",
    "ops", "optimizer",
    "per_sample_gradients", "profiler", "saver", "set_values", "trainer", "viz",
]


def __getattr__(name):
    if name == "default_graph":
        return get_default_graph()
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"{__name__}.{name}")  # which sets the attribute
    raise AttributeError(f"module 'fastgraph' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE) | {"default_graph"})
