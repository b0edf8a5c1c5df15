"""Images: ``predict`` reads 16-bit and float images as the grey levels they stand for (the
same answer as the 8-bit image), and refuses pixels that are no grey levels."""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.cli import main

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def model_and_digit(tmp_path_factory, mnist):
    folder = tmp_path_factory.mktemp("images")
    model = fg.models.mlp(784, (16,), 10, "ReLU", seed=2)
    path = folder / "model.fgz"
    fg.saver.save(path, model.graph, {"input": "x", "output": "predict"})
    digit = mnist[2][0]  # a test image, uint8 28x28
    return path, digit, folder


def predict(model, image, capsys):
    assert main(["predict", str(model), str(image)]) == 0
    return capsys.readouterr().out.split(": ", 1)[1]


@pytest.mark.parametrize("kind", ["16-bit PNG", "float TIFF in 0-1", "float TIFF in 0-65535"])
def test_deep_images_give_the_answer_of_the_8_bit_image(model_and_digit, capsys, kind):
    model, digit, folder = model_and_digit
    eight_bit = folder / "digit.png"
    Image.fromarray(digit).save(eight_bit)
    deep = folder / f"deep-{kind.split()[0]}-{kind.split()[-1]}.{kind.split()[1].lower()}"
    if kind == "16-bit PNG":
        Image.fromarray(digit.astype(np.uint16) * 257).save(deep)
        assert Image.open(deep).mode == "I;16"
    elif kind.endswith("0-1"):
        Image.fromarray(digit.astype(np.float32) / 255).save(deep)
    else:  # a 16-bit scan stored as floats
        Image.fromarray(digit.astype(np.float32) * 257).save(deep)
    assert predict(model, deep, capsys) == predict(model, eight_bit, capsys)


def test_pixels_that_are_no_grey_levels_are_refused(model_and_digit, capsys):
    model, digit, folder = model_and_digit
    path = folder / "wide.tiff"
    Image.fromarray(digit.astype(np.float32) * 4 - 100).save(path)  # -100 to 920
    assert main(["predict", str(model), str(path)]) == 2
    assert capsys.readouterr().err == (
        f"fastgraph: error: {path}: F pixels from -100 to 920 are not grey levels (0-1, 0-255, "
        "0-65535 expected)\n")
