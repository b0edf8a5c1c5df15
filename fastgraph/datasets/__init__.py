"""Datasets the examples and the trainer use.

``mnist`` is imported on first use (``fastgraph.datasets.mnist``), so that feeding batches
does not load its downloader."""

import importlib

from .batches import Batches

__all__ = ["Batches", "mnist"]


def __getattr__(name):
    if name == "mnist":
        return importlib.import_module(f"{__name__}.mnist")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
