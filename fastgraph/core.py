"""The article's ``core`` package (``ms.core.Variable``, ``ms.core.default_graph``, ...).

Names only: each is the one implementation in ``fastgraph.graph`` and ``fastgraph.node``.
``default_graph`` is looked up when it is read, so it is the graph of the innermost
``with Graph():`` block, as ``fastgraph.default_graph`` is.
"""

from .graph import (
    Graph,
    get_default_graph,
    get_node_from_graph,
    get_trainable_variables_from_graph,
    name_scope,
    update_node_value_in_graph,
)
from .node import Node, Variable

__all__ = ["Graph", "Node", "Variable", "get_default_graph", "get_node_from_graph",
           "get_trainable_variables_from_graph", "name_scope", "update_node_value_in_graph"]


def __getattr__(name):
    if name == "default_graph":
        return get_default_graph()
    raise AttributeError(f"module 'fastgraph.core' has no attribute {name!r}")
