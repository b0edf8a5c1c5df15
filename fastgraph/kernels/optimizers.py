"""Optimizer updates: one fused pass over a parameter, its summed gradient and its state.

``gradient`` is the sum over the samples accumulated since the last update; ``scale`` is
1 / samples, so the mean is never materialised. The rules and their defaults follow the
formulas that PyTorch's ``torch.optim`` documents. Callers pass every scalar in the
parameter's dtype, so a float32 model updates in float32 arithmetic: promoting to float64
would make the division and square root several times slower.
"""

import numpy as np

from . import fast_kernel


@fast_kernel
def gradient_descent(weight, gradient, scale, learning_rate):
    step = learning_rate * scale
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            weight[i, j] -= step * gradient[i, j]


@fast_kernel
def momentum(weight, gradient, scale, velocity, learning_rate, mu):
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            v = mu * velocity[i, j] + gradient[i, j] * scale
            velocity[i, j] = v
            weight[i, j] -= learning_rate * v


@fast_kernel
def adagrad(weight, gradient, scale, square_sum, learning_rate, eps):
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            g = gradient[i, j] * scale
            s = square_sum[i, j] + g * g
            square_sum[i, j] = s
            weight[i, j] -= learning_rate * g / (np.sqrt(s) + eps)


@fast_kernel
def rmsprop(weight, gradient, scale, square_avg, learning_rate, beta, one_minus_beta, eps):
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            g = gradient[i, j] * scale
            s = beta * square_avg[i, j] + one_minus_beta * g * g
            square_avg[i, j] = s
            weight[i, j] -= learning_rate * g / (np.sqrt(s) + eps)


@fast_kernel
def adam(weight, gradient, scale, m, v, step_size, beta_1, one_minus_beta_1, beta_2,
         one_minus_beta_2, inverse_root_correction, eps):
    """m and v as torch.optim.Adam; w -= step_size m / (sqrt(v) / sqrt(1 - beta_2^t) + eps)."""
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            g = gradient[i, j] * scale
            mi = beta_1 * m[i, j] + one_minus_beta_1 * g
            vi = beta_2 * v[i, j] + one_minus_beta_2 * g * g
            m[i, j] = mi
            v[i, j] = vi
            weight[i, j] -= step_size * mi / (np.sqrt(vi) * inverse_root_correction + eps)
