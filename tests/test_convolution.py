"""Convolution and pooling: forward against plain-NumPy references, the article's (MatrixSlow's)
semantics, VJPs against dense Jacobians and finite differences, per-sample derivatives,
layers, errors, and model files."""

import math

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import layer, ops, saver

# -- references: slow loops, written from the definitions -----------------------------------


def reference_convolve(image, kernel):
    """The article's Convolve: pad kh // 2 (kw // 2) zeros on every side, slide, same size."""
    H, W = image.shape
    kh, kw = kernel.shape
    padded = np.zeros((H + 2 * (kh // 2), W + 2 * (kw // 2)))
    padded[kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W] = image
    out = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            out[i, j] = (padded[i : i + kh, j : j + kw] * kernel).sum()
    return out


def reference_max_pooling(image, size, stride):
    """The article's MaxPooling: windows centred on every stride-th pixel, clipped."""
    H, W = image.shape
    half_h, half_w = size[0] // 2, size[1] // 2
    rows = []
    for i in range(0, H, stride[0]):
        row = []
        for j in range(0, W, stride[1]):
            window = image[max(0, i - half_h) : min(H, i + half_h + 1),
                           max(0, j - half_w) : min(W, j + half_w + 1)]
            row.append(window.max())
        rows.append(row)
    return np.array(rows)


def reference_conv2d(image, weights, bias, stride, padding):
    """image (H, W, C), weights (Cout, kh, kw, C) -> (Ho, Wo, Cout)."""
    H, W, C = image.shape
    Cout, kh, kw, _ = weights.shape
    (sh, sw), (ph, pw) = stride, padding
    padded = np.zeros((H + 2 * ph, W + 2 * pw, C))
    padded[ph : ph + H, pw : pw + W] = image
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((Ho, Wo, Cout))
    for oy in range(Ho):
        for ox in range(Wo):
            patch = padded[oy * sh : oy * sh + kh, ox * sw : ox * sw + kw]
            for co in range(Cout):
                out[oy, ox, co] = (patch * weights[co]).sum() + bias[co]
    return out


def reference_pool2d(image, kernel, stride, padding, how):
    """image (H, W, C) -> (Ho, Wo, C); max skips the padding, mean counts it as zeros."""
    H, W, C = image.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((Ho, Wo, C))
    for oy in range(Ho):
        for ox in range(Wo):
            top, left = oy * sh - ph, ox * sw - pw
            window = image[max(top, 0) : top + kh, max(left, 0) : left + kw]
            out[oy, ox] = window.max(axis=(0, 1)) if how == "max" else window.sum(
                axis=(0, 1)) / (kh * kw)
    return out


# -- helpers --------------------------------------------------------------------------------


def variable(graph, dim, value, batched):
    node = fg.Variable(dim, trainable=not batched, graph=graph)
    node.set_value(value)
    return node


def check_derivatives(op, parents, rng, eps=1e-6):
    """Every slot: per-row VJP summed as the parent needs == dense Jacobians == finite
    differences of sum(upstream * output); vjp_summed == the sum of vjp's rows."""
    op.forward()
    upstream = rng.normal(size=op.flat.shape)
    values = [parent.value.copy() for parent in parents]
    batch = op.flat.shape[0]

    def restore():
        for node, value in zip(parents, values):
            node.set_value(value)

    for slot, parent in enumerate(parents):
        restore()
        op.forward()
        per_row = op.vjp(slot, upstream).copy()
        assert per_row.shape == (batch, parent.dimension())
        vjp = per_row if parent.batched else per_row.sum(axis=0, keepdims=True)
        if not parent.batched and hasattr(op, "vjp_summed"):
            np.testing.assert_allclose(op.vjp_summed(slot, upstream), vjp, rtol=1e-10,
                                       atol=1e-12)
        dense = np.zeros_like(vjp)
        for b in range(batch):
            for node, value in zip(parents, values):
                node.set_value(value[b : b + 1] if node.batched else value)
            op.forward()
            dense[b if parent.batched else 0] += upstream[b] @ op.get_jacobi(parent)
        restore()
        numeric = np.zeros_like(vjp)
        for index in np.ndindex(*vjp.shape):
            sides = []
            for step in (eps, -eps):
                restore()
                moved = parent.flat.copy()
                moved[index] += step
                parent.set_value(moved.reshape(parent.value.shape))
                op.forward()
                sides.append(float((op.flat * upstream).sum()))
            numeric[index] = (sides[0] - sides[1]) / (2 * eps)
        restore()
        np.testing.assert_allclose(vjp, dense, rtol=1e-10, atol=1e-12, err_msg=f"slot {slot}")
        np.testing.assert_allclose(vjp, numeric, rtol=1e-5, atol=1e-7, err_msg=f"slot {slot}")


def distinct(rng, shape):
    """Values with no ties (so a max pooling's arg max is stable under small moves)."""
    return rng.permutation(np.prod(shape)).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)


# -- the article's operators ----------------------------------------------------------------


@pytest.mark.parametrize("image, kernel", [((5, 7), (3, 3)), ((6, 5), (5, 3)), ((4, 6), (2, 4)),
                                           ((3, 3), (5, 5)), ((6, 6), (1, 1))])
def test_convolve_is_the_articles_same_size_convolution(image, kernel, rng):
    graph = fg.Graph(dtype=np.float64)
    x = rng.normal(size=(3, *image))
    k = rng.normal(size=kernel)
    op = ops.Convolve(variable(graph, image, x, True), variable(graph, kernel, k, False))
    op.forward()
    assert op.dim == image
    for b in range(3):
        np.testing.assert_allclose(op.value[b], reference_convolve(x[b], k), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("image, size, stride", [
    ((6, 6), (2, 2), (2, 2)), ((7, 5), (3, 3), (2, 2)), ((5, 8), (3, 2), (2, 3)),
    ((9, 9), (5, 5), (3, 3)), ((4, 4), (1, 1), (1, 1)), ((7, 7), (4, 4), (1, 2)),
])
def test_max_pooling_is_the_articles(image, size, stride, rng):
    graph = fg.Graph(dtype=np.float64)
    x = rng.normal(size=(2, *image))
    op = ops.MaxPooling(variable(graph, image, x, True), size=size, stride=stride)
    op.forward()
    assert op.dim == (math.ceil(image[0] / stride[0]), math.ceil(image[1] / stride[1]))
    for b in range(2):
        np.testing.assert_array_equal(op.value[b], reference_max_pooling(x[b], size, stride))


def test_max_pooling_gradient_goes_to_the_first_largest_pixel():
    graph = fg.Graph(dtype=np.float64)
    x = variable(graph, (2, 2), np.ones((1, 2, 2)), True)
    op = ops.MaxPooling(x, size=(3, 3), stride=(2, 2))  # one window holding all four
    op.forward()
    np.testing.assert_array_equal(op.vjp(0, np.array([[5.0]])), [[5, 0, 0, 0]])
    np.testing.assert_array_equal(op.get_jacobi(x), [[1, 0, 0, 0]])


@pytest.mark.parametrize("batched", [(True, False), (True, True), (False, True)])
@pytest.mark.parametrize("image, kernel", [((4, 5), (3, 3)), ((5, 4), (2, 3))])
def test_convolve_derivatives(image, kernel, batched, rng):
    graph = fg.Graph(dtype=np.float64)
    parents = [variable(graph, dim, rng.normal(size=(2, *dim) if b else dim), b)
               for dim, b in zip((image, kernel), batched)]
    check_derivatives(ops.Convolve(*parents), parents, rng)


@pytest.mark.parametrize("image, size, stride",
                         [((5, 6), (3, 3), (2, 2)), ((4, 5), (2, 4), (1, 3))])
def test_max_pooling_derivatives(image, size, stride, rng):
    graph = fg.Graph(dtype=np.float64)
    x = variable(graph, image, distinct(rng, (3, *image)), True)
    check_derivatives(ops.MaxPooling(x, size=size, stride=stride), [x], rng)


def test_concat_flattens_maps_row_major_as_the_article_does(rng):
    """MatrixSlow concatenates ``p.value.flatten()`` of each parent: row by row."""
    graph = fg.Graph(dtype=np.float64)
    a, b = rng.normal(size=(2, 2, 3)), rng.normal(size=(2, 3, 2))
    op = ops.Concat(variable(graph, (2, 3), a, True), variable(graph, (3, 2), b, True))
    op.forward()
    for s in range(2):
        expected = np.concatenate([a[s].flatten(), b[s].flatten()])[:, None]
        np.testing.assert_array_equal(op.value[s], expected)


def test_article_layers_build_the_articles_subgraphs(rng):
    graph = fg.Graph(dtype=np.float64, seed=1)
    with graph:
        maps = [fg.Variable((6, 6), trainable=False) for _ in range(2)]
        images = rng.normal(size=(2, 3, 6, 6))
        for node, value in zip(maps, images):
            node.set_value(value)
        convolved = layer.conv(maps, (6, 6), 3, (3, 3), "ReLU")
        pooled = layer.pooling(convolved, (3, 3), (2, 2))
    assert len(convolved) == 3 and len(pooled) == 3
    assert all(node.dim == (3, 3) for node in pooled)
    for out, pool in zip(convolved, pooled):
        pool.forward()
        # out = ReLU(sum over input maps of Convolve + scalar bias)
        affine = out.parents[0]
        channels, bias = affine.parents
        kernels = [conv.parents[1].value for conv in channels.parents]
        scalar = bias.value[0, 0]
        for s in range(3):
            expected = sum(reference_convolve(images[m, s], kernels[m]) for m in range(2))
            expected = np.maximum(expected + scalar, 0)
            np.testing.assert_allclose(out.value[s], expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(pool.value[s], reference_max_pooling(
                out.value[s], (3, 3), (2, 2)))


@pytest.mark.parametrize("activation, kind", [("ReLU", ops.ReLU), ("Logistic", ops.Logistic),
                                              (None, ops.AddScalar), ("anything", ops.AddScalar)])
def test_article_conv_activation_strings(activation, kind):
    graph = fg.Graph(seed=0)
    with graph:
        x = fg.Variable((4, 4), trainable=False)
        (out,) = layer.conv([x], (4, 4), 1, (3, 3), activation)
    assert type(out) is kind


# -- the multi-channel operators ------------------------------------------------------------


CONV_CASES = [  # image, channels, out channels, kernel, stride, padding
    ((6, 6), 1, 2, (3, 3), (1, 1), (0, 0)),
    ((7, 5), 2, 3, (3, 2), (2, 1), (1, 0)),
    ((5, 6), 3, 2, (5, 5), (1, 2), (2, 2)),
    ((8, 8), 2, 1, (2, 2), (2, 2), (0, 1)),
]


@pytest.mark.parametrize("image, C, Cout, kernel, stride, padding", CONV_CASES)
def test_conv2d_forward_matches_the_reference(image, C, Cout, kernel, stride, padding, rng):
    graph = fg.Graph(dtype=np.float64)
    H, W = image
    x = rng.normal(size=(3, H, W, C))
    w = rng.normal(size=(Cout, *kernel, C))
    b = rng.normal(size=Cout)
    op = ops.Conv2D(variable(graph, (H * W, C), x.reshape(3, H * W, C), True),
                    variable(graph, (Cout, w[0].size), w.reshape(Cout, -1), False),
                    variable(graph, (Cout, 1), b[:, None], False),
                    image_shape=image, kernel_size=kernel, stride=stride, padding=padding)
    op.forward()
    Ho, Wo = op.output_image
    assert op.dim == (Ho * Wo, Cout)
    for s in range(3):
        expected = reference_conv2d(x[s], w, b, stride, padding)
        np.testing.assert_allclose(op.value[s], expected.reshape(Ho * Wo, Cout), rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("image, C, Cout, kernel, stride, padding", CONV_CASES[1:3])
def test_conv2d_derivatives(image, C, Cout, kernel, stride, padding, rng):
    graph = fg.Graph(dtype=np.float64)
    H, W = image
    parents = [variable(graph, (H * W, C), rng.normal(size=(2, H * W, C)), True),
               variable(graph, (Cout, kernel[0] * kernel[1] * C),
                        rng.normal(size=(Cout, kernel[0] * kernel[1] * C)), False),
               variable(graph, (Cout, 1), rng.normal(size=(Cout, 1)), False)]
    op = ops.Conv2D(*parents, image_shape=image, kernel_size=kernel, stride=stride,
                    padding=padding)
    check_derivatives(op, parents, rng)


SHIFTED_CASES = [  # image, channels, out channels, kernel, padding, batch: stride 1
    ((7, 5), 1, 3, (3, 3), (1, 1), 3),
    ((6, 9), 2, 2, (5, 3), (2, 0), 1),
    ((5, 5), 1, 1, (5, 5), (0, 0), 2),
    ((4, 6), 3, 2, (2, 3), (1, 2), 2),
    ((5, 7), 1, 2, (3, 4), (1, 2), 1),  # kernel rows of 4 taps: one pass each
    ((6, 11), 2, 2, (2, 9), (1, 4), 2),  # 9 taps: two passes of 4, one tap alone
    ((4, 5), 2, 3, (2, 2), (2, 1), 2),  # padding as wide as the kernel
]


@pytest.mark.parametrize("image, C, Cout, kernel, padding, batch", SHIFTED_CASES)
def test_conv2d_shifted_runs_and_im2col_agree_with_the_reference(image, C, Cout, kernel,
                                                                 padding, batch, rng,
                                                                 monkeypatch):
    """Stride 1 with few patch numbers goes by shifted runs; forcing im2col + GEMM instead
    must give the same output and the same batch weight gradient, both the reference's."""
    from fastgraph.ops import convolution

    H, W = image
    x = rng.normal(size=(batch, H, W, C))
    w = rng.normal(size=(Cout, *kernel, C))
    b = rng.normal(size=Cout)
    upstream = None
    results = {}
    for shifted in (True, False):
        monkeypatch.setattr(convolution, "SHIFTED_UP_TO", 1000 if shifted else 0)
        graph = fg.Graph(dtype=np.float64)
        parents = [variable(graph, (H * W, C), x.reshape(batch, H * W, C), True),
                   variable(graph, (Cout, w[0].size), w.reshape(Cout, -1), False),
                   variable(graph, (Cout, 1), b[:, None], False)]
        op = ops.Conv2D(*parents, image_shape=image, kernel_size=kernel, padding=padding)
        assert op._shifted is shifted
        op.forward()
        Ho, Wo = op.output_image
        for s in range(batch):
            expected = reference_conv2d(x[s], w, b, (1, 1), padding).reshape(Ho * Wo, Cout)
            np.testing.assert_allclose(op.value[s], expected, rtol=1e-10, atol=1e-12)
        if upstream is None:
            upstream = rng.normal(size=op.flat.shape)
        per_row = op.vjp(1, upstream).sum(axis=0, keepdims=True)
        summed = op.vjp_summed(1, upstream).copy()
        np.testing.assert_allclose(summed, per_row, rtol=1e-10, atol=1e-12)
        twice = op.vjp_summed(1, np.repeat(upstream, 2, axis=0))  # not the forward's batch
        np.testing.assert_allclose(twice, 2 * per_row, rtol=1e-10, atol=1e-12)
        pixel_sums = upstream.reshape(batch, Ho * Wo, Cout).sum(axis=1)  # the bias gradient
        np.testing.assert_allclose(op.vjp(2, upstream), pixel_sums, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(op.vjp_summed(2, upstream), pixel_sums.sum(0, keepdims=True),
                                   rtol=1e-10, atol=1e-12)
        results[shifted] = op.value.copy(), summed
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[True][1], results[False][1], rtol=1e-10, atol=1e-12)


def test_conv2d_input_gradient_in_chunks_equals_one_pass(rng, monkeypatch):
    """Chunks of 2 samples over a batch of 5 (the last chunk short) put back the same input
    gradient as one GEMM over the batch, and the same as the dense Jacobians."""
    from fastgraph.ops import convolution

    x = rng.normal(size=(5, 30, 2))
    w = rng.normal(size=(3, 18))
    upstream = rng.normal(size=(5, 5 * 3 * 3))  # 5x3 output pixels, 3 channels
    results = []
    for chunk in (2, 1000):
        monkeypatch.setattr(convolution, "INPUT_CHUNK", chunk)
        graph = fg.Graph(dtype=np.float64)
        parents = [variable(graph, (30, 2), x, True), variable(graph, (3, 18), w, False)]
        op = ops.Conv2D(*parents, image_shape=(5, 6), kernel_size=3, stride=(1, 2), padding=1)
        assert not op._shifted and op.dim == (15, 3)
        op.forward()
        results.append(op.vjp(0, upstream).copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-12)
    graph = fg.Graph(dtype=np.float64)
    for b in range(5):
        parents = [variable(graph, (30, 2), x[b:b + 1], True), variable(graph, (3, 18), w, False)]
        op = ops.Conv2D(*parents, image_shape=(5, 6), kernel_size=3, stride=(1, 2), padding=1)
        op.forward()
        np.testing.assert_allclose(results[0][b], upstream[b] @ op.get_jacobi(parents[0]),
                                   rtol=1e-10, atol=1e-12)


def test_conv2d_shifted_runs_derivatives(rng):
    graph = fg.Graph(dtype=np.float64)
    parents = [variable(graph, (30, 2), rng.normal(size=(2, 30, 2)), True),
               variable(graph, (3, 12), rng.normal(size=(3, 12)), False),
               variable(graph, (3, 1), rng.normal(size=(3, 1)), False)]
    op = ops.Conv2D(*parents, image_shape=(5, 6), kernel_size=(2, 3), padding=(1, 2))
    assert op._shifted
    check_derivatives(op, parents, rng)


def test_conv2d_shifted_runs_in_float32_match_float64(rng):
    """LeNet's first layer's shape, batch 5: the float32 kernels against float64."""
    x = rng.random((5, 784, 1))
    w = rng.normal(0, 0.3, size=(6, 25))
    b = rng.normal(size=(6, 1))
    upstream = rng.normal(size=(5, 784 * 6))
    out = {}
    for dtype in (np.float32, np.float64):
        graph = fg.Graph(dtype=dtype)
        parents = [variable(graph, (784, 1), x, True), variable(graph, (6, 25), w, False),
                   variable(graph, (6, 1), b, False)]
        op = ops.Conv2D(*parents, image_shape=(28, 28), kernel_size=5, padding=2)
        op.forward()
        out[dtype] = op.value.copy(), op.vjp_summed(1, upstream.astype(dtype)).copy()
    np.testing.assert_allclose(out[np.float32][0], out[np.float64][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[np.float32][1], out[np.float64][1], rtol=1e-4, atol=1e-3)


def test_conv2d_without_bias(rng):
    graph = fg.Graph(dtype=np.float64)
    x = rng.normal(size=(2, 5, 5, 2))
    w = rng.normal(size=(3, 3, 3, 2))
    parents = [variable(graph, (25, 2), x.reshape(2, 25, 2), True),
               variable(graph, (3, 18), w.reshape(3, 18), False)]
    op = ops.Conv2D(*parents, image_shape=(5, 5), kernel_size=3, padding=1)
    op.forward()
    np.testing.assert_allclose(op.value[1], reference_conv2d(x[1], w, np.zeros(3), (1, 1),
                                                             (1, 1)).reshape(25, 3))
    check_derivatives(op, parents, rng)


POOL_CASES = [  # image, channels, kernel, stride, padding
    ((6, 6), 2, (2, 2), (2, 2), (0, 0)),
    ((7, 5), 3, (2, 2), (2, 2), (0, 0)),  # 2x2 on odd sides: the last row, column left out
    ((7, 5), 3, (3, 3), (2, 2), (1, 1)),
    ((5, 8), 1, (2, 3), (1, 2), (1, 0)),
]


@pytest.mark.parametrize("how", ["max", "mean"])
@pytest.mark.parametrize("image, C, kernel, stride, padding", POOL_CASES)
def test_pool2d_forward_and_derivatives(image, C, kernel, stride, padding, how, rng):
    graph = fg.Graph(dtype=np.float64)
    H, W = image
    x = distinct(rng, (2, H, W, C))
    node = variable(graph, (H * W, C), x.reshape(2, H * W, C), True)
    kind = ops.MaxPool2D if how == "max" else ops.AvgPool2D
    op = kind(node, image, kernel, stride, padding)
    op.forward()
    Ho, Wo = op.output_image
    for s in range(2):
        expected = reference_pool2d(x[s], kernel, stride, padding, how)
        np.testing.assert_allclose(op.value[s], expected.reshape(Ho * Wo, C), rtol=1e-12)
    check_derivatives(op, [node], rng)


def test_max_pool2d_stride_defaults_to_the_kernel():
    graph = fg.Graph()
    x = fg.Variable((28 * 28, 6), trainable=False, graph=graph)
    op = ops.MaxPool2D(x, (28, 28), 2)
    assert op.stride == (2, 2) and op.output_image == (14, 14) and op.dim == (196, 6)


# -- the kernels themselves: im2col / col2im and the 2x2 max pooling ------------------------

IM2COL_CASES = [  # H, W, C, kh, kw, sh, sw, ph, pw, batch
    (14, 14, 6, 5, 5, 1, 1, 0, 0, 2),  # LeNet's second layer
    (9, 7, 3, 3, 2, 2, 3, 1, 1, 1),
    (5, 6, 2, 4, 4, 1, 1, 3, 3, 2),  # padding wider than some windows' image part
    (3, 3, 1, 5, 5, 1, 1, 2, 2, 1),  # every window crosses a border
    (4, 9, 2, 3, 5, 2, 1, 2, 2, 3),
]


def reference_im2col(x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo):
    batch = x.shape[0]
    padded = np.zeros((batch, H + 2 * ph, W + 2 * pw, C))
    padded[:, ph : ph + H, pw : pw + W] = x.reshape(batch, H, W, C)
    cols = np.empty((batch, Ho, Wo, kh, kw, C))
    for oy in range(Ho):
        for ox in range(Wo):
            cols[:, oy, ox] = padded[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw]
    return cols.reshape(batch * Ho * Wo, kh * kw * C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_and_col2im_against_numpy(case, dtype, rng):
    """im2col copies exactly the reference's patches (zeros in the padding); col2im puts
    patch rows back as the reference's scatter-add does, and is im2col's adjoint."""
    from fastgraph.kernels.convolution import col2im, im2col

    H, W, C, kh, kw, sh, sw, ph, pw, batch = case
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    geometry = (H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo)
    x = rng.normal(size=(batch, H * W * C)).astype(dtype)
    cols = np.full((batch * Ho * Wo, kh * kw * C), 7.0, dtype)  # every number overwritten
    im2col(x, *geometry, cols)
    np.testing.assert_array_equal(cols, reference_im2col(x.astype(np.float64), *geometry))
    patches = rng.normal(size=cols.shape).astype(dtype)
    out = np.full(x.shape, 7.0, dtype)
    col2im(patches, *geometry, out)
    expected = np.zeros((batch, H + 2 * ph, W + 2 * pw, C))
    spread = patches.astype(np.float64).reshape(batch, Ho, Wo, kh, kw, C)
    for oy in range(Ho):
        for ox in range(Wo):
            expected[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw] += spread[:, oy, ox]
    expected = expected[:, ph : ph + H, pw : pw + W].reshape(batch, -1)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(float((patches * cols).sum()), float((out * x).sum()),
                               rtol=tolerance * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H, W, C, batch", [(28, 28, 6, 2), (7, 9, 3, 1), (10, 10, 16, 3),
                                            (2, 3, 1, 1)])
def test_max_pool_2x2_matches_the_general_kernel(H, W, C, batch, dtype, rng):
    """max_pool_2x2 gives max_pool's values and positions bit for bit: ties (the first in
    row-major order), NaNs (the first wins, with its own bits), -0.0 and 0.0 (equal: the
    first, with its sign), -inf everywhere, infinities, odd sides."""
    from fastgraph.kernels.convolution import max_pool, max_pool_2x2

    Ho, Wo = H // 2, W // 2
    x = rng.normal(size=(batch + 5, H * W * C)).astype(dtype)
    x[0, ::3] = 0.5  # ties
    x[1, 1::5] = np.nan
    x[1, ::4] = 0.5
    x[2] = -np.inf
    x[3] = rng.choice([-0.0, 0.0, -1.0], size=x.shape[1])  # signed zeros, tied
    x[4] = rng.choice([np.nan, -np.nan, np.inf, -np.inf, 2.0], size=x.shape[1])
    x[-1, ::2] = np.nan
    x[-1, 1::2] = np.inf
    shape = (x.shape[0], Ho * Wo * C)
    expected, expected_where = np.empty(shape, dtype), np.empty(shape, dtype)
    max_pool(x, H, W, C, 2, 2, 2, 2, 0, 0, Ho, Wo, expected, expected_where)
    out, where = np.full(shape, 7.0, dtype), np.full(shape, 7.0, dtype)
    max_pool_2x2(x, W, C, Ho, Wo, out, where)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(out.view(bits), expected.view(bits))  # signs, NaNs' bits
    np.testing.assert_array_equal(where, expected_where)
    assert np.signbit(out[3]).any() and (out[3] == 0).any()  # the -0.0 case happened
    windows = x.astype(np.float64).reshape(-1, H, W, C)[:, :2 * Ho, :2 * Wo]
    windows = windows.reshape(-1, Ho, 2, Wo, 2, C).max(axis=(2, 4))  # NumPy: NaN wins too
    np.testing.assert_array_equal(out.astype(np.float64), windows.reshape(shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, pixels, C", [(1, 5, 3), (3, 16, 6), (4, 100, 16), (2, 37, 1)])
def test_sum_pixels_is_the_bias_gradient(batch, pixels, C, dtype, rng):
    """Per row and summed over the batch, equal to NumPy's sums, for pixel counts below, at
    and off multiples of 16 (the kernel adds 16 pixels at a time, then the rest)."""
    from fastgraph.kernels.convolution import sum_pixels

    upstream = rng.normal(size=(batch, pixels * C)).astype(dtype)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    expected = upstream.astype(np.float64).reshape(batch, pixels, C).sum(axis=1)
    for rows in (batch, 1):
        out = np.full((rows, C), 7.0, dtype)
        sum_pixels(upstream, C, out)
        wanted = expected if rows == batch else expected.sum(axis=0, keepdims=True)
        np.testing.assert_allclose(out, wanted, rtol=tolerance, atol=tolerance)


def test_max_pool2d_takes_the_2x2_kernel_only_where_it_applies():
    graph = fg.Graph()
    x = fg.Variable((7 * 9, 3), trainable=False, graph=graph)
    assert ops.MaxPool2D(x, (7, 9), 2)._two_by_two
    assert not ops.MaxPool2D(x, (7, 9), 2, stride=1)._two_by_two
    assert not ops.MaxPool2D(x, (7, 9), 2, padding=1)._two_by_two
    assert not ops.MaxPool2D(x, (7, 9), 3)._two_by_two


# -- per-sample derivatives through every new operator -------------------------------------


def small_cnn(dtype=np.float64, seed=0):
    graph = fg.Graph(dtype=dtype, seed=seed)
    with graph:
        x = fg.Variable((8 * 8, 1), trainable=False, name="x")
        one_hot = fg.Variable((3, 1), trainable=False, name="one_hot")
        h = layer.conv2d(x, 4, 3, image_shape=(8, 8), padding=1, activation="ReLU")
        h = layer.max_pool2d(h, 2)
        h = ops.AvgPool2D(h, h.output_image, 2)
        logits = layer.fc(ops.Reshape(h, (16, 1)), 16, 3, None)
        loss = ops.loss.CrossEntropyWithSoftMax(logits, one_hot)
    return graph, x, one_hot, logits, loss


def test_per_sample_jacobians_and_gradients_through_the_new_operators(rng):
    graph, x, one_hot, logits, loss = small_cnn()
    images = distinct(rng, (3, 64, 1))
    x.set_value(images)
    one_hot.set_value(np.eye(3)[[0, 2, 1]][:, :, None])
    jacobian = fg.jacobian(logits, x)
    expected = np.stack([_dense_jacobian(logits, x, images, b) for b in range(3)])
    np.testing.assert_allclose(jacobian, expected, rtol=1e-9, atol=1e-12)

    x.set_value(images)
    conv = [node for node in graph.nodes if isinstance(node, ops.Conv2D)][0]
    weights, bias = conv.parents[1:]
    per_sample = fg.per_sample_gradients(loss, [weights, bias])
    for b in range(3):
        x.set_value(images[b : b + 1])
        one_hot.set_value(np.eye(3)[[[0, 2, 1][b]]][:, :, None])
        for gradient, node in zip(per_sample, (weights, bias)):
            reference = fg.jacobian(loss, node)  # (1, 1, n) for the one sample
            np.testing.assert_allclose(gradient[b].ravel(), reference.ravel(), rtol=1e-9,
                                       atol=1e-12)


def test_per_sample_derivatives_through_the_articles_operators(rng):
    """The article's layers (Convolve, AddScalar, MaxPooling, Concat): fg.jacobian and
    fg.per_sample_gradients against the dense engine, one sample at a time."""
    graph = fg.Graph(dtype=np.float64, seed=2)
    with graph:
        x = fg.Variable((6, 6), trainable=False, name="x")
        one_hot = fg.Variable((3, 1), trainable=False, name="one_hot")
        maps = layer.pooling(layer.conv([x], (6, 6), 2, (3, 3), "ReLU"), (3, 3), (2, 2))
        logits = layer.fc(ops.Concat(*maps), 18, 3, None)
        loss = ops.loss.CrossEntropyWithSoftMax(logits, one_hot)
    images = distinct(rng, (3, 6, 6))
    labels = np.eye(3)[[1, 0, 2]][:, :, None]
    kernel = next(node for node in graph.nodes if isinstance(node, ops.Convolve)).parents[1]
    bias = next(node for node in graph.nodes if isinstance(node, ops.AddScalar)).parents[1]
    x.set_value(images)
    one_hot.set_value(labels)
    jacobian = fg.jacobian(logits, x)
    gradients = fg.per_sample_gradients(loss, [kernel, bias])
    for b in range(3):
        x.set_value(images[b : b + 1])
        one_hot.set_value(labels[b : b + 1])
        np.testing.assert_allclose(jacobian[b], x.backward(logits, engine="jacobian")[0],
                                   rtol=1e-9, atol=1e-12)
        for gradient, node in zip(gradients, (kernel, bias)):
            dense = node.backward(loss, engine="jacobian")
            np.testing.assert_allclose(gradient[b].ravel(), np.asarray(dense).ravel(),
                                       rtol=1e-9, atol=1e-12)


def _dense_jacobian(result, wrt, images, b):
    wrt.set_value(images[b : b + 1])
    return wrt.backward(result, engine="jacobian")[0]


# -- layers and errors ----------------------------------------------------------------------


def test_conv2d_layer_shapes_and_chaining():
    graph = fg.Graph(seed=0)
    with graph:
        x = fg.Variable((784, 1), trainable=False)
        h = layer.conv2d(x, 6, 5, image_shape=(28, 28), padding=2, activation="ReLU")
        assert h.dim == (784, 6) and h.output_image == (28, 28)
        h = layer.max_pool2d(h, 2)
        assert h.dim == (196, 6) and h.output_image == (14, 14)
        h = layer.conv2d(h, 16, 5, activation="ReLU")
        assert h.dim == (100, 16) and h.output_image == (10, 10)


@pytest.mark.parametrize("make, message", [
    (lambda g: ops.Conv2D(fg.Variable((30, 1), graph=g), fg.Variable((2, 9), graph=g),
                          image_shape=(5, 5), kernel_size=3),
     "Conv2D: Variable:0 has shape (30, 1), expected (H * W, channels) = (25, channels) for "
     "images of 5x5"),
    (lambda g: ops.Conv2D(fg.Variable((25, 2), trainable=False, graph=g),
                          fg.Variable((4, 9), graph=g), image_shape=(5, 5), kernel_size=3),
     "Conv2D: weights Variable:1 have shape (4, 9), expected (out channels, 18) for 3x3 "
     "kernels on 2 channel(s)"),
    (lambda g: ops.Conv2D(fg.Variable((25, 1), trainable=False, graph=g),
                          fg.Variable((4, 9), graph=g), fg.Variable((1, 4), graph=g),
                          image_shape=(5, 5), kernel_size=3),
     "Conv2D: bias Variable:2 has shape (1, 4), expected (4, 1)"),
    (lambda g: ops.Conv2D(fg.Variable((25, 1), trainable=False, graph=g),
                          fg.Variable((4, 9), trainable=False, graph=g), image_shape=(5, 5),
                          kernel_size=3),
     "Conv2D: Variable:1 must be a parameter (no batch axis)"),
    (lambda g: ops.Conv2D(fg.Variable((4, 1), trainable=False, graph=g),
                          fg.Variable((1, 9), graph=g), image_shape=(2, 2), kernel_size=3),
     "Conv2D: a 3x3 window with stride (1, 1) and padding (0, 0) does not fit an image of 2x2"),
    (lambda g: ops.Conv2D(fg.Variable((4, 1), trainable=False, graph=g),
                          fg.Variable((1, 9), graph=g), image_shape=(2, 2), kernel_size="3"),
     "Conv2D: kernel_size must be an int or a pair of ints, got '3'"),
    (lambda g: ops.MaxPool2D(fg.Variable((10, 1), trainable=False, graph=g), (3, 3), 2),
     "MaxPool2D: Variable:0 has shape (10, 1), expected (H * W, channels) = (9, channels) for "
     "images of 3x3"),
    (lambda g: ops.MaxPool2D(fg.Variable((9, 1), trainable=False, graph=g), (3, 3), 2,
                             padding=2),
     "MaxPool2D: padding must be between 0 and half the kernel size, got (2, 2) for (2, 2)"),
    (lambda g: ops.MaxPooling(fg.Variable((4, 4), trainable=False, graph=g), size=(0, 2),
                              stride=(1, 1)),
     "MaxPooling: size and stride must be positive, got size (0, 2), stride (1, 1)"),
])
def test_wrong_shapes_raise_clear_errors(make, message):
    graph = fg.Graph()
    with pytest.raises(ValueError) as error:
        make(graph)
    assert str(error.value) == message


# -- model files ----------------------------------------------------------------------------


def test_saved_cnn_loads_with_identical_outputs(tmp_path, rng):
    graph, x, one_hot, logits, loss = small_cnn(dtype=np.float32, seed=3)
    with graph:
        m = fg.Variable((8, 8), trainable=False, name="map")
        article = ops.MaxPooling(ops.Convolve(m, fg.Variable((3, 3), init=True)), (3, 3), (2, 2),
                                 name="article")
    images = rng.normal(size=(4, 64, 1)).astype(np.float32)
    x.set_value(images)
    m.set_value(images.reshape(4, 8, 8))
    logits.forward()
    article.forward()
    path = tmp_path / "cnn.fgz"
    saver.save(path, graph)
    loaded, _ = saver.load(path)
    kinds = {type(node).__name__ for node in loaded.nodes}
    assert {"Conv2D", "MaxPool2D", "AvgPool2D", "Convolve", "MaxPooling"} <= kinds
    loaded.get_node("x").set_value(images)
    loaded.get_node("map").set_value(images.reshape(4, 8, 8))
    for node in (logits, article):
        twin = loaded.get_node(node.name)
        twin.forward()
        np.testing.assert_array_equal(twin.value, node.value)


# -- the command line: LeNet-5 trained on a few hundred images ------------------------------


def test_cli_trains_saves_evaluates_and_predicts_lenet5(mnist_dir, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    model, plot, dot = tmp_path / "lenet.fgz", tmp_path / "curves.png", tmp_path / "graph.dot"
    command = [sys.executable, "-m", "fastgraph.cli"]
    result = subprocess.run(
        [*command, "train", "mnist", "--data", str(mnist_dir), "--model", "lenet5",
         "--train-samples", "640", "--test-samples", "300", "--epochs", "1", "--no-progress",
         "--save", str(model), "--plot", str(plot), "--graph", str(dot)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("training LeNet-5 (conv 6@5x5, pool, conv 16@5x5, pool, "
                                    "400-120-84-10, ReLU) on 640 MNIST images")
    accuracy = float(next(line for line in result.stdout.splitlines()
                          if line.startswith("test accuracy:")).split()[-1])
    assert 0.5 < accuracy <= 1.0  # one epoch of 10 batches: far above chance (0.1)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Conv2D" in dot.read_text() and "MaxPool2D" in dot.read_text()
    graph, meta = saver.load(model)
    assert sum(isinstance(node, ops.Conv2D) for node in graph.nodes) == 2

    evaluated = subprocess.run([*command, "evaluate", str(model), "--data", str(mnist_dir)],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("test accuracy: ")

    from fastgraph.datasets import mnist

    _, _, x_test, y_test = mnist.load(mnist_dir, download=False)
    image = tmp_path / "digit.png"
    Image.fromarray(x_test[0]).save(image)
    predicted = subprocess.run([*command, "predict", str(model), str(image)],
                               capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith(f"{image}: ")
