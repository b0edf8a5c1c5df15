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


@pytest.mark.parametrize("ink", ["white", "black", "palette"])
def test_a_digit_drawn_on_a_transparent_ground_is_read_by_its_alpha(model_and_digit, capsys,
                                                                      ink):
    """The digit in the alpha channel, its colour all one: convert("L") kept the colour and
    dropped the alpha (a 7 was read as a 2, or as a blank)."""
    model, digit, folder = model_and_digit
    eight_bit = folder / "digit.png"
    Image.fromarray(digit).save(eight_bit)
    path = folder / f"transparent-{ink}.png"
    if ink == "palette":  # a palette image whose colour 0 is transparent
        image = Image.fromarray(digit).convert("P")
        image.info["transparency"] = 0
        image.save(path, transparency=0)
    else:
        colour = np.full((28, 28, 3), 255 if ink == "white" else 0, np.uint8)
        Image.fromarray(np.dstack([colour, digit])).save(path)
        assert Image.open(path).mode == "RGBA"
    opaque = folder / "opaque.png"  # alpha 255 everywhere: read by its colours, as before
    Image.fromarray(np.dstack([np.repeat(digit[:, :, None], 3, axis=2),
                               np.full((28, 28), 255, np.uint8)])).save(opaque)
    expected = predict(model, eight_bit, capsys)
    assert predict(model, opaque, capsys) == expected
    if ink != "palette":
        assert predict(model, path, capsys) == expected
    else:  # the palette's transparent colour is the black ground: ink where it is opaque
        answer = predict(model, path, capsys)
        assert answer == predict(model, _saved(folder, (digit > 0) * 255), capsys)


def _saved(folder, pixels):
    path = folder / "mask.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path
