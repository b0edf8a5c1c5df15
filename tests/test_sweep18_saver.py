"""Model files, from sweep 18: a parameter's value comes from the file, never from a
description's ``init``; a described shape allocates nothing at load (or is refused, naming the
file); and paths that name a folder, hold a NUL or run through a file are refused by name,
with nothing written."""

import io
import json
import re
import tracemalloc

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.cli import main
from fastgraph.saver import ModelFileError, Saver


def chain():
    """x (3, 1) -> w1 (4, 3) -> w2 (2, 4): an input and two parameters."""
    with fg.Graph(dtype=np.float64, seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w1 = fg.Variable((4, 3), init=True, name="w1")
        w2 = fg.Variable((2, 4), init=True, name="w2")
        fg.ops.MatMul(w2, fg.ops.MatMul(w1, x, name="h"), name="y")
    return graph


def rewrite(path, change):
    """Rewrite the model file at ``path``: ``change(header, arrays)`` edits its description
    (a dict) and its ``{"param/<name>": array}`` in place."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays.pop("__graph__").tobytes())
    change(header, arrays)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, __graph__=np.frombuffer(json.dumps(header).encode(), np.uint8),
                        **arrays)
    path.write_bytes(buffer.getvalue())


def spec(header, name):
    return next(node for node in header["nodes"] if node["name"] == name)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.fgz"
    fg.saver.save(path, chain())
    return path


# -- 1. a parameter's value is stored, never drawn from "init" -------------------------------
def test_a_parameter_without_a_stored_value_is_refused_even_if_described_with_init(model):
    saved = fg.saver.load(model)[0].get_node("w1").value
    rewrite(model, lambda header, arrays: spec(header, "w1")["config"].update(init=True))
    assert np.array_equal(fg.saver.load(model)[0].get_node("w1").value, saved)  # (stored)
    rewrite(model, lambda header, arrays: arrays.pop("param/w1"))
    with pytest.raises(ModelFileError) as raised:
        fg.saver.load(model)
    assert str(raised.value) == (
        f"{model}: the model does not rebuild (no values for the parameters w1: the file must "
        "hold each parameter's value, as param/<name>.npy)")


def test_evaluate_refuses_a_model_file_missing_a_parameter(tmp_path, mnist_dir, capsys):
    path = tmp_path / "mnist.fgz"
    assert main(["train", "mnist", "--data", str(mnist_dir), "--train-samples", "200",
                 "--epochs", "1", "--no-progress", "--save", str(path)]) == 0

    def drop_one(header, arrays):
        name = sorted(arrays)[0].removeprefix("param/")
        del arrays[f"param/{name}"]
        spec(header, name)["config"]["init"] = True

    rewrite(path, drop_one)
    capsys.readouterr()
    assert main(["evaluate", str(path), "--data", str(mnist_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastgraph: error: {path}: the model does not rebuild (no values "
                          "for the parameters ") and err.count("\n") == 1


@pytest.mark.parametrize("suffix", ["/", "/."])
def test_train_refuses_a_save_path_naming_a_folder_before_it_trains(tmp_path, mnist_dir,
                                                                    capsys, suffix):
    """``--save folder/`` was checked as ``folder`` (``Path`` drops the ``/``): the training
    ran, and its model was refused, or written over a file of the folder's name."""
    target = f"{tmp_path / 'out'}{suffix}"
    assert main(["train", "mnist", "--data", str(mnist_dir), "--train-samples", "200",
                 "--epochs", "1", "--no-progress", "--save", target]) == 2
    out, err = capsys.readouterr()
    assert err == (f"fastgraph: error: --save {target!r} names a folder, not a file: expected "
                   "a file name\n")
    assert "epoch" not in out and not (tmp_path / "out").exists()


# -- 2. a described shape allocates nothing ---------------------------------------------------
def test_a_huge_parameter_described_with_init_is_refused_before_anything_is_allocated(model):
    rewrite(model, lambda header, arrays: header["nodes"].append(
        {"type": "Variable", "name": "big", "parents": [],
         "config": {"dim": [10**6, 10**6], "trainable": True, "init": True}}))
    at = re.escape(str(model))
    with pytest.raises(ModelFileError, match=f"^{at}: .*no values for the parameters big"):
        fg.saver.load(model)


def test_a_stored_value_of_another_shape_is_refused_before_init_could_allocate(model):
    def describe_w1_huge(header, arrays):
        spec(header, "w1")["config"].update(dim=[10**6, 10**6], init=True)
        spec(header, "h")["parents"] = ["w2", "x"]  # (w1 no longer feeds the product)
        spec(header, "y")["parents"] = ["w2", "x"]

    rewrite(model, describe_w1_huge)
    with pytest.raises(ModelFileError) as raised:
        fg.saver.load(model)
    assert str(raised.value) == (f"{model}: the model does not rebuild (w1: expected a value "
                                 "of shape (1000000, 1000000), got (4, 3))")


def test_an_input_described_with_init_loads_without_a_value(model):
    """An input holds nothing until it is fed: the loader allocates nothing for it."""
    rewrite(model, lambda header, arrays: spec(header, "x")["config"].update(init=True))
    tracemalloc.start()
    try:
        graph, _ = fg.saver.load(model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert graph.get_node("x").flat is None
    assert peak < 2**20


def peak_bytes(call):
    """``call()`` and the most bytes Python's allocators held meanwhile (NumPy's included)."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind, config", [
    ("Variable", {"trainable": False, "init": True}),
    ("Welding", {}),
])
def test_a_huge_node_of_described_shape_alone_loads_allocating_nothing(model, kind, config):
    rewrite(model, lambda header, arrays: header["nodes"].append(
        {"type": kind, "name": "big", "parents": [], "config": {"dim": [10**6, 10**6], **config}}))
    (graph, _), peak = peak_bytes(lambda: fg.saver.load(model))
    assert graph.get_node("big").dim == (10**6, 10**6) and graph.get_node("big").flat is None
    assert peak < 2**22


def test_a_window_operator_of_a_huge_described_geometry_loads_allocating_nothing(tmp_path):
    """Its table of windows (for dense Jacobians) is made when first asked: a padding of 10**6
    asked NumPy for terabytes as the node was built, a MemoryError naming no file."""
    with fg.Graph(dtype=np.float32, seed=0) as graph:
        x = fg.Variable((4, 1), trainable=False, name="x")
        w = fg.Variable((1, 1), init=True, name="w")
        fg.ops.Conv2D(x, w, image_shape=(2, 2), kernel_size=1, name="conv")
    path = tmp_path / "conv.fgz"
    fg.saver.save(path, graph)
    rewrite(path, lambda header, arrays: spec(header, "conv")["config"].update(padding=10**6))
    (graph, _), peak = peak_bytes(lambda: fg.saver.load(path))
    assert graph.get_node("conv").output_image == (2 * 10**6 + 2,) * 2
    assert peak < 2**22


def test_running_out_of_memory_while_building_names_the_file(model, monkeypatch):
    """A MemoryError as a node is built (none of fastgraph's allocates for its shape now)
    says which file asked for it, as every other failure to rebuild does."""
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (10**12,)")

    monkeypatch.setattr(fg.ops.MatMul, "infer_dim", no_memory)
    at = re.escape(str(model))
    with pytest.raises(ModelFileError, match=f"^{at}: the model does not rebuild \\(building it "
                                             "needs more memory than there is: Unable to "):
        fg.saver.load(model)


def articles_pair(tmp_path, change):
    """The article Saver's pair of files for ``chain()`` in ``tmp_path``, ``change(nodes)``
    applied to model.json's node descriptions (by name)."""
    Saver(tmp_path).save(chain())
    model_path = tmp_path / "model.json"
    model = json.loads(model_path.read_text())
    change({node["name"]: node for node in model["graph"]})
    model_path.write_text(json.dumps(model))
    return model_path


def test_the_articles_saver_loads_a_huge_input_described_with_init_allocating_nothing(tmp_path):
    def huge_x(nodes):
        nodes["x"]["kargs"].update(init=True, dim=[10**6, 10**6])
        nodes["x"]["dim"] = [10**6, 10**6]
        nodes["h"]["parents"] = nodes["y"]["parents"] = ["w2", "w1"]  # (x no longer fits w1)

    articles_pair(tmp_path, huge_x)
    graph = fg.Graph()
    _, peak = peak_bytes(lambda: Saver(tmp_path).load(graph))
    assert graph.get_node("x").dim == (10**6, 10**6) and graph.get_node("x").flat is None
    assert peak < 2**22


def test_the_articles_saver_checks_a_stored_value_before_init_could_allocate(tmp_path):
    def huge_w1(nodes):
        nodes["w1"]["kargs"].update(init=True, dim=[10**6, 10**6])
        nodes["h"]["parents"] = nodes["y"]["parents"] = ["w2", "x"]

    model_path = articles_pair(tmp_path, huge_w1)
    with pytest.raises(ModelFileError) as raised:
        Saver(tmp_path).load(fg.Graph())
    assert str(raised.value) == (
        f"{model_path}: the model does not rebuild (w1: expected a value of shape (1000000, "
        "1000000), got (4, 3)); the graph was left as it was")


def test_the_articles_saver_builds_an_input_described_with_init_without_a_value(tmp_path):
    articles_pair(tmp_path, lambda nodes: nodes["x"]["kargs"].update(init=True))
    graph = fg.Graph()
    Saver(tmp_path).load(graph)
    assert graph.get_node("x").flat is None


# -- 3. a path that names a folder ------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["/", "/.", "/..", "/./"])
def test_save_refuses_a_path_that_names_a_folder_and_writes_nothing(tmp_path, suffix):
    target = tmp_path / "x"
    target.write_bytes(b"keep")
    path = f"{target}{suffix}"
    with pytest.raises(ValueError) as raised:
        fg.saver.save(path, chain())
    assert str(raised.value) == (f"fastgraph.saver.save: path {path!r} names a folder, not a "
                                 "file: expected a file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert target.read_bytes() == b"keep"


def test_load_refuses_a_path_that_names_a_folder(model):
    at = re.escape(str(model))
    with pytest.raises(ValueError, match=f"^fastgraph.saver.load: path '{at}/' names a folder, "
                                         "not a file"):
        fg.saver.load(f"{model}/")


@pytest.mark.parametrize("name", ["model.json/", ".", "..", "sub/."])
def test_the_articles_saver_refuses_a_file_name_that_names_a_folder(tmp_path, name):
    with pytest.raises(ValueError) as raised:
        Saver(tmp_path).save(chain(), model_file_name=name)
    assert str(raised.value) == (f"Saver.save: model_file_name {name!r} names a folder, not a "
                                 "file: expected a file name")
    with pytest.raises(ValueError, match="Saver.load: weights_file_name"):
        Saver(tmp_path).load(fg.Graph(), weights_file_name=name)
    assert list(tmp_path.iterdir()) == []


# -- 4. a NUL in a path -----------------------------------------------------------------------
def test_a_nul_in_a_path_is_refused_naming_the_path(tmp_path):
    path = f"{tmp_path}/a\0b.fgz"
    with pytest.raises(ValueError) as raised:
        fg.saver.save(path, chain())
    assert str(raised.value) == (f"fastgraph.saver.save: path {path!r} has a NUL character, "
                                 "which no file name can hold")
    with pytest.raises(ValueError, match="^fastgraph.saver.load: path .* has a NUL character"):
        fg.saver.load(path)
    assert list(tmp_path.iterdir()) == []


def test_the_articles_saver_refuses_a_nul_naming_the_option(tmp_path):
    with pytest.raises(ValueError) as raised:
        Saver("\0")
    assert str(raised.value) == ("Saver: root_dir '\\x00' has a NUL character, which no folder "
                                 "name can hold")
    with pytest.raises(ValueError) as raised:
        Saver(tmp_path).save(chain(), weights_file_name="w\0.npz")
    assert str(raised.value) == ("Saver.save: weights_file_name 'w\\x00.npz' has a NUL "
                                 "character, which no file name can hold")
    assert list(tmp_path.iterdir()) == []


# -- 5. a file where a folder is needed -------------------------------------------------------
@pytest.mark.parametrize("below", ["m.fgz", "sub/m.fgz"])
def test_save_says_a_file_lies_where_a_folder_is_needed(tmp_path, below):
    blocker = tmp_path / "somefile"
    blocker.write_bytes(b"keep")
    path = blocker / below
    with pytest.raises(ValueError) as raised:
        fg.saver.save(path, chain())
    assert str(raised.value) == (f"{path}: cannot save the graph: {blocker} is a file, where "
                                 f"a folder is needed (to hold {path})")
    assert blocker.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]


def test_the_articles_saver_says_a_file_lies_where_a_folder_is_needed(tmp_path):
    blocker = tmp_path / "sub"
    blocker.write_bytes(b"keep")
    with pytest.raises(ValueError) as raised:
        Saver(tmp_path).save(chain(), model_file_name="sub/model.json")
    assert str(raised.value) == (f"Saver.save: cannot save the graph: {blocker} is a file, "
                                 f"where a folder is needed (to hold {blocker}/model.json)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
