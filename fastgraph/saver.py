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
import zlib
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
    try:
        text = json.dumps(header)
    except (TypeError, ValueError) as error:  # checked before anything is written
        raise ValueError(f"{path}: cannot save the graph: its meta must be plain JSON "
                         f"(dicts, lists, strings, numbers): {error}") from None
    arrays = {"__graph__": np.frombuffer(text.encode(), np.uint8)}
    for node in graph.nodes:
        if isinstance(node, Variable) and node.trainable:
            if node.flat is None:  # the file could not be loaded: refuse before writing
                raise ValueError(f"{path}: cannot save the graph: parameter {node.name} has no "
                                 "value (give it one with set_value() or init=True)")
            arrays[f"param/{node.name}"] = node.value
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(Path(path), buffer.getvalue())


def load(path):
    """``(graph, meta)`` from a file written by :func:`save`; ModelFileError if it is not one.

    Nothing is inflated before it is known to be expected: the zip's entry names are checked
    first (``__graph__.npy`` and ``param/<name>.npy`` only), the graph description is read
    within ``MAX_GRAPH_BYTES``, and each parameter within the size its shape announces.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = _entries(archive, path)
            header = _read_header(archive, entries.pop("__graph__"), path)
            shapes = _parameter_shapes(header, path)
            arrays = {}
            for name, info in entries.items():
                if name not in shapes:
                    raise ModelFileError(f"{path}: the model does not rebuild (the file holds "
                                         f"values for {name!r}, not a parameter of its graph)")
                limit = _npy_bytes(shapes[name], header["dtype"])
                if info.file_size > limit:
                    raise ModelFileError(f"{path}: the entry for {name!r} announces "
                                         f"{info.file_size} bytes, more than its shape "
                                         f"{shapes[name]} needs ({limit})")
                arrays[name] = _read_array(archive, info, limit, path)
    except FileNotFoundError as error:
        raise ModelFileError(f"{path}: not a readable fastgraph model file (no such file)") \
            from error
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            RuntimeError, zlib.error) as error:
        raise ModelFileError(f"{path}: not a readable fastgraph model file ({error})") from error
    try:
        graph = Graph(dtype=header["dtype"])
        built = {}
        for spec in header["nodes"]:
            cls = NODE_TYPES[spec["type"]]
            parents = [built[name] for name in spec["parents"]]
            built[spec["name"]] = cls(*parents, graph=graph, name=spec["name"], **spec["config"])
        for name, value in arrays.items():
            built[name].set_value(value)
        missing = [node.name for node in graph.nodes
                   if isinstance(node, Variable) and node.trainable and node.flat is None]
        if missing:
            raise ValueError(f"no values for the parameters {', '.join(missing)}")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as error:
        raise ModelFileError(f"{path}: the model does not rebuild ({error!s})") from error
    return graph, header["meta"]


#: The largest graph description a model file may hold (JSON, uncompressed).
MAX_GRAPH_BYTES = 64 * 2**20


def read_npz(path, max_bytes=2**30):
    """The arrays of an ``.npz`` file as ``{name: array}``, read safely: every entry must be a
    ``.npy`` array (no pickle), and the sizes the zip declares must add up to at most
    ``max_bytes`` before anything is inflated; ModelFileError naming ``path`` otherwise.
    For other formats built on ``.npz`` (the article's ``Saver``): one reader for all."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ModelFileError(f"{path}: unexpected entry {info.filename!r} (an .npz "
                                         "file holds .npy arrays only)")
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise ModelFileError(f"{path}: the arrays announce {total} bytes, more than "
                                     f"the {max_bytes} allowed")
            return {info.filename.removesuffix(".npy"):
                    _read_array(archive, info, info.file_size, path) for info in infos}
    except FileNotFoundError as error:
        raise ModelFileError(f"{path}: no such file") from error
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            RuntimeError, zlib.error) as error:
        raise ModelFileError(f"{path}: not a readable .npz file ({error})") from error


def _entries(archive, path):
    """``{"__graph__" or parameter name: ZipInfo}``; ModelFileError for any other entry."""
    entries = {}
    for info in archive.infolist():
        name = info.filename
        key = name.removesuffix(".npy")
        if not name.endswith(".npy") or not (key == "__graph__" or key.startswith("param/")):
            raise ModelFileError(f"{path}: not a fastgraph model file (unexpected entry "
                                 f"{name!r})")
        key = key.removeprefix("param/")
        if key in entries:
            raise ModelFileError(f"{path}: the entry {name!r} appears twice")
        entries[key] = info
    if "__graph__" not in entries:
        raise ModelFileError(f"{path}: no valid graph description in the file")
    return entries


def _read_array(archive, info, limit, path):
    """The array in a ``.npy`` entry, reading at most ``limit`` bytes; no pickle."""
    with archive.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ModelFileError(f"{path}: the entry {info.filename!r} inflates beyond what it "
                             "announces")
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        reason = ("a pickled object, which fastgraph never loads" if "pickle" in str(error)
                  else f"no plain array: {error}")
        raise ModelFileError(f"{path}: not a readable fastgraph model file (the entry "
                             f"{info.filename!r} holds {reason})") from error


def _read_header(archive, info, path):
    if info.file_size > MAX_GRAPH_BYTES:
        raise ModelFileError(f"{path}: the graph description announces {info.file_size} bytes "
                             f"(at most {MAX_GRAPH_BYTES} are read)")
    array = _read_array(archive, info, MAX_GRAPH_BYTES, path)
    try:
        if array.dtype != np.uint8 or array.ndim != 1:
            raise ValueError(f"an array of {array.dtype}")
        header = json.loads(array.tobytes().decode())
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ModelFileError(f"{path}: no valid graph description in the file") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a fastgraph model file")
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path}: model format version {header.get('version')} "
                             f"is not supported (this fastgraph reads version {VERSION})")
    if header.get("dtype") not in ("float32", "float64"):
        raise ModelFileError(f"{path}: the model's dtype {header.get('dtype')!r} is not "
                             "float32 or float64")
    if not isinstance(header.get("meta", {}), dict) or not isinstance(header.get("nodes"), list):
        raise ModelFileError(f"{path}: the graph description lacks its nodes or its meta")
    header.setdefault("meta", {})
    return header


def _parameter_shapes(header, path):
    """``{name: (rows, cols)}`` of the trainable Variables the description declares."""
    shapes = {}
    for spec in header["nodes"]:
        try:
            if spec["type"] == "Variable" and spec["config"].get("trainable", True):
                rows, cols = (int(size) for size in spec["config"]["dim"])
                shapes[spec["name"]] = (rows, cols)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            raise ModelFileError(f"{path}: the model does not rebuild (a node is described "
                                 f"as {str(spec)[:200]})") from error
    return shapes


def _npy_bytes(shape, dtype):
    """The most bytes a ``.npy`` file of ``shape`` and ``dtype`` takes (header included)."""
    rows, cols = shape
    return 2**16 + max(rows, 0) * max(cols, 0) * np.dtype(dtype).itemsize
