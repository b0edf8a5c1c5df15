"""Saving safely: arguments checked before anything is written, what save() writes loads,
the article's Saver replaces its two files together (or says they do not belong together)
and changes nothing in a graph it refuses to load into, and files reach the disk."""

import json
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgraph as fg
from fastgraph import files
from fastgraph.saver import ModelFileError, Saver


def small_model():
    return fg.models.mlp(12, (5,), 3, "Tanh", dtype=np.float32, seed=4)


def chain(hidden, seed=0):
    """x (3, 1) -> w1 (hidden, 3) -> w2 (2, hidden): two parameters and two products."""
    with fg.Graph(dtype=np.float64, seed=seed) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w1 = fg.Variable((hidden, 3), init=True, name="w1")
        w2 = fg.Variable((2, hidden), init=True, name="w2")
        fg.ops.MatMul(w2, fg.ops.MatMul(w1, x, name="h"), name="y")
    return graph


def parameters(graph):
    return {node.name: node.value.copy() for node in graph.nodes
            if isinstance(node, fg.Variable) and node.trainable}


def contents(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


# -- fastgraph.saver.save and load: arguments ------------------------------------------------
GRAPH = small_model().graph
NODE = GRAPH.nodes[-1]


@pytest.mark.parametrize("arguments, error, message", [
    (lambda p: (p, GRAPH, [1, 2]), TypeError,
     "{p}: cannot save the graph: its meta must be a dict (or None), got list [1, 2]"),
    (lambda p: (p, GRAPH, "abc"), TypeError,
     "{p}: cannot save the graph: its meta must be a dict (or None), got str 'abc'"),
    (lambda p: (p, GRAPH, {"a": {1: "b"}}), ValueError,
     "{p}: cannot save the graph: its meta must be plain JSON (dicts, lists, strings, "
     "numbers): meta['a'] has the key 1, not a string"),
    (lambda p: (GRAPH, str(p)), TypeError,
     "fastgraph.saver.save: path must be a file name (a str or os.PathLike), got a Graph "
     "(the arguments are save(path, graph, meta): are they swapped?)"),
    (lambda p: (p, None), TypeError,
     "{p}: cannot save the graph: graph must be a fastgraph Graph, got None"),
    (lambda p: (p, NODE), TypeError,
     f"{{p}}: cannot save the graph: graph must be a fastgraph Graph, got the node "
     f"'{NODE.name}' (a {type(NODE).__name__}) (pass its graph: graph=node.graph)"),
    (lambda p: (None, GRAPH), TypeError,
     "fastgraph.saver.save: path must be a file name (a str or os.PathLike), got None"),
    (lambda p: (b"model.fgz", GRAPH), TypeError,
     "fastgraph.saver.save: path must be a file name (a str or os.PathLike), got bytes "
     "b'model.fgz'"),
    (lambda p: ("", GRAPH), ValueError, "fastgraph.saver.save: path is empty, expected a file "
                                        "name"),
])
def test_save_checks_its_arguments_before_writing(tmp_path, arguments, error, message):
    path = tmp_path / "model.fgz"
    with pytest.raises(error) as raised:
        fg.saver.save(*arguments(path))
    assert str(raised.value) == message.format(p=path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path, given",
                         [(None, "None"), (3, "int 3"), (b"m.fgz", "bytes b'm.fgz'")])
def test_load_and_read_npz_name_a_wrong_path(path, given):
    for function in (fg.saver.load, fg.saver.read_npz):
        with pytest.raises(TypeError) as raised:
            function(path)
        assert str(raised.value) == (f"fastgraph.saver.{function.__name__}: path must be a "
                                     f"file name (a str or os.PathLike), got {given}")


def test_a_name_that_no_file_would_keep_is_refused_when_the_node_is_made(tmp_path):
    """A zip entry's name ends at a NUL: a node "w\x00x" would come back as "param/w" (the
    saver also refuses such a file before writing it, should a name get there)."""
    graph = small_model().graph
    count = graph.node_count()
    with graph, pytest.raises(ValueError, match=r"^a node's name cannot hold a NUL "):
        fg.Variable((2, 2), init=True, name="w\x00x")
    assert graph.node_count() == count
    with pytest.raises(ValueError, match=r"^a node's name cannot hold a NUL "):
        graph.nodes[0].name = "w\x00x"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=12)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(meta=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_what_save_accepts_load_loads(meta, tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "model.fgz"
    fg.saver.save(path, GRAPH, meta)
    graph, loaded = fg.saver.load(path)
    assert loaded == meta and len(graph.nodes) == len(GRAPH.nodes)


# -- the article's Saver: arguments ----------------------------------------------------------
def test_the_article_saver_is_this_one():
    """fastgraph.trainer.Saver (ms.trainer.Saver) is fastgraph.saver.Saver: one module for
    every model file (fastgraph/article_trainer.py re-exports it)."""
    assert fg.trainer.Saver is Saver


def test_saver_names_a_root_dir_that_is_not_a_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ValueError) as raised:
        Saver(str(afile))
    assert str(raised.value) == (f"Saver: root_dir {afile}: is a file; expected a folder "
                                 "(for model.json and weights.npz)")
    with pytest.raises(ValueError) as raised:
        Saver(str(afile / "sub"))
    assert str(raised.value) == (f"Saver: root_dir {afile / 'sub'}: cannot be made, a file "
                                 "lies on its way; expected a folder (for model.json and "
                                 "weights.npz)")
    with pytest.raises(TypeError) as raised:
        Saver(3)
    assert str(raised.value) == ("Saver: root_dir must be a folder name (a str or "
                                 "os.PathLike), got int 3")
    assert afile.read_text() == "mine"


def test_saver_names_wrong_arguments_before_writing(tmp_path):
    saver, graph = Saver(str(tmp_path)), chain(4)
    cases = [
        (dict(graph="model"), TypeError,
         "Saver.save: graph must be a fastgraph Graph, got str 'model'"),
        (dict(graph=graph, meta=[1]), TypeError,
         "Saver.save: meta must be a dict (or None), got list [1]"),
        (dict(graph=graph, service_signature={"x": np.float32(1)}), ValueError,
         "Saver.save: service_signature must be plain JSON (dicts, lists, strings, numbers): "
         "Object of type float32 is not JSON serializable"),
        (dict(graph=graph, model_file_name=None), TypeError,
         "Saver.save: model_file_name must be a file name (a str), got None"),
        (dict(graph=graph, model_file_name="same", weights_file_name="same"), ValueError,
         f"Saver.save: model_file_name and weights_file_name are the same file, "
         f"{tmp_path / 'same'}: expected two files"),
    ]
    for arguments, error, message in cases:
        with pytest.raises(error) as raised:
            saver.save(**arguments)
        assert str(raised.value) == message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError) as raised:
        saver.load(to_graph=graph.get_node("y"))
    assert str(raised.value) == ("Saver.load: to_graph must be a fastgraph Graph, got the node "
                                 "'y' (a MatMul) (pass its graph: to_graph=node.graph)")


def test_saver_saves_parameters_named_as_numpy_arguments(tmp_path):
    with fg.Graph(dtype=np.float64, seed=1) as graph:
        fg.Variable((2, 2), init=True, name="file")  # np.savez(file, ..., allow_pickle=...)
        fg.Variable((1, 3), init=True, name="allow_pickle")
    Saver(str(tmp_path)).save(graph)
    with fg.Graph(dtype=np.float64) as restored:
        Saver(str(tmp_path)).load(restored)
    for name, value in parameters(graph).items():
        np.testing.assert_array_equal(restored.get_node(name).value, value)


# -- the article's Saver: the two files together ---------------------------------------------
def test_saver_checks_both_files_before_writing_either(tmp_path):
    folder = tmp_path / "model"
    Saver(str(folder)).save(chain(4))
    model = (folder / "model.json").read_bytes()
    (folder / "weights.npz").unlink()
    (folder / "weights.npz").mkdir()  # the second file cannot be written
    with pytest.raises(OSError) as raised:
        Saver(str(folder)).save(chain(5))
    assert str(raised.value) == f"{folder / 'weights.npz'}: cannot write (Is a directory)"
    assert (folder / "model.json").read_bytes() == model  # the first is not written either
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.npz"]


def test_saver_writes_both_files_before_replacing_either(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    Saver(str(folder)).save(chain(4))
    before = contents(folder)
    real_fsync, synced = os.fsync, []

    def fsync(handle):
        synced.append(handle)
        if len(synced) == 2:  # the second temporary file: the disk is full
            raise OSError(28, "No space left on device")
        real_fsync(handle)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match=r"model.json: cannot write \(No space left on device\)"):
        Saver(str(folder)).save(chain(5))
    assert contents(folder) == before  # both old files, no temporary
    monkeypatch.undo()
    with fg.Graph(dtype=np.float64) as restored:
        Saver(str(folder)).load(restored)
    assert restored.get_node("w1").dim == (4, 3)


def test_a_save_stopped_between_the_renames_is_refused_on_load(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    Saver(str(folder)).save(chain(4))
    real_replace = os.replace

    def replace(source, target):
        if str(target).endswith("model.json"):
            raise OSError(5, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as raised:
        Saver(str(folder)).save(chain(5, seed=1))
    assert str(raised.value) == (f"{folder / 'model.json'}: cannot write (Input/output error); "
                                 f"{folder / 'weights.npz'} was replaced already")
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.npz"]
    graph = chain(4, seed=7)
    before = parameters(graph)
    with pytest.raises(ModelFileError, match=(
            f"{folder / 'model.json'} and {folder / 'weights.npz'} do not belong together: "
            "model.json was saved with a weights file of SHA-256 [0-9a-f]{16}[.]{3}, "
            r"weights.npz has SHA-256 [0-9a-f]{16}[.]{3} \(a save that did not finish, or "
            r"files of two saves\)")):
        Saver(str(folder)).load(graph)
    assert parameters(graph).keys() == before.keys()
    assert all(np.array_equal(parameters(graph)[k], v) for k, v in before.items())


def test_weights_of_another_save_are_refused(tmp_path):
    Saver(str(tmp_path / "a")).save(chain(4, seed=1))
    Saver(str(tmp_path / "b")).save(chain(4, seed=2))  # same shapes, other values
    (tmp_path / "a" / "weights.npz").write_bytes((tmp_path / "b" / "weights.npz").read_bytes())
    with fg.Graph(dtype=np.float64) as restored, \
            pytest.raises(ModelFileError, match="do not belong together"):
        Saver(str(tmp_path / "a")).load(restored)
    assert restored.node_count() == 0


def test_a_pair_saved_before_the_checksum_still_loads(tmp_path):
    """model.json without weights_sha256 and weights written by np.savez, as the released
    Saver wrote them: the article's programs load them as before."""
    graph = chain(4, seed=3)
    Saver(str(tmp_path)).save(graph, meta={"classes": 2})
    model = json.loads((tmp_path / "model.json").read_text())
    del model["weights_sha256"]
    (tmp_path / "model.json").write_text(json.dumps(model, indent=4))
    np.savez(tmp_path / "weights.npz", **parameters(graph))
    with fg.Graph(dtype=np.float64) as restored:
        meta, service = Saver(str(tmp_path)).load(restored)
    assert meta["classes"] == 2 and service == {}
    for name, value in parameters(graph).items():
        np.testing.assert_array_equal(restored.get_node(name).value, value)


def test_a_pair_whose_files_disagree_on_the_parameters_is_refused(tmp_path):
    graph = chain(4, seed=3)
    Saver(str(tmp_path)).save(graph)
    model = json.loads((tmp_path / "model.json").read_text())
    del model["weights_sha256"]  # an old pair: the names are still compared
    (tmp_path / "model.json").write_text(json.dumps(model))
    values = parameters(graph)
    np.savez(tmp_path / "weights.npz", w1=values["w1"], w3=values["w2"])
    with fg.Graph(dtype=np.float64) as restored, \
            pytest.raises(ModelFileError) as raised:
        Saver(str(tmp_path)).load(restored)
    assert str(raised.value) == (
        f"{tmp_path / 'model.json'} and {tmp_path / 'weights.npz'} do not belong together: "
        "weights.npz holds values for w3, not parameters of model.json; weights.npz holds no "
        "values for the parameters w2")
    assert restored.node_count() == 0


# -- the article's Saver: nothing assigned before everything is checked ----------------------
def two_parameters(second, seed):
    with fg.Graph(dtype=np.float64, seed=seed) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w1 = fg.Variable((4, 3), init=True, name="w1")
        fg.ops.MatMul(w1, x, name="h")
        fg.Variable(second, init=True, name="w2")
    return graph


def test_a_load_that_fails_on_a_later_parameter_changes_no_earlier_one(tmp_path):
    Saver(str(tmp_path)).save(two_parameters((3, 4), seed=1))
    graph = two_parameters((3, 5), seed=2)
    before = parameters(graph)
    with pytest.raises(ModelFileError) as raised:
        Saver(str(tmp_path)).load(graph)
    assert all(np.array_equal(parameters(graph)[k], v) for k, v in before.items())  # w1 too
    assert str(raised.value) == (
        f"{tmp_path / 'model.json'}: the model does not rebuild (w2: expected a value of "
        "shape (3, 5), got (3, 4)); the graph was left as it was")
    Saver(str(tmp_path)).load(two_parameters((3, 4), seed=2))  # the same shapes load


def test_a_load_that_cannot_build_a_node_adds_none(tmp_path):
    Saver(str(tmp_path)).save(chain(4, seed=1))
    with fg.Graph(dtype=np.float64, seed=2) as graph:  # w2 of another shape, y missing
        x = fg.Variable((3, 1), trainable=False, name="x")
        w1 = fg.Variable((4, 3), init=True, name="w1")
        fg.Variable((2, 5), init=True, name="w2")
    before = w1.value.copy()
    with pytest.raises(ModelFileError) as raised:
        Saver(str(tmp_path)).load(graph)
    assert [node.name for node in graph.nodes] == ["x", "w1", "w2"]  # h not added
    np.testing.assert_array_equal(w1.value, before)
    assert x.flat is None
    assert str(raised.value) == (
        f"{tmp_path / 'model.json'}: the model does not rebuild (MatMul cannot multiply w2 of "
        "shape (2, 5) by h of shape (4, 1): 5 columns against 4 rows); the graph was left as "
        "it was")


def test_a_load_into_a_node_that_is_not_a_parameter_is_refused(tmp_path):
    Saver(str(tmp_path)).save(two_parameters((3, 4), seed=1))
    with fg.Graph(dtype=np.float64, seed=2) as other:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w1 = fg.Variable((4, 3), init=True, name="w1")
        fg.ops.MatMul(w1, x, name="h")
        fg.Variable((3, 4), trainable=False, name="w2")  # an input of that name
    before = w1.value.copy()
    with pytest.raises(ModelFileError, match=r"\(w2: the graph's node of that name is a "
                                             r"Variable, not a parameter\)"):
        Saver(str(tmp_path)).load(other)
    np.testing.assert_array_equal(w1.value, before)


def test_a_load_into_a_graph_with_every_node_builds_none_and_assigns_all(tmp_path):
    saved = chain(4, seed=1)
    Saver(str(tmp_path)).save(saved)
    graph = chain(4, seed=2)
    Saver(str(tmp_path)).load(graph)
    assert graph.node_count() == saved.node_count()
    for name, value in parameters(saved).items():
        np.testing.assert_array_equal(graph.get_node(name).value, value)


# -- files reach the disk --------------------------------------------------------------------
def recorded(monkeypatch, refuse_folder=False, refuse_file=False):
    """os.fsync and os.replace, recorded as ("fsync", "file" or "folder") and ("replace",)."""
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(handle):
        kind = "folder" if stat.S_ISDIR(os.fstat(handle).st_mode) else "file"
        events.append(("fsync", kind))
        if (kind == "folder" and refuse_folder) or (kind == "file" and refuse_file):
            raise OSError(22, "Invalid argument")
        real_fsync(handle)

    def replace(source, target):
        events.append(("replace",))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_write_atomically_syncs_the_file_before_the_rename_and_the_folder_after(
        tmp_path, monkeypatch):
    events = recorded(monkeypatch)
    files.write_atomically(tmp_path / "model.fgz", b"new")
    assert events == [("fsync", "file"), ("replace",), ("fsync", "folder")]
    assert (tmp_path / "model.fgz").read_bytes() == b"new"


def test_a_folder_that_refuses_fsync_is_written_all_the_same(tmp_path, monkeypatch):
    events = recorded(monkeypatch, refuse_folder=True)
    files.write_atomically(tmp_path / "model.fgz", b"new")
    assert events[-1] == ("fsync", "folder")
    assert [p.name for p in tmp_path.iterdir()] == ["model.fgz"]


def test_a_file_that_does_not_reach_the_disk_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "model.fgz"
    path.write_bytes(b"old")
    events = recorded(monkeypatch, refuse_file=True)
    with pytest.raises(OSError) as raised:
        files.write_atomically(path, b"new")
    assert str(raised.value) == f"{path}: cannot write (Invalid argument)"
    assert ("replace",) not in events
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.fgz"]


def test_write_atomically_together_replaces_nothing_until_all_are_written(tmp_path):
    (tmp_path / "a").write_bytes(b"old a")
    (tmp_path / "b").mkdir()
    with pytest.raises(OSError, match=r"/b: cannot write \(Is a directory\)"):
        files.write_atomically_together([(tmp_path / "a", b"new a"), (tmp_path / "b", b"new")])
    assert (tmp_path / "a").read_bytes() == b"old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    with pytest.raises(ValueError, match="a file is named twice"):
        files.write_atomically_together([(tmp_path / "a", b"1"), (tmp_path / "." / "a", b"2")])
    assert (tmp_path / "a").read_bytes() == b"old a"
