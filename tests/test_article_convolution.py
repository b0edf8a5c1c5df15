"""The article's one-channel convolution and max pooling, kernel by kernel: shifted runs
(``convolve_runs``, ``convolve_kernel_runs``) and the one-row pooling loops
(``max_pool_map``, ``max_pool_map_vjp``) against plain loops written from the definitions,
for odd and even kernels, non-square maps, strides that do not divide, one row and several,
float32 and float64; then the article's CNN, one sample and a batch, with the walker, the
compiled tape and the dense engine agreeing."""

import math

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import layer, ops
from fastgraph.kernels.convolution import (
    convolve_grid_size,
    convolve_kernel_runs,
    convolve_runs,
    max_pool,
    max_pool_halves,
    max_pool_map,
    max_pool_map_rows,
    max_pool_map_vjp,
    max_pool_vjp,
    sum_map,
)

# -- references: loops over output pixels and taps -----------------------------------------


def loop_correlate(image, kernel, top, left):
    """``out[oy, ox]`` = sum over taps of ``image[oy + ky - top, ox + kx - left]`` (0 outside)
    times ``kernel[ky, kx]``: the article's Convolve for ``top, left = kh // 2, kw // 2``."""
    H, W = image.shape
    kh, kw = kernel.shape
    out = np.zeros((H, W))
    for oy in range(H):
        for ox in range(W):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy + ky - top, ox + kx - left
                    if 0 <= iy < H and 0 <= ix < W:
                        out[oy, ox] += image[iy, ix] * kernel[ky, kx]
    return out


def loop_input_gradient(upstream, kernel):
    """The feature map's gradient of the article's Convolve: every output pixel's upstream
    sent back to the input pixels its taps read."""
    H, W = upstream.shape
    kh, kw = kernel.shape
    out = np.zeros((H, W))
    for oy in range(H):
        for ox in range(W):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy + ky - kh // 2, ox + kx - kw // 2
                    if 0 <= iy < H and 0 <= ix < W:
                        out[iy, ix] += upstream[oy, ox] * kernel[ky, kx]
    return out


def loop_kernel_gradient(upstream, image, kh, kw):
    """The kernel's gradient of the article's Convolve: upstream times the pixel each tap read."""
    H, W = image.shape
    out = np.zeros((kh, kw))
    for oy in range(H):
        for ox in range(W):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy + ky - kh // 2, ox + kx - kw // 2
                    if 0 <= iy < H and 0 <= ix < W:
                        out[ky, kx] += upstream[oy, ox] * image[iy, ix]
    return out


def loop_max_pool(image, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """Largest value of each clipped window and its flat position (the first in row-major
    order; a NaN wins, the first one)."""
    H, W = image.shape
    values, where = np.zeros((Ho, Wo)), np.zeros((Ho, Wo), int)
    for oy in range(Ho):
        for ox in range(Wo):
            best, at = None, None
            for iy in range(max(oy * sh - ph, 0), min(oy * sh - ph + kh, H)):
                for ix in range(max(ox * sw - pw, 0), min(ox * sw - pw + kw, W)):
                    v = image[iy, ix]
                    if best is None or (not np.isnan(best) and (np.isnan(v) or v > best)):
                        best, at = v, iy * W + ix
            values[oy, ox], where[oy, ox] = best, at
    return values, where


def tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12,
                                                                        "atol": 1e-12}


SHAPES = [((28, 28), (5, 5)), ((14, 14), (3, 3)), ((5, 7), (3, 3)), ((6, 5), (4, 2)),
          ((3, 4), (5, 5)), ((7, 3), (2, 6)), ((1, 9), (1, 3)), ((4, 4), (1, 1))]


# -- the convolution kernels ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("image, kernel", SHAPES)
@pytest.mark.parametrize("rows, kernel_rows", [(1, 1), (3, 1), (1, 3), (3, 3)])
def test_convolve_runs_is_the_articles_convolution(image, kernel, rows, kernel_rows, dtype,
                                                    rng):
    (H, W), (kh, kw) = image, kernel
    x = rng.normal(size=(rows, H * W)).astype(dtype)
    k = rng.normal(size=(kernel_rows, kh * kw)).astype(dtype)
    out_rows = max(rows, kernel_rows)
    out = np.full((out_rows, H * W), np.nan, dtype)
    grids = np.full((out_rows, convolve_grid_size(H, W, kh, kw)), np.nan, dtype)
    wide = np.full((1, H * (W + kw - 1)), np.nan, dtype)
    convolve_runs(x, k, H, W, kh, kw, kh // 2, kw // 2, 0, grids, wide, out)
    for i in range(out_rows):
        expected = loop_correlate(x[i * rows // out_rows].reshape(H, W).astype(np.float64),
                                  k[i * kernel_rows // out_rows].reshape(kh, kw), kh // 2,
                                  kw // 2)
        np.testing.assert_allclose(out[i].reshape(H, W), expected, **tolerance(dtype))
    # the grids hold each row's map, zero-padded kh // 2 above and kw // 2 to the left
    Wp = W + kw - 1
    for i in range(out_rows):
        grid = grids[i, :(H + kh - 1) * Wp].reshape(H + kh - 1, Wp)
        padded = np.zeros((H + kh - 1, Wp))
        padded[kh // 2:kh // 2 + H, kw // 2:kw // 2 + W] = x[i * rows // out_rows].reshape(H, W)
        np.testing.assert_array_equal(grid, padded)
        assert not grids[i, (H + kh - 1) * Wp:].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("image, kernel", SHAPES)
@pytest.mark.parametrize("rows, kernel_rows", [(1, 1), (3, 1), (3, 3)])
def test_convolve_runs_turned_is_the_input_gradient(image, kernel, rows, kernel_rows, dtype,
                                                    rng):
    (H, W), (kh, kw) = image, kernel
    upstream = rng.normal(size=(rows, H * W)).astype(dtype)
    k = rng.normal(size=(kernel_rows, kh * kw)).astype(dtype)
    out = np.full((rows, H * W), np.nan, dtype)
    scratch = np.full((1, convolve_grid_size(H, W, kh, kw)), np.nan, dtype)
    wide = np.full((1, H * (W + kw - 1)), np.nan, dtype)
    convolve_runs(upstream, k, H, W, kh, kw, kh - 1 - kh // 2, kw - 1 - kw // 2, 1, scratch,
                  wide, out)
    for i in range(rows):
        expected = loop_input_gradient(upstream[i].reshape(H, W).astype(np.float64),
                                       k[i * kernel_rows // rows].reshape(kh, kw))
        np.testing.assert_allclose(out[i].reshape(H, W), expected, **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("image, kernel", SHAPES)
@pytest.mark.parametrize("rows, upstream_rows, groups",
                         [(1, 1, 1), (3, 3, 3), (3, 3, 1), (2, 6, 6), (2, 6, 2)])
def test_convolve_kernel_runs_is_the_kernels_gradient(image, kernel, rows, upstream_rows,
                                                      groups, dtype, rng):
    """Per upstream row (``groups`` = rows), summed over all (one group), or per sample with
    several upstream rows a sample (the per-sample Jacobian passes: grids by the row rule)."""
    (H, W), (kh, kw) = image, kernel
    x = rng.normal(size=(rows, H * W)).astype(dtype)
    k = rng.normal(size=(1, kh * kw)).astype(dtype)
    grids = np.empty((rows, convolve_grid_size(H, W, kh, kw)), dtype)
    wide = np.full((1, H * (W + kw - 1)), np.nan, dtype)
    convolve_runs(x, k, H, W, kh, kw, kh // 2, kw // 2, 0, grids, wide, np.empty((rows, H * W),
                                                                                dtype))
    upstream = rng.normal(size=(upstream_rows, H * W)).astype(dtype)
    out = np.full((groups, kh * kw), np.nan, dtype)
    convolve_kernel_runs(upstream, grids, H, W, kh, kw, wide, out)
    expected = np.zeros((groups, kh, kw))
    for i in range(upstream_rows):
        expected[i * groups // upstream_rows] += loop_kernel_gradient(
            upstream[i].reshape(H, W).astype(np.float64),
            x[i * rows // upstream_rows].reshape(H, W), kh, kw)
    np.testing.assert_allclose(out.reshape(groups, kh, kw), expected, **tolerance(dtype))


def test_convolve_runs_keeps_nan_and_infinity(rng):
    """A NaN or an infinity in the map reaches the outputs whose taps read it, and only those."""
    H, W, kh, kw = 6, 7, 3, 3
    x = rng.normal(size=(1, H * W))
    x[0, 2 * W + 3] = np.nan
    x[0, 5 * W + 0] = np.inf
    k = rng.uniform(0.5, 1.0, (1, kh * kw))
    out = np.empty((1, H * W))
    convolve_runs(x, k, H, W, kh, kw, 1, 1, 0, np.empty((1, convolve_grid_size(H, W, kh, kw))),
                  np.empty((1, H * (W + kw - 1))), out)
    out = out.reshape(H, W)
    nan = np.zeros((H, W), bool)
    nan[1:4, 2:5] = True
    inf = np.zeros((H, W), bool)
    inf[4:6, 0:2] = True
    np.testing.assert_array_equal(np.isnan(out), nan)
    np.testing.assert_array_equal(np.isposinf(out), inf & ~nan)
    assert np.isfinite(out[~nan & ~inf]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, width", [(1, 784), (3, 196), (2, 7), (1, 1)])
def test_sum_map_sums_each_row(rows, width, dtype, rng):
    upstream = rng.normal(size=(rows, width)).astype(dtype)
    out = np.full((rows, 1), np.nan, dtype)
    sum_map(upstream, out)
    np.testing.assert_allclose(out[:, 0], upstream.astype(np.float64).sum(axis=1),
                               **tolerance(dtype))
    upstream[0, width // 2] = np.nan
    sum_map(upstream, out)
    assert np.isnan(out[0, 0]) and np.isfinite(out[1:]).all()


# -- the one-row max pooling ----------------------------------------------------------------

POOLS = [((28, 28), (3, 3), (2, 2)), ((14, 14), (3, 3), (2, 2)), ((5, 7), (3, 3), (2, 2)),
         ((9, 8), (2, 2), (2, 2)), ((1, 6), (3, 3), (2, 2)), ((2, 2), (3, 3), (2, 2)),
         ((6, 5), (2, 4), (3, 2)), ((7, 4), (5, 1), (1, 3)), ((3, 3), (7, 7), (2, 2)),
         ((9, 8), (3, 2), (4, 4))]


def article_pool_geometry(image, size, stride):
    """MaxPooling's geometry: windows 2 * (k // 2) + 1 centred, ceil(H / s) outputs."""
    (H, W), (sh, sw) = image, stride
    kh, kw = 2 * (size[0] // 2) + 1, 2 * (size[1] // 2) + 1
    return H, W, kh, kw, sh, sw, size[0] // 2, size[1] // 2, math.ceil(H / sh), math.ceil(W / sw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("image, size, stride", POOLS)
def test_max_pool_map_is_the_articles_pooling(image, size, stride, dtype, rng):
    H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = article_pool_geometry(image, size, stride)
    x = rng.integers(-3, 4, (1, H * W)).astype(dtype)  # many ties: the first must win
    out = np.full((1, Ho * Wo), np.nan, dtype)
    where = np.full((1, Ho * Wo), np.nan, dtype)
    max_pool_map(x, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, out, where)
    values, at = loop_max_pool(x[0].reshape(H, W), kh, kw, sh, sw, ph, pw, Ho, Wo)
    np.testing.assert_array_equal(out[0], values.ravel())
    np.testing.assert_array_equal(where[0], at.ravel())
    # the article's usual windows on an even width: every window row at once, same numbers
    if (kh, kw, sh, sw, ph, pw) == (3, 3, 2, 2, 1, 1) and W % 2 == 0:
        halves = np.full_like(out, np.nan), np.full_like(where, np.nan)
        max_pool_halves(x, H, W, Ho, Wo, np.full((1, 2 * H * Wo), np.nan, dtype), *halves)
        np.testing.assert_array_equal(halves[0], out)
        np.testing.assert_array_equal(halves[1], where)
    # the same numbers as the multi-channel kernel
    shared = np.empty_like(out), np.empty_like(where)
    max_pool(x, H, W, 1, kh, kw, sh, sw, ph, pw, Ho, Wo, *shared)
    np.testing.assert_array_equal(out, shared[0])
    np.testing.assert_array_equal(where, shared[1])
    # a batch on threads: each row as alone
    batch = np.concatenate([x, rng.permutation(x[0])[None], -x])
    rows = np.full((3, Ho * Wo), np.nan, dtype), np.full((3, Ho * Wo), np.nan, dtype)
    max_pool_map_rows(batch, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, *rows)
    for b in range(3):
        alone = np.empty_like(out), np.empty_like(where)
        max_pool_map(batch[b:b + 1], H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, *alone)
        np.testing.assert_array_equal(rows[0][b], alone[0][0])
        np.testing.assert_array_equal(rows[1][b], alone[1][0])
    # the gradient goes where the forward chose, summed where windows share a pixel
    upstream = rng.normal(size=(1, Ho * Wo)).astype(dtype)
    gradient = np.full((1, H * W), np.nan, dtype)
    max_pool_map_vjp(where, upstream, gradient)
    expected = np.zeros(H * W)
    np.add.at(expected, at.ravel(), upstream[0])
    np.testing.assert_allclose(gradient[0], expected, **tolerance(dtype))
    threaded = np.empty_like(gradient)
    max_pool_vjp(where, upstream, threaded)
    np.testing.assert_array_equal(gradient, threaded)


@pytest.mark.parametrize("image", [(28, 28), (9, 8)])
def test_max_pool_map_with_nan_and_infinities_scattered(image, rng):
    """NaN, +inf and -inf among ties, inside windows and on the borders: the first NaN of a
    window, else its first largest."""
    H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = article_pool_geometry(image, (3, 3), (2, 2))
    x = rng.integers(-2, 3, (1, H * W)).astype(np.float32)
    for value, count in ((np.nan, H), (np.inf, 3), (-np.inf, H)):
        x[0, rng.choice(H * W, count, replace=False)] = value
    out, where = np.empty((1, Ho * Wo), np.float32), np.empty((1, Ho * Wo), np.float32)
    max_pool_map(x, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, out, where)
    values, at = loop_max_pool(x[0].reshape(H, W), kh, kw, sh, sw, ph, pw, Ho, Wo)
    assert np.isnan(values).any()
    np.testing.assert_array_equal(out[0], values.ravel())
    np.testing.assert_array_equal(where[0], at.ravel())
    halves = np.empty_like(out), np.empty_like(where)
    max_pool_halves(x, H, W, Ho, Wo, np.empty((1, 2 * H * Wo), np.float32), *halves)
    np.testing.assert_array_equal(halves[0][0], values.ravel())
    np.testing.assert_array_equal(halves[1][0], at.ravel())


def test_max_pool_map_nan_wins_and_minus_infinity_stays():
    H, W = 4, 4
    x = np.array([[-np.inf] * 16])
    x[0, 5] = np.nan
    x[0, 6] = np.nan
    out, where = np.empty((1, 4)), np.empty((1, 4))
    max_pool_map(x, H, W, 3, 3, 2, 2, 1, 1, 2, 2, out, where)
    # window (0, 0) holds pixel 5 (NaN); (0, 1) holds 5 and 6: the first NaN; (1, 0) holds 5
    # too; (1, 1) holds 5 and 6 as well
    assert np.isnan(out).all()
    np.testing.assert_array_equal(where, [[5, 5, 5, 5]])
    x[0, 5] = x[0, 6] = -np.inf
    max_pool_map(x, H, W, 3, 3, 2, 2, 1, 1, 2, 2, out, where)
    np.testing.assert_array_equal(out, [[-np.inf] * 4])
    np.testing.assert_array_equal(where, [[0, 1, 4, 5]])  # each window's first pixel


# -- the operators, one row against a batch, and the three engines ---------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("image", [(9, 7), (9, 8)])  # odd width: max_pool_map; even: halves
def test_max_pooling_one_sample_equals_its_row_of_a_batch(image, dtype, rng):
    """One row takes the kernels without threads, a batch the threaded ones: same numbers."""
    graph = fg.Graph(dtype=dtype)
    with graph:
        x = fg.Variable(image, trainable=False)
        pooled = ops.MaxPooling(x, size=(3, 3), stride=(2, 2))
    images = rng.integers(-4, 5, (4, *image)).astype(dtype)
    upstream = rng.normal(size=(4, pooled.dimension())).astype(dtype)
    x.set_value(images)
    pooled.forward()
    batch_values = pooled.flat.copy()
    batch_gradient = pooled.vjp(0, upstream).copy()
    for b in range(4):
        x.set_value(images[b])
        pooled.forward()
        np.testing.assert_array_equal(pooled.flat[0], batch_values[b])
        np.testing.assert_array_equal(pooled.vjp(0, upstream[b:b + 1])[0], batch_gradient[b])


def test_convolve_kernel_gradient_before_any_forward(rng):
    """The kernel's gradient reads the grids the forward leaves; asked first, it makes them."""
    graph = fg.Graph(dtype=np.float64)
    with graph:
        x = fg.Variable((5, 6), trainable=False)
        kernel = fg.Variable((3, 2), trainable=True)
        op = ops.Convolve(x, kernel)
    image, k = rng.normal(size=(5, 6)), rng.normal(size=(3, 2))
    x.set_value(image)
    kernel.set_value(k)
    upstream = rng.normal(size=(1, 30))
    gradient = op.vjp_summed(1, upstream)
    np.testing.assert_allclose(gradient.reshape(3, 2),
                               loop_kernel_gradient(upstream.reshape(5, 6), image, 3, 2),
                               rtol=1e-12, atol=1e-12)


def article_cnn(dtype):
    """The chapter-8 network in small: 2 maps of 4x2 kernels on 9x8, pooling that does not
    divide, 3 maps of 2x4 kernels on them (the input gradient of even kernels), pooling, fc;
    the article's leaky ReLU (no map dies)."""
    graph = fg.Graph(dtype=dtype, seed=5, conventions="article")
    with graph:
        x = fg.Variable((9, 8), trainable=False)
        one_hot = fg.Variable((3, 1), trainable=False)
        conv1 = layer.conv([x], (9, 8), 2, (4, 2), "ReLU")
        pool1 = layer.pooling(conv1, (3, 3), (2, 2))
        conv2 = layer.conv(pool1, (5, 4), 3, (2, 4), "ReLU")
        pool2 = layer.pooling(conv2, (3, 3), (2, 2))
        logits = layer.fc(ops.Concat(*pool2), 18, 3, None)
        loss = ops.loss.CrossEntropyWithSoftMax(logits, one_hot)
    return graph, x, one_hot, loss


@pytest.mark.parametrize("batch", [1, 3])
def test_article_cnn_gradients_agree_between_walker_compiled_and_dense(batch, rng,
                                                                       monkeypatch):
    images = rng.normal(size=(batch, 9, 8))
    labels = np.eye(3)[rng.integers(0, 3, batch)][:, :, None]
    gradients = {}
    for how in ("python", "compiled", "jacobian"):
        graph, x, one_hot, loss = article_cnn(np.float64)
        monkeypatch.setenv("FASTGRAPH_EXECUTOR", "python" if how == "python" else "compiled")
        optimizer = fg.optimizer.GradientDescent(
            graph, loss, 0.1, engine="jacobian" if how == "jacobian" else "vjp")
        for _ in range(2):  # a second step: the compiled tape replays what it recorded
            x.set_value(images[0] if batch == 1 else images)
            one_hot.set_value(labels[0] if batch == 1 else labels)
            optimizer.one_step()
        gradients[how] = [optimizer.get_gradient(param).copy() for param in optimizer.params]
    assert len(gradients["python"]) == 2 + 2 + 6 + 3 + 2  # kernels, biases, fc
    for how in ("compiled", "jacobian"):
        for got, expected in zip(gradients[how], gradients["python"]):
            assert np.abs(expected).max() > 0
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=how)
