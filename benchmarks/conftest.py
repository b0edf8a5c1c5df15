import os
from pathlib import Path

import numpy as np
import pytest

import tests.workers  # noqa: F401 (first: a Numba cache for each test process)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_arrays():
    from fastgraph.datasets import mnist

    directory = os.environ.get("FASTGRAPH_DATA") or REPO.parent / "shared" / "mnist"
    x_train, y_train, _, _ = mnist.load(directory)
    return mnist.features(x_train[:4096]), mnist.one_hot(y_train[:4096])


@pytest.fixture
def rng():
    return np.random.default_rng(0)
