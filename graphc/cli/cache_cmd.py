"""``graphc cache info`` and ``graphc cache clear``: see and empty the disk compile cache
(``backends/llvm/native/cachedir.py``: where it is, whether it is trusted, its size cap,
which files are graphc's)."""
from __future__ import annotations

import json
import time


def _size(n: int) -> str:
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _info(args) -> int:
    from ..backends.llvm.native import cachedir
    d = cachedir.info()
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    cap = d["max_bytes"]
    if d["directory"] is None:
        print(f"disk cache  off ({d['reason']}); compiled code is kept in memory only")
        return 0
    state = "in use" if d["enabled"] else f"NOT USED: {d['reason']}"
    if d["enabled"] and not d["exists"]:
        state = "in use (not created yet)"
    print(f"directory   {d['directory']} -- {state}")
    print(f"entries     {d['entries']} compiled objects ({d['files']} files of graphc's)")
    print(f"size        {_size(d['bytes'])} on disk of a {_size(cap)} cap "
          f"({100 * d['bytes'] / cap:.0f} %; GRAPHC_CACHE_MAX_MB, default "
          f"{cachedir.DEFAULT_MAX_MB})")
    if d["files"]:
        print(f"last used   {_when(d['oldest'])} .. {_when(d['newest'])} (over the cap, the "
              "least recently used go first)")
    return 0


def _clear(args) -> int:
    from ..backends.llvm.native import cachedir
    path = cachedir.configured()
    if path is None:
        print("disk cache is off (GRAPHC_CACHE_DIR); nothing to clear")
        return 0
    removed, freed = cachedir.clear()
    print(f"removed {removed} files ({_size(freed)}) from {path}")
    return 0


def run(args) -> int:
    return _info(args) if args.action == "info" else _clear(args)
