"""Datasets the examples and the trainer use."""

from . import mnist
from .batches import Batches

__all__ = ["Batches", "mnist"]
