"""Optimizer updates: one fused pass over a parameter, its summed gradient and its state.

``gradient`` is the sum over the samples accumulated since the last update; ``scale`` is
1 / samples, so the mean is never materialised. The rules and their defaults follow the
formulas that PyTorch's ``torch.optim`` documents.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def gradient_descent(weight, gradient, scale, learning_rate):
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            weight[i, j] -= learning_rate * gradient[i, j] * scale


@njit(cache=True)
def momentum(weight, gradient, scale, velocity, learning_rate, mu):
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            v = mu * velocity[i, j] + gradient[i, j] * scale
            velocity[i, j] = v
            weight[i, j] -= learning_rate * v


@njit(cache=True)
def adagrad(weight, gradient, scale, square_sum, learning_rate, eps):
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            g = gradient[i, j] * scale
            s = square_sum[i, j] + g * g
            square_sum[i, j] = s
            weight[i, j] -= learning_rate * g / (np.sqrt(s) + eps)


@njit(cache=True)
def rmsprop(weight, gradient, scale, square_avg, learning_rate, beta, eps):
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            g = gradient[i, j] * scale
            s = beta * square_avg[i, j] + (1.0 - beta) * g * g
            square_avg[i, j] = s
            weight[i, j] -= learning_rate * g / (np.sqrt(s) + eps)


@njit(cache=True)
def adam(weight, gradient, scale, m, v, learning_rate, beta_1, beta_2, eps, step):
    step_size = learning_rate / (1.0 - beta_1**step)
    root_correction = np.sqrt(1.0 - beta_2**step)
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            g = gradient[i, j] * scale
            mi = beta_1 * m[i, j] + (1.0 - beta_1) * g
            vi = beta_2 * v[i, j] + (1.0 - beta_2) * g * g
            m[i, j] = mi
            v[i, j] = vi
            weight[i, j] -= step_size * mi / (np.sqrt(vi) / root_correction + eps)
