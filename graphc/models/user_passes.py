"""``--pass FILE.py:FUNCTION[:AFTER]``: a user's pass inserted into the step pipeline.

``FUNCTION(graph) -> graph`` (or ``FUNCTION(graph, ctx)``, or returning
``(graph, changed)``) from a Python file or an importable module.  It runs after the
pass named ``AFTER`` (default: last of the graph passes, before ``fusion``).  The
references are plain strings, so a training config (and its checkpoints) can record them.
"""
from __future__ import annotations

import importlib
import os

from ..ir import GraphcError
from ..passes.pipeline import Pass, Pipeline
from .user import import_file


def load_pass(ref: str) -> tuple[Pass, str | None]:
    """(the pass, the pass it goes after) for ``FILE.py:FUNCTION[:AFTER]``."""
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise GraphcError(f"--pass takes FILE.py:FUNCTION or FILE.py:FUNCTION:AFTER, got "
                          f"{ref!r}")
    where, name = parts[0], parts[1]
    after = parts[2] if len(parts) == 3 else None
    if where.endswith(".py") or os.sep in where:
        try:
            module = import_file(where)
        except GraphcError:              # already says which file and why
            raise
        except Exception as e:                   # the user's file failed to import
            raise GraphcError(f"--pass {ref}: importing {where} failed: "
                              f"{type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise GraphcError(f"--pass {ref}: cannot import module {where!r} ({e})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise GraphcError(f"--pass {ref}: {where} has no function {name!r}")
    return Pass.wrap(fn, name), after


def edit(refs) -> object:
    """``passes=`` for compile_step: the default pipeline with the user's passes added
    (None when there are none)."""
    refs = list(refs or ())
    if not refs:
        return None
    loaded = [load_pass(r) for r in refs]

    def apply(p: Pipeline) -> Pipeline:
        for ps, after in loaded:
            if after is not None:
                p = p.insert_after(after, ps)
            elif "fusion" in p.names():
                p = p.insert_before("fusion", ps)
            else:
                p = p.append(ps)
        return p
    return apply
