"""Files: a model that cannot be loaded is never written; files get the permissions of any
new file; nothing is inflated before it is known to be expected; any bytes at all give a
ModelFileError naming the file, never another exception; errors never name temporaries."""

import io
import json
import os
import re
import stat
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgraph as fg
from fastgraph.cli import main
from fastgraph.datasets import mnist
from fastgraph.saver import ModelFileError
from tests.helpers import refused_without_waiting


def small_model():
    return fg.models.mlp(12, (5,), 3, "Tanh", dtype=np.float32, seed=4)


def entries(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def write_npz(path, arrays, compress=True):
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_save_refuses_a_parameter_without_value(tmp_path):
    graph = fg.Graph()
    with graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w = fg.Variable((2, 3), name="w")  # never given a value
        fg.ops.MatMul(w, x, name="y")
    path = tmp_path / "model.fgz"
    with pytest.raises(ValueError, match=f"{path}: cannot save the graph: parameter w has no "
                                         r"value \(give it one with set_value\(\) or init=True\)"):
        fg.saver.save(path, graph)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_saved_model_has_the_permissions_of_a_new_file(tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "model.fgz"
    fg.saver.save(path, small_model().graph)
    assert mode(path) == expected
    path.chmod(0o640)  # a file that is replaced keeps its permissions
    fg.saver.save(path, small_model().graph)
    assert mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["model.fgz"]


def test_downloaded_mnist_files_have_the_permissions_of_new_files(tmp_path, umask, mnist_dir,
                                                                  monkeypatch):
    monkeypatch.setenv("FASTGRAPH_CACHE", str(tmp_path / "cache"))
    folder = mnist.fetch(mirrors=[mnist_dir.resolve().as_uri()])
    modes = {path.name: mode(path) for path in folder.iterdir()}
    assert modes == {f"{name}.gz": 0o644 for name in mnist.FILES}


def test_an_unexpected_entry_is_refused_before_anything_is_inflated(tmp_path):
    path = tmp_path / "model.fgz"
    fg.saver.save(path, small_model().graph)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.npy", bytes(64 * 2**20))  # 64 MB of zeros, 64 KB packed
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="unexpected entry 'padding.npy'"):
            fg.saver.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_a_parameter_entry_larger_than_its_shape_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "model.fgz"
    fg.saver.save(path, small_model().graph)
    arrays = entries(path)
    name = next(key for key in arrays if key.startswith("param/"))
    arrays[name] = np.zeros((4096, 4096), np.float32)  # 64 MB for a 5x12 weight
    write_npz(path, arrays)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="more than its shape"):
            fg.saver.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_a_model_without_meta_loads_and_the_command_line_says_what_is_missing(tmp_path, capsys):
    path = tmp_path / "model.fgz"
    fg.saver.save(path, small_model().graph)
    arrays = entries(path)
    header = json.loads(arrays["__graph__"].tobytes())
    del header["meta"]
    arrays["__graph__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    write_npz(path, arrays)
    graph, meta = fg.saver.load(path)
    assert meta == {} and len(graph.nodes) == len(small_model().graph.nodes)
    assert main(["predict", str(path), str(path)]) == 2
    assert capsys.readouterr().err == (
        f"fastgraph: error: {path}: the model's meta does not name its input node "
        "(meta['input'] is None)\n")


def test_write_errors_name_the_file_not_a_temporary(tmp_path):
    target = tmp_path / "model.fgz"
    target.mkdir()  # a directory where the file should go
    with pytest.raises(OSError) as raised:
        fg.saver.save(target, small_model().graph)
    assert str(raised.value) == f"{target}: cannot write (Is a directory)"
    assert [p.name for p in tmp_path.iterdir()] == ["model.fgz"]  # no temporary left behind


@pytest.fixture(scope="module")
def valid_model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.fgz"
    fg.saver.save(path, small_model().graph, {"input": "x", "output": "predict"})
    return path.read_bytes()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_any_bytes_give_a_model_file_error_naming_the_file(data, valid_model_bytes, fuzz_dir):
    """Random bytes, bytes behind a zip or NumPy signature, and valid models with a few
    bytes changed or cut off: a ModelFileError that names the file, or a model."""
    kind = data.draw(st.sampled_from(["random", "zip", "npy", "mutated", "truncated"]))
    if kind == "random":
        payload = data.draw(st.binary(max_size=2000))
    elif kind in ("zip", "npy"):
        magic = b"PK\x03\x04" if kind == "zip" else b"\x93NUMPY\x01\x00"
        payload = magic + data.draw(st.binary(max_size=500))
    elif kind == "truncated":
        payload = valid_model_bytes[: data.draw(st.integers(0, len(valid_model_bytes) - 1))]
    else:
        payload = bytearray(valid_model_bytes)
        for _ in range(data.draw(st.integers(1, 4))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        payload = bytes(payload)
    path = fuzz_dir / "model.fgz"
    path.write_bytes(payload)
    try:
        fg.saver.load(path)
    except ModelFileError as error:
        assert str(error).startswith(f"{path}: ")
        assert "allow_pickle" not in str(error)


def test_read_npz_reads_plain_arrays_and_nothing_else(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.arange(6.0).reshape(2, 3), b=np.zeros(2, np.float32))
    arrays = fg.saver.read_npz(path)
    assert sorted(arrays) == ["b", "w"] and arrays["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ModelFileError, match="announce .* bytes, more than the 100 allowed"):
        fg.saver.read_npz(path, max_bytes=100)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError, match="unexpected entry 'notes.txt'"):
        fg.saver.read_npz(path)
    random = tmp_path / "random.npz"
    random.write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(ModelFileError, match=r"not a readable .npz file \(File is not a zip"):
        fg.saver.read_npz(random)


# -- special files: never replaced by a save, never waited on by a load ----------------------
def special_files(folder):
    """A FIFO, and (where this process may make one) a character device like /dev/null."""
    os.mkfifo(folder / "fifo")
    made = {"fifo": "a FIFO (named pipe)"}
    try:
        os.mknod(folder / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made["null"] = "a character device"
    except OSError:  # not root: the FIFO stands for both
        pass
    return made


def kind_of(path):
    mode = os.lstat(path).st_mode
    return "fifo" if stat.S_ISFIFO(mode) else "char" if stat.S_ISCHR(mode) else "other"


def test_a_save_onto_a_fifo_or_device_is_refused_and_leaves_it(tmp_path):
    """They became ordinary files: as root, `fastgraph train --save /dev/null` deleted the
    system's /dev/null and left a file of the model there."""
    from fastgraph.files import check_writable

    graph = small_model().graph
    for name, kind in special_files(tmp_path).items():
        target = tmp_path / name
        kind, at = re.escape(kind), re.escape(str(target))
        before = kind_of(target)
        with pytest.raises(OSError, match=rf"^{at}: cannot write \(it is {kind}; only a "
                                          r"regular file is replaced\)$"):
            fg.saver.save(target, graph)
        with pytest.raises(OSError, match=rf"{at}: cannot write \(it is {kind}"):
            fg.saver.Saver(str(tmp_path)).save(graph, model_file_name=name)
        with pytest.raises(ValueError, match=rf"^--save {at}: is {kind}, expected a regular "
                                             "file name"):
            check_writable(target, "--save")
        link = tmp_path / f"link-to-{name}"
        link.symlink_to(target)
        with pytest.raises(OSError, match=rf"it is {kind}"):
            fg.saver.save(link, graph)
        assert kind_of(target) == before and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()
                  if p.name.startswith(".")) == []  # no temporary left behind
    assert not (tmp_path / "weights.npz").exists()  # the pair's first file was not written


def test_loading_from_a_fifo_or_device_is_refused_at_once(tmp_path, capsys):
    from fastgraph.saver import Saver

    made = special_files(tmp_path)
    fifo = tmp_path / "fifo"
    for name, kind in made.items():
        path = tmp_path / name
        kind, at = re.escape(kind), re.escape(str(path))
        cases = [
            (lambda path=path: fg.saver.load(path), ModelFileError,
             rf"^{at}: not a readable fastgraph model file \(it is {kind}, not a regular file\)$"),
            (lambda path=path: fg.saver.read_npz(path), ModelFileError,
             rf"^{at}: not a readable \.npz file \(it is {kind}, not a regular file\)$"),
            (lambda name=name: Saver(str(tmp_path)).load(fg.Graph(), model_file_name=name),
             ModelFileError,
             rf"^{at}: not a model saved by Saver \(it is {kind}, not a regular file\)$"),
            (lambda path=path: mnist.read_idx(path), mnist.DatasetError,
             rf"^{at}: cannot read \(it is {kind}, not a regular file\)$"),
        ]
        for call, error_type, message in cases:
            error = refused_without_waiting(call, fifo)
            assert isinstance(error, error_type) and re.match(message, str(error)), \
                (type(error), str(error))
    model = tmp_path / "model.fgz"
    fg.saver.save(model, fg.models.mlp(784, (8,), 10, seed=3).graph,
                  {"input": "x", "output": "predict", "image_shape": [28, 28]})
    for command in (["evaluate", str(fifo)], ["predict", str(model), str(fifo)]):
        code = refused_without_waiting(lambda command=command: (_ for _ in ()).throw(
            SystemExit(main(command))), fifo)
        assert isinstance(code, SystemExit) and code.code == 2, command
        assert "it is a FIFO (named pipe), not a regular file" in capsys.readouterr().err
