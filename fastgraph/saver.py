"""Save and load a graph with its parameters: one file, no pickle.

A model file is a NumPy ``.npz`` archive (a zip) holding ``__graph__``, the graph as JSON
(each node's class, name, parents, options) stored as bytes, and one array per parameter
under ``param/<node name>``. Loading uses ``allow_pickle=False``, so opening a model file
cannot run code; it rebuilds the graph node by node and gives bit-identical outputs. Files
are written to a temporary name and renamed, so a crash never leaves half a model.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from . import ops
from .files import write_atomically
from .graph import Graph
from .node import Variable
from .ops import loss

FORMAT = "fastgraph-model"
VERSION = 1
NODE_TYPES = {
    cls.__name__: cls
    for module in (ops, loss)
    for cls in vars(module).values()
    if isinstance(cls, type) and hasattr(cls, "compute")
}
NODE_TYPES["Variable"] = Variable


class ModelFileError(Exception):
    """A model file is unreadable, corrupt, or not a fastgraph model."""


def save(path, graph, meta=None):
    """Write ``graph`` (structure and parameter values) and a JSON-able ``meta`` to ``path``."""
    nodes = []
    for node in graph.nodes:
        kind = type(node).__name__
        if NODE_TYPES.get(kind) is not type(node):
            raise TypeError(f"{node.name}: cannot save a node of type {kind}")
        nodes.append({"type": kind, "name": node.name,
                      "parents": [parent.name for parent in node.parents],
                      "config": node.config()})
    header = {"format": FORMAT, "version": VERSION, "dtype": graph.dtype.name,
              "nodes": nodes, "meta": meta or {}}
    arrays = {"__graph__": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    for node in graph.nodes:
        if isinstance(node, Variable) and node.trainable and node.flat is not None:
            arrays[f"param/{node.name}"] = node.value
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(Path(path), buffer.getvalue())


def load(path):
    """``(graph, meta)`` from a file written by :func:`save`; ModelFileError if it is not one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ModelFileError(f"{path}: not a readable fastgraph model file ({error})") from error
    try:
        header = json.loads(arrays.pop("__graph__").tobytes().decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise ModelFileError(f"{path}: no valid graph description in the file") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a fastgraph model file")
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path}: model format version {header.get('version')} "
                             f"is not supported (this fastgraph reads version {VERSION})")
    try:
        graph = Graph(dtype=header["dtype"])
        built = {}
        for spec in header["nodes"]:
            cls = NODE_TYPES[spec["type"]]
            parents = [built[name] for name in spec["parents"]]
            built[spec["name"]] = cls(*parents, graph=graph, name=spec["name"], **spec["config"])
        for key, value in arrays.items():
            name = key.removeprefix("param/")
            built[name].set_value(value)
        missing = [node.name for node in graph.nodes
                   if isinstance(node, Variable) and node.trainable and node.flat is None]
        if missing:
            raise ValueError(f"no values for the parameters {', '.join(missing)}")
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the model does not rebuild ({error!s})") from error
    return graph, header["meta"]
