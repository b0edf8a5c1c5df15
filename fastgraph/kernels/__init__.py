"""Numba kernels, grouped by operator family. They take and fill arrays; none knows a node.

Every kernel is compiled lazily on first use and cached on disk (``cache=True``), so an
import compiles nothing and a second process loads machine code instead of compiling.
Batched arrays are ``(B, n)`` matrices; an argument with a single row broadcasts over the
batch (a parameter beside a batch of samples).
"""
