"""Optimizer updates: one call updates every parameter, one fused pass over each.

Parameters arrive as their ``(1, n)`` flat views, so the ``prange`` over columns splits
each parameter across the cores.

The arguments are tuples of arrays: weights, gradient sums and state, one of each per
parameter (one call instead of one per parameter saves the dispatch cost, which for a
small bias is most of its update). ``c`` holds the scalars, in the parameters' dtype, so
a float32 model updates in float32 arithmetic: promoting to float64 would make the
division and square root several times slower. ``c[0]`` is 1 / samples, which turns the
gradient sums into means on the fly. The rules and their defaults follow the formulas that
PyTorch's ``torch.optim`` documents.
"""

import numpy as np
from numba import prange

from . import parallel_kernel


@parallel_kernel
def gradient_descent(weights, gradients, c):
    step = c[1] * c[0]  # learning_rate / samples
    for p in range(len(weights)):
        w, g = weights[p], gradients[p]
        for i in range(w.shape[0]):
            for j in prange(w.shape[1]):
                w[i, j] -= step * g[i, j]


@parallel_kernel
def momentum(weights, gradients, velocities, c):
    scale, learning_rate, mu = c[0], c[1], c[2]
    for p in range(len(weights)):
        w, g, velocity = weights[p], gradients[p], velocities[p]
        for i in range(w.shape[0]):
            for j in prange(w.shape[1]):
                v = mu * velocity[i, j] + g[i, j] * scale
                velocity[i, j] = v
                w[i, j] -= learning_rate * v


@parallel_kernel
def adagrad(weights, gradients, square_sums, c):
    scale, learning_rate, eps = c[0], c[1], c[2]
    for p in range(len(weights)):
        w, gradient, square_sum = weights[p], gradients[p], square_sums[p]
        for i in range(w.shape[0]):
            for j in prange(w.shape[1]):
                g = gradient[i, j] * scale
                s = square_sum[i, j] + g * g
                square_sum[i, j] = s
                w[i, j] -= learning_rate * g / (np.sqrt(s) + eps)


@parallel_kernel
def rmsprop(weights, gradients, square_avgs, c):
    scale, learning_rate, beta, one_minus_beta, eps = c[0], c[1], c[2], c[3], c[4]
    for p in range(len(weights)):
        w, gradient, square_avg = weights[p], gradients[p], square_avgs[p]
        for i in range(w.shape[0]):
            for j in prange(w.shape[1]):
                g = gradient[i, j] * scale
                s = beta * square_avg[i, j] + one_minus_beta * g * g
                square_avg[i, j] = s
                w[i, j] -= learning_rate * g / (np.sqrt(s) + eps)


@parallel_kernel
def adam(weights, gradients, ms, vs, c):
    """m, v as torch.optim.Adam; w -= step_size m / (sqrt(v) / sqrt(1 - beta_2^t) + eps).

    c = (1 / samples, step_size = lr / (1 - beta_1^t), beta_1, 1 - beta_1, beta_2,
    1 - beta_2, 1 / sqrt(1 - beta_2^t), eps).
    """
    scale, step_size, beta_1, one_minus_beta_1 = c[0], c[1], c[2], c[3]
    beta_2, one_minus_beta_2, inverse_root_correction, eps = c[4], c[5], c[6], c[7]
    for p in range(len(weights)):
        w, gradient, m, v = weights[p], gradients[p], ms[p], vs[p]
        for i in range(w.shape[0]):
            for j in prange(w.shape[1]):
                g = gradient[i, j] * scale
                mi = beta_1 * m[i, j] + one_minus_beta_1 * g
                vi = beta_2 * v[i, j] + one_minus_beta_2 * g * g
                m[i, j] = mi
                v[i, j] = vi
                w[i, j] -= step_size * mi / (np.sqrt(vi) * inverse_root_correction + eps)
