"""Optimizer updates: one call updates every parameter, in one fused pass over each.

The arguments are tuples of arrays: weights, gradient sums and state, one of each per
parameter, as ``(1, n)`` flat views. Each rule is an element function, inlined into a loop
that runs on every core (``prange``) for a large parameter, whose update is bound by memory
traffic that one core does not saturate, and on one core for a small one, for which
starting the threads (about 2 us) would cost more than the update. ``c`` holds the
scalars, in the parameters' dtype, so a float32 model updates in float32 arithmetic
(promoting to float64 would make the division and square root several times slower);
``c[0]`` is 1 / samples, which turns the gradient sums into means on the fly. The rules
and their defaults follow the formulas that PyTorch's ``torch.optim`` documents; RMSProp and
Adam also take an eps inside the square root, for the article's form of the rules.
"""

import numpy as np
from numba import prange

from . import inline, parallel_kernel

PARALLEL_MIN = 16384  # elements from which a parameter is updated on every core


@inline
def _gradient_descent(w, gradient, j, c):  # c = (1 / samples, learning rate)
    w[0, j] -= c[1] * c[0] * gradient[0, j]


@parallel_kernel
def gradient_descent(weights, gradients, c):
    for p in range(len(weights)):
        w, gradient = weights[p], gradients[p]
        if w.shape[1] >= PARALLEL_MIN:
            for j in prange(w.shape[1]):
                _gradient_descent(w, gradient, j, c)
        else:
            for j in range(w.shape[1]):
                _gradient_descent(w, gradient, j, c)


@inline
def _momentum(w, gradient, velocity, j, c):  # c = (1 / samples, learning rate, mu)
    v = c[2] * velocity[0, j] + gradient[0, j] * c[0]
    velocity[0, j] = v
    w[0, j] -= c[1] * v


@parallel_kernel
def momentum(weights, gradients, velocities, c):
    for p in range(len(weights)):
        w, gradient, velocity = weights[p], gradients[p], velocities[p]
        if w.shape[1] >= PARALLEL_MIN:
            for j in prange(w.shape[1]):
                _momentum(w, gradient, velocity, j, c)
        else:
            for j in range(w.shape[1]):
                _momentum(w, gradient, velocity, j, c)


@inline
def _adagrad(w, gradient, square_sum, j, c):  # c = (1 / samples, learning rate, eps)
    g = gradient[0, j] * c[0]
    s = square_sum[0, j] + g * g
    square_sum[0, j] = s
    w[0, j] -= c[1] * g / (np.sqrt(s) + c[2])


@parallel_kernel
def adagrad(weights, gradients, square_sums, c):
    for p in range(len(weights)):
        w, gradient, square_sum = weights[p], gradients[p], square_sums[p]
        if w.shape[1] >= PARALLEL_MIN:
            for j in prange(w.shape[1]):
                _adagrad(w, gradient, square_sum, j, c)
        else:
            for j in range(w.shape[1]):
                _adagrad(w, gradient, square_sum, j, c)


@inline
def _rmsprop(w, gradient, square_avg, j, c):
    # c = (1 / samples, learning rate, beta, 1 - beta, eps, eps inside the square root):
    # torch's eps is added to sqrt(s) (c[5] = 0), the article's inside it (c[4] = 0)
    g = gradient[0, j] * c[0]
    s = c[2] * square_avg[0, j] + c[3] * g * g
    square_avg[0, j] = s
    w[0, j] -= c[1] * g / (np.sqrt(s + c[5]) + c[4])


@parallel_kernel
def rmsprop(weights, gradients, square_avgs, c):
    for p in range(len(weights)):
        w, gradient, square_avg = weights[p], gradients[p], square_avgs[p]
        if w.shape[1] >= PARALLEL_MIN:
            for j in prange(w.shape[1]):
                _rmsprop(w, gradient, square_avg, j, c)
        else:
            for j in range(w.shape[1]):
                _rmsprop(w, gradient, square_avg, j, c)


@inline
def _adam(w, gradient, m, v, j, c):
    # c = (1 / samples, step size = lr / (1 - beta_1^t), beta_1, 1 - beta_1, beta_2,
    #      1 - beta_2, 1 / sqrt(1 - beta_2^t), eps, eps inside the square root): torch's
    #      eps is added after the square root (c[8] = 0), the article's inside it (c[7] = 0)
    g = gradient[0, j] * c[0]
    mi = c[2] * m[0, j] + c[3] * g
    vi = c[4] * v[0, j] + c[5] * g * g
    m[0, j] = mi
    v[0, j] = vi
    w[0, j] -= c[1] * mi / (np.sqrt(vi + c[8]) * c[6] + c[7])


@parallel_kernel
def adam(weights, gradients, ms, vs, c):
    """m and v as torch.optim.Adam; w -= step m / (sqrt(v) / sqrt(1 - beta_2^t) + eps)."""
    for p in range(len(weights)):
        w, gradient, m, v = weights[p], gradients[p], ms[p], vs[p]
        if w.shape[1] >= PARALLEL_MIN:
            for j in prange(w.shape[1]):
                _adam(w, gradient, m, v, j, c)
        else:
            for j in range(w.shape[1]):
                _adam(w, gradient, m, v, j, c)
