"""The on-disk compile cache: a per-user directory of checksummed entries.

An entry is a header (magic, format version, the key's digest, the payload's sha256 and
size) and a payload: a list of length-prefixed object files (a program compiled in
parts) and optionally the caller's metadata.  Anything that does not match exactly --
another key, version or checksum, a truncated list -- reads as a miss, never as code.
Entries are written atomically (temp file + ``os.replace``) into a directory created
with mode 0700 (``GRAPHC_CACHE_DIR``, default ``~/.cache/graphc``; ``off`` disables it).
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile

#: bump when the meaning of a cached object changes (pipeline, header layout...)
#: 2: a payload is a list of objects (a module compiled in parts), each length-prefixed
CACHE_FORMAT_VERSION = 2
_MAGIC = b"GRAPHCOBJ\0"
_HEADER = struct.Struct("<10sI32s32sQ")  # magic, version, key digest, sha256(payload), size


def cache_dir() -> str | None:
    """The per-user disk cache directory (created 0700), or None if disabled/unusable."""
    path = os.environ.get("GRAPHC_CACHE_DIR")
    if path is None:
        path = os.path.join(os.path.expanduser("~"), ".cache", "graphc")
    if path in ("", "0", "off", "none"):
        return None
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return None  # someone else's directory: do not trust or write it
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError:
        return None
    return path


def entry_path(directory: str, key: str) -> str:
    return os.path.join(directory, f"{key[:40]}.gco")


def read_entry(path: str, key: str) -> bytes | None:
    """The object code in ``path`` if its header matches ``key`` exactly, else None."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    if len(blob) < _HEADER.size:
        return None
    magic, version, digest, checksum, size = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size:]
    if (magic != _MAGIC or version != CACHE_FORMAT_VERSION
            or digest != bytes.fromhex(key) or size != len(payload)
            or hashlib.sha256(payload).digest() != checksum):
        return None
    return payload


def write_entry(path: str, key: str, payload: bytes) -> None:
    """Atomically write a cache entry (never leaves a half-written file at ``path``)."""
    header = _HEADER.pack(_MAGIC, CACHE_FORMAT_VERSION, bytes.fromhex(key),
                          hashlib.sha256(payload).digest(), len(payload))
    write_atomic(path, header + payload)


def write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        pass  # a cache that cannot be written is only slower, never wrong


_META_TAG = b"GRAPHCMETA\0"


def join_objects(objs: list, meta: bytes | None = None) -> bytes:
    items = list(objs) + ([] if meta is None else [_META_TAG + meta])
    return b"".join(struct.pack("<Q", len(o)) + o for o in items)


def split_objects(payload: bytes | None) -> tuple | None:
    """(objects, meta or None) of a cache payload; None if it is not well formed."""
    if payload is None:
        return None
    items, pos = [], 0
    while pos < len(payload):
        if pos + 8 > len(payload):
            return None
        (n,) = struct.unpack_from("<Q", payload, pos)
        pos += 8
        if n == 0 or pos + n > len(payload):
            return None
        items.append(payload[pos:pos + n])
        pos += n
    meta = None
    if items and items[-1].startswith(_META_TAG):
        meta = items.pop()[len(_META_TAG):]
    if not items or any(o.startswith(_META_TAG) for o in items):
        return None
    return items, meta
