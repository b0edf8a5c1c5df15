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

Three ways to compute a convolution live here, measured in
``benchmarks/test_convolution.py``: ``im2col`` + one GEMM for the batch (then ``col2im``
for the input gradient), shifted runs (``conv_shifted``, ``conv_weight_vjp_shifted``: stride
1, few channels, no patch matrix), and direct loops (``conv_direct``,
``conv_input_vjp_direct``, ``conv_weight_vjp_direct``). ``Conv2D`` takes shifted runs for
stride 1 with small patches (both of LeNet's layers) and im2col + GEMM otherwise (figures in
``fastgraph/ops/convolution.py``); ``conv_weight_vjp_direct`` gives its per-sample weight
gradients, one per upstream row. The article's one-channel ``Convolve`` has shifted runs
of its own (``convolve_runs``, ``convolve_kernel_runs``), its ``MaxPooling`` loops
without branches on the values (``max_pool_map``).

Operands follow the row rule of every kernel: an operand with fewer rows than the output
is read at row ``i * rows // out_rows``.

The kernels that touch a whole batch are ``parallel_kernel``s whose ``prange`` runs over
samples (each writes only its own rows), so they use as many threads as the process gives
Numba (``fastgraph.threads`` picks one or every core by timing steps: on a loaded 2-core
machine a parallel region can wait for a descheduled thread, and a LeNet-5 step took 50-200
ms on two threads against 16 on one). Their fastmath only contracts multiply-adds and lets
``conv_weight_vjp_shifted``'s dot products vectorise; comparisons keep NaN's meaning.
"""

import numpy as np
from numba import prange

from . import inline, kernel, parallel_kernel, reducing_kernel
from .elementwise import sum_rows

# -- im2col / col2im: patches of a batch as the rows of one matrix --------------------------


@kernel
def _inside_columns(W, kw, sw, pw, Wo):
    """``(first, stop)``: the output columns whose windows lie inside the image's columns."""
    first = min((pw + sw - 1) // sw, Wo)
    return first, max(min((W + pw - kw) // sw + 1, Wo), first)


@kernel
def _border_window(row, W, C, kw, left, window):
    """One window row across the left or right border: the image's part, zeros outside."""
    for kx in range(kw):
        ix = left + kx
        inside = ix >= 0 and ix < W
        for c in range(C):
            window[kx * C + c] = row[ix * C + c] if inside else 0.0


@kernel
def _border_add(window, W, C, kw, left, row):
    """``_border_window``'s adjoint: a window row's image part added back into ``row``."""
    for kx in range(kw):
        ix = left + kx
        if ix >= 0 and ix < W:
            for c in range(C):
                row[ix * C + c] += window[kx * C + c]


@parallel_kernel
def im2col(x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, cols):
    """``cols[(b * Ho + oy) * Wo + ox, (ky * kw + kx) * C + c]`` = the input under the window.

    ``x`` is ``(B, H * W * C)``, ``cols`` is ``(B * Ho * Wo, kh * kw * C)``; padding is 0.
    For one window row ``ky`` the ``kw * C`` numbers are consecutive in both arrays (pixels
    are rows, channels columns): a window inside the image is one contiguous copy, taken
    from a view of the input row so that the loop has no index arithmetic left to vectorise
    around (that made it 2-4x faster than indexing ``x[b, ...]`` per number). The columns
    whose windows cross the border are done apart, after a loop over the inside ones that
    has no branch: with a border test per window the copy took 0.40 ms instead of 0.22
    (LeNet's second layer, batch 64, one core).
    """
    span = kw * C
    first, stop = _inside_columns(W, kw, sw, pw, Wo)
    for b in prange(x.shape[0]):
        for oy in range(Ho):
            first_row = (b * Ho + oy) * Wo
            for ky in range(kh):
                iy = oy * sh - ph + ky
                base = ky * span
                if iy < 0 or iy >= H:
                    for ox in range(Wo):
                        for j in range(span):
                            cols[first_row + ox, base + j] = 0.0
                    continue
                row = x[b, iy * W * C:(iy + 1) * W * C]
                for ox in range(first, stop):
                    left = (ox * sw - pw) * C
                    window = cols[first_row + ox, base:base + span]
                    source = row[left:left + span]
                    for j in range(span):
                        window[j] = source[j]
                for ox in range(first):
                    _border_window(row, W, C, kw, ox * sw - pw,
                                   cols[first_row + ox, base:base + span])
                for ox in range(stop, Wo):
                    _border_window(row, W, C, kw, ox * sw - pw,
                                   cols[first_row + ox, base:base + span])


@parallel_kernel
def col2im(cols, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """The adjoint of ``im2col``: ``out[b]`` = the sum of sample b's patch rows put back.

    ``cols`` is ``(R * Ho * Wo, kh * kw * C)``, ``out`` is ``(R, H * W * C)``. The border
    columns apart, as in ``im2col`` (0.37 -> 0.29 ms on LeNet's second layer).
    """
    span = kw * C
    first, stop = _inside_columns(W, kw, sw, pw, Wo)
    for b in prange(out.shape[0]):
        for j in range(out.shape[1]):
            out[b, j] = 0.0
        for oy in range(Ho):
            first_row = (b * Ho + oy) * Wo
            for ky in range(kh):
                iy = oy * sh - ph + ky
                if iy < 0 or iy >= H:
                    continue
                base = ky * span
                row = out[b, iy * W * C:(iy + 1) * W * C]
                for ox in range(first, stop):
                    left = (ox * sw - pw) * C
                    window = cols[first_row + ox, base:base + span]
                    target = row[left:left + span]
                    for j in range(span):
                        target[j] += window[j]
                for ox in range(first):
                    _border_add(cols[first_row + ox, base:base + span], W, C, kw, ox * sw - pw,
                                row)
                for ox in range(stop, Wo):
                    _border_add(cols[first_row + ox, base:base + span], W, C, kw, ox * sw - pw,
                                row)


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
    sample's, ``out`` with one row the batch's sum. Sixteen pixels at a time are added
    into ``16 * C`` running sums, a contiguous run that vectorises (pixel by pixel, the C
    sums of 6 channels did not), then folded into C.
    """
    for i in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[i, c] = 0.0
    pixels = upstream.shape[1] // C
    group = 16 * C
    whole = pixels // 16 * group
    sums = np.zeros(group, out.dtype)
    for i in range(upstream.shape[0]):
        o = i * out.shape[0] // upstream.shape[0]
        for j in range(group):
            sums[j] = 0.0
        for start in range(0, whole, group):
            values = upstream[i, start:start + group]
            for j in range(group):
                sums[j] += values[j]
        for g in range(16):  # no j % C: an integer division a number cost 1.3x the sum
            for c in range(C):
                out[o, c] += sums[g * C + c]
        for p in range(whole // C, pixels):
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


# -- stride 1 by shifted runs: for images with few channels -----------------------------------
# With stride 1, output pixel (oy, ox) reads padded pixel (oy + ky, ox + kx). In a padded
# image of width Wp stored flat, that is position oy * Wp + ox moved by ky * Wp + kx: each
# tap of the kernel is one multiply-add over a contiguous run of Ho * Wp numbers (the
# Wp - Wo numbers past each output row are computed and thrown away). On one channel
# (LeNet's first layer) im2col would copy the image kh * kw times for a GEMM whose inner
# dimension is only kh * kw; these loops read the image where it is.


@parallel_kernel
def pad_channels(x, H, W, C, ph, pw, padded):
    """``padded[b]``: sample b's channels one after another, each ``(H + 2 ph) x (W + 2 pw)``
    with zeros around, and ``padded.shape[1] // C - (H + 2 ph) * (W + 2 pw)`` zeros after
    it (room for the last tap's run)."""
    Wp = W + 2 * pw
    size = padded.shape[1] // C
    for b in prange(x.shape[0]):
        for j in range(padded.shape[1]):
            padded[b, j] = 0.0
        for c in range(C):
            channel = padded[b, c * size:(c + 1) * size]
            for iy in range(H):
                row = channel[(iy + ph) * Wp + pw:(iy + ph) * Wp + pw + W]
                for ix in range(W):
                    row[ix] = x[b, (iy * W + ix) * C + c]


@kernel
def _tap_passes(kw):
    """How the shifted kernels group a kernel row's ``kw`` taps into passes along a run:
    ``(fours, five, rest)``, passes of four taps for ``kx < fours``, then one of five at
    ``kx = fours`` if ``five``, then one tap a pass from ``rest`` on. Five rather than four
    and one alone (5x5 kernels): one pass fewer over the running sums."""
    five = kw % 4 == 1 and kw > 1
    fours = kw // 4 * 4 - (4 if five else 0)
    return fours, five, fours + 5 if five else fours


@parallel_kernel
def conv_shifted(padded, weights, bias, biased, C, kh, kw, Wp, Ho, Wo, wide, out):
    """The convolution, stride 1, of ``pad_channels``'s images: ``out[b, (oy, ox, co)]``
    (pixels-major) = ``bias[0, co]`` (if ``biased``) + sum over (ky, kx, c) of
    ``weights[co, (ky, kx, c)]`` times padded pixel (oy + ky, ox + kx) of channel c.
    ``wide`` is scratch, ``(B, Cout' * Ho * Wp)``: each output channel's runs, ``Cout'``
    being ``Cout`` rounded up to even.

    Four taps of a kernel row go through the run together (their runs are one number
    apart), so the running sums are loaded and stored once for four multiply-adds: 15%
    faster than tap by tap on LeNet's first layer. A row's last five taps go together
    rather than four and one (``_tap_passes``): 0.475 -> 0.43 ms on LeNet's 5x5. Two output
    channels share each pass, so the image's run is loaded once for both: 0.43 -> 0.31 ms
    (an odd count's last channel is paired with a spare run of ``wide`` and zero weights;
    paired with itself, the two running sums would be one array, which LLVM then adds
    without vectors)."""
    Cout = weights.shape[0]
    size = padded.shape[1] // C
    run = Ho * Wp
    fours, five, rest = _tap_passes(kw)
    for b in prange(padded.shape[0]):
        for first in range(0, Cout, 2):
            second = min(first + 1, Cout - 1)  # the twin's weights (zero if it is first's)
            twin = weights.dtype.type(1 if second > first else 0)
            total = wide[b, first * run:(first + 1) * run]
            other = wide[b, (first + 1) * run:(first + 2) * run]
            start = bias[0, first] if biased else out.dtype.type(0)
            start_other = twin * bias[0, second] if biased else out.dtype.type(0)
            for j in range(run):
                other[j] = start_other
                total[j] = start
            for ky in range(kh):
                for c in range(C):
                    row = c * size + ky * Wp
                    for kx in range(0, fours, 4):
                        tap = (ky * kw + kx) * C + c
                        v0, v1 = weights[first, tap], weights[first, tap + C]
                        v2, v3 = weights[first, tap + 2 * C], weights[first, tap + 3 * C]
                        w0, w1 = twin * weights[second, tap], twin * weights[second, tap + C]
                        w2 = twin * weights[second, tap + 2 * C]
                        w3 = twin * weights[second, tap + 3 * C]
                        source = padded[b, row + kx:row + kx + run + 3]
                        for j in range(run):
                            s0, s1, s2, s3 = source[j], source[j + 1], source[j + 2], source[j + 3]
                            total[j] += v0 * s0 + v1 * s1 + v2 * s2 + v3 * s3
                            other[j] += w0 * s0 + w1 * s1 + w2 * s2 + w3 * s3
                    if five:
                        tap = (ky * kw + fours) * C + c
                        v0, v1 = weights[first, tap], weights[first, tap + C]
                        v2, v3 = weights[first, tap + 2 * C], weights[first, tap + 3 * C]
                        v4 = weights[first, tap + 4 * C]
                        w0, w1 = twin * weights[second, tap], twin * weights[second, tap + C]
                        w2 = twin * weights[second, tap + 2 * C]
                        w3 = twin * weights[second, tap + 3 * C]
                        w4 = twin * weights[second, tap + 4 * C]
                        source = padded[b, row + fours:row + fours + run + 4]
                        for j in range(run):
                            s0, s1, s2, s3 = source[j], source[j + 1], source[j + 2], source[j + 3]
                            s4 = source[j + 4]
                            total[j] += v0 * s0 + v1 * s1 + v2 * s2 + v3 * s3 + v4 * s4
                            other[j] += w0 * s0 + w1 * s1 + w2 * s2 + w3 * s3 + w4 * s4
                    for kx in range(rest, kw):
                        tap = (ky * kw + kx) * C + c
                        v0, w0 = weights[first, tap], twin * weights[second, tap]
                        source = padded[b, row + kx:row + kx + run]
                        for j in range(run):
                            total[j] += v0 * source[j]
                            other[j] += w0 * source[j]
        for oy in range(Ho):  # output row by output row: 0.09 ms, pixel by pixel 0.19
            row = out[b, oy * Wo * Cout:(oy + 1) * Wo * Cout]
            for co in range(Cout):
                computed = wide[b, co * run + oy * Wp:co * run + oy * Wp + Wo]
                for ox in range(Wo):
                    row[ox * Cout + co] = computed[ox]


@parallel_kernel
def conv_weight_vjp_shifted(upstream, padded, C, kh, kw, Wp, Ho, Wo, wide, partial, out):
    """The weight gradient summed over the batch, stride 1: ``out[0, (co, ky, kx, c)]`` =
    sum over samples and output pixels of ``upstream[b, (oy, ox, co)]`` times padded pixel
    (oy + ky, ox + kx) of channel c (``padded`` from ``pad_channels``, same batch).
    Scratch: ``wide`` ``(B, Cout * Ho * Wp)``, the upstream's runs (zero past Wo), and
    ``partial`` ``(B, Cout * kh * kw * C)``, each sample's gradient.

    Each tap's sum is a dot product of two runs: a ``parallel_kernel`` for its fastmath
    (reassociated sums vectorise; in IEEE order, or with 8 partial sums, 2.7-3x slower),
    samples in parallel. Four taps of a kernel row share one pass over the upstream's run
    (their runs are one number apart): 0.64 -> 0.49 ms on LeNet's first layer (batch 64,
    one core), tap by tap; five for a row's last five (``_tap_passes``), 0.49 -> 0.45; two
    output channels a pass, each run of the image loaded once for both, 0.44 -> 0.33 (an
    odd count's last channel paired with itself: the same sums written twice); the
    upstream spread output row by output row, 0.70 -> 0.64."""
    taps = kh * kw * C
    Cout = out.shape[1] // taps
    size = padded.shape[1] // C
    run = Ho * Wp
    fours, five, rest = _tap_passes(kw)
    zero = out.dtype.type(0)  # sums in the graph's dtype: no float64 temporaries
    for b in prange(upstream.shape[0]):
        for oy in range(Ho):
            row = upstream[b, oy * Wo * Cout:(oy + 1) * Wo * Cout]
            for co in range(Cout):
                spread = wide[b, co * run + oy * Wp:co * run + (oy + 1) * Wp]
                for ox in range(Wo):
                    spread[ox] = row[ox * Cout + co]
                for ox in range(Wo, Wp):
                    spread[ox] = zero
        for first in range(0, Cout, 2):
            second = min(first + 1, Cout - 1)
            grad = wide[b, first * run:(first + 1) * run]
            other = wide[b, second * run:(second + 1) * run]
            for ky in range(kh):
                for c in range(C):
                    start = c * size + ky * Wp
                    for kx in range(0, fours, 4):
                        source = padded[b, start + kx:start + kx + run + 3]
                        t0 = t1 = t2 = t3 = u0 = u1 = u2 = u3 = zero
                        for j in range(run):
                            g, h = grad[j], other[j]
                            s0, s1, s2, s3 = source[j], source[j + 1], source[j + 2], source[j + 3]
                            t0 += g * s0
                            t1 += g * s1
                            t2 += g * s2
                            t3 += g * s3
                            u0 += h * s0
                            u1 += h * s1
                            u2 += h * s2
                            u3 += h * s3
                        tap = (ky * kw + kx) * C + c
                        for co, (a0, a1, a2, a3) in ((first, (t0, t1, t2, t3)),
                                                     (second, (u0, u1, u2, u3))):
                            at = co * taps + tap
                            partial[b, at] = a0
                            partial[b, at + C] = a1
                            partial[b, at + 2 * C] = a2
                            partial[b, at + 3 * C] = a3
                    if five:
                        source = padded[b, start + fours:start + fours + run + 4]
                        t0 = t1 = t2 = t3 = t4 = u0 = u1 = u2 = u3 = u4 = zero
                        for j in range(run):
                            g, h = grad[j], other[j]
                            s0, s1, s2, s3 = source[j], source[j + 1], source[j + 2], source[j + 3]
                            s4 = source[j + 4]
                            t0 += g * s0
                            t1 += g * s1
                            t2 += g * s2
                            t3 += g * s3
                            t4 += g * s4
                            u0 += h * s0
                            u1 += h * s1
                            u2 += h * s2
                            u3 += h * s3
                            u4 += h * s4
                        tap = (ky * kw + fours) * C + c
                        for co, (a0, a1, a2, a3, a4) in ((first, (t0, t1, t2, t3, t4)),
                                                         (second, (u0, u1, u2, u3, u4))):
                            at = co * taps + tap
                            partial[b, at] = a0
                            partial[b, at + C] = a1
                            partial[b, at + 2 * C] = a2
                            partial[b, at + 3 * C] = a3
                            partial[b, at + 4 * C] = a4
                    for kx in range(rest, kw):
                        source = padded[b, start + kx:start + kx + run]
                        t0 = u0 = zero
                        for j in range(run):
                            t0 += grad[j] * source[j]
                            u0 += other[j] * source[j]
                        tap = (ky * kw + kx) * C + c
                        partial[b, first * taps + tap] = t0
                        partial[b, second * taps + tap] = u0
    sum_rows(partial, out, 0)


# -- the article's one-channel Convolve: one sample's map in shifted runs ---------------------
# Rows of 14-28 numbers make short vector loops, and one sample is all the article feeds. So
# each map is copied into a zero grid ``Wp = W + kw - 1`` wide (the padding of the
# convolution around it) stored flat, and output pixel (oy, ox) sits at oy * Wp + ox of a
# "wide" run of H * Wp numbers: kernel tap (ky, kx) reads the grid at that position moved by
# ky * Wp + kx, so each tap is one multiply-add along a run of H * Wp contiguous numbers (the
# Wp - W numbers past each row are computed and thrown away). The feature map's gradient is
# the same convolution of the upstream, padded on the other sides, with the kernel turned
# by 180 degrees; the kernel's is a dot product of the upstream (spread to the wide layout,
# zeros past each row) with the grid for every tap. The loops along runs are
# ``reducing_kernel``s called by the kernels: vectorised sums, no parallel region (it costs
# ~2 us a call, more than one sample's map). Measured on the article's 28x28 map and
# 5x5 kernel, one sample (process time, in a compiled loop): forward 1.2 us, feature map's
# gradient 1.2, kernel's 1.3, against 16.6, 16.4 and 17.8 with loops along image rows; on
# 14x14 and 3x3, 0.29, 0.29 and 0.26 against ~2 each. A batch of 64: 13-18x faster too.

def convolve_grid_size(H, W, kh, kw):
    """Numbers in one map's zero grid for ``convolve_runs``: ``H + kh - 1`` rows of
    ``W + kw - 1``, and ``kw - 1`` more that the last tap's run reads past it."""
    return (H + kh - 1) * (W + kw - 1) + kw - 1


@reducing_kernel
def sum_map(upstream, out):
    """``out[i, 0]`` = the sum of row i of ``upstream``, in vector lanes: the gradient of
    ``AddScalar``'s scalar, one per upstream row (0.05 us for a 28x28 map, where
    ``sum_pixels``' sixteen running sums took 0.25)."""
    for i in range(out.shape[0]):
        total = out.dtype.type(0)
        for j in range(upstream.shape[1]):
            total += upstream[i, j]
        out[i, 0] = total


@reducing_kernel
def _tap_dots(spread, grid, kh, kw, Wp, run, out, g):
    """``out[g, ky * kw + kx]`` += the dot product of ``spread[:run]`` with ``grid`` from
    ``ky * Wp + kx``, for every tap; four taps of a kernel row in one pass over ``spread``
    (their runs are one number apart), each sum in vector lanes."""
    zero = out.dtype.type(0)
    fours = kw // 4 * 4
    for ky in range(kh):
        for kx in range(0, fours, 4):
            s = grid[ky * Wp + kx:]
            t0 = t1 = t2 = t3 = zero
            for j in range(run):
                u = spread[j]
                t0 += u * s[j]
                t1 += u * s[j + 1]
                t2 += u * s[j + 2]
                t3 += u * s[j + 3]
            t = ky * kw + kx
            out[g, t] += t0
            out[g, t + 1] += t1
            out[g, t + 2] += t2
            out[g, t + 3] += t3
        for kx in range(fours, kw):
            s = grid[ky * Wp + kx:]
            total = zero
            for j in range(run):
                total += spread[j] * s[j]
            out[g, ky * kw + kx] += total


@reducing_kernel
def _tap_runs(grid, weights, k, flip, kh, kw, Wp, run, total):
    """``total[j]`` (j < run) = sum over taps (ky, kx) of ``grid[j + ky * Wp + kx]`` times
    ``weights[k, ky * kw + kx]``, or times the kernel turned by 180 degrees (``flip``):
    ``weights[k, (kh - 1 - ky) * kw + kw - 1 - kx]``. Up to five taps of a kernel row are
    added in one pass along the run (their runs are one number apart), so ``total`` is
    loaded and stored once for them."""
    last = kh * kw - 1
    for j in range(run):
        total[j] = 0.0
    for ky in range(kh):
        kx = 0
        while kx < kw:
            t = ky * kw + kx
            taps = min(kw - kx, 5 if kw - kx == 5 else 4)
            w0 = weights[k, last - t] if flip else weights[k, t]
            w1 = w2 = w3 = w4 = w0
            if taps > 1:
                w1 = weights[k, last - t - 1] if flip else weights[k, t + 1]
            if taps > 2:
                w2 = weights[k, last - t - 2] if flip else weights[k, t + 2]
            if taps > 3:
                w3 = weights[k, last - t - 3] if flip else weights[k, t + 3]
            if taps > 4:
                w4 = weights[k, last - t - 4] if flip else weights[k, t + 4]
            s = grid[ky * Wp + kx:]
            if taps == 5:
                for j in range(run):
                    total[j] += (w0 * s[j] + w1 * s[j + 1] + w2 * s[j + 2] + w3 * s[j + 3]
                                 + w4 * s[j + 4])
            elif taps == 4:
                for j in range(run):
                    total[j] += w0 * s[j] + w1 * s[j + 1] + w2 * s[j + 2] + w3 * s[j + 3]
            elif taps == 3:
                for j in range(run):
                    total[j] += w0 * s[j] + w1 * s[j + 1] + w2 * s[j + 2]
            elif taps == 2:
                for j in range(run):
                    total[j] += w0 * s[j] + w1 * s[j + 1]
            else:
                for j in range(run):
                    total[j] += w0 * s[j]
            kx += taps


@kernel
def _pad_map(x, H, W, top, left, Wp, grid):
    """``grid``: the ``(H, W)`` map ``x`` (a row) at rows ``top``.., columns ``left``.. of
    zeros ``Wp`` wide, stored flat; zeros to its end. Rows are copied as slices (they
    vectorise) and only the border is zeroed."""
    zero = grid.dtype.type(0)
    for j in range(top * Wp + left):
        grid[j] = zero
    for iy in range(H):
        start = (iy + top) * Wp + left
        target = grid[start:start + W]
        source = x[iy * W:(iy + 1) * W]
        for ix in range(W):
            target[ix] = source[ix]
        stop = start + Wp if iy < H - 1 else grid.shape[0]
        for j in range(start + W, stop):
            grid[j] = zero


@kernel
def convolve_runs(x, weights, H, W, kh, kw, top, left, flip, grids, wide, out):
    """``out[i, (oy, ox)]`` = sum over taps (ky, kx) of ``x[(oy + ky - top, ox + kx - left)]``
    (zero outside the map) times ``weights[ky * kw + kx]``, or times the kernel turned by
    180 degrees (``flip``). The article's Convolve is ``top, left = kh // 2, kw // 2``
    unturned; its feature map's gradient is the upstream with ``kh - 1 - kh // 2, kw - 1 -
    kw // 2`` turned. ``x`` and ``weights`` are read by the row rule (a kernel may have a
    batch axis); row i's zero grid (``convolve_grid_size`` numbers) is left in ``grids`` at
    its row by the rule (one row: scratch; a row per output row: the maps kept for
    ``convolve_kernel_runs``), ``wide`` (a row of at least ``H * (W + kw - 1)``) is
    scratch."""
    Wp = W + kw - 1
    run = H * Wp
    total = wide[0]
    for i in range(out.shape[0]):
        grid = grids[i * grids.shape[0] // out.shape[0]]
        _pad_map(x[i * x.shape[0] // out.shape[0]], H, W, top, left, Wp, grid)
        _tap_runs(grid, weights, i * weights.shape[0] // out.shape[0], flip, kh, kw, Wp, run,
                  total)
        for oy in range(H):
            target = out[i, oy * W:(oy + 1) * W]
            computed = total[oy * Wp:oy * Wp + W]
            for ox in range(W):
                target[ox] = computed[ox]


@kernel
def convolve_kernel_runs(upstream, grids, H, W, kh, kw, wide, out):
    """The kernel's gradient: ``out[g, ky * kw + kx]`` = sum over the upstream rows of group g
    (one row each, or all of them for a one-row ``out``) of the upstream times the map under
    the tap, from the zero grids that ``convolve_runs`` left (``grids`` read by the row
    rule). ``wide`` (a row of at least ``H * (W + kw - 1)``) is scratch."""
    Wp = W + kw - 1
    run = H * Wp
    rows = upstream.shape[0]
    groups = out.shape[0]
    spread = wide[0]
    for g in range(groups):
        for t in range(kh * kw):
            out[g, t] = 0.0
        for i in range(g * rows // groups, (g + 1) * rows // groups):
            for oy in range(H):
                target = spread[oy * Wp:(oy + 1) * Wp]
                source = upstream[i, oy * W:(oy + 1) * W]
                for ox in range(W):
                    target[ox] = source[ox]
                for ox in range(W, Wp):
                    target[ox] = 0.0
            _tap_dots(spread, grids[i * grids.shape[0] // rows], kh, kw, Wp, run, out, g)


# -- pooling: windows clipped at the borders ------------------------------------------------


@parallel_kernel
def max_pool(x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out, argmax):
    """The largest input in each window, per channel (pixels outside the image skipped),
    and in ``argmax`` (same shape) where it is: the column of x of the first largest, in
    row-major order in the window, as ``numpy.argmax`` picks it. A NaN wins and stays (the
    first NaN), so NaN in gives NaN out. The positions are kept as floats (exact up to
    2**24 numbers per sample) because buffers have the graph's dtype.

    The channel loop is innermost: for one window pixel the C channels are consecutive.
    """
    real = argmax.dtype.type  # positions converted once a pixel, not through float64
    for i in prange(out.shape[0]):
        for oy in range(Ho):
            top = max(oy * sh - ph, 0)
            bottom = min(oy * sh - ph + kh, H)
            for ox in range(Wo):
                left = max(ox * sw - pw, 0)
                right = min(ox * sw - pw + kw, W)
                o = (oy * Wo + ox) * C
                best = out[i, o:o + C]
                where = argmax[i, o:o + C]
                for c in range(C):
                    best[c] = -np.inf
                    where[c] = (top * W + left) * C + c
                for iy in range(top, bottom):
                    for ix in range(left, right):
                        p = (iy * W + ix) * C
                        pixel = x[i, p:p + C]
                        first = real(p)
                        for c in range(C):
                            v = pixel[c]
                            b = best[c]
                            take = (v > b or v != v) and b == b
                            best[c] = v if take else b
                            where[c] = first + real(c) if take else where[c]


@parallel_kernel
def max_pool_2x2(x, W, C, Ho, Wo, out, argmax):
    """``max_pool`` for 2x2 windows with stride 2 and no padding (LeNet's): output pixel
    (oy, ox) is the largest of input pixels (2 oy, 2 ox), (2 oy, 2 ox + 1), (2 oy + 1, 2 ox)
    and (2 oy + 1, 2 ox + 1), the first largest in that order, or the first NaN, as
    ``max_pool`` chooses. No window is clipped (an odd last row or column is left out), so
    the four reads are straight-line code.

    The choice is made without branching on the values: the window's maximum, then the
    position by selects of integers (the first pixel equal to it, overridden by the first
    NaN), then the value read from there (so a -0.0 before a 0.0, or a NaN's own bits,
    come out as ``max_pool``'s). Choosing by comparing each pixel with the best so far, as
    ``max_pool`` does, made LLVM branch on every comparison, which mispredicts wherever
    the values are not ordered: on random numbers LeNet's first pooling (28x28x6, batch
    64) took 1.5-1.7 ms on one core against 0.49 so, 0.75-0.83 ms on two against
    0.33-0.35. On LeNet's own activations (57% zeros after the ReLU, predictable), in
    turn with the earlier code: 0.46-0.64 against 0.67-0.77 ms on one core, 0.35-0.38
    against 0.33-0.36 on two; the second pooling (10x10x16, which LLVM vectorised over
    the channels before) 0.10-0.23 against 0.09-0.19 ms. It compiles in 1.9-2.0 s of CPU
    against 2.0-2.4."""
    real = argmax.dtype.type
    for i in prange(out.shape[0]):
        for oy in range(Ho):
            for ox in range(Wo):
                top = (2 * oy * W + 2 * ox) * C  # window pixel (0, 0), channel 0
                bottom = top + W * C
                o = (oy * Wo + ox) * C
                for c in range(C):
                    a, b = x[i, top + c], x[i, top + C + c]
                    d, e = x[i, bottom + c], x[i, bottom + C + c]
                    largest = max(max(a, b), max(d, e))  # (NaN: decided below)
                    where = bottom + C + c  # the last pixel equal to it loses to earlier ones
                    where = bottom + c if d == largest else where
                    where = top + C + c if b == largest else where
                    where = top + c if a == largest else where
                    where = bottom + C + c if e != e else where  # the first NaN wins
                    where = bottom + c if d != d else where
                    where = top + C + c if b != b else where
                    where = top + c if a != a else where
                    out[i, o + c] = x[i, where]
                    argmax[i, o + c] = real(where)


@parallel_kernel
def max_pool_vjp(argmax, upstream, out):
    """Each window's upstream to the input its forward chose: ``out[i, argmax[r, k]] +=
    upstream[i, k]``, ``argmax`` read by the row rule."""
    for i in prange(out.shape[0]):
        r = i * argmax.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = 0.0
        for k in range(upstream.shape[1]):
            out[i, int(argmax[r, k])] += upstream[i, k]


@parallel_kernel
def avg_pool(x, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """The mean of each window over kh * kw positions (padding counts as zeros), summed in
    the graph's dtype."""
    scale = out.dtype.type(1.0 / (kh * kw))
    for i in prange(out.shape[0]):
        for oy in range(Ho):
            top = max(oy * sh - ph, 0)
            bottom = min(oy * sh - ph + kh, H)
            for ox in range(Wo):
                left = max(ox * sw - pw, 0)
                right = min(ox * sw - pw + kw, W)
                o = (oy * Wo + ox) * C
                for c in range(C):
                    total = out.dtype.type(0)
                    for iy in range(top, bottom):
                        for ix in range(left, right):
                            total += x[i, (iy * W + ix) * C + c]
                    out[i, o + c] = total * scale


@parallel_kernel
def avg_pool_vjp(upstream, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, out):
    """Each window's upstream over kh * kw spread back to its positions."""
    scale = out.dtype.type(1.0 / (kh * kw))
    for i in prange(out.shape[0]):
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


# -- the article's one-channel MaxPooling, one map a row -------------------------------------


@inline
def _first_largest(best, where, value, at):
    """``(best, where)`` after one more window pixel ``value`` at ``at``: it wins when larger,
    or a NaN over a number (so the first largest, and the first NaN, stay). The test is
    bitwise, not ``or``/``and``: short-circuits compiled to branches that a new sample's
    values mispredict (28x28 map: 7.4 us a call on fresh data, 3.4 with selects)."""
    take = ((value > best) | (value != value)) & (best == best)
    return (value if take else best), (at if take else where)


@kernel
def max_pool_map(x, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, out, argmax):
    """``max_pool`` of one channel without threads (a parallel region costs ~2 us a call,
    more than the article's one-sample map takes): the same values, the same positions
    (the first largest in row-major order, a NaN winning), in ``out`` and ``argmax``.

    A 3x3 window inside the image (the article's pooling, all but the border windows) is
    straight-line code: each row's three pixels in order, then the three rows, which picks
    the same pixel as the scan in row-major order (a loop a window took 1.3x as long)."""
    real = argmax.dtype.type
    three = kh == 3 and kw == 3
    for i in range(out.shape[0]):
        row = x[i]
        for oy in range(Ho):
            top = oy * sh - ph
            for ox in range(Wo):
                left = ox * sw - pw
                if three and top >= 0 and top + 3 <= H and left >= 0 and left + 3 <= W:
                    p = top * W + left
                    q = p + W
                    r = q + W
                    b0, w0 = _first_largest(row[p], p, row[p + 1], p + 1)
                    b0, w0 = _first_largest(b0, w0, row[p + 2], p + 2)
                    b1, w1 = _first_largest(row[q], q, row[q + 1], q + 1)
                    b1, w1 = _first_largest(b1, w1, row[q + 2], q + 2)
                    b2, w2 = _first_largest(row[r], r, row[r + 1], r + 1)
                    b2, w2 = _first_largest(b2, w2, row[r + 2], r + 2)
                    b0, w0 = _first_largest(b0, w0, b1, w1)
                    best, where = _first_largest(b0, w0, b2, w2)
                else:  # clipped at the borders, or another size
                    first, bottom = max(top, 0), min(top + kh, H)
                    start, right = max(left, 0), min(left + kw, W)
                    best = x.dtype.type(-np.inf)
                    where = first * W + start
                    for iy in range(first, bottom):
                        for ix in range(start, right):
                            best, where = _first_largest(best, where, row[iy * W + ix],
                                                         iy * W + ix)
                out[i, oy * Wo + ox] = best
                argmax[i, oy * Wo + ox] = real(where)


@kernel
def max_pool_halves(x, H, W, Ho, Wo, scratch, out, argmax):
    """``max_pool_map`` of the article's usual pooling, 3x3 windows centred on every other
    pixel (size 3 or 2, stride 2) of a map of even width ``W = 2 * Wo``: the same values and
    positions, in loops that vectorise. A window row's three pixels are pixels 2k - 1, 2k
    and 2k + 1 of the map stored flat (k = iy * Wo + ox), so one loop over k takes every
    window row of the map at once; then each output row takes its two or three window rows
    (rows clipped at the top and bottom), in order. ``scratch`` is a row of ``2 * H * Wo``.
    28x28 -> 14x14: 1.0 us against 2.8 with a window at a time (fresh values each call)."""
    real = argmax.dtype.type
    n = H * Wo
    best = scratch[0, :n]  # each window row's first largest and where it is
    where = scratch[0, n:2 * n]
    for i in range(out.shape[0]):
        row = x[i]
        for k in range(1, n):
            b, w = _first_largest(row[2 * k - 1], real(2 * k - 1), row[2 * k], real(2 * k))
            best[k], where[k] = _first_largest(b, w, row[2 * k + 1], real(2 * k + 1))
        for iy in range(H):  # the first window of a map row starts at its first pixel
            k = iy * Wo
            best[k], where[k] = _first_largest(row[2 * k], real(2 * k), row[2 * k + 1],
                                               real(2 * k + 1))
        for oy in range(Ho):
            first, last = max(2 * oy - 1, 0), min(2 * oy + 1, H - 1)
            values = out[i, oy * Wo:(oy + 1) * Wo]
            places = argmax[i, oy * Wo:(oy + 1) * Wo]
            top, at = best[first * Wo:(first + 1) * Wo], where[first * Wo:(first + 1) * Wo]
            for ox in range(Wo):
                values[ox] = top[ox]
                places[ox] = at[ox]
            for r in range(first + 1, last + 1):
                below, at = best[r * Wo:(r + 1) * Wo], where[r * Wo:(r + 1) * Wo]
                for ox in range(Wo):
                    values[ox], places[ox] = _first_largest(values[ox], places[ox], below[ox],
                                                            at[ox])


@parallel_kernel
def max_pool_map_rows(x, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, out, argmax):
    """``max_pool_map`` of a batch, its rows on every thread: a batch of 64 28x28 maps in
    0.19 ms on one thread, where ``max_pool``'s branches took 0.61."""
    for i in prange(out.shape[0]):
        max_pool_map(x[i:i + 1], H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, out[i:i + 1],
                     argmax[i:i + 1])


@kernel
def max_pool_map_vjp(argmax, upstream, out):
    """``max_pool_vjp`` without threads: ``out[i, argmax[r, k]] += upstream[i, k]``,
    ``argmax`` read by the row rule."""
    for i in range(out.shape[0]):
        r = i * argmax.shape[0] // out.shape[0]
        for j in range(out.shape[1]):
            out[i, j] = 0.0
        for k in range(upstream.shape[1]):
            out[i, int(argmax[r, k])] += upstream[i, k]
