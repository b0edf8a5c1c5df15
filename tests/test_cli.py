"""The command line end to end, in a reduced form: a few hundred samples, one epoch."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.cli import main


def train_command(mnist_dir, *options):
    """The command line of ``fastgraph train mnist`` on the shared data, run as a module."""
    return [sys.executable, "-m", "fastgraph.cli", "train", "mnist", "--data", str(mnist_dir),
            *map(str, options)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    folder = tmp_path_factory.mktemp("cli")
    paths = {
        "model": folder / "model.fgz",
        "plot": folder / "curves.png",
        "graph": folder / "graph.dot",
    }
    result = subprocess.run(
        train_command(
            mnist_dir, "--train-samples", 600, "--test-samples", 300, "--epochs", 2,
            "--hidden", 32, "--seed", 3, "--save", paths["model"], "--plot", paths["plot"],
            "--graph", paths["graph"],
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, paths


def test_train_prints_epochs_and_accuracy(trained):
    result, _ = trained
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("training 784-32-10 (ReLU) on 600 MNIST images: adam, batch 64")
    assert lines[1].startswith("epoch 1/2: loss ") and "test accuracy" in lines[1]
    assert lines[2].startswith("epoch 2/2: loss ") and lines[2].endswith("samples/s")
    accuracy = float(next(line for line in lines if line.startswith("test accuracy:")).split()[-1])
    assert 0.5 < accuracy <= 1.0


def test_train_writes_model_plot_and_graph(trained, rng):
    _, paths = trained
    graph, meta = fg.saver.load(paths["model"])
    assert meta["input"] == "x" and meta["output"] == "predict" and len(meta["history"]) == 2
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dot = paths["graph"].read_text()
    assert dot.startswith("digraph fastgraph {") and dot.rstrip().endswith("}")
    assert (
        '"x\\n784x1"' in dot
        and "predict\\n10x1" in dot
        and dot.count("->") == sum(len(node.parents) for node in graph.nodes)
    )


def test_evaluate(trained, mnist_dir, capsys):
    _, paths = trained
    assert main(["evaluate", str(paths["model"]), "--data", str(mnist_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("test accuracy: 0.")
    assert out[1].split() == ["class", "precision", "recall", "f1", "support"]
    assert out[2].split()[0] == "0" and out[2].split()[-1] == "980"
    matrix = np.array([[int(v) for v in line.split()] for line in out[-10:]])
    assert matrix.shape == (10, 10) and matrix.sum() == 10000
    assert matrix.sum(axis=1).tolist()[:2] == [980, 1135]


def test_predict(trained, mnist, tmp_path, capsys):
    from PIL import Image

    _, paths = trained
    _, _, x_test, y_test = mnist
    images = []
    for i in range(2):
        images.append(tmp_path / f"digit{i}.png")
        Image.fromarray(x_test[i]).save(images[-1])
    assert main(["predict", str(paths["model"]), *map(str, images)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith(f"{images[0]}: ")
    digit, probability = out[0].split(": ")[1].split(" (probability ")
    assert 0 <= int(digit) <= 9 and 0 < float(probability.rstrip(")")) <= 1
    Image.new("L", (30, 28)).save(tmp_path / "wide.png")
    assert main(["predict", str(paths["model"]), str(tmp_path / "wide.png")]) == 2
    assert "expected a 28x28 image, got 30x28" in capsys.readouterr().err


def test_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    (tmp_path / "bad.fgz").write_bytes(b"nope")
    assert main(["evaluate", str(tmp_path / "bad.fgz")]) == 2
    assert "not a readable fastgraph model file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "mnist", "--hidden", "0,3"])
    assert "expected positive sizes" in capsys.readouterr().err


def test_missing_data_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASTGRAPH_DATA", raising=False)
    monkeypatch.setenv("FASTGRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTGRAPH_MNIST_MIRRORS", "http://127.0.0.1:9/")
    assert main(["train", "mnist", "--epochs", "1", "--no-progress"]) == 2
    assert "were not found in" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "mnist", "--epochs", "1"],
                                     ["evaluate", "model.fgz"]])
def test_data_given_is_where_the_files_must_be(command, tmp_path, mnist_dir, monkeypatch,
                                               capsys):
    """--data that does not hold MNIST is an error, even with $FASTGRAPH_DATA pointing at
    the files (they were read from there without a word)."""
    monkeypatch.setenv("FASTGRAPH_DATA", str(mnist_dir))
    assert main([*command, "--data", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == (f"fastgraph: error: --data {tmp_path / 'none'}: no such "
                                       "directory\n")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (partial / f"{name}.gz").write_bytes((mnist_dir / f"{name}.gz").read_bytes())
    assert main([*command, "--data", str(partial)]) == 2
    assert capsys.readouterr().err == (f"fastgraph: error: --data {partial}: the directory does "
                                       "not hold the MNIST file t10k-labels-idx1-ubyte "
                                       "(gzipped or not)\n")


def test_ctrl_c_stops_after_the_batch_and_still_saves(tmp_path, mnist_dir):
    model = tmp_path / "model.fgz"
    process = subprocess.Popen(
        train_command(
            mnist_dir, "--epochs", 500, "--lr-decay", 1, "--train-samples", 2000,
            "--test-samples", 100, "--engine", "jacobian", "--no-progress", "--save", model,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().startswith("training")  # set up and training
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted: stopped after" in out and "test accuracy:" in out
    assert fg.saver.load(model)[1]["history"][0]["samples"] < 2000
