"""Importing this package registers every op (one module per family)."""
from . import elementwise, index, linalg, random, reduce, shape, source, checks, window, attention  # noqa: F401,I001
