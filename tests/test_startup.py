"""Start-up: what ``import fastgraph`` loads, the modules it imports on first use, and
Numba's BLAS probe skipped (fastgraph/__init__.py, datasets/__init__.py,
kernels/__init__.py). Each check runs in a fresh interpreter, since this process has
imported everything already. Speed itself is measured by ``python -m benchmarks.startup``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Modules a training step does not need, which ``import fastgraph`` must not load.
NOT_ON_IMPORT = ("urllib.request", "http.client", "tqdm", "matplotlib", "scipy.linalg",
                 "fastgraph.datasets", "fastgraph.datasets.mnist", "fastgraph.trainer",
                 "fastgraph.saver", "fastgraph.viz", "fastgraph.profiler", "fastgraph.cli",
                 "fastgraph.distributed", "numba.np.arraymath")

MLP_STEP = """
import numpy as np
model = fg.models.mlp(seed=0)
optimizer = fg.optimizer.Adam(model.graph, model.loss)
model.x.set_value(np.zeros((64, 784), np.float32))
model.one_hot.set_value(np.eye(10, dtype=np.float32)[np.arange(64) % 10])
optimizer.one_step()
optimizer.update()
"""


def fresh(code):
    """Run ``code`` in a new interpreter; the JSON it prints last."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_loads_no_downloader_progress_bar_plots_or_numba_compiler_registries():
    loaded = fresh(f"""
import json, sys
import fastgraph
print(json.dumps([name for name in {NOT_ON_IMPORT!r} if name in sys.modules]))
""")
    assert loaded == []


def test_import_makes_no_numba_dispatcher():
    made = fresh("""
import json
from fastgraph.kernels import Kernel, elementwise, optimizers, softmax
kernels = [k for m in (elementwise, optimizers, softmax) for k in vars(m).values()
           if isinstance(k, Kernel)]
print(json.dumps([len(kernels), sum("dispatcher" in vars(k) for k in kernels)]))
""")
    assert made[0] > 30 and made[1] == 0


def test_names_imported_on_first_use_resolve():
    found = fresh("""
import json
import fastgraph as fg
found = [fg.datasets.Batches.__name__, fg.datasets.mnist.load.__name__,
         fg.trainer.SimpleTrainer.__name__, fg.trainer.Saver.__name__, fg.saver.save.__name__,
         fg.viz.__name__, fg.profiler.__name__, fg.metrics.__name__, fg.model.__name__,
         fg.core.Variable is fg.Variable, fg.ops.loss.CrossEntropyWithSoftMax.__name__,
         fg.layer.fc.__name__, fg.optimizer.Adam.__name__, fg.models.mlp.__name__]
from fastgraph import trainer, saver
import fastgraph.article_trainer, fastgraph.core
from fastgraph.datasets import mnist
found += [trainer is fg.trainer, saver is fg.saver, mnist is fg.datasets.mnist,
          all(name in dir(fg) for name in fg.__all__), "default_graph" in dir(fg),
          isinstance(fg.default_graph, fg.Graph)]
print(json.dumps(found))
""")
    assert found == ["Batches", "load", "SimpleTrainer", "Saver", "save", "fastgraph.viz",
                     "fastgraph.profiler", "fastgraph.metrics", "fastgraph.model", True,
                     "CrossEntropyWithSoftMax", "fc", "Adam", "mlp"] + [True] * 6


def test_star_import_gives_every_public_name():
    names = fresh("""
import json
from fastgraph import *
print(json.dumps(sorted(k for k in dir() if not k.startswith("_"))))
""")
    import fastgraph
    assert names == sorted(set(fastgraph.__all__) | {"json"})


@pytest.mark.parametrize("code, message", [
    ("import fastgraph; fastgraph.datasetz", "module 'fastgraph' has no attribute 'datasetz'"),
    ("import fastgraph.datasets as d; d.mnistt",
     "module 'fastgraph.datasets' has no attribute 'mnistt'"),
])
def test_unknown_names_raise_attribute_error(code, message):
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ,
                            "PYTHONPATH": str(REPO)}, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and f"AttributeError: {message}" in result.stderr


def test_first_step_skips_numba_blas_probe_and_numba_linear_algebra_still_works():
    figures = fresh(f"""
import json, sys
import fastgraph as fg
{MLP_STEP}
before = "scipy.linalg" in sys.modules
import importlib.util
import numba
import numpy as np
from numba.np import arraymath

@numba.njit
def dot(a, b):
    return np.dot(a, b), np.correlate(a, b)[0]

scipy = importlib.util.find_spec("scipy") is not None
try:  # Numba's linear algebra needs scipy, with or without the probe
    products = [float(x) for x in dot(np.arange(3.0), np.arange(3.0))]
except Exception as error:
    products = type(error).__name__ + ": " + str(error).splitlines()[0]
print(json.dumps([before, arraymath._HAVE_BLAS, scipy, products,
                  bool(np.isfinite(model.loss.flat).all())]))
""")
    scipy_linalg_before, have_blas, scipy_installed, products, stepped = figures
    assert not scipy_linalg_before and stepped
    assert have_blas == scipy_installed  # the answer the probe would have given
    if scipy_installed:
        assert products == [5.0, 5.0]
    else:  # what Numba says without scipy, probe or not
        assert "scipy 0.16+ is required for linear algebra" in products, products


def test_probe_runs_as_usual_when_scipy_linalg_is_imported_first():
    pytest.importorskip("scipy.linalg")
    figures = fresh(f"""
import json, sys
import scipy.linalg
import fastgraph as fg
{MLP_STEP}
from numba.np import arraymath
print(json.dumps([arraymath._HAVE_BLAS]))
""")
    assert figures == [True]


def test_the_finder_refuses_scipy_linalg_to_numbas_probe_only():
    from fastgraph.kernels import _NoScipyLinalg

    assert _NoScipyLinalg.find_spec("scipy.linalg") is None  # any other caller
    assert _NoScipyLinalg.find_spec("numpy") is None

    namespace = {"__name__": "numba.np.arraymath", "finder": _NoScipyLinalg}
    exec("def _check_blas():\n    return finder.find_spec('scipy.linalg.cython_blas')",
         namespace)
    with pytest.raises(ModuleNotFoundError, match="scipy.linalg.cython_blas"):
        namespace["_check_blas"]()


@pytest.mark.compiled
def test_a_first_step_compiles_address_of_for_the_recordings_matrices_only():
    """A pass's header and the graph's settling header read their arrays' addresses from
    NumPy (``program.located``): the compiled ``address_of`` is a function to compile for
    every array type it is given (about 70 ms each on an empty cache), and the MLP's first
    step gives it only the float32 matrices its recording reads (five types before)."""
    signatures = fresh(f"""
import json
import fastgraph as fg
from fastgraph.kernels import program
{MLP_STEP}
print(json.dumps([bool(np.isfinite(model.loss.flat).all())]
                 + [str(types) for types in program.address_of.signatures]))
""")
    assert signatures == [True, "(Array(float32, 2, 'C', False, aligned=True),)"]
