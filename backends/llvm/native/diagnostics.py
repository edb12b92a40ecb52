"""LLVM's diagnostics -- the remarks and warnings it prints on file descriptor 2 while
it optimises -- kept off the user's terminal and counted.

llvmlite installs no diagnostic handler, so LLVM writes, say, a forced vectorization it
could not do (``warning: <unknown>:0:0: loop not vectorized: ...``) straight to fd 2, in
the middle of a user's training output.  graphc forces vectorization only where it
expects it to succeed, so such a line is a code-generator bug to find (the differential
fuzzer fails a case whose compile produced one), not something to show the user.

:func:`collected` redirects fd 2 into a temporary file while LLVM runs (re-entrant and
shared by the threads that compile a module's parts at once); when the last one leaves,
LLVM's lines are counted in :data:`COUNTS` and kept in :data:`LAST`, and anything else
written to fd 2 meanwhile is written back unchanged.  LLVM errors are always shown.
``GRAPHC_LLVM_DIAGNOSTICS=show`` leaves fd 2 alone (LLVM prints as it goes).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading

#: lines LLVM printed: all of them, and failed (forced) loop vectorizations
COUNTS = {"llvm": 0, "missed_vectorization": 0}
#: the most recent LLVM lines (at most :data:`KEEP`), oldest first
LAST: list[str] = []
KEEP = 50

_LLVM_LINE = re.compile(r"^(remark|warning|error|note): ")
_LOCK = threading.Lock()
_state = {"depth": 0, "saved": None, "file": None}


def _showing() -> bool:
    return os.environ.get("GRAPHC_LLVM_DIAGNOSTICS", "").lower() == "show"


@contextlib.contextmanager
def collected():
    """Run the body with fd 2 captured (see the module docstring)."""
    if _showing():
        yield
        return
    with _LOCK:
        if _state["depth"] == 0:
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError, OSError):
                pass
            f = tempfile.TemporaryFile()
            _state["saved"], _state["file"] = os.dup(2), f
            os.dup2(f.fileno(), 2)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                saved, f = _state["saved"], _state["file"]
                os.dup2(saved, 2)
                os.close(saved)
                f.seek(0)
                text = f.read().decode("utf-8", "replace")
                f.close()
                _sort(text)


def _sort(text: str) -> None:
    """Count LLVM's lines; write everything else (and LLVM's errors) back to fd 2."""
    other = []
    for line in text.splitlines(keepends=True):
        if _LLVM_LINE.match(line):
            COUNTS["llvm"] += 1
            if "loop not vectorized" in line:
                COUNTS["missed_vectorization"] += 1
            LAST.append(line.rstrip("\n"))
            del LAST[:-KEEP]
            if not line.startswith("error"):
                continue
        other.append(line)
    data = "".join(other).encode()
    while data:
        data = data[os.write(2, data):]
