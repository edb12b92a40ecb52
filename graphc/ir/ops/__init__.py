"""Importing this package registers every op (one module per family)."""
from . import elementwise, linalg, reduce, shape, source, checks  # noqa: F401,I001
