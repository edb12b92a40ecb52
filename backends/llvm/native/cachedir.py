"""The disk cache's directory: which one, whether to trust it, and how big it may grow.

Trust: code read from the cache is run, so only what the user alone could have written
is used.  The directory (``GRAPHC_CACHE_DIR``, default ``~/.cache/graphc``; ``off``
disables the disk cache) is created private (0700) when graphc makes it and is never
chmod-ed afterwards: one that is not the user's, or that group or others can write,
disables the disk cache for the process with one :class:`CacheWarning` (anyone who can
write there could plant code under a key graphc will look up).  Each file is opened
without following symlinks and used only when it is a regular file owned by the user
and not writable by group/others (:func:`read_trusted`); anything else reads as a miss
and is replaced by the recompiled entry.

Size: a used entry is touched (its mtime is its last use).  The bytes on disk are kept
in a small ``.usage`` file updated by every write -- scanning a big cache costs ~0.5 s
per 80 000 files, too much for every process -- and when that sum passes the cap
(``GRAPHC_CACHE_MAX_MB``, default :data:`DEFAULT_MAX_MB`), or every
:data:`RESCAN_WRITES` writes (concurrent processes can lose an update of the sum), the
directory is scanned, the sum corrected and the least recently used entries deleted
until at most :data:`LOW_WATER` of the cap is left.  Only files graphc makes are
counted or deleted (:func:`is_cache_file`).  ``graphc cache info`` / ``graphc cache
clear`` use :func:`info` and :func:`clear`.
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import time
import warnings

from graphc.ir import ConfigError

DEFAULT_MAX_MB = 512
#: after an eviction the cache holds at most this fraction of the cap
LOW_WATER = 0.8
#: writes between two scans that correct the running sum
RESCAN_WRITES = 500
#: temporary files older than this are a crashed writer's, and deleted by a scan
STALE_TMP_SECONDS = 3600
USAGE_FILE = ".usage"
_OFF = ("", "0", "off", "none", "no", "false")


class CacheWarning(UserWarning):
    """The disk cache cannot be used as configured (graphc compiles without it)."""


_WARNED: set = set()


def reset_warnings() -> None:
    """Forget which directories were warned about (tests)."""
    _WARNED.clear()


def _uid():
    return os.geteuid() if hasattr(os, "geteuid") else None


def configured() -> str | None:
    """The directory the environment asks for (None: the disk cache is switched off)."""
    path = os.environ.get("GRAPHC_CACHE_DIR")
    if path is None:
        return os.path.join(os.path.expanduser("~"), ".cache", "graphc")
    return None if path.strip().lower() in _OFF else path


def untrusted(st) -> str | None:
    """Why a file or directory with this ``stat`` must not be trusted, or None."""
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        return f"it belongs to uid {st.st_uid}, not to you (uid {uid})"
    if st.st_mode & 0o022:
        who = {0o020: "group", 0o002: "others", 0o022: "group and others"}
        return (f"it is writable by {who[st.st_mode & 0o022]} "
                f"(mode {stat.S_IMODE(st.st_mode):04o})")
    return None


def check(path: str, create: bool = True) -> str | None:
    """Why ``path`` cannot be the cache directory, or None when it can (creating it,
    private, when ``create`` and it does not exist)."""
    try:
        if create and not os.path.lexists(path):
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            try:
                os.mkdir(path, 0o700)            # ours: private from the start
            except FileExistsError:
                pass                             # another process made it meanwhile
        st = os.stat(path)
    except FileNotFoundError:
        return None if not create else "it does not exist"
    except OSError as e:
        return f"it cannot be used ({e.strerror or e})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    return untrusted(st)


def _warn_once(path: str, why: str) -> None:
    if path in _WARNED:
        return
    _WARNED.add(path)
    fix = ("set GRAPHC_CACHE_DIR to a directory of yours" if "belongs to" in why else
           f"chmod go-w {path}, or set GRAPHC_CACHE_DIR to a private directory")
    warnings.warn(f"graphc: not using the compile cache {path}: {why}, so code in it could "
                  f"be someone else's; compiling without a disk cache (graphc leaves the "
                  f"directory as it is: {fix}; GRAPHC_CACHE_DIR=off silences this)",
                  CacheWarning, stacklevel=4)


def cache_dir() -> str | None:
    """The disk cache directory, or None if it is switched off, unusable or untrusted
    (then with one :class:`CacheWarning` per directory and process).  Raises
    :class:`ConfigError` for a bad ``GRAPHC_CACHE_MAX_MB``."""
    path = configured()
    if path is None:
        return None
    max_bytes()
    why = check(path)
    if why is not None:
        _warn_once(path, why)
        return None
    return path


def read_trusted(path: str) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of the user's that only the user can
    write (not a symlink); else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or untrusted(st):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = None
            return f.read()
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def touch(path: str) -> None:
    """Mark ``path`` as just used (least-recently-used eviction reads the mtime)."""
    try:
        os.utime(path)
    except OSError:
        pass


def max_bytes() -> int:
    """The cap from ``GRAPHC_CACHE_MAX_MB`` (megabytes, may be fractional)."""
    text = os.environ.get("GRAPHC_CACHE_MAX_MB", "")
    if not text.strip():
        return DEFAULT_MAX_MB * 2**20
    try:
        mb = float(text)
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and mb > 0):
        raise ConfigError(f"GRAPHC_CACHE_MAX_MB={text!r}: expected the compile cache's size "
                          f"cap in megabytes, a number > 0 (default {DEFAULT_MAX_MB}; "
                          "GRAPHC_CACHE_DIR=off switches the disk cache off)")
    return max(1, int(mb * 2**20))


def is_cache_file(name: str) -> bool:
    """Files graphc writes into the cache directory (nothing else is counted or deleted)."""
    return name.endswith((".gco", ".gck", ".gcm")) or (name.startswith(("target-", "tune-"))
                                      and name.endswith(".json"))


def disk_bytes(st) -> int:
    """What a file costs on disk (``du``; a 1 KiB entry takes a 4 KiB block)."""
    blocks = getattr(st, "st_blocks", None)
    return max(st.st_size, blocks * 512) if blocks is not None else st.st_size


def scan(directory: str) -> list:
    """[(path, bytes on disk, mtime)] of graphc's files; stale temporary files removed."""
    out, now = [], time.time()
    try:
        it = os.scandir(directory)
    except OSError:
        return out
    with it:
        for e in it:
            try:
                if e.name.startswith(".tmp-"):
                    if now - e.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
                        os.unlink(e.path)
                    continue
                if not is_cache_file(e.name) or not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
                out.append((e.path, disk_bytes(st), st.st_mtime))
            except OSError:
                continue
    return out


def write_atomic(path: str, data: bytes) -> bool:
    """Write ``data`` to a private temporary file beside ``path`` and rename it over
    ``path`` (readers and concurrent writers see one whole file or the other); False
    when the directory cannot be written."""
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return True
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        pass  # a cache that cannot be written is only slower, never wrong
    return False


def _read_usage(directory: str) -> dict | None:
    raw = read_trusted(os.path.join(directory, USAGE_FILE))
    try:
        d = json.loads(raw) if raw is not None else None
        if isinstance(d, dict) and all(isinstance(d.get(k), int) and d[k] >= 0
                                       for k in ("bytes", "writes")):
            return d
    except ValueError:
        pass
    return None


def _write_usage(directory: str, total: int, writes: int) -> None:
    write_atomic(os.path.join(directory, USAGE_FILE),
                 json.dumps({"bytes": int(total), "writes": int(writes)}).encode())


def evict(directory: str, cap: int, keep: str | None = None) -> int:
    """Scan ``directory``; when over ``cap``, delete the least recently used files until
    at most ``LOW_WATER * cap`` is left (never ``keep``).  Returns the bytes left."""
    files = scan(directory)
    total = sum(b for _, b, _ in files)
    if total > cap:
        goal = cap * LOW_WATER
        keep = os.path.abspath(keep) if keep else None
        for p, size, _ in sorted(files, key=lambda f: f[2]):
            if total <= goal:
                break
            if keep is not None and os.path.abspath(p) == keep:
                continue
            try:
                os.unlink(p)
                total -= size
            except OSError:
                pass
    _write_usage(directory, total, 0)
    return total


def after_write(directory: str, path: str, added: int) -> None:
    """Account for ``added`` bytes just written at ``path``; scan and evict when the sum
    passes the cap or after :data:`RESCAN_WRITES` writes."""
    cap = max_bytes()
    usage = _read_usage(directory)
    if usage is not None:
        total, writes = usage["bytes"] + added, usage["writes"] + 1
        if total <= cap and writes < RESCAN_WRITES:
            _write_usage(directory, max(0, total), writes)
            return
    evict(directory, cap, keep=path)


def info() -> dict:
    """What ``graphc cache info`` prints: the directory, whether it is used (and why
    not), its entries, bytes and the cap.  Creates nothing."""
    path = configured()
    d = {"directory": path, "enabled": False, "reason": None, "entries": 0, "files": 0,
         "bytes": 0, "max_bytes": max_bytes(), "oldest": None, "newest": None,
         "exists": bool(path) and os.path.isdir(path)}
    if path is None:
        d["reason"] = f"GRAPHC_CACHE_DIR={os.environ.get('GRAPHC_CACHE_DIR', '')!r}"
        return d
    d["reason"] = check(path, create=False)
    d["enabled"] = d["reason"] is None
    if d["exists"]:
        files = scan(path)
        d["entries"] = sum(p.endswith(".gco") for p, _, _ in files)
        d["files"] = len(files)
        d["bytes"] = sum(b for _, b, _ in files)
        if files:
            d["oldest"] = min(m for _, _, m in files)
            d["newest"] = max(m for _, _, m in files)
    return d


def clear() -> tuple[int, int]:
    """Delete graphc's files from the (trusted) cache directory: (files removed, bytes
    freed).  Raises :class:`ConfigError` when the directory is not one graphc uses."""
    path = configured()
    if path is None or not os.path.isdir(path):
        return 0, 0
    why = check(path, create=False)
    if why is not None:
        raise ConfigError(f"not clearing the compile cache {path}: {why}, so graphc does "
                          "not use it (remove it yourself if it is yours)")
    removed = freed = 0
    for p, size, _ in scan(path):
        try:
            os.unlink(p)
            removed += 1
            freed += size
        except OSError:
            pass
    try:
        os.unlink(os.path.join(path, USAGE_FILE))
    except OSError:
        pass
    return removed, freed
