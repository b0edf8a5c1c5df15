"""Convolutions: im2col + GEMM, shifted runs and direct loops; max pooling; LeNet-5 and the
article's CNN.

The kernel comparison decided how ``Conv2D`` computes (see ``fastgraph/ops/convolution.py``):
LeNet-5's two convolutions, batch 64, float32, each pass every way it can be made (shifted
runs: stride 1, forward and weight gradient). A LeNet-5 training step is timed whole. The
article's CNN
(``examples/cnn_article.py``'s network) is timed as a training step three ways: the batched
VJP engine on a batch of 32, the same on a batch of 1 (the article's one sample per step),
and the article's dense-Jacobian engine on one sample; ``extra_info`` holds samples/s.
"""

import numpy as np
import pytest

import fastgraph as fg
from fastgraph.kernels import convolution as kernels
from fastgraph.kernels.blas import gemm

# name: (H, W, C, Cout, kernel, padding)
LAYERS = {"conv1 1->6 28x28": (28, 28, 1, 6, 5, 2), "conv2 6->16 14x14": (14, 14, 6, 16, 5, 0)}
BATCH = 64


def _setup(layer):
    H, W, C, Cout, k, p = LAYERS[layer]
    Ho, Wo = H + 2 * p - k + 1, W + 2 * p - k + 1
    geometry = (H, W, C, k, k, 1, 1, p, p, Ho, Wo)
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.random((BATCH, H * W * C), np.float32),
        "weights": rng.normal(size=(Cout, k * k * C)).astype(np.float32),
        "upstream": rng.normal(size=(BATCH, Ho * Wo * Cout)).astype(np.float32),
        "out": np.empty((BATCH, Ho * Wo * Cout), np.float32),
        "cols": np.empty((BATCH * Ho * Wo, k * k * C), np.float32),
        "dx": np.empty((BATCH, H * W * C), np.float32),
        "dw": np.empty((Cout, k * k * C), np.float32),
    }
    arrays["dcols"] = np.empty_like(arrays["cols"])
    kernels.im2col(arrays["x"], *geometry, arrays["cols"])
    Wp = W + 2 * p
    arrays["padded"] = np.empty((BATCH, C * (H + 2 * p + 1) * Wp), np.float32)
    arrays["wide"] = np.empty((BATCH, (Cout + Cout % 2) * Ho * Wp), np.float32)  # even: paired
    arrays["partial"] = np.empty((BATCH, Cout * k * k * C), np.float32)
    arrays["bias"] = np.zeros((1, Cout), np.float32)
    kernels.pad_channels(arrays["x"], H, W, C, p, p, arrays["padded"])
    return geometry, Cout, arrays


def _input_gradient_in_chunks(geometry, Cout, a, chunk=8):
    """As Conv2D makes it: GEMM and col2im ``chunk`` samples at a time."""
    pixels = geometry[-2] * geometry[-1]
    stacked = a["upstream"].reshape(-1, Cout)
    for start in range(0, BATCH, chunk):
        part = a["dcols"][: chunk * pixels]
        gemm(stacked[start * pixels : (start + chunk) * pixels], False, a["weights"], False, part,
             0.0)
        kernels.col2im(part, *geometry, a["dx"][start : start + chunk])


def _shifted(geometry, Cout, a, weight_gradient):
    H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo = geometry
    if weight_gradient:
        kernels.conv_weight_vjp_shifted(a["upstream"], a["padded"], C, kh, kw, W + 2 * pw, Ho,
                                        Wo, a["wide"], a["partial"], a["dw"].reshape(1, -1))
        return
    kernels.pad_channels(a["x"], H, W, C, ph, pw, a["padded"])
    kernels.conv_shifted(a["padded"], a["weights"], a["bias"], 1, C, kh, kw, W + 2 * pw, Ho, Wo,
                         a["wide"], a["out"])


def _passes(geometry, Cout, a):
    return {
        ("forward", "im2col+gemm"): lambda: (
            kernels.im2col(a["x"], *geometry, a["cols"]),
            gemm(a["cols"], False, a["weights"], True, a["out"].reshape(-1, Cout), 0.0)),
        ("forward", "shifted"): lambda: _shifted(geometry, Cout, a, False),
        ("forward", "direct"): lambda: kernels.conv_direct(
            a["x"], a["weights"].reshape(1, -1), *geometry, a["out"]),
        ("weight gradient", "im2col+gemm"): lambda: gemm(
            a["upstream"].reshape(-1, Cout), True, a["cols"], False, a["dw"], 0.0),
        ("weight gradient", "shifted"): lambda: _shifted(geometry, Cout, a, True),
        ("weight gradient", "direct"): lambda: kernels.conv_weight_vjp_direct(
            a["upstream"], a["x"], *geometry, a["dw"].reshape(1, -1)),
        ("input gradient", "im2col+gemm"): lambda: (
            gemm(a["upstream"].reshape(-1, Cout), False, a["weights"], False, a["dcols"], 0.0),
            kernels.col2im(a["dcols"], *geometry, a["dx"])),
        ("input gradient", "im2col+gemm in chunks"): lambda: _input_gradient_in_chunks(
            geometry, Cout, a),
        ("input gradient", "direct"): lambda: kernels.conv_input_vjp_direct(
            a["upstream"], a["weights"].reshape(1, -1), *geometry, a["dx"]),
    }


PASSES = [("forward", "im2col+gemm"), ("forward", "shifted"), ("forward", "direct"),
          ("weight gradient", "im2col+gemm"), ("weight gradient", "shifted"),
          ("weight gradient", "direct"), ("input gradient", "im2col+gemm"),
          ("input gradient", "im2col+gemm in chunks"), ("input gradient", "direct")]


@pytest.mark.parametrize("which, method", PASSES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_convolution_kernels(benchmark, layer, which, method):
    """The weight gradient's im2col+gemm reuses the forward's patches, as Conv2D does."""
    geometry, Cout, arrays = _setup(layer)
    call = _passes(geometry, Cout, arrays)[(which, method)]
    benchmark.group = f"{layer}, batch {BATCH}: {which}"
    benchmark(call)
    assert np.isfinite(arrays["out"]).all() or which != "forward"


# name: (H, W, C): LeNet-5's poolings, 2x2 windows, stride 2
POOLS = {"pool1 28x28x6": (28, 28, 6), "pool2 10x10x16": (10, 10, 16)}


@pytest.mark.parametrize("method", ["max_pool", "max_pool_2x2"])
@pytest.mark.parametrize("pool", list(POOLS))
def test_max_pool_kernels(benchmark, pool, method):
    """The general window loop against the 2x2 stride-2 kernel that MaxPool2D takes for
    LeNet-5 (same values, same positions)."""
    H, W, C = POOLS[pool]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, H * W * C)).astype(np.float32)
    out = np.empty((BATCH, H // 2 * (W // 2) * C), np.float32)
    where = np.empty_like(out)
    if method == "max_pool":
        arguments = (x, H, W, C, 2, 2, 2, 2, 0, 0, H // 2, W // 2, out, where)
    else:
        arguments = (x, W, C, H // 2, W // 2, out, where)
    benchmark.group = f"{pool}, batch {BATCH}: max pooling forward"
    benchmark(getattr(kernels, method), *arguments)
    assert np.isfinite(out).all()


def test_lenet5_training_step(benchmark):
    """``models.lenet5``, batch 64, Adam: one step (forward, backward, update), as
    ``benchmarks/compare.py`` trains it, on random images."""
    model = fg.models.lenet5(seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.001)
    rng = np.random.default_rng(0)
    images = rng.random((BATCH, 784, 1), np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH)][:, :, None]

    def step():
        model.x.set_value(images)
        model.one_hot.set_value(labels)
        optimizer.one_step()
        optimizer.update()

    benchmark.group = "LeNet-5: one training step, batch 64"
    benchmark(step)
    assert np.isfinite(model.loss.value).all()


def article_cnn(seed=0):
    """The article's chapter-8 network from per-channel operators (examples/cnn_article.py)."""
    graph = fg.Graph(seed=seed)
    with graph:
        x = fg.Variable(dim=(28, 28), init=False, trainable=False)
        one_hot = fg.Variable(dim=(10, 1), init=False, trainable=False)
        maps = fg.layer.pooling(fg.layer.conv([x], (28, 28), 3, (5, 5), "ReLU"), (3, 3), (2, 2))
        maps = fg.layer.pooling(fg.layer.conv(maps, (14, 14), 3, (3, 3), "ReLU"), (3, 3), (2, 2))
        hidden = fg.layer.fc(fg.ops.Concat(*maps), 147, 120, "ReLU")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(fg.layer.fc(hidden, 120, 10, None), one_hot)
    return graph, x, one_hot, loss


@pytest.mark.parametrize("engine, batch", [("vjp", 32), ("vjp", 1), ("jacobian", 1)])
def test_article_cnn_training_step(benchmark, engine, batch, mnist_arrays):
    features, labels = mnist_arrays
    graph, x, one_hot, loss = article_cnn()
    optimizer = fg.optimizer.Adam(graph, loss, 0.005, engine=engine)
    state = {"start": 0}

    def step():
        start = state["start"]
        state["start"] = (start + batch) % (len(features) - batch)
        x.set_value(features[start : start + batch].reshape(-1, 28, 28))
        one_hot.set_value(labels[start : start + batch])
        optimizer.one_step()
        optimizer.update()

    benchmark.group = "the article's CNN: one training step"
    benchmark.extra_info["batch"] = batch
    if engine == "jacobian":
        benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    else:
        benchmark(step)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["samples_per_second"] = batch / benchmark.stats.stats.median
    assert np.isfinite(loss.value).all()
