"""A rule's states that decay below the smallest normal float32 are stored as zero (kernels
.optimizers.TINY): subnormal numbers made the MLP's Adam update twice as slow, and a state
that small moves no weight. NaN and infinity are kept."""

import numpy as np
import pytest

from fastgraph.kernels import optimizers as rules

TINY = np.finfo(np.float32).tiny


def _run(rule, dtype, state, gradient, coefficients, states=1):
    weights = np.ones(state.size, dtype)
    table = np.array([[weights.ctypes.data, 0, state.size]], np.int64)
    arrays = [state.astype(dtype)] + [np.full(state.size, 1e-4, dtype)] * (states - 1)
    for form in (rule.one_core, rule.every_core):  # the same numbers on either
        kept = [array.copy() for array in arrays]
        form(table, gradient.astype(dtype), *kept, np.array(coefficients, dtype))
        yield kept[0]


#: (rule, its coefficients, the number of state arrays, the state's decay)
RULES = {
    "momentum": (rules.momentum, (1.0, 0.1, 0.9), 1),
    "rmsprop": (rules.rmsprop, (1.0, 0.1, 0.99, 0.01, 1e-8, 0.0), 1),
    "adam": (rules.adam, (1.0, 0.1, 0.9, 0.1, 0.999, 0.001, 1.0, 1e-8, 0.0), 2),
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_state_below_the_smallest_normal_float32_is_stored_as_zero(name, dtype):
    rule, coefficients, states = RULES[name]
    decay = coefficients[2]
    state = np.array([TINY * 1.01, TINY * 1.5 / decay, 1e-3, np.nan, np.inf, -TINY * 1.01,
                      TINY / 4])
    for after in _run(rule, dtype, state, np.zeros(state.size), coefficients, states):
        assert after[0] == 0 and after[5] == 0 and after[6] == 0  # decayed below: zero
        assert after[1] == pytest.approx(TINY * 1.5, rel=1e-6, abs=0)  # still normal: kept
        assert after[2] == pytest.approx(decay * 1e-3, rel=1e-6)
        assert np.isnan(after[3]) and after[4] == np.inf
