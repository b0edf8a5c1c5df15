"""The family found by the sweep itself: inputs that look small but are not, or that break
a format further on. An image that declares 30000x30000 pixels, a gzip file that inflates
far beyond MNIST, an index outside the data for a kernel that does not check bounds, a node
name that ends a DOT string, meta that JSON cannot hold."""

import gzip
import struct
import zlib

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.cli import main
from fastgraph.datasets import mnist


def png_declaring(width, height):
    """A valid 1x1 grey PNG whose header then claims ``width x height`` pixels."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x00")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def test_an_image_declaring_a_huge_size_is_refused_by_its_size(tmp_path, capsys):
    model = fg.models.mlp(784, (4,), 10, seed=0)
    path = tmp_path / "model.fgz"
    fg.saver.save(path, model.graph, {"input": "x", "output": "predict"})
    image = tmp_path / "large.png"
    image.write_bytes(png_declaring(10000, 10000))  # 100 MB of pixels if decoded
    assert main(["predict", str(path), str(image)]) == 2
    assert capsys.readouterr().err == (f"fastgraph: error: {image}: expected a 28x28 image, got "
                                       "10000x10000 (width x height)\n")
    image.write_bytes(png_declaring(30000, 30000))  # Pillow itself refuses this one
    assert main(["predict", str(path), str(image)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"fastgraph: error: {image}: ") and error.count("\n") == 1


def test_an_mnist_file_that_inflates_beyond_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", 2**20, raising=False)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(2**21)))
    with pytest.raises(mnist.DatasetError, match="decompresses to more than 1048576 bytes"):
        mnist.read_idx(path)


def test_a_node_name_with_a_quote_stays_inside_its_dot_label():
    graph = fg.Graph()
    with graph:
        fg.Variable((2, 1), trainable=False, name='say "hi"\\')
    dot = fg.viz.to_dot(graph)
    assert 'label="say \\"hi\\"\\\\\\n2x1"' in dot


def test_meta_that_json_cannot_hold_is_refused_before_writing(tmp_path):
    model = fg.models.mlp(4, (3,), 2, seed=0)
    path = tmp_path / "model.fgz"
    with pytest.raises(ValueError, match=f"{path}: cannot save the graph: its meta must be "
                                         "plain JSON"):
        fg.saver.save(path, model.graph, {"loss": np.float32(0.5)})
    assert not path.exists()


def test_integer_dtypes_for_scaled_pixels_are_refused():
    """Pixels scaled to [0, 1] in an integer dtype would all round to 0 (or 1): silently."""
    for dtype in (np.int32, np.float16):
        with pytest.raises(ValueError, match="Batches: dtype must be float32 or float64, got "
                                             f"{np.dtype(dtype)}"):
            fg.datasets.Batches(np.zeros((3, 4), np.uint8), np.zeros(3, int), 2,
                                scale=1 / 255, dtype=dtype)
    with pytest.raises(ValueError, match="features: dtype must be a float type, got int64"):
        mnist.features(np.zeros((2, 28, 28), np.uint8), dtype=np.int64)
    with pytest.raises(ValueError, match=r"labels must be a vector of integers in \[0, 10\)"):
        mnist.one_hot(np.array([0.5, 1.0]))


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_half_and_long_double_values_are_cast_wherever_values_enter(dtype):
    """Numba compiles for neither: set_value of a batch, fg.set_values, Batches and the
    trainer leaked its NotImplementedError / TypingError; each now casts, with the
    numbers of a float64 array of the same values."""
    rng = np.random.default_rng(0)
    values = rng.random((4, 5, 3)).astype(dtype)

    def outputs(array):
        graph = fg.Graph()
        xs = [fg.Variable((3, 1), init=False, trainable=False, graph=graph) for _ in range(4)]
        total = xs[0]
        for x in xs[1:]:
            total = fg.ops.Add(total, x, graph=graph)
        fg.set_values(xs, array)
        total.forward()
        first = total.flat.copy()
        xs[0].set_value(array[1])  # a batch through set_value
        total.forward()
        return first, total.flat.copy()

    for got, want in zip(outputs(values), outputs(values.astype(np.float64))):
        np.testing.assert_array_equal(got, want)
    labels = np.arange(6) % 2
    features = rng.random((6, 4)).astype(dtype)
    batches = fg.datasets.Batches(features, labels, 3, classes=2, shuffle=False)
    np.testing.assert_array_equal(batches.features, features.astype(np.float32))
    model = fg.models.mlp(4, (3,), 2, seed=0)
    trainer = fg.trainer.SimpleTrainer(model.x, model.one_hot, model.predict,
                                       fg.optimizer.Adam(model.graph, model.loss, 0.01),
                                       batch_size=3, progress=False, log=lambda line: None)
    assert len(trainer.train(features, labels, features, labels, epochs=2)) == 2
