"""Convolution and pooling kernels on images stored pixels-major: ``(H * W, C)`` per sample.

A batch is a ``(B, H * W * C)`` matrix whose sample ``b`` holds pixel ``(y, x)``, channel
``c`` at column ``(y * W + x) * C + c``. Every kernel takes the geometry as integers::

    H, W, C      input height, width, channels
    kh, kw       window (kernel) height and width
    sh, sw       strides
    ph, pw       rows and columns of zero padding before the first pixel
    Ho, Wo       output height and width

so output pixel ``(oy, ox)`` reads input rows ``oy * sh - ph + ky`` for ``ky < kh``, and
columns likewise; positions outside the image are zeros (convolution) or skipped (pooling,
whose windows are clipped at the borders).

Convolution weights are ``(Cout, kh * kw * C)``: row ``co`` holds the kernel of output
channel ``co`` in the order (ky, kx, c), the order of a patch of the image, so that
``im2col`` rows times the weights' transpose is the convolution.

Two ways to compute a convolution live here, and both are measured in
``benchmarks/test_convolution.py``: ``im2col`` + one GEMM for the batch (then ``col2im``
for the input gradient), and direct loops (``conv_direct``, ``conv_input_vjp_direct``,
``conv_weight_vjp_direct``). ``Conv2D`` uses im2col + GEMM, which was faster in every
pass (figures in ``fastgraph/ops/convolution.py``); ``conv_weight_vjp_direct`` also gives
its per-sample weight gradients, one per upstream row. The article's one-channel
``Convolve`` has loops of its own (``convolve``...), along image rows.

Operands follow the row rule of every kernel: an operand with fewer rows than the output
is read at row ``i * rows // out_rows``.

These kernels run on one core (``kernel``, not ``parallel_kernel``): the GEMMs between them
are large enough for MKL to use every core, and MKL's OpenMP threads keep spinning for a
while after each product, so Numba's own threads (another OpenMP runtime) would fight them
for the cores. Measured on a LeNet-5 training step (2 cores): with these loops parallel,
40-110 ms of CPU time per step; on one core, 14-25 ms.
"""

import numpy as np

from . import kernel

# -- im2col / col2im: patches of a batch as the rows of one matrix --------------------------


@kernel
def im2col(x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, cols):
    """``cols[(b * Ho + oy) * Wo + ox, (ky * kw + kx) * C + c]`` = the input under the window.

    ``x`` is ``(B, H * W * C)``, ``cols`` is ``(B * Ho * Wo, kh * kw * C)``; padding is 0.
    For one window row ``ky`` the ``kw * C`` numbers are consecutive in both arrays (pixels
    are rows, channels columns), so each is one contiguous copy between two zero fills.
    """
    batch = x.shape[0]
    span = kw * C
    for row in range(batch * Ho):
        b = row // Ho
        oy = row % Ho
        for ox in range(Wo):
            r = row * Wo + ox
            left = ox * sw - pw
            first = max(0, -left)  # the window's first and last columns inside the image
            last = min(kw, W - left)
            for ky in range(kh):
                iy = oy * sh - ph + ky
                base = ky * span
                if iy < 0 or iy >= H or first >= last:
                    for j in range(span):
                        cols[r, base + j] = 0.0
                    continue
                for j in range(first * C):
                    cols[r, base + j] = 0.0
                source = (iy * W + left) * C
                for j in range(first * C, last * C):
                    cols[r, base + j] = x[b, source + j]
                for j in range(last * C, span):
                    cols[r, base + j] = 0.0


@kernel
def col2im(cols, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """The adjoint of ``im2col``: ``out[b]`` = the sum of sample b's patch rows put back.

    ``cols`` is ``(R * Ho * Wo, kh * kw * C)``, ``out`` is ``(R, H * W * C)``.
    """
    for b in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[b, j] = 0.0
        for oy in range(Ho):
            for ox in range(Wo):
                r = (b * Ho + oy) * Wo + ox
                for ky in range(kh):
                    iy = oy * sh - ph + ky
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        ix = ox * sw - pw + kx
                        if ix < 0 or ix >= W:
                            continue
                        base = (ky * kw + kx) * C
                        target = (iy * W + ix) * C
                        for c in range(C):
                            out[b, target + c] += cols[r, base + c]


@kernel
def fill_rows(row, out):
    """Every row of ``out`` = ``row[0]`` (a bias before a GEMM that adds into ``out``)."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = row[0, j]


@kernel
def add_scalar_rows(a, scalar, out):
    """``out[i, j] = a[i, j] + scalar[i, 0]`` (both read by the row rule)."""
    for i in range(out.shape[0]):
        ia = i * a.shape[0] // out.shape[0]
        s = scalar[i * scalar.shape[0] // out.shape[0], 0]
        for j in range(out.shape[1]):
            out[i, j] = a[ia, j] + s


@kernel
def sum_pixels(upstream, C, out):
    """``out[i * R' // R, c]`` += the sum over pixels of ``upstream[i, (p, c)]``.

    The bias gradient of a convolution: ``out`` with one row per upstream row gives each
    sample's, ``out`` with one row the batch's sum.
    """
    for i in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[i, c] = 0.0
    pixels = upstream.shape[1] // C
    for i in range(upstream.shape[0]):
        o = i * out.shape[0] // upstream.shape[0]
        for p in range(pixels):
            for c in range(C):
                out[o, c] += upstream[i, p * C + c]


# -- direct loops ---------------------------------------------------------------------------


@kernel
def conv_direct(x, weights, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """``out[i, (oy, ox, co)]`` = sum over (ky, kx, c) of the input under the window times
    ``weights[co, (ky, kx, c)]``. ``weights`` is ``(1 or rows, Cout * kh * kw * C)``."""
    Cout = out.shape[1] // (Ho * Wo)
    size = kh * kw * C
    for i in range(out.shape[0]):
        ix_ = i * x.shape[0] // out.shape[0]
        iw = i * weights.shape[0] // out.shape[0]
        for oy in range(Ho):
            for ox in range(Wo):
                o = (oy * Wo + ox) * Cout
                for co in range(Cout):
                    total = 0.0
                    for ky in range(kh):
                        iy = oy * sh - ph + ky
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(kw):
                            ix = ox * sw - pw + kx
                            if ix < 0 or ix >= W:
                                continue
                            source = (iy * W + ix) * C
                            k = co * size + (ky * kw + kx) * C
                            for c in range(C):
                                total += x[ix_, source + c] * weights[iw, k + c]
                    out[i, o + co] = total


@kernel
def conv_input_vjp_direct(upstream, weights, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """The input gradient: ``out[i]`` (``(H * W * C)``) = upstream row i through the
    transposed convolution."""
    Cout = upstream.shape[1] // (Ho * Wo)
    size = kh * kw * C
    for i in range(out.shape[0]):
        iw = i * weights.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = 0.0
        for oy in range(Ho):
            for ox in range(Wo):
                o = (oy * Wo + ox) * Cout
                for ky in range(kh):
                    iy = oy * sh - ph + ky
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        ix = ox * sw - pw + kx
                        if ix < 0 or ix >= W:
                            continue
                        target = (iy * W + ix) * C
                        for co in range(Cout):
                            u = upstream[i, o + co]
                            k = co * size + (ky * kw + kx) * C
                            for c in range(C):
                                out[i, target + c] += u * weights[iw, k + c]


@kernel
def conv_weight_vjp_direct(upstream, x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """Per-row weight gradients: ``out[i, (co, ky, kx, c)]`` = sum over output pixels of
    ``upstream[i, (oy, ox, co)]`` times the input under the window (x read by the row rule).
    With one output row, the sum over every upstream row."""
    Cout = upstream.shape[1] // (Ho * Wo)
    size = kh * kw * C
    rows = upstream.shape[0]
    groups = out.shape[0]
    for g in range(groups):
        for j in range(out.shape[1]):
            out[g, j] = 0.0
        for i in range(g * rows // groups, (g + 1) * rows // groups):
            ix_ = i * x.shape[0] // rows
            for oy in range(Ho):
                for ox in range(Wo):
                    o = (oy * Wo + ox) * Cout
                    for ky in range(kh):
                        iy = oy * sh - ph + ky
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(kw):
                            ix = ox * sw - pw + kx
                            if ix < 0 or ix >= W:
                                continue
                            source = (iy * W + ix) * C
                            for co in range(Cout):
                                u = upstream[i, o + co]
                                k = co * size + (ky * kw + kx) * C
                                for c in range(C):
                                    out[g, k + c] += u * x[ix_, source + c]


# -- the article's one-channel Convolve: same-size output, rows as vectors --------------------
# For one kernel tap (ky, kx), an output row and the input row it reads are two shifted
# slices of the same length: the innermost loops run along them, contiguous, and vectorise.


@kernel
def convolve(x, weights, H, W, kh, kw, out):
    """``out[i, (oy, ox)]`` = sum over taps of ``x[(oy + ky - kh // 2, ox + kx - kw // 2)]``
    times ``weights[ky * kw + kx]``, zero outside the image. ``x`` and ``weights`` are read
    by the row rule (a kernel may have a batch axis)."""
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        k = i * weights.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = 0.0
        for oy in range(H):
            for ky in range(kh):
                iy = oy + ky - kh // 2
                if iy < 0 or iy >= H:
                    continue
                for kx in range(kw):
                    shift = kx - kw // 2
                    w = weights[k, ky * kw + kx]
                    source, target = iy * W + shift, oy * W
                    for ox in range(max(0, -shift), min(W, W - shift)):
                        out[i, target + ox] += w * x[r, source + ox]


@kernel
def convolve_input_vjp(upstream, weights, H, W, kh, kw, out):
    """The feature map's gradient: each upstream row spread back through the taps."""
    for i in range(out.shape[0]):
        k = i * weights.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = 0.0
        for oy in range(H):
            for ky in range(kh):
                iy = oy + ky - kh // 2
                if iy < 0 or iy >= H:
                    continue
                for kx in range(kw):
                    shift = kx - kw // 2
                    w = weights[k, ky * kw + kx]
                    target, source = iy * W + shift, oy * W
                    for ox in range(max(0, -shift), min(W, W - shift)):
                        out[i, target + ox] += w * upstream[i, source + ox]


@kernel
def convolve_kernel_vjp(upstream, x, H, W, kh, kw, out):
    """The kernel's gradient: ``out[g, tap]`` = sum over the upstream rows of group g (one
    row each, or all of them for a one-row ``out``) of upstream times the input under the
    tap (``x`` read by the row rule)."""
    rows = upstream.shape[0]
    groups = out.shape[0]
    for g in range(groups):
        for j in range(out.shape[1]):
            out[g, j] = 0.0
        for i in range(g * rows // groups, (g + 1) * rows // groups):
            r = i * x.shape[0] // rows
            for oy in range(H):
                for ky in range(kh):
                    iy = oy + ky - kh // 2
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        shift = kx - kw // 2
                        source, target = iy * W + shift, oy * W
                        total = 0.0
                        for ox in range(max(0, -shift), min(W, W - shift)):
                            total += upstream[i, target + ox] * x[r, source + ox]
                        out[g, ky * kw + kx] += total


# -- pooling: windows clipped at the borders ------------------------------------------------


@kernel
def max_pool(x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """The largest input in each window, per channel (pixels outside the image skipped)."""
    for i in range(out.shape[0]):
        for oy in range(Ho):
            top = max(oy * sh - ph, 0)
            bottom = min(oy * sh - ph + kh, H)
            for ox in range(Wo):
                left = max(ox * sw - pw, 0)
                right = min(ox * sw - pw + kw, W)
                o = (oy * Wo + ox) * C
                for c in range(C):
                    best = -np.inf
                    for iy in range(top, bottom):
                        for ix in range(left, right):
                            v = x[i, (iy * W + ix) * C + c]
                            if v > best or v != v:  # a NaN wins, and stays: NaN in, NaN out
                                best = v
                    out[i, o + c] = best


@kernel
def max_pool_vjp(x, upstream, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """Each window's upstream to the first of its largest inputs (row-major in the window),
    as ``numpy.argmax`` picks it; the arg max is found again from ``x`` (row rule)."""
    for i in range(out.shape[0]):
        r = i * x.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = 0.0
        for oy in range(Ho):
            top = max(oy * sh - ph, 0)
            bottom = min(oy * sh - ph + kh, H)
            for ox in range(Wo):
                left = max(ox * sw - pw, 0)
                right = min(ox * sw - pw + kw, W)
                o = (oy * Wo + ox) * C
                for c in range(C):
                    best = -np.inf
                    where = (top * W + left) * C + c
                    for iy in range(top, bottom):
                        for ix in range(left, right):
                            j = (iy * W + ix) * C + c
                            if (x[r, j] > best or x[r, j] != x[r, j]) and best == best:
                                best = x[r, j]  # the first NaN, as numpy.argmax picks it
                                where = j
                    out[i, where] += upstream[i, o + c]


@kernel
def avg_pool(x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """The mean of each window over kh * kw positions (padding counts as zeros)."""
    scale = 1.0 / (kh * kw)
    for i in range(out.shape[0]):
        for oy in range(Ho):
            top = max(oy * sh - ph, 0)
            bottom = min(oy * sh - ph + kh, H)
            for ox in range(Wo):
                left = max(ox * sw - pw, 0)
                right = min(ox * sw - pw + kw, W)
                o = (oy * Wo + ox) * C
                for c in range(C):
                    total = 0.0
                    for iy in range(top, bottom):
                        for ix in range(left, right):
                            total += x[i, (iy * W + ix) * C + c]
                    out[i, o + c] = total * scale


@kernel
def avg_pool_vjp(upstream, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    scale = 1.0 / (kh * kw)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = 0.0
        for oy in range(Ho):
            top = max(oy * sh - ph, 0)
            bottom = min(oy * sh - ph + kh, H)
            for ox in range(Wo):
                left = max(ox * sw - pw, 0)
                right = min(ox * sw - pw + kw, W)
                o = (oy * Wo + ox) * C
                for c in range(C):
                    u = upstream[i, o + c] * scale
                    for iy in range(top, bottom):
                        for ix in range(left, right):
                            out[i, (iy * W + ix) * C + c] += u
