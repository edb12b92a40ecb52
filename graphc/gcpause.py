"""Python's cyclic garbage collector paused while compiling.

Tracing, the passes and IR building allocate many short-lived objects, so the collector
runs often during a compile; in a process that holds numpy, networkx, llvmlite (and
maybe torch or JAX) one of its full collections walks every live object -- measured
~30 ms, as much as the compile's own Python work.  Nothing a compile creates needs the
cycle collector (reference counting frees it), so it is paused and restored after.
"""
from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    """Disable the cyclic collector inside the block (restored even on error; nested
    uses and a collector the caller disabled are left alone)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
