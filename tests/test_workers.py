"""The parallel test run's processes each compile into a Numba cache of their own (see
tests/workers.py): two processes adding signatures of one kernel to one cache at once could
serve each other's machine code."""

import os

import numpy as np
import pytest


def test_a_parallel_test_process_has_a_numba_cache_of_its_own():
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        pytest.skip("a run in one process keeps the cache beside the sources")
    import numba

    assert numba.config.CACHE_DIR.endswith(os.path.join(".numba-workers", worker))
    from fastgraph.kernels import elementwise

    elementwise.fill(np.zeros((2, 2)), 1.0)  # compiled or loaded: its files
    index = [name for _, _, names in os.walk(numba.config.CACHE_DIR) for name in names
             if name.startswith("elementwise.fill") and name.endswith(".nbi")]
    assert index  # are in this worker's cache
