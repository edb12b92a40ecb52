"""The machine's memory as a limit: a buffer that cannot fit is an error before it is
allocated, with its size in bytes, instead of numpy's MemoryError (or the kernel's OOM
killer) somewhere later."""
from __future__ import annotations

import os

_PHYS: list = []


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None when the OS does not say)."""
    if not _PHYS:
        try:
            _PHYS.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            _PHYS.append(None)
    return _PHYS[0]


def human(n: int) -> str:
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def refuse_too_big(nbytes: int, what: str, source: str | None = None):
    """Raise ShapeError ``"{what} needs N bytes ..."`` when ``nbytes`` cannot fit here."""
    why = too_big(nbytes)
    if why:
        from .errors import ShapeError
        raise ShapeError(f"{what} {why}" + (f" (at {source})" if source else ""))


def too_big(nbytes: int) -> str | None:
    """Why ``nbytes`` cannot be allocated here, or None when it can."""
    mem = physical_memory()
    if mem is None or nbytes <= mem:
        return None
    return (f"needs {nbytes} bytes ({human(nbytes)}), more than this machine's memory "
            f"({mem} bytes, {human(mem)})")
