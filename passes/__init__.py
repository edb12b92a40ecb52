"""graphc.passes -- pure functions over the IR (Graph -> Graph, or Graph -> report).

A pass never imports a backend.  Each returns a new graph (the input is left untouched).
:class:`Pipeline` (``pipeline.py``) runs named passes in order with ``graphc.ir.verify``
after each; ``standard.py`` holds the pipelines ``gc.compile_step`` and ``gc.jit`` run
(and that ``passes=`` edits).
"""
from .pipeline import Pass, PassContext, PassError, Pipeline  # noqa: F401

