import os
from pathlib import Path

import tests.workers  # noqa: F401 (first: a Numba cache for each test process)

# One thread unless the run asks otherwise: the thread chooser (fastgraph.threads) decides
# from timings, and a few products (LeNet-5's first convolution) differ in their last bits
# between thread counts, so tests that compare two runs bit for bit would depend on the
# load. tests/test_threads.py sets the counts it tests itself.
os.environ.setdefault("FASTGRAPH_THREADS", "1")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir():
    """A folder of the four gzipped MNIST files, found as the library finds them
    ($FASTGRAPH_DATA, then the cache), or ../shared/mnist (where the project keeps them),
    else downloaded into the cache as ``mnist.load`` would: ``make test`` needs only
    python3 and the package index, as ``make train`` does."""
    from fastgraph.datasets import mnist as dataset

    places = [Path(os.environ["FASTGRAPH_DATA"])] if os.environ.get("FASTGRAPH_DATA") else []
    places += [REPO.parent / "shared" / "mnist", dataset.cache_dir()]
    for place in places:
        if all((place / f"{name}.gz").is_file() for name in dataset.FILES):
            return place
    try:
        return dataset.fetch(searched=places)
    except dataset.DatasetError as error:
        pytest.fail(f"the tests need MNIST: {error}")


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from fastgraph.datasets import mnist as dataset

    return dataset.load(mnist_dir, download=False)


@pytest.fixture
def recordings(monkeypatch):
    """The compiled passes recorded from now on: a list that grows by one per recording."""
    from fastgraph.engines import compiled

    recorded = []

    class Counting(compiled.Pass):
        def __init__(self, *args, **kwargs):
            recorded.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(compiled, "Pass", Counting)
    return recorded


@pytest.fixture
def rng():
    return np.random.default_rng(20261130)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "compiled: a test of compiled code (the compiled executor, or BLAS called "
        "from kernels): run on the compiled executor whatever FASTGRAPH_EXECUTOR says, skipped "
        "with FASTGRAPH_BLAS=numpy (whose kernels are plain Python and which runs the walker)")


@pytest.fixture(autouse=True)
def _compiled_code(request, monkeypatch):
    """What the ``compiled`` marker asks for, so that the whole suite also runs with either
    fallback set (``FASTGRAPH_EXECUTOR=python``, ``FASTGRAPH_BLAS=numpy``)."""
    if request.node.get_closest_marker("compiled") is None:
        return
    from fastgraph.kernels import blas

    if blas.BACKEND == "numpy":
        pytest.skip("FASTGRAPH_BLAS=numpy runs no compiled code")
    monkeypatch.setenv("FASTGRAPH_EXECUTOR", "compiled")
