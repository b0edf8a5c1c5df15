"""fastgraph: the article's computational graphs, differentiated a batch at a time.

``fastgraph.default_graph`` is the graph that nodes built without ``graph=`` join: the
innermost ``with Graph():`` block, or a module-wide graph outside any block.
"""

from . import (
    core,
    datasets,
    layer,
    metrics,
    model,
    models,
    ops,
    optimizer,
    profiler,
    saver,
    trainer,
    viz,
)
from .feed import set_values
from .graph import Graph, get_default_graph, get_node_from_graph, name_scope
from .jacobians import jacobian, per_sample_gradients
from .node import Node, Variable

__version__ = "0.1.0"

__all__ = [
    "Graph", "Node", "Variable", "core", "datasets", "get_default_graph",
    "get_node_from_graph", "jacobian", "layer", "metrics", "model", "models", "name_scope",
    "ops", "optimizer",
    "per_sample_gradients", "profiler", "saver", "set_values", "trainer", "viz",
]


def __getattr__(name):
    if name == "default_graph":
        return get_default_graph()
    raise AttributeError(f"module 'fastgraph' has no attribute {name!r}")
