"""Convolution and pooling: the article's one-channel operators and a multi-channel path.

The article's (MatrixSlow's) vocabulary works on one feature map per node:

- ``Convolve(feature_map, kernel)``: an ``(H, W)`` map cross-correlated with a ``(kh, kw)``
  kernel, zero-padded by ``kh // 2`` rows and ``kw // 2`` columns before the image so that
  the output is ``(H, W)`` again;
- ``MaxPooling(feature_map, size, stride)``: a window of ``2 * (h // 2) + 1`` by
  ``2 * (w // 2) + 1`` centred on every stride-th pixel, clipped at the borders, so the
  output is ``ceil(H / sh) x ceil(W / sw)``.

A real network with 32 channels would need 32 x 32 of those nodes; ``Conv2D``,
``MaxPool2D`` and ``AvgPool2D`` hold all channels in one node.

Layout of a multi-channel value: pixels as rows, channels as columns, ``(H * W, C)`` per
sample, the image shape an attribute of the operator. Why not channels as rows: with
pixels-major rows, the patches of a whole batch (``im2col``) are one ``(B * Ho * Wo,
kh * kw * C)`` matrix and the convolution is one GEMM with the weights, whose result *is*
the output batch ``(B, Ho * Wo * Cout)`` with no transpose; the weight gradient
(``upstream^T @ patches``) and the input's (``upstream @ weights``, then ``col2im``) are
one GEMM each as well. With channels as rows the GEMM's result comes out as ``(Cout, B *
pixels)`` and every pass needs a transposing copy. A one-channel image ``(784, 1)``, MNIST's
column, is already in this layout, and ``Reshape`` to a column before the dense layers is
free. Pooling does not ask for the other layout either: LeNet's 2x2 max pooling of channels
as rows (stride-2 reads along a row) took 0.39 ms against 0.35 for pixels as rows (28x28x6,
batch 64, one core) and 0.15 against 0.09 on 10x10x16.

How Conv2D computes, by measurement (LeNet-5's layers, batch 64, float32, MKL):

- im2col + GEMM against direct Numba loops (``kernels.convolution``, 2 cores): forward 1.5 against
  3.1 ms (6@5x5 on 28x28) and 0.56 against 7.8 ms (16@5x5 on 14x14); weight gradient 0.33
  against 12 ms and 0.27 against 12; input gradient 2.1 against 6.8 and 0.64 against 6.5
  (the direct loops stay for per-sample weight gradients, one per upstream row);
- on one input channel, im2col copies the image 25 times for a GEMM whose inner dimension is
  25: there shifted runs (stride 1: each kernel tap one multiply-add along the padded image
  stored flat) beat it on one core, forward 0.31 against 2.2 ms, weight gradient 0.32
  against 0.46 ms for the GEMM alone (plus the im2col it needs). On 150 patch numbers (the
  second layer) im2col + GEMM wins alone, forward 0.62 against 0.74 ms, weight gradient 0.44
  against 0.85 (``benchmarks/test_convolution.py``), but not inside a training step, where
  its 3.8 MB patch matrix leaves the cache between the passes and the second core adds
  little to the weight GEMM: a LeNet-5 step by shifted runs took 5.06-5.56 against
  5.72-6.43 ms on one thread, 2.95-3.20 against 3.05-3.95 ms on two (in-process A/B,
  load 1.8-2.1). ``SHIFTED_UP_TO`` draws the line;
- the input gradient in chunks of ``INPUT_CHUNK`` samples, so each GEMM's patch gradients
  are put back by ``col2im`` while they are in the cache.

The one-channel ``Convolve`` (whose kernel may have a batch axis) has kernels of its own,
shifted runs over each map zero-padded and stored flat (``kernels.convolution.
convolve_runs``), made for the article's programs, which feed one sample a step.

VJP protocol: ``vjp(slot, upstream)`` is always per upstream row; ``vjp_summed`` gives the
sum over rows for a parameter when one GEMM over the batch is cheaper than the rows.
"""

import functools
import math

import numpy as np

from ..kernels.blas import gemm
from ..kernels.convolution import (
    add_scalar_rows,
    avg_pool,
    avg_pool_vjp,
    col2im,
    conv_shifted,
    conv_weight_vjp_direct,
    conv_weight_vjp_shifted,
    convolve_grid_size,
    convolve_kernel_runs,
    convolve_runs,
    fill_rows,
    im2col,
    max_pool,
    max_pool_2x2,
    max_pool_halves,
    max_pool_map,
    max_pool_map_rows,
    max_pool_map_vjp,
    max_pool_vjp,
    pad_channels,
    sum_map,
    sum_pixels,
)
from ..node import fixed
from .base import Operator

#: Conv2D computes by shifted runs (``kernels.convolution.conv_shifted``) when the stride
#: is 1 and a patch has at most this many numbers, by im2col + GEMM otherwise. Measured
#: (batch 64, 28x28 and 14x14, one core): 25 numbers (1 channel 5x5) 0.31 against 2.2 ms
#: forward, weight gradient 0.32 against 0.46 + the im2col; 75 (3 channels, earlier kernels)
#: 2.1 against 5.4 ms forward, weight gradient equal; 150 (LeNet's second layer) 0.74
#: against 0.62 ms forward, 0.85 against 0.44 weight gradient alone, but a whole training
#: step faster by shifted runs (see the module's docstring).
SHIFTED_UP_TO = 150

#: Samples per GEMM + col2im in Conv2D's input gradient. Measured on LeNet's second layer
#: (batch 64): chunks of 2-8 samples 0.84 ms, 16 1.3 ms, the whole batch at once 1.0 ms
#: alone and 1.9-2.2 ms inside a training step. (Chunking the forward's im2col as well, and
#: making the patches again for the weight gradient, measured no faster in a step.)
INPUT_CHUNK = 8


def _pair(value, what, kind):
    """``(a, b)`` from an int or a pair of ints; a ValueError naming ``what`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (tuple, list)) and any(
            isinstance(v, (bool, np.bool_)) for v in value)):
        raise ValueError(f"{kind}: {what} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        first, second = (int(v) for v in value)
        ok = (first, second) == tuple(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{kind}: {what} must be an int or a pair of ints, got {value!r}")
    return first, second


class _Windows(Operator):
    """What the window operators share: the geometry, and each output pixel's window as
    indices of input pixels (-1 outside the image) for the dense Jacobians."""

    def _set_geometry(self, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo):
        kind = type(self).__name__
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{kind}: a {kh}x{kw} window with stride ({sh}, {sw}) and padding "
                             f"({ph}, {pw}) does not fit an image of {H}x{W}")
        self.geometry = (H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo)
        self.output_image = (Ho, Wo)
        self.__dict__.pop("_windows", None)  # (a re-wired node's geometry: made again)

    @functools.cached_property
    def _windows(self):
        """``(Ho * Wo, kh * kw)`` input pixels, made when a dense Jacobian first asks: a node
        built (from a model file's description, say) allocates nothing for its shape."""
        H, W, _, kh, kw, sh, sw, ph, pw, Ho, Wo = self.geometry
        rows = np.arange(Ho)[:, None] * sh - ph + np.arange(kh)[None, :]  # (Ho, kh)
        cols = np.arange(Wo)[:, None] * sw - pw + np.arange(kw)[None, :]  # (Wo, kw)
        iy = rows[:, None, :, None]
        ix = cols[None, :, None, :]
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        return np.where(inside, iy * W + ix, -1).reshape(Ho * Wo, kh * kw)

    def _pool_jacobian(self, weights):
        """Dense Jacobian of a pooling: output (p, c) takes ``weights[p, k]`` of input
        (window k of p, c)."""
        C = self.geometry[2]
        windows = self._windows
        jacobian = np.zeros((self.dimension(), self.parents[0].dimension()), self.graph.dtype)
        pixel, slot = np.nonzero(windows >= 0)
        for c in range(C):
            np.add.at(jacobian, (pixel * C + c, windows[pixel, slot] * C + c),
                      weights[c][pixel, slot])
        return jacobian

    def _window_values(self):
        """The sample's input under every window, ``(C, Ho * Wo, kh * kw)``, -inf outside."""
        C = self.geometry[2]
        image = self.parents[0].sample().reshape(-1, C)
        values = image[np.maximum(self._windows, 0)].transpose(2, 0, 1)
        return np.where(self._windows >= 0, values, -np.inf)


# -- the article's one-channel operators ----------------------------------------------------


class Convolve(_Windows):
    """The article's 2-D convolution (cross-correlation) of an ``(H, W)`` feature map with a
    ``(kh, kw)`` kernel, zero-padded so the output is ``(H, W)``."""

    arity = 2

    def infer_dim(self):
        feature_map, kernel = self.parents
        (H, W), (kh, kw) = feature_map.dim, kernel.dim
        self._set_geometry(H, W, 1, kh, kw, 1, 1, kh // 2, kw // 2, H, W)
        return (H, W)

    # Shifted runs (``kernels.convolution.convolve_runs``): the forward leaves each output
    # row's zero-padded map in the "grids" buffer, where the kernel's gradient reads it.

    def _wide(self):
        """Scratch of the runs: one row of ``H * (W + kw - 1)`` numbers."""
        (H, W), kw = self.dim, self.parents[1].dim[1]
        return self.buffer("wide", (1, H * (W + kw - 1)))

    def compute(self):
        feature_map, kernel = self.parents
        (H, W), (kh, kw) = self.dim, kernel.dim
        out = self.output()
        grids = self.buffer("grids", (out.shape[0], convolve_grid_size(H, W, kh, kw)))
        convolve_runs(feature_map.flat, kernel.flat, H, W, kh, kw, kh // 2, kw // 2, 0, grids,
                      self._wide(), out)

    def vjp(self, slot, upstream):
        out = self.buffer(slot, (upstream.shape[0], self.parents[slot].dimension()))
        return self._vjp(slot, upstream, out)

    def vjp_summed(self, slot, upstream):
        if slot == 0:
            return super().vjp_summed(slot, upstream)
        return self._vjp(slot, upstream, self.buffer("summed", (1, self.parents[1].dimension())))

    def _vjp(self, slot, upstream, out):
        feature_map, kernel = self.parents
        (H, W), (kh, kw) = self.dim, kernel.dim
        if slot == 0:  # the upstream convolved with the kernel turned by 180 degrees
            scratch = self.buffer("upstream grid", (1, convolve_grid_size(H, W, kh, kw)))
            convolve_runs(upstream, kernel.flat, H, W, kh, kw, kh - 1 - kh // 2,
                          kw - 1 - kw // 2, 1, scratch, self._wide(), out)
            return out
        if "grids" not in self._buffers:  # never computed here: make the grids
            self.compute()
        convolve_kernel_runs(upstream, self._buffers["grids"], H, W, kh, kw, self._wide(), out)
        return out

    def dense_jacobian(self, slot):
        feature_map, kernel = self.parents
        return _conv_jacobian(self, slot, feature_map.sample(), kernel.sample().reshape(1, -1))


class AddScalar(Operator):
    """``feature_map + scalar`` in every element, for a ``(1, 1)`` node ``scalar``: the bias of
    the article's convolution layer. The article adds ``ScalarMultiply(b, ones)`` with
    ``ones`` a constant input; here inputs carry the batch's rows, and a node computed from
    the bias alone would have no batch axis, which per-sample gradients cannot pass through.
    So the map and the scalar meet in one batched node."""

    arity = 2

    def infer_dim(self):
        feature_map, scalar = self.parents
        if scalar.dim != (1, 1):
            raise ValueError(f"AddScalar needs a 1x1 scalar second, got {scalar.name} of shape "
                             f"{scalar.dim}")
        return feature_map.dim

    def compute(self):
        feature_map, scalar = self.parents
        add_scalar_rows(feature_map.flat, scalar.flat, self.output())

    def vjp(self, slot, upstream):
        if slot == 0:
            return upstream
        out = self.buffer(1, (upstream.shape[0], 1))
        sum_map(upstream, out)
        return out

    def dense_jacobian(self, slot):
        if slot == 0:
            return self.identity()
        return np.ones((self.dimension(), 1), self.graph.dtype)


class _MaxWindows(_Windows):
    """The largest input of each window: what the article's and the multi-channel max
    poolings share once their windows are set."""

    arity = 1

    def compute(self):
        out = self.output()
        argmax = self.buffer("argmax", out.shape)  # where each maximum was, for the VJP
        max_pool(self.parents[0].flat, *self.geometry, out, argmax)

    def vjp(self, slot, upstream):
        out = self.buffer(0, (upstream.shape[0], self.parents[0].dimension()))
        max_pool_vjp(self._buffers["argmax"], upstream, out)
        return out

    def dense_jacobian(self, slot):
        return _max_pool_jacobian(self)


class MaxPooling(_MaxWindows):
    """The article's max pooling of an ``(H, W)`` map: windows of ``size`` centred on every
    ``stride``-th pixel (``2 * (h // 2) + 1`` rows, as the article centres them), clipped
    at the borders; the output is ``ceil(H / sh) x ceil(W / sw)``. The gradient goes to the
    first largest pixel of each window, in row-major order. (MatrixSlow records that pixel
    at ``row * H + column``, right for square maps only; here it is ``row * W + column``.)"""

    size = fixed("size")
    stride = fixed("stride")

    arity = 1

    def __init__(self, parent, size, stride, graph=None, name=None):
        self.size = _pair(size, "size", "MaxPooling")
        self.stride = _pair(stride, "stride", "MaxPooling")
        if min(self.size) < 1 or min(self.stride) < 1:
            raise ValueError(f"MaxPooling: size and stride must be positive, got size "
                             f"{self.size}, stride {self.stride}")
        super().__init__(parent, graph=graph, name=name)

    def infer_dim(self):
        H, W = self.parents[0].dim
        (kh, kw), (sh, sw) = self.size, self.stride
        half_h, half_w = kh // 2, kw // 2
        Ho, Wo = math.ceil(H / sh), math.ceil(W / sw)
        self._set_geometry(H, W, 1, 2 * half_h + 1, 2 * half_w + 1, sh, sw, half_h, half_w,
                           Ho, Wo)
        return (Ho, Wo)

    def config(self):
        return {"size": list(self.size), "stride": list(self.stride)}

    # One channel: ``max_pool_map`` (3x3 windows in straight-line code, no branch on the
    # values); one row (the article's one sample) without threads, whose parallel region
    # would cost more than the map, a batch on every thread. 28x28 -> 14x14, one sample:
    # 6.5 us with ``max_pool``, 1.8 (7.4 on a new sample's values, which its branches
    # mispredict, against 3.4).

    def compute(self):
        out = self.output()
        H, W, _, kh, kw, sh, sw, ph, pw, Ho, Wo = self.geometry
        argmax = self.buffer("argmax", out.shape)
        if out.shape[0] == 1 and (kh, kw, sh, sw, ph, pw) == (3, 3, 2, 2, 1, 1) and W % 2 == 0:
            # the article's 3x3 windows on every other pixel: every window row at once
            scratch = self.buffer("window rows", (1, 2 * H * Wo))
            max_pool_halves(self.parents[0].flat, H, W, Ho, Wo, scratch, out, argmax)
            return
        pool = max_pool_map if out.shape[0] == 1 else max_pool_map_rows
        pool(self.parents[0].flat, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, out, argmax)

    def vjp(self, slot, upstream):
        if upstream.shape[0] > 1:
            return super().vjp(slot, upstream)
        out = self.buffer(0, (1, self.parents[0].dimension()))
        max_pool_map_vjp(self._buffers["argmax"], upstream, out)
        return out



# -- the multi-channel path -----------------------------------------------------------------


class Conv2D(_Windows):
    """A convolution of a ``C``-channel image with ``Cout`` kernels, plus a bias.

    Parents: ``x``, ``(H * W, C)`` per sample (pixels as rows, channels as columns, see the
    module's docstring); ``weights``, a ``(Cout, kh * kw * C)`` parameter whose row ``co``
    is output channel ``co``'s kernel in (ky, kx, c) order; optionally ``bias``, a
    ``(Cout, 1)`` parameter. ``image_shape`` is ``(H, W)``; ``kernel_size``, ``stride`` and
    ``padding`` (zeros on every side) take an int or a pair. The output is
    ``(Ho * Wo, Cout)`` with ``Ho = (H + 2 * ph - kh) // sh + 1``; ``output_image`` holds
    ``(Ho, Wo)``.
    """

    image_shape = fixed("image_shape")
    kernel_size = fixed("kernel_size")
    stride = fixed("stride")
    padding = fixed("padding")

    def __init__(self, x, weights, bias=None, *, image_shape, kernel_size, stride=1, padding=0,
                 graph=None, name=None):
        self.image_shape, self.kernel_size, self.stride, self.padding = self.settings(
            x, image_shape, kernel_size, stride, padding)
        parents = (x, weights) if bias is None else (x, weights, bias)
        super().__init__(*parents, graph=graph, name=name)

    @staticmethod
    def settings(x, image_shape, kernel_size, stride=1, padding=0):
        """``(image_shape, kernel_size, stride, padding)`` as pairs, checked, and checked
        against the input ``x`` (``H * W`` rows, windows that fit): what a convolution of
        ``x`` needs that does not depend on its weights (``layer.conv2d`` asks before it
        makes them). A ValueError naming what is wrong otherwise."""
        image_shape = _pair(image_shape, "image_shape", "Conv2D")
        if min(image_shape) < 1:  # (-6, -6) has the product of (6, 6)
            raise ValueError(f"Conv2D: image_shape must be positive, got {image_shape}")
        kernel_size = _pair(kernel_size, "kernel_size", "Conv2D")
        stride, padding = _pair(stride, "stride", "Conv2D"), _pair(padding, "padding", "Conv2D")
        if min(kernel_size) < 1 or min(stride) < 1 or min(padding) < 0:
            raise ValueError(f"Conv2D: kernel_size and stride must be positive and padding "
                             f"not negative, got {kernel_size}, {stride}, {padding}")
        (H, W), (kh, kw), (sh, sw), (ph, pw) = image_shape, kernel_size, stride, padding
        dim = getattr(x, "dim", None)  # not a node, or a weld of no shape yet: Node says so
        if dim is not None and dim[0] != H * W:
            raise ValueError(f"Conv2D: {x.name} has shape {x.dim}, expected (H * W, channels) = "
                             f"({H * W}, channels) for images of {H}x{W}")
        if H + 2 * ph < kh or W + 2 * pw < kw:
            raise ValueError(f"Conv2D: a {kh}x{kw} window with stride ({sh}, {sw}) and padding "
                             f"({ph}, {pw}) does not fit an image of {H}x{W}")
        return image_shape, kernel_size, stride, padding

    def infer_dim(self):
        x, weights, *bias = self.parents
        (H, W), (kh, kw) = self.image_shape, self.kernel_size
        (sh, sw), (ph, pw) = self.stride, self.padding
        C = x.dim[1]
        Cout = weights.dim[0]
        if weights.dim[1] != kh * kw * C:
            raise ValueError(f"Conv2D: weights {weights.name} have shape {weights.dim}, expected "
                             f"(out channels, {kh * kw * C}) for {kh}x{kw} kernels on {C} "
                             "channel(s)")
        if bias and bias[0].dim != (Cout, 1):
            raise ValueError(f"Conv2D: bias {bias[0].name} has shape {bias[0].dim}, expected "
                             f"({Cout}, 1)")
        for parameter in self.parents[1:]:
            if parameter.batched:
                raise ValueError(f"Conv2D: {parameter.name} must be a parameter (no batch axis)")
        self._set_geometry(H, W, C, kh, kw, sh, sw, ph, pw, (H + 2 * ph - kh) // sh + 1,
                           (W + 2 * pw - kw) // sw + 1)
        self._patches = kh * kw * C  # columns of im2col
        # Few patch columns (LeNet's layers: 25 and 150): im2col would copy the image kh * kw
        # times for a GEMM with a short inner dimension; shifted runs read it in place.
        self._shifted = (sh, sw) == (1, 1) and self._patches <= SHIFTED_UP_TO
        return (self.output_image[0] * self.output_image[1], Cout)

    def config(self):
        return {"image_shape": list(self.image_shape), "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding)}

    def _weights(self):
        return self.parents[1].flat.reshape(self.dim[1], self._patches)

    def _padded(self, rows):
        """Scratch of ``pad_channels`` for ``rows`` samples (one spare row per channel)."""
        H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo = self.geometry
        return self.buffer("padded", (rows, C * (H + 2 * ph + 1) * (W + 2 * pw)))

    def _wide(self, rows):
        """Scratch of the shifted kernels: each output channel's runs of Ho * Wp numbers, and
        a spare run for an odd channel count (``conv_shifted`` pairs the channels)."""
        H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo = self.geometry
        channels = self.dim[1] + self.dim[1] % 2
        return self.buffer("wide", (rows, channels * Ho * (W + 2 * pw)))

    def compute(self):
        x = self.parents[0]
        if self._shifted:
            H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo = self.geometry
            rows = x.flat.shape[0]
            padded = self._padded(rows)
            pad_channels(x.flat, H, W, C, ph, pw, padded)
            biased = len(self.parents) == 3
            bias = self.parents[2].flat if biased else self._weights()
            conv_shifted(padded, self._weights(), bias, int(biased), C, kh, kw, W + 2 * pw, Ho,
                         Wo, self._wide(rows), self.output())
            return
        out = self.output().reshape(-1, self.dim[1])  # (B * Ho * Wo, Cout)
        cols = self.buffer("cols", (out.shape[0], self._patches))
        im2col(x.flat, *self.geometry, cols)
        if len(self.parents) == 3:
            fill_rows(self.parents[2].flat, out)
            gemm(cols, False, self._weights(), True, out, 1.0)
        else:
            gemm(cols, False, self._weights(), True, out, 0.0)

    def vjp(self, slot, upstream):
        rows = upstream.shape[0]
        if slot == 0:  # upstream @ weights, the patches' gradients put back
            # INPUT_CHUNK rows at a time: their patch gradients stay in the cache between
            # the GEMM that makes them and col2im that reads them (none of it is kept).
            chunk = min(rows, INPUT_CHUNK)
            pixels = self.dim[0]
            dcols = self.buffer("dcols", (chunk * pixels, self._patches))
            stacked = upstream.reshape(-1, self.dim[1])
            out = self.buffer(0, (rows, self.parents[0].dimension()))
            for start in range(0, rows, chunk):
                stop = min(start + chunk, rows)
                part = dcols[:(stop - start) * pixels]
                gemm(stacked[start * pixels:stop * pixels], False, self._weights(), False, part,
                     0.0)
                col2im(part, *self.geometry, out[start:stop])
            return out
        out = self.buffer(slot, (rows, self.parents[slot].dimension()))
        if slot == 1:  # one weight gradient per row: a GEMM each, so direct loops
            conv_weight_vjp_direct(upstream, self.parents[0].flat, *self.geometry, out)
        else:
            sum_pixels(upstream, self.dim[1], out)
        return out

    def vjp_summed(self, slot, upstream):
        if slot == 0:
            return super().vjp_summed(slot, upstream)
        out = self.buffer(("summed", slot), (1, self.parents[slot].dimension()))
        if slot == 2:
            sum_pixels(upstream, self.dim[1], out)
            return out
        if self._shifted:
            padded = self._buffers.get("padded")
            if padded is None or padded.shape[0] != upstream.shape[0]:  # not the forward's
                conv_weight_vjp_direct(upstream, self.parents[0].flat, *self.geometry, out)
                return out
            H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo = self.geometry
            rows = upstream.shape[0]
            partial = self.buffer("partial", (rows, self.parents[1].dimension()))
            conv_weight_vjp_shifted(upstream, padded, C, kh, kw, W + 2 * pw, Ho, Wo,
                                    self._wide(rows), partial, out)
            return out
        stacked = upstream.reshape(-1, self.dim[1])
        cols = self._buffers.get("cols")
        if cols is None or cols.shape[0] != stacked.shape[0]:  # not the forward's batch
            conv_weight_vjp_direct(upstream, self.parents[0].flat, *self.geometry, out)
            return out
        gemm(stacked, True, cols, False, out.reshape(self.dim[1], self._patches), 0.0)
        return out

    def dense_jacobian(self, slot):
        x, weights, *_ = self.parents
        if slot == 2:
            return np.tile(self.identity(self.dim[1]), (self.dim[0], 1))
        return _conv_jacobian(self, slot, x.sample(), weights.sample())


class MaxPool2D(_MaxWindows):
    """The largest value of each ``kernel_size`` window of every channel, moved by
    ``stride`` (default: the kernel size), over an image with ``padding`` on every side
    (windows clipped at the borders). Input ``(H * W, C)`` per sample for ``image_shape``
    ``(H, W)``; output ``(Ho * Wo, C)``, ``Ho = (H + 2 * ph - kh) // sh + 1``.

    2x2 windows with stride 2 and no padding (LeNet's) never clip, and go by
    ``max_pool_2x2`` (four reads in straight-line code, the same choice of pixel as the
    general loop, made without branching on the values; its figures are in its docstring)."""

    image_shape = fixed("image_shape")
    kernel_size = fixed("kernel_size")
    stride = fixed("stride")
    padding = fixed("padding")

    arity = 1

    def __init__(self, x, image_shape, kernel_size, stride=None, padding=0, graph=None,
                 name=None):
        kind = type(self).__name__
        self.image_shape = _pair(image_shape, "image_shape", kind)
        if min(self.image_shape) < 1:
            raise ValueError(f"{kind}: image_shape must be positive, got {self.image_shape}")
        self.kernel_size = _pair(kernel_size, "kernel_size", kind)
        self.stride = _pair(self.kernel_size if stride is None else stride, "stride", kind)
        self.padding = _pair(padding, "padding", kind)
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{kind}: kernel_size and stride must be positive, got "
                             f"{self.kernel_size}, {self.stride}")
        if any(p < 0 or 2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{kind}: padding must be between 0 and half the kernel size, "
                             f"got {self.padding} for {self.kernel_size}")
        super().__init__(x, graph=graph, name=name)

    def infer_dim(self):
        (x,) = self.parents
        (H, W), (kh, kw) = self.image_shape, self.kernel_size
        (sh, sw), (ph, pw) = self.stride, self.padding
        if x.dim[0] != H * W:
            raise ValueError(f"{type(self).__name__}: {x.name} has shape {x.dim}, expected "
                             f"(H * W, channels) = ({H * W}, channels) for images of {H}x{W}")
        self._set_geometry(H, W, x.dim[1], kh, kw, sh, sw, ph, pw,
                           (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
        # LeNet's pooling: no window clipped, four reads in straight-line code.
        self._two_by_two = (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0)
        return (self.output_image[0] * self.output_image[1], x.dim[1])

    def config(self):
        return {"image_shape": list(self.image_shape), "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding)}

    def compute(self):
        if not self._two_by_two:
            super().compute()
            return
        out = self.output()
        H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo = self.geometry
        max_pool_2x2(self.parents[0].flat, W, C, Ho, Wo, out, self.buffer("argmax", out.shape))



class AvgPool2D(MaxPool2D):
    """The mean of each window, as ``MaxPool2D`` places them; a window is divided by
    ``kh * kw`` even where it overlaps the padding (the padding counts as zeros)."""

    def compute(self):
        avg_pool(self.parents[0].flat, *self.geometry, self.output())

    def vjp(self, slot, upstream):
        out = self.buffer(0, (upstream.shape[0], self.parents[0].dimension()))
        avg_pool_vjp(upstream, *self.geometry, out)
        return out

    def dense_jacobian(self, slot):
        kh, kw = self.geometry[3:5]
        share = np.full(self._windows.shape, 1.0 / (kh * kw))
        return self._pool_jacobian([share] * self.geometry[2])


# -- dense Jacobians (the article's get_jacobi), from the window indices -------------------


def _conv_jacobian(op, slot, image, weights):
    """d output / d input (slot 0) or d output / d weights (slot 1) for one sample.

    Output ``(p, co)`` = sum over window positions k and channels c of
    ``input[window(p, k), c] * weights[co, k * C + c]``.
    """
    C = op.geometry[2]
    Cout = weights.shape[0]
    windows = op._windows
    taps = windows.shape[1]
    pixel, tap = np.nonzero(windows >= 0)
    source = windows[pixel, tap]
    parent = op.parents[slot]
    jacobian = np.zeros((op.dimension(), parent.dimension()), op.graph.dtype)
    image = image.reshape(-1, C)
    weights = weights.reshape(Cout, taps, C)
    for co in range(Cout):
        for c in range(C):
            rows = pixel * Cout + co
            if slot == 0:
                np.add.at(jacobian, (rows, source * C + c), weights[co, tap, c])
            else:
                np.add.at(jacobian, (rows, co * taps * C + tap * C + c), image[source, c])
    return jacobian


def _max_pool_jacobian(op):
    """1 where each window's first largest input is, per channel."""
    values = op._window_values()  # (C, Ho * Wo, taps)
    chosen = values.argmax(axis=2)
    shares = []
    for c in range(values.shape[0]):
        share = np.zeros(op._windows.shape)
        share[np.arange(share.shape[0]), chosen[c]] = 1.0
        shares.append(share)
    return op._pool_jacobian(shares)
