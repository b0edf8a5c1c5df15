"""Datasets the examples and the trainer use."""

from . import mnist

__all__ = ["mnist"]
