"""Find the user's source line that is executing (for node provenance and error messages)."""
from __future__ import annotations

import linecache
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIP = tuple(os.path.join(p, "") for p in (
    _HERE, os.path.join(os.path.dirname(_HERE), "passes"),
    os.path.join(os.path.dirname(_HERE), "backends"),
    os.path.dirname(os.path.abspath(np.__file__))))


# Built-in model definitions and layer forwards are the "user code" of `graphc train mlp`:
# their lines are what a node's provenance should name (the Linear's matmul vs its bias
# add vs the activation), not the CLI or runpy that called them.
_MODELS = (os.path.join(_HERE, "models", ""), os.path.join(_HERE, "nn", "layers.py"))


def user_frame():
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if fn.startswith(_MODELS) or not (fn.startswith(_SKIP)
                                          or fn.startswith("<__array_function__")):
            return f
        f = f.f_back
    return None


def user_source() -> str | None:
    """``file.py:12`` of the innermost frame outside graphc and numpy."""
    f = user_frame()
    if f is None:
        return None
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


def describe(source: str | None) -> str:
    """``file.py:12`` plus the line's text, for error messages."""
    if not source:
        return "<unknown source>"
    f = user_frame()
    if f is not None and source == f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}":
        text = linecache.getline(f.f_code.co_filename, f.f_lineno).strip()
        if text:
            return f"{source}: {text}"
    return source
