# make test: a venv from nothing, the project installed with its dev tools, the tests run.
# make train: the same venv, then the article's MNIST network trained on the CPU.
# make bench: the pytest-benchmark suite. make compare: fastgraph against NumPy, PyTorch, JAX.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_MNIST := $(abspath ../shared/mnist)
export FASTGRAPH_DATA ?= $(if $(wildcard $(SHARED_MNIST)/*.gz),$(SHARED_MNIST),)

.PHONY: test train bench compare lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: $(BIN)/.installed
	$(BIN)/ruff check fastgraph tests benchmarks examples
	$(BIN)/python -m pytest -q -n 2 tests benchmarks --benchmark-disable

train: $(BIN)/.installed
	$(BIN)/fastgraph train mnist

bench: $(BIN)/.installed
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,rounds

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

compare: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.compare --profile

lint: $(BIN)/.installed
	$(BIN)/ruff check fastgraph tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
