"""A Numba cache of its own for each process of a parallel test run (``pytest -n 2``, as
``make test`` runs the suite): imported by the conftest files before anything imports Numba.

Numba's cache beside the sources is safe for one process at a time, and for processes that
compile different functions (``fastgraph.kernels.ahead``); two test processes would compile
signatures of the same kernels at once, and two processes that add signatures of one
function to a cache at once can number their files alike, one serving the other's machine
code. So each worker (``PYTEST_XDIST_WORKER``: gw0, gw1) keeps its cache in
``.numba-workers/<worker>`` of the checkout, which later runs find warm; a test that wants an
empty cache, or a cache directory of its own, sets ``NUMBA_CACHE_DIR`` itself, as before.
A run in one process keeps the cache beside the sources."""

import os
from pathlib import Path

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(
        Path(__file__).resolve().parent.parent / ".numba-workers" / _WORKER)
