"""Defaults of the code generator's switches that the graph key covers.

The switches themselves are module globals of the code generator (tests patch them
there: ``module.COLD_ELEMENTS``, ``window_rows.ENABLED``, ``window_pool.ENABLED``, ``dot.ENABLED``,
``conv_fused.ENABLED``);
their defaults live here, so that :func:`graphc.backends.llvm.graph_key` can read them
without importing the code generator (llvmlite.ir and ~20 modules: a disk-cache hit
never builds IR).  A switch's value is its module's when that module is loaded (maybe
patched), else the default below -- the same value, so the same key.
"""
from __future__ import annotations

import sys

#: loop kernels over at most this many elements are cold (``module.is_cold``)
COLD_ELEMENTS = 1024
#: window kernels as vector rows (``window_rows``, ``window_pool``)
WINDOW_ROWS = True
WINDOW_POOL = True
#: weight gradients with a narrow output as dot products (``dot``), fused im2col /
#: col2im GEMMs (``conv_fused``)
DOT = True
CONV_FUSED = True

_PKG = __name__.rsplit(".", 1)[0]
_SWITCHES = (("module", "COLD_ELEMENTS", COLD_ELEMENTS),
             ("window_rows", "ENABLED", WINDOW_ROWS),
             ("window_pool", "ENABLED", WINDOW_POOL),
             ("dot", "ENABLED", DOT),
             ("conv_fused", "ENABLED", CONV_FUSED))


def key_values() -> tuple:
    """The switches' values now, for the graph key (and the layout stage's: its
    ``FORCE`` and ``COSTS``, "default" while they are, so that the key is the same
    whether or not ``plan.layout`` is loaded)."""
    out = []
    for mod, attr, default in _SWITCHES:
        m = sys.modules.get(f"{_PKG}.{mod}")
        out.append(getattr(m, attr) if m is not None else default)
    lay = sys.modules.get(_PKG.rsplit(".", 1)[0] + ".plan.layout")
    if lay is None:
        out += ["default", None]
    else:
        out += ["default" if lay.COSTS == lay.LayoutCosts() else repr(lay.COSTS), lay.FORCE]
    return tuple(out)
