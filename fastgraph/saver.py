"""Save and load a graph with its parameters: one file, no pickle.

A model file is a NumPy ``.npz`` archive (a zip) holding ``__graph__``, the graph as JSON
(each node's class, name, parents, options) stored as bytes, and one array per parameter
under ``param/<node name>``. Loading uses ``allow_pickle=False``, so opening a model file
cannot run code; it rebuilds the graph node by node and gives bit-identical outputs. Files
are written to a temporary name and renamed, so a crash never leaves half a model; ``save``
checks its arguments, and that what it would write loads back, before writing anything.

The article's ``Saver`` (``ms.trainer.Saver``) writes two files, ``model.json`` (the graph,
meta and service) and ``weights.npz`` (each parameter under its node's name). Both are
written in full to temporary files before either replaces the old pair, and ``model.json``
records the SHA-256 of the ``weights.npz`` written with it, so that ``load`` refuses a pair
of files from two saves (a pair written before that record still loads). ``load`` into a
graph checks every node and value before it changes anything in the graph.
"""

import contextlib
import datetime
import functools
import hashlib
import io
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import ops
from .checks import beyond_range, first_beyond
from .files import (
    check_file_name,
    folders_locked,
    open_regular,
    write_atomically,
    write_atomically_together,
)
from .graph import CONVENTIONS, Graph, each_whole, get_default_graph
from .layer import ARTICLE_RELU_SLOPE
from .node import Node, Variable
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
#: In a file MatrixSlow's own Saver wrote, the node types of MatrixSlow that compute other
#: numbers than fastgraph's of the same name: its ``ReLU`` lets 0.1 of a negative input
#: through (it is what ``layer.fc``'s "ReLU" makes under the article's conventions). Such a
#: file has no "dtype", which fastgraph's Saver has always written.
MATRIXSLOW_TYPES = {"ReLU": functools.partial(ops.LeakyReLU, slope=ARTICLE_RELU_SLOPE)}


class ModelFileError(Exception):
    """A model file is unreadable, corrupt, or not a fastgraph model."""


def save(path, graph, meta=None):
    """Write ``graph`` (structure and parameter values) and a JSON-able ``meta`` to ``path``.

    Everything is checked before anything is written: ``path`` a file name, ``graph`` a
    :class:`~fastgraph.Graph` whose nodes are all saveable and whose parameters all have
    values, ``meta`` a dict of plain JSON (or None), and the file's bytes load back with
    :func:`load`. TypeError or ValueError otherwise, naming the argument and what it got.
    Metric nodes (``ops.metrics``) are left out, as the article's ``Saver`` leaves them.
    """
    hint = (" (the arguments are save(path, graph, meta): are they swapped?)"
            if isinstance(path, Graph) else "")
    path = _check_path(path, "fastgraph.saver.save", hint)
    _check_graph(graph, f"{path}: cannot save the graph")
    meta = _check_json_dict(meta, f"{path}: cannot save the graph", "its meta")
    nodes = [{"type": kind, "name": node.name,
              "parents": [parent.name for parent in node.parents], "config": config}
             for node, kind, config in _describe(graph, f"{path}: cannot save the graph")]
    header = {"format": FORMAT, "version": VERSION, "dtype": graph.dtype.name,
              "conventions": graph.conventions, "nodes": nodes, "meta": meta}
    arrays = {"__graph__": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    graph.claim("{}: saving the graph", path)  # the values of one moment, not of an update
    try:
        for node in graph.nodes:
            if isinstance(node, Variable) and not node.is_input:
                if node.flat is None:  # the file could not be loaded: refuse before writing
                    raise ValueError(f"{path}: cannot save the graph: parameter {node.name} "
                                     "has no value (give it one with set_value() or init=True)")
                _check_entry_name(node, f"{path}: cannot save the graph", nul=False)
                arrays[f"param/{node.name}"] = np.array(node.value)
    finally:
        graph.release()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    payload = buffer.getvalue()
    try:  # what save() accepts, load() loads: checked on the bytes, before writing them
        _load(io.BytesIO(payload), path)
    except ModelFileError as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: cannot save the graph: the file would not load back "
                         f"({reason})") from None
    _check_folders_on_the_way(path, f"{path}: cannot save the graph")
    write_atomically(path, payload)


def load(path):
    """``(graph, meta)`` from a file written by :func:`save`; ModelFileError if it is not one.

    Nothing is inflated before it is known to be expected: the zip's entry names are checked
    first (``__graph__.npy`` and ``param/<name>.npy`` only), the graph description is read
    within ``MAX_GRAPH_BYTES``, and each parameter within the size its shape announces.
    Nothing is allocated for what is only described: every parameter's value must be stored
    (a description's ``init`` is ignored), and a described shape allocates nothing (see
    ``_check_built``).
    """
    path = _check_path(path, "fastgraph.saver.load")
    return _load(path, path)


def _opened(source):
    """``source``, a path (a regular file: no FIFO waited on, no device read) or a binary
    stream, as a context manager giving a binary stream."""
    if isinstance(source, (str, os.PathLike)):
        return open_regular(source)
    return contextlib.nullcontext(source)


def _load(source, path):
    """:func:`load` of ``source`` (a path or a binary stream), errors naming ``path``."""
    try:
        with _opened(source) as stream, zipfile.ZipFile(stream) as archive:
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
    missing = [name for name in shapes if name not in arrays]
    if missing:  # (never made up from a description's "init": see _check_built)
        raise ModelFileError(f"{path}: the model does not rebuild (no values for the "
                             f"parameters {', '.join(missing)}: the file must hold each "
                             "parameter's value, as param/<name>.npy)")
    try:
        graph = Graph(dtype=header["dtype"], conventions=header["conventions"])
        built = {}
        for spec in header["nodes"]:
            cls = NODE_TYPES[spec["type"]]
            parents = [built[name] for name in spec["parents"]]
            node = cls(*parents, graph=graph, name=spec["name"],
                       **_described_options(cls, spec["config"]))
            _check_built(node, arrays.get(spec["name"]))
            built[spec["name"]] = node
        for name, value in arrays.items():
            built[name].set_value(value)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as error:
        raise ModelFileError(f"{path}: the model does not rebuild ({error!s})") from error
    except MemoryError as error:
        raise ModelFileError(f"{path}: the model does not rebuild ({_no_memory(error)})") \
            from error
    return graph, header["meta"]


def _described_options(cls, options):
    """The options to build a ``cls`` node with, from a model file: a Variable's ``init``
    left out (a parameter's value is the one stored, an input's the one fed)."""
    if cls is Variable and isinstance(options, dict):
        return {key: value for key, value in options.items() if key != "init"}
    return options


def _check_built(node, stored):
    """Check ``node``, just built from a model file's description, before anything is built
    on it: a parameter takes ``stored``, the value the file holds for it (None: none), which
    must have its shape (ValueError otherwise). Loading allocates what the file stores, not
    what it describes: no Variable is built with the description's ``init`` (a parameter
    takes its stored value, an input holds nothing until it is fed), and no operator
    allocates for its shape as it is built (the window operators make their table of
    windows when a dense Jacobian first asks), so a described shape costs nothing by
    itself."""
    if isinstance(node, Variable) and not node.is_input:
        got = "none" if stored is None else stored.shape
        if got != node.dim:
            raise ValueError(f"{node.name}: expected a value of shape {node.dim}, got {got}")
    return node


def _no_memory(error):
    """What a MemoryError while building a described graph says (NumPy's names the array's
    size and shape: "Unable to allocate 7.28 TiB for an array with shape ...")."""
    return f"building it needs more memory than there is: {error}"


#: The largest graph description a model file may hold (JSON, uncompressed).
MAX_GRAPH_BYTES = 64 * 2**20


def read_npz(path, max_bytes=2**30):
    """The arrays of an ``.npz`` file as ``{name: array}``, read safely: every entry must be a
    ``.npy`` array (no pickle), and the sizes the zip declares must add up to at most
    ``max_bytes`` before anything is inflated; ModelFileError naming ``path`` otherwise.
    For other formats built on ``.npz`` (the article's ``Saver``): one reader for all."""
    path = _check_path(path, "fastgraph.saver.read_npz")
    return _read_npz(path, path, max_bytes)


def _read_npz(source, path, max_bytes):
    """:func:`read_npz` of ``source`` (a path or a binary stream), errors naming ``path``."""
    try:
        with _opened(source) as stream, zipfile.ZipFile(stream) as archive:
            infos = archive.infolist()
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ModelFileError(f"{path}: unexpected entry {info.filename!r} (an .npz "
                                         "file holds .npy arrays only)")
            names = [info.filename for info in infos]
            for name in names:
                if names.count(name) > 1:  # a zip may hold a name twice: which is meant?
                    raise ModelFileError(f"{path}: the entry {name!r} appears twice")
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
    header.setdefault("conventions", "torch")  # files written before it was recorded
    if header["conventions"] not in CONVENTIONS:
        raise ModelFileError(f"{path}: the model's conventions {header['conventions']!r} are "
                             f"not one of {', '.join(map(repr, CONVENTIONS))}")
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


# -- checks of what a caller passes ----------------------------------------------------------
def _given(value):
    """What a caller passed, for a message: its type and a short repr."""
    if value is None:
        return "None"
    if isinstance(value, Node):
        return f"the node {value.name!r} (a {type(value).__name__})"
    if isinstance(value, Graph):
        return "a Graph"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _is_name(value):
    """True for a str, or an os.PathLike that gives one."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return isinstance(value, str)


def _check_path(path, where, hint=""):
    """``Path(path)`` for a non-empty file name; TypeError or ValueError naming ``where``."""
    if not _is_name(path):
        raise TypeError(f"{where}: path must be a file name (a str or os.PathLike), got "
                        f"{_given(path)}{hint}")
    if not os.fspath(path):
        raise ValueError(f"{where}: path is empty, expected a file name")
    check_file_name(path, f"{where}: path")
    return Path(path)


def _check_folders_on_the_way(path, where):
    """ValueError naming ``where`` and the file if a file lies where a folder of ``path``
    must be (the missing folders are made as it is written: that said "cannot write (File
    exists)", naming neither)."""
    for folder in Path(os.path.abspath(path)).parents:
        if os.path.isdir(folder):
            return
        if os.path.lexists(folder):
            raise ValueError(f"{where}: {folder} is a file, where a folder is needed (to "
                             f"hold {path})")


def _check_graph(graph, where, argument="graph"):
    if isinstance(graph, Graph):
        return graph
    hint = f" (pass its graph: {argument}=node.graph)" if isinstance(graph, Node) else ""
    raise TypeError(f"{where}: {argument} must be a fastgraph Graph, got {_given(graph)}{hint}")


_PLAIN_JSON = "plain JSON (dicts, lists, strings, numbers)"


def _check_json_dict(value, where, name):
    """``value`` (``{}`` for None) if it is a dict that JSON holds as it is: TypeError if it
    is not a dict, ValueError if it holds anything but dicts with string keys, lists, tuples,
    strings, numbers, booleans and None."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{where}: {name} must be a dict (or None), got {_given(value)}")
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"{where}: {name} must be {_PLAIN_JSON}: {error}") from None
    stack = [(value, name.split()[-1])]  # json.dumps found no cycle: this ends
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            for key, entry in item.items():
                if not isinstance(key, str):  # json.dumps would write it as a string
                    raise ValueError(f"{where}: {name} must be {_PLAIN_JSON}: {at} has the "
                                     f"key {key!r}, not a string")
                stack.append((entry, f"{at}[{key!r}]"))
        elif isinstance(item, (list, tuple)):
            stack.extend((entry, f"{at}[{i}]") for i, entry in enumerate(item))
    return value


def _check_entry_name(node, where, nul=True):
    """Refuse a parameter whose name a zip entry cannot hold (its value is saved under it):
    a NUL ends the name as the zip is read (the article Saver wrote a pair that its load
    refused, "unexpected entry 'a'"; ``nul=False`` leaves it to the .fgz saver's check that
    the file loads back), a lone surrogate cannot be written (a UnicodeEncodeError)."""
    name = node.name
    if nul and "\x00" in name:
        raise ValueError(f"{where}: parameter {name!r} has a NUL character in its name, which "
                         "a zip entry (its value's) cannot hold: give it another name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: parameter {name!r} has a character in its name that is not "
                         "Unicode text (a lone surrogate), which a zip entry (its value's) "
                         "cannot hold: give it another name") from None


def _parents_first(nodes):
    """``nodes`` in their order, each moved after its parents: the order a loader can build
    them in. A weld can give a node a parent made after it (a welding point made before
    the steps of a recurrent net): in the graph's order, the file named a parent before
    it was built, and did not load. Without recursion (a chain may be 100,000 long)."""
    placed, order = set(), []
    for node in nodes:
        stack = [(node, iter(node.parents))]
        while stack:
            current, parents = stack[-1]
            for parent in parents:
                if id(parent) not in placed:
                    stack.append((parent, iter(parent.parents)))
                    break
            else:
                stack.pop()
                if id(current) not in placed:
                    placed.add(id(current))
                    order.append(current)
    return order


def _describe(graph, where):
    """Each node to save as ``(node, type name, config)``, parents first; metric nodes
    (``ops.metrics``: no parameters, a way of reading the outputs) left out, as the
    article's Saver leaves them. TypeError for a node fastgraph cannot rebuild, ValueError
    for options JSON cannot hold."""
    described = []
    for node in _parents_first(graph.nodes):
        if not getattr(node, "need_save", True):
            continue
        kind = type(node).__name__
        if NODE_TYPES.get(kind) is not type(node):
            raise TypeError(f"{node.name}: cannot save a node of type {kind}")
        config = node.config()
        try:
            json.dumps(config)
        except (TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"{where}: the options of {node.name} are not plain JSON "
                             f"({error})") from None
        described.append((node, kind, config))
    return described


# -- the article's Saver ---------------------------------------------------------------------
class Saver:
    """The article's saver: ``root_dir/model.json`` (graph, meta, service) and
    ``root_dir/weights.npz`` (each parameter under its node's name). See the module doc:
    the pair is replaced only when both files are written, ``model.json`` records the
    SHA-256 of its ``weights.npz``, and ``load`` changes nothing in a graph it refuses.
    ``save`` makes ``root_dir`` if it is missing; ``load`` makes no folder."""

    def __init__(self, root_dir=""):
        if not _is_name(root_dir):
            raise TypeError(f"Saver: root_dir must be a folder name (a str or os.PathLike), "
                            f"got {_given(root_dir)}")
        if "\x00" in os.fspath(root_dir):  # (the system's calls say "embedded null byte")
            raise ValueError(f"Saver: root_dir {os.fspath(root_dir)!r} has a NUL character, "
                             "which no folder name can hold")
        self.root_dir = root_dir
        if os.fspath(root_dir):  # made by save(): a load from a mistyped folder made it
            folder = Path(os.path.abspath(root_dir))
            for at in (folder, *folder.parents):
                if os.path.isdir(at):
                    break
                if os.path.lexists(at):
                    what = "is a file" if at == folder else "cannot be made, a file lies on its way"
                    raise ValueError(f"Saver: root_dir {root_dir}: {what}; expected a folder "
                                     "(for model.json and weights.npz)")

    def _make_root(self):
        """Make ``root_dir`` (for a save), naming it if it cannot be made."""
        root_dir = self.root_dir
        if not os.fspath(root_dir):
            return
        try:
            os.makedirs(root_dir, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # made a file since the constructor
            what = ("is a file" if os.path.lexists(root_dir)
                    else "cannot be made, a file lies on its way")
            raise ValueError(f"Saver: root_dir {root_dir}: {what}; expected a folder "
                             "(for model.json and weights.npz)") from None
        except OSError as error:
            raise OSError(f"Saver: root_dir {root_dir}: cannot make the folder "
                          f"({error.strerror or error})") from None

    def _paths(self, model_file_name, weights_file_name, where):
        paths = []
        for option, name in (("model_file_name", model_file_name),
                             ("weights_file_name", weights_file_name)):
            if not _is_name(name):
                raise TypeError(f"{where}: {option} must be a file name (a str), got "
                                f"{_given(name)}")
            if not os.fspath(name):
                raise ValueError(f"{where}: {option} is empty, expected a file name")
            check_file_name(name, f"{where}: {option}")
            paths.append(Path(os.path.join(self.root_dir, name)))
        if os.path.abspath(paths[0]) == os.path.abspath(paths[1]):
            raise ValueError(f"{where}: model_file_name and weights_file_name are the same "
                             f"file, {paths[0]}: expected two files")
        return paths

    def save(self, graph=None, meta=None, service_signature=None,
             model_file_name="model.json", weights_file_name="weights.npz"):
        """Write the graph (without metric nodes), ``meta`` and ``service_signature`` to
        ``model_file_name`` and the parameters to ``weights_file_name``, under ``root_dir``.
        Everything is checked before either file is written."""
        where = "Saver.save"
        graph = get_default_graph() if graph is None else _check_graph(graph, where)
        model_path, weights_path = self._paths(model_file_name, weights_file_name, where)
        meta = dict(_check_json_dict(meta, where, "meta"))
        service = _check_json_dict(service_signature, where, "service_signature")
        meta["save_time"] = str(datetime.datetime.now())
        meta["weights_file_name"] = os.fspath(weights_file_name)
        nodes, weights = [], {}
        graph.claim(where)  # the values of one moment, not of an update
        try:
            for node, kind, config in _describe(graph, where):
                nodes.append({"node_type": kind, "name": node.name,
                              "parents": [parent.name for parent in node.parents],
                              "children": [child.name for child in node.children],
                              "kargs": config,  # an unwelded Welding has no shape yet
                              "dim": None if node.dim is None else list(node.dim)})
                if isinstance(node, Variable) and not node.is_input:
                    if node.flat is None:
                        raise ValueError(f"cannot save the graph: parameter {node.name} has no "
                                         "value (give it one with set_value() or init=True)")
                    _check_entry_name(node, "Saver.save: cannot save the graph")
                    weights[node.name] = np.array(node.value)
        finally:
            graph.release()
        payload = _npz_bytes(weights)
        model = {"meta": meta, "service": service, "graph": nodes, "dtype": graph.dtype.name,
                 "weights_sha256": hashlib.sha256(payload).hexdigest()}
        # The weights first, model.json (which names their checksum) last: a save stopped
        # between the two renames leaves a pair that load() refuses, never one it misreads.
        self._make_root()
        for path in (weights_path, model_path):  # (a name may hold folders: "sub/model.json")
            _check_folders_on_the_way(path, f"{where}: cannot save the graph")
        write_atomically_together([(weights_path, payload),
                                   (model_path, json.dumps(model, indent=4).encode())])
        print(f"Save model into file: {model_path}")
        print(f"Save weights to file: {weights_path}")

    def load(self, to_graph=None, model_file_name="model.json",
             weights_file_name="weights.npz"):
        """Restore the saved graph into ``to_graph`` (default: the default graph): nodes it
        has by name get the saved parameters, missing ones are built. Returns ``(meta,
        service)``. Every node and value is checked first: on a ModelFileError the graph is
        as it was."""
        where = "Saver.load"
        graph = get_default_graph() if to_graph is None else _check_graph(
            to_graph, where, "to_graph")
        model_path, weights_path = self._paths(model_file_name, weights_file_name, where)
        with folders_locked({model_path.parent, weights_path.parent}, shared=True):
            model = _read_model(model_path)  # (the pair of one save: see folders_locked)
            weights = _read_weights(weights_path, model.get("weights_sha256"), model_path)
        graph.claim(where)
        try:
            _restore(graph, model["graph"], weights, model_path, weights_path,
                     written_by_matrixslow="dtype" not in model)
        finally:
            graph.release()
        print(f"Load and restore model from {model_path} and {weights_path}")
        self.meta, self.service = model.get("meta"), model.get("service")
        return self.meta, self.service


def _npz_bytes(arrays):
    """An ``.npz`` file (uncompressed, as ``np.savez`` writes) of ``{name: array}``: any
    name, even those ``np.savez`` takes as its own arguments (``file``)."""
    buffer, archive = io.BytesIO(), None
    try:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as stream:
                    np.lib.format.write_array(stream, np.asarray(array), allow_pickle=False)
    except ValueError as error:  # the archive's close refusing an entry left open: by a
        if not isinstance(error.__context__, KeyboardInterrupt):  # Ctrl-C as the entry's
            raise  # own close started; that is what is raised, the archive dropped (not
        archive.fp = None  # closed again when collected)
        raise error.__context__ from None
    return buffer.getvalue()


def _read_model(model_path):
    """The article's ``model.json`` as a dict, its node descriptions checked for form."""
    try:
        with open_regular(model_path) as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > MAX_GRAPH_BYTES:
                raise ValueError(f"{size} bytes, more than the {MAX_GRAPH_BYTES} read")
            model = json.loads(stream.read().decode("utf-8"))
        if isinstance(model, list):  # the first MatrixSlow Saver's form: the nodes alone
            model = {"graph": model}
        specs = model["graph"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise ModelFileError(f"{model_path}: not a model saved by Saver ({error})") from error
    checksum = model.get("weights_sha256")
    if not isinstance(specs, list) or not (checksum is None or isinstance(checksum, str)):
        raise ModelFileError(f"{model_path}: not a model saved by Saver (its graph is not a "
                             "list of nodes, or its weights_sha256 not a string)")
    for spec in specs:
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
                and spec.get("node_type") in NODE_TYPES
                and isinstance(spec.get("parents", []), list)
                and all(isinstance(name, str) for name in spec.get("parents", []))
                and isinstance(spec.get("kargs", {}), dict)):
            raise ModelFileError(f"{model_path}: the model does not rebuild (a node is "
                                 f"described as {str(spec)[:200]})")
    return model


def _read_weights(weights_path, checksum, model_path):
    """``{name: array}`` from the article's ``weights.npz`` (as :func:`read_npz` reads), after
    its SHA-256 is compared with the one ``model.json`` recorded (when it recorded one)."""
    try:
        with open_regular(weights_path) as stream:
            digest = hashlib.sha256()
            for chunk in iter(lambda: stream.read(2**20), b""):
                digest.update(chunk)
            if checksum is not None and digest.hexdigest() != checksum:
                raise ModelFileError(
                    f"{model_path} and {weights_path} do not belong together: "
                    f"{model_path.name} was saved with a weights file of SHA-256 "
                    f"{checksum[:16]}..., {weights_path.name} has SHA-256 "
                    f"{digest.hexdigest()[:16]}... (a save that did not finish, or files of "
                    "two saves)")
            stream.seek(0)
            return _read_npz(stream, weights_path, 2**30)
    except FileNotFoundError as error:
        raise ModelFileError(f"{weights_path}: no such file") from error
    except OSError as error:
        raise ModelFileError(f"{weights_path}: not a readable .npz file ({error})") from error


def _is_parameter(spec):
    return spec["node_type"] == "Variable" and spec.get("kargs", {}).get("trainable", True)


def _written_by_matrixslow(spec):
    """A Variable as MatrixSlow's own Saver describes it: no options (``"kargs": {}``), its
    shape beside them as ``"dim"``, its value saved whether it is a parameter or an input.
    MatrixSlow builds it as a parameter, and so does the loader; a node of that name that
    the graph has as an input takes the saved value as its sample, as MatrixSlow's does."""
    return spec["node_type"] == "Variable" and "trainable" not in spec.get("kargs", {})


def _restore(graph, specs, weights, model_path, weights_path, written_by_matrixslow=False):
    """Build the nodes ``graph`` lacks and give every saved parameter its value, after
    checking all of it (on a scratch graph standing in for ``graph``): on a ModelFileError
    nothing in ``graph`` has changed. Nodes of a file ``written_by_matrixslow`` are built as
    MatrixSlow computes them (``MATRIXSLOW_TYPES``)."""
    types = {**NODE_TYPES, **MATRIXSLOW_TYPES} if written_by_matrixslow else NODE_TYPES
    def refuse(reason):
        return ModelFileError(f"{model_path}: the model does not rebuild ({reason}); the "
                              "graph was left as it was")

    parameters = {spec["name"]: spec for spec in specs if _is_parameter(spec)}
    samples = {name for name, spec in parameters.items() if _written_by_matrixslow(spec)}
    unknown = sorted(set(weights) - set(parameters))
    missing = sorted(set(parameters) - set(weights))
    if unknown or missing:
        raise ModelFileError(
            f"{model_path} and {weights_path} do not belong together: "
            + "; ".join(([f"{weights_path.name} holds values for {', '.join(unknown)}, not "
                          f"parameters of {model_path.name}"] if unknown else [])
                        + ([f"{weights_path.name} holds no values for the parameters "
                            f"{', '.join(missing)}"] if missing else [])))
    existing = {}
    for spec in specs:
        try:
            existing[spec["name"]] = graph.get_node(spec["name"])
        except KeyError:
            continue
        if written_by_matrixslow and type(existing[spec["name"]]) is NODE_TYPES.get(
                spec["node_type"]) is not types[spec["node_type"]]:
            warnings.warn(
                f"{model_path}: {spec['name']} is fastgraph's {spec['node_type']} in this graph, "
                f"where MatrixSlow's file saved its own (its ReLU lets 0.1 of a negative "
                f"through): the loaded model computes other numbers than MatrixSlow's; load "
                f"into an empty graph, or build that node as layer.fc/layer.conv's \"ReLU\" "
                f"under the article's conventions (a LeakyReLU)", stacklevel=3)
    # The nodes to build, built on a scratch graph in which a leaf of the same shape stands
    # for each node the graph has: their options and shapes checked, the graph untouched.
    scratch, stand_ins = Graph(dtype=graph.dtype, conventions=graph.conventions), {}
    try:
        for spec in specs:
            name, node = spec["name"], existing.get(spec["name"])
            if node is None:  # (checked before a node is built on it)
                stand_ins[name] = _check_built(_build(scratch, spec, stand_ins, types),
                                               weights.get(name))
            elif name not in stand_ins:
                stand_ins[name] = _stand_in(node, scratch, name)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as error:
        raise refuse(error) from error
    except MemoryError as error:
        raise refuse(_no_memory(error)) from error
    for name, value in weights.items():
        node = existing[name] if name in existing else stand_ins[name]
        if not (isinstance(node, Variable) and (not node.is_input or name in samples)):
            raise refuse(f"{name}: the graph's node of that name is a "
                         f"{type(node).__name__}, not a parameter")
        if value.dtype.kind not in "biuf":
            raise refuse(f"{name}: expected a numeric array, got dtype {value.dtype}")
        if value.shape != node.dim:
            raise refuse(f"{name}: expected a value of shape {node.dim}, got {value.shape}")
        beyond = first_beyond(value, graph.dtype)
        if beyond is not None:  # a cast would make it infinite
            raise refuse(str(beyond_range(name, value[beyond].item(), graph.dtype)))
    try:
        for spec in specs:
            if spec["name"] not in existing:
                existing[spec["name"]] = _build(graph, spec, existing, types)
        # every value checked above: set all of them, even past a Ctrl-C (never half)
        each_whole(weights.items(), lambda item: existing[item[0]].set_value(item[1]))
    except (KeyError, TypeError, ValueError) as error:  # checked above: not expected
        raise ModelFileError(f"{model_path}: the model does not rebuild ({error!s})") \
            from error


def _stand_in(node, scratch, name):
    """A leaf in ``scratch`` that nodes built on it see as they see ``node``: its shape,
    whether it has a batch axis (a welding point without a shape yet stays one)."""
    if isinstance(node, ops.Welding):
        return ops.Welding(dim=node.dim, graph=scratch, name=name)
    return Variable(node.dim, trainable=not node.batched, graph=scratch, name=name)


def _build(graph, spec, nodes, types=NODE_TYPES):
    """The node ``spec`` describes, built in ``graph`` on the parents ``nodes`` names (its
    type looked up in ``types``)."""
    cls = types[spec["node_type"]]
    parents = [nodes[name] if name in nodes else graph.get_node(name)
               for name in spec["parents"]]
    options = _described_options(cls, spec.get("kargs", {}))
    if _written_by_matrixslow(spec) and "dim" not in options:  # its shape beside the options
        options = {**options, "dim": spec.get("dim")}
    return cls(*parents, graph=graph, name=spec["name"], **options)
