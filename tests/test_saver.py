"""Saving and loading a model: structure, bit-identical outputs, and files that are not models."""

import io
import json
import zipfile

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.saver import ModelFileError


def small_model():
    model = fg.models.mlp(12, (5,), 3, "Tanh", dtype=np.float64, seed=4)
    with model.graph:  # every operator kind that has options, to round-trip them
        leaky = fg.ops.LeakyReLU(model.logits, slope=0.3, name="leaky")
        fg.ops.Reshape(leaky, shape=(1, 3), name="row")
    return model


def test_round_trip_is_bit_identical(tmp_path, rng):
    model = small_model()
    path = tmp_path / "model.fgz"
    fg.saver.save(path, model.graph, {"input": "x", "output": "predict", "note": "hello"})
    graph, meta = fg.saver.load(path)
    assert meta == {"input": "x", "output": "predict", "note": "hello"}
    assert [n.name for n in graph.nodes] == [n.name for n in model.graph.nodes]
    assert [type(n) for n in graph.nodes] == [type(n) for n in model.graph.nodes]
    assert graph.get_node("leaky").slope == 0.3 and graph.get_node("row").dim == (1, 3)
    assert graph.dtype == np.float64
    features = rng.normal(size=(7, 12))
    for g in (model.graph, graph):
        g.get_node("x").set_value(features)
        g.get_node("row").forward()
        g.get_node("predict").forward()
    for name in ("predict", "row"):
        assert model.graph.get_node(name).value.tobytes() == graph.get_node(name).value.tobytes()


def test_written_atomically_and_without_pickle(tmp_path):
    path = tmp_path / "model.fgz"
    fg.saver.save(path, small_model().graph)
    assert [p.name for p in tmp_path.iterdir()] == ["model.fgz"]
    with np.load(path, allow_pickle=False) as archive:  # plain arrays only
        assert all(archive[key].dtype != object for key in archive.files)


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _header(arrays):
    return json.loads(arrays["__graph__"].tobytes())


def _set_header(arrays, header):
    arrays["__graph__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda a: a.pop("param/Variable:2"), "no values for the parameters Variable:2"),
        (lambda a: a.update({"param/Variable:2": np.zeros((2, 2))}), "expected a value of shape"),
        (lambda a: a.pop("__graph__"), "no valid graph description"),
        (
            lambda a: a.update({"__graph__": np.frombuffer(b"{not json", np.uint8)}),
            "no valid graph description",
        ),
        (lambda a: _set_header(a, {**_header(a), "format": "other"}), "not a fastgraph model"),
        (lambda a: _set_header(a, {**_header(a), "version": 99}), "version 99 is not supported"),
        (
            lambda a: _set_header(
                a,
                {
                    **_header(a),
                    "nodes": _header(a)["nodes"][:1]
                    + [{"type": "os.system", "name": "evil", "parents": [], "config": {}}],
                },
            ),
            "does not rebuild",
        ),
    ],
)
def test_tampered_files_fail_cleanly(tmp_path, tamper, message):
    path = tmp_path / "model.fgz"
    fg.saver.save(path, small_model().graph)
    _rewrite(path, tamper)
    with pytest.raises(ModelFileError, match=message):
        fg.saver.load(path)


def test_an_entry_written_twice_is_refused(tmp_path):
    """A zip may hold two entries of one name (the reader would take one of them): a model
    file or an article weights file holding a parameter twice is refused."""
    path = tmp_path / "model.fgz"
    fg.saver.save(path, small_model().graph)
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    doubled = tmp_path / "doubled.fgz"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(doubled, "w") as out:
        for name, data in entries.items():
            out.writestr(name, data)
        out.writestr("param/Variable:2.npy", entries["param/Variable:2.npy"])
    with pytest.raises(ModelFileError, match="the entry 'param/Variable:2.npy' appears twice"):
        fg.saver.load(doubled)
    with pytest.raises(ModelFileError, match="the entry 'param/Variable:2.npy' appears twice"):
        fg.saver.read_npz(doubled)


def test_foreign_files_fail_cleanly(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable fastgraph model"):
        fg.saver.load(text)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __graph__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="not a readable fastgraph model"):
        fg.saver.load(pickled)
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("readme.txt", "not numpy")
    with pytest.raises(ModelFileError):
        fg.saver.load(archive)
    with pytest.raises(ModelFileError, match="not a readable"):
        fg.saver.load(tmp_path / "missing.fgz")


def _welded_later(graph):
    """A welding point made before the node it is welded to (the article's recurrent nets
    make the point first, then the steps): the graph's order names h after the point."""
    with graph:
        weld = fg.ops.Welding(name="weld", dim=(3, 1))
        out = fg.layer.fc(weld, 3, 2, None)
        x = fg.core.Variable(dim=(2, 1), init=False, trainable=False, name="x")
        w = fg.core.Variable(dim=(3, 2), init=True, trainable=True, name="w")
        h = fg.ops.ReLU(fg.ops.MatMul(w, x), name="h")
    weld.weld(h)
    return x, out


@pytest.mark.parametrize("saver", ["fgz", "article"])
def test_a_graph_welded_to_a_later_node_saves_and_loads(tmp_path, rng, saver):
    """Its file named h as a parent before h was built: save() refused ("the model does
    not rebuild ('h')"), the article's Saver wrote a pair that load() refused."""
    graph = fg.Graph(dtype=np.float64, seed=3)
    x, out = _welded_later(graph)
    values = rng.normal(size=(5, 2, 1))
    x.set_value(values)
    out.forward()
    if saver == "fgz":
        fg.saver.save(tmp_path / "m.fgz", graph)
        loaded, _ = fg.saver.load(tmp_path / "m.fgz")
    else:
        fg.trainer.Saver(str(tmp_path)).save(graph)
        loaded = fg.Graph(dtype=np.float64)
        fg.trainer.Saver(str(tmp_path)).load(loaded)
    assert loaded.get_node("weld").parents[0].name == "h"
    loaded.get_node("x").set_value(values)
    twin = loaded.get_node(out.name)
    twin.forward()
    np.testing.assert_array_equal(twin.flat, out.flat)


def test_metric_nodes_are_left_out_of_a_model_file_as_the_articles_saver_leaves_them(
        tmp_path, rng):
    """save() refused the graph ("cannot save a node of type Accuracy") where the article's
    Saver writes it without its metric nodes."""
    graph = fg.Graph(dtype=np.float64, seed=2)
    with graph:
        x = fg.Variable(dim=(3, 1), init=False, trainable=False, name="x")
        label = fg.Variable(dim=(2, 1), init=False, trainable=False, name="label")
        logits = fg.layer.fc(x, 3, 2, None)
        fg.ops.metrics.Accuracy(logits, label, name="accuracy")
    fg.saver.save(tmp_path / "m.fgz", graph)
    loaded, _ = fg.saver.load(tmp_path / "m.fgz")
    names = [node.name for node in loaded.nodes]
    assert "accuracy" not in names and names == [node.name for node in graph.nodes][:-1]
    values = rng.normal(size=(4, 3, 1))
    for g in (graph, loaded):
        g.get_node("x").set_value(values)
        g.get_node(logits.name).forward()
    np.testing.assert_array_equal(loaded.get_node(logits.name).flat, logits.flat)


@pytest.mark.parametrize("conventions", ["article", "torch"])
def test_a_loaded_graph_follows_the_conventions_it_was_saved_with(tmp_path, conventions):
    """A graph of the article's conventions came back with torch's: Adam and RMSProp resumed
    with other rules and defaults, and a ReLU layer added after loading was not leaky."""
    graph = fg.Graph(conventions=conventions, seed=0)
    with graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        fg.layer.fc(x, 3, 2, "ReLU")
    fg.saver.save(tmp_path / "model.fgz", graph)
    loaded, _ = fg.saver.load(tmp_path / "model.fgz")
    assert loaded.conventions == conventions
    with loaded:
        relu = fg.layer.fc(loaded.get_node("x"), 3, 2, "ReLU")
    assert (type(relu).__name__ == "LeakyReLU") == (conventions == "article")


def test_a_model_file_of_unknown_conventions_is_refused(tmp_path):
    import io
    import json

    path = tmp_path / "model.fgz"
    graph = fg.Graph(seed=0)
    with graph:
        fg.layer.fc(fg.Variable((3, 1), trainable=False, name="x"), 3, 2, None)
    fg.saver.save(path, graph)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays["__graph__"].tobytes())
    header["conventions"] = "keras"
    arrays["__graph__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(fg.saver.ModelFileError, match=r"model.fgz: the model's conventions "
                                                      r"'keras' are not one of 'torch', 'article'"):
        fg.saver.load(path)
    del header["conventions"]  # a file of before: torch's, as every graph then
    arrays["__graph__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    assert fg.saver.load(path)[0].conventions == "torch"
