"""Errors a user can act on: the command line answers a mistake with one line and status 2
(never a traceback), finds an unwritable output before training, and library errors name
the argument, node or sample, not NumPy's internals."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgraph as fg
from fastgraph.cli import main
from fastgraph.datasets import Batches
from fastgraph.trainer import SimpleTrainer


def save_model(path, model, **meta):
    fg.saver.save(path, model.graph, {"input": "x", "output": "predict", **meta})
    return path


def run(argv, capsys):
    """``main(argv)``'s status and its stderr; a traceback fails the test by itself."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.err, captured.out


def test_a_model_with_20_classes(tmp_path, capsys):
    path = save_model(tmp_path / "wide.fgz", fg.models.mlp(784, (8,), 20, seed=1))
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    status, err, _ = run(["predict", path, image], capsys)
    assert (status, err) == (2, f"fastgraph: error: {path}: the output node predict gives 20 "
                                "numbers per image, expected one per digit (10)\n")


@pytest.mark.parametrize("meta, message", [
    ({"input": "predict"}, "the input node predict (10, 1) does not take 28x28 images"),
    ({"input": "nothing"}, "the model names a node it does not hold (no node named 'nothing' "
                           "in this graph)"),
    ({"output": 7}, "the model's meta does not name its output node (meta['output'] is 7)"),
    ({"image_shape": [28]}, "meta['image_shape'] is [28], expected [rows, cols]"),
])
def test_a_model_whose_meta_names_the_wrong_nodes(tmp_path, capsys, meta, message):
    path = save_model(tmp_path / "model.fgz", fg.models.mlp(784, (8,), 10, seed=1), **meta)
    status, err, _ = run(["predict", path, path], capsys)
    assert (status, err) == (2, f"fastgraph: error: {path}: {message}\n")


def test_random_bytes_are_not_a_model_and_nobody_mentions_pickle(tmp_path, capsys):
    path = tmp_path / "model.fgz"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    status, err, _ = run(["predict", path, path], capsys)
    assert (status, err) == (2, f"fastgraph: error: {path}: not a readable fastgraph model file "
                                "(File is not a zip file)\n")


@pytest.mark.parametrize("option, name, message", [
    ("--save", "file/model.fgz", "{folder}/file is not a directory"),
    ("--save", "", "is a directory, expected a file name"),
    ("--plot", "curves.xyz", "the curves can be written as"),
    ("--graph", "graph.pdf", "the graph can be written as .dot, .svg or .png"),
])
def test_an_output_that_cannot_be_written_is_found_before_training(tmp_path, capsys, mnist_dir,
                                                                    option, name, message):
    (tmp_path / "file").write_text("a file, not a folder")
    target = tmp_path / name
    status, err, out = run(["train", "mnist", "--data", mnist_dir, "--epochs", 1,
                            "--train-samples", 64, "--test-samples", 64, "--no-progress",
                            option, target], capsys)
    assert status == 2 and out == ""  # nothing trained
    assert err.startswith(f"fastgraph: error: {option} {target}: ")
    assert message.format(folder=tmp_path) in err and err.count("\n") == 1


@pytest.mark.parametrize("outputs, message", [
    (["--save", "x.dot", "--graph", "x.dot"], "--save {d}/x.dot and --graph {d}/x.dot would "
                                              "write the same file"),
    (["--save", "p.png", "--plot", "p.png"], "--save {d}/p.png and --plot {d}/p.png would "
                                             "write the same file"),
    (["--plot", "c.pgf"], "--plot {d}/c.pgf: matplotlib cannot write .pgf here"),
])
def test_outputs_that_would_overwrite_each_other_or_fail_are_refused_before_training(
        tmp_path, capsys, mnist_dir, outputs, message):
    """--save x.dot --graph x.dot trained, saved the model, then wrote the graph over it;
    .pgf passed the check of formats and failed after training (matplotlib wants LaTeX)."""
    options = [tmp_path / item if "." in item else item for item in outputs]
    status, err, out = run(["train", "mnist", "--data", mnist_dir, "--epochs", 1,
                            "--train-samples", 64, "--test-samples", 64, "--no-progress",
                            *options], capsys)
    assert status == 2 and out == ""  # nothing trained
    assert err.startswith("fastgraph: error: " + message.format(d=tmp_path))
    assert not any(path.exists() for path in options if not isinstance(path, str))


def test_the_graph_written_as_dot_without_graphviz_may_not_land_on_the_model(
        tmp_path, capsys, mnist_dir, monkeypatch):
    monkeypatch.setattr(fg.viz.shutil, "which", lambda name: None)  # no Graphviz
    status, err, out = run(["train", "mnist", "--data", mnist_dir, "--epochs", 1,
                            "--train-samples", 64, "--test-samples", 64, "--no-progress",
                            "--save", tmp_path / "y.dot", "--graph", tmp_path / "y.svg"], capsys)
    assert (status, out) == (2, "")
    assert err == (f"fastgraph: error: --save {tmp_path}/y.dot and --graph {tmp_path}/y.dot "
                   "would write the same file\n")


def test_a_dot_file_of_the_users_is_never_replaced_by_the_graphs_fallback(
        tmp_path, capsys, mnist_dir, monkeypatch):
    """--graph model.svg without Graphviz wrote its DOT source to model.dot, over a file of
    that name that the user had written; a DOT file fastgraph wrote is replaced as before."""
    monkeypatch.setattr(fg.viz.shutil, "which", lambda name: None)  # no Graphviz
    mine = tmp_path / "model.dot"
    mine.write_text("digraph mine { a -> b }\n")
    status, err, out = run(["train", "mnist", "--data", mnist_dir, "--epochs", 1,
                            "--train-samples", 64, "--test-samples", 64, "--no-progress",
                            "--graph", tmp_path / "model.svg"], capsys)
    assert (status, out) == (2, "")  # refused before training
    assert err.startswith(f"fastgraph: error: --graph {tmp_path}/model.svg: Graphviz 'dot' is "
                          f"not installed, and {tmp_path}/model.dot, where its DOT source would "
                          "go instead, is a file fastgraph did not write: not replaced")
    graph = fg.models.mlp(4, (3,), 2, seed=0).graph
    with pytest.raises(ValueError, match="is a file fastgraph did not write: not replaced"):
        fg.viz.write_graph(graph, tmp_path / "model.svg")
    assert mine.read_text() == "digraph mine { a -> b }\n"
    mine.unlink()
    written, note = fg.viz.write_graph(graph, tmp_path / "model.svg")  # fastgraph's own file
    assert written == mine and "not installed" in note
    assert fg.viz.write_graph(graph, tmp_path / "model.svg")[0] == mine  # replaced again
    assert mine.read_text().startswith("digraph fastgraph {")


def test_plot_and_graph_make_their_folders_and_write_whole_files(tmp_path, capsys, mnist_dir):
    """The check said missing folders are made, but only the model's writer made them:
    --plot out/new/c.png trained, then failed."""
    plot, graph = tmp_path / "new" / "c.png", tmp_path / "other" / "g.dot"
    status, _, out = run(["train", "mnist", "--data", mnist_dir, "--epochs", 1,
                          "--train-samples", 64, "--test-samples", 64, "--no-progress",
                          "--plot", plot, "--graph", graph], capsys)
    assert status == 0 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert graph.read_text().startswith("digraph fastgraph {")
    assert sorted(p.name for p in plot.parent.iterdir()) == ["c.png"]  # no temporary left
    with pytest.raises(ValueError, match="no epochs to plot"):
        fg.viz.plot_history([], tmp_path / "empty.png")
    record = {"epoch": 1, "loss": 1.0, "train_accuracy": 0.5}
    assert fg.viz.plot_history([record], tmp_path / "bare") == tmp_path / "bare.png"
    assert (tmp_path / "bare.png").exists() and not (tmp_path / "bare").exists()
    model = fg.models.mlp(4, (3,), 2, seed=0)
    with pytest.raises(TypeError, match=r"write_graph: expected a fastgraph Graph, got "
                                        r"CrossEntropyWithSoftMax \(pass its graph"):
        fg.viz.write_graph(model.loss, tmp_path / "g.dot")


def test_a_bad_number_on_the_command_line_names_the_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "mnist", "--batch-size", "abc"])
    assert exit_.value.code == 2
    expected = "argument --batch-size: expected a positive integer, got 'abc'"
    assert expected in capsys.readouterr().err


def trainer():
    model = fg.models.mlp(4, (3,), 2, seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    return SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, progress=False,
                         log=lambda line: None)


def test_the_trainer_explains_empty_and_mismatched_data():
    with pytest.raises(ValueError, match="training features are empty: no samples to train on"):
        trainer().train(np.zeros((0, 4)), np.zeros(0, int))
    with pytest.raises(ValueError, match=r"training features have 3 numbers per sample, but x "
                                         r"takes 4 \(4, 1\)"):
        trainer().train(np.zeros((5, 3)), np.zeros(5, int))
    with pytest.raises(ValueError, match="scores: the features are empty"):
        trainer().scores(np.zeros((0, 4)))


def test_batches_explain_empty_data_and_bad_orders():
    with pytest.raises(ValueError, match=r"Batches: the dataset is empty \(no samples"):
        Batches(np.zeros((0, 4)), np.zeros(0, int), 8)
    batches = Batches(np.zeros((5, 4)), np.arange(5), 2)
    with pytest.raises(ValueError, match=r"order\[1\] is 5: sample indices lie in \[0, 5\)"):
        next(batches.iterate(np.array([0, 5])))  # the kernel would read past the data


@pytest.mark.parametrize("call, message", [
    (lambda loss, x: fg.jacobian(1, x), "jacobian: the result must be a node, got int"),
    (lambda loss, x: fg.jacobian(loss, "x"),
     "jacobian: derivatives are taken with respect to nodes, got str"),
    (lambda loss, x: fg.jacobian(loss, [x, None]),
     "jacobian: derivatives are taken with respect to nodes, got NoneType"),
    (lambda loss, x: fg.per_sample_gradients(np.zeros(3), x),
     "per_sample_gradients: the loss must be a node, got ndarray"),
])
def test_jacobian_given_something_else_than_a_node(call, message):
    model = fg.models.mlp(4, (3,), 2, seed=0)
    with pytest.raises(TypeError, match=message):
        call(model.loss, model.x)


def test_a_bad_label_is_named_by_its_sample_in_the_batch_also_in_chunks():
    model = fg.models.mlp(3, (4,), 3, dtype=np.float64, seed=0)
    labels = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    labels[4] = [0.5, 0.2, 0.1]
    model.x.set_value(np.zeros((6, 3)))
    model.one_hot.set_value(labels)
    params = [node for node in model.graph.nodes if isinstance(node, fg.Variable)
              and node.trainable]
    for call in (lambda: fg.jacobian(model.loss, model.x, chunk_size=2),
                 lambda: fg.per_sample_gradients(model.loss, params, chunk_size=4)):
        with pytest.raises(ValueError, match="loss: the labels of sample 4 in one_hot"):
            call()


def test_a_graph_description_nested_too_deep_is_a_model_file_error(tmp_path):
    path = tmp_path / "deep.fgz"
    text = "[" * 100_000 + "]" * 100_000
    with open(path, "wb") as stream:
        np.savez(stream, __graph__=np.frombuffer(text.encode(), np.uint8))
    with pytest.raises(fg.saver.ModelFileError, match="no valid graph description"):
        fg.saver.load(path)


@pytest.fixture(scope="module")
def model_and_image(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("fuzz-cli")
    model = folder / "model.fgz"
    save_model(model, fg.models.mlp(784, (8,), 10, seed=3))
    image = folder / "digit.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(image)
    return model.read_bytes(), image, folder


def edited_header(payload, edit):
    """The model file ``payload`` with its JSON description changed by ``edit(header)``."""
    import io
    import json
    import zipfile

    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        arrays = {info.filename.removesuffix(".npy"):
                  np.lib.format.read_array(archive.open(info)) for info in archive.infolist()}
    header = json.loads(arrays["__graph__"].tobytes())
    edit(header)
    arrays["__graph__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


META_EDITS = [
    lambda h: h["meta"].update(input=h["nodes"][2]["name"]),  # a parameter
    lambda h: h["meta"].update(output=h["nodes"][-3]["name"]),  # the last bias: 10 numbers
    lambda h: h["meta"].update(output="one_hot"),
    lambda h: h["meta"].update(image_shape=[28, 28.5]),
    lambda h: h["meta"].update(image_shape="28x28"),
    lambda h: h.update(meta=[]),
    lambda h: h.update(nodes=h["nodes"][:-1]),
    lambda h: h.update(dtype="int8"),
    lambda h: h["nodes"][2]["config"].update(dim=[1e400, 1]),
    lambda h: h["nodes"][2]["config"].update(extra=1),
    lambda h: h["nodes"][4].update(parents=["nowhere"]),
]


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_predict_on_damaged_models_answers_in_one_line(data, model_and_image, capsys):
    """Model files with random bytes changed, or a description edited into nonsense:
    ``predict`` prints digits (status 0) or one line on stderr (status 2), never a traceback."""
    payload, image, folder = model_and_image
    if data.draw(st.booleans()):
        damaged = bytearray(payload)
        for _ in range(data.draw(st.integers(1, 3))):
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
        damaged = bytes(damaged)
    else:
        damaged = edited_header(payload, data.draw(st.sampled_from(META_EDITS)))
    path = folder / "damaged.fgz"
    path.write_bytes(damaged)
    status = main(["predict", str(path), str(image)])
    captured = capsys.readouterr()
    if status == 0:
        assert captured.out.startswith(f"{image}: ") and captured.err == ""
    else:
        assert status == 2 and captured.err.count("\n") == 1
        assert captured.err.startswith(f"fastgraph: error: {path}: ")
