"""The on-disk compile cache: a per-user directory of checksummed entries.

An entry is a header (magic, format version, the key's digest, the payload's sha256 and
size) and a payload: a list of length-prefixed object files (a program compiled in
parts) and optionally the caller's metadata.  Anything that does not match exactly --
another key, version or checksum, a truncated list -- reads as a miss, never as code.
Entries are written atomically (temp file + ``os.replace``, mode 0600); which directory,
whether it and each entry can be trusted, and the size cap are :mod:`.cachedir`'s.
"""
from __future__ import annotations

import hashlib
import os
import struct
from typing import TYPE_CHECKING

import llvmlite

from . import cachedir
# the cache's directory and its atomic writer, re-exported for jit, kernelcache and target
from .cachedir import cache_dir, write_atomic  # noqa: F401

if TYPE_CHECKING:
    from .target import TargetInfo

#: bump when the meaning of a cached object changes (pipeline, header layout...)
#: 2: a payload is a list of objects (a module compiled in parts), each length-prefixed
CACHE_FORMAT_VERSION = 2
_MAGIC = b"GRAPHCOBJ\0"
_HEADER = struct.Struct("<10sI32s32sQ")  # magic, version, key digest, sha256(payload), size


def cache_key(ir_text: str, target: TargetInfo, opt: str = "O3") -> str:
    """The key compiled code of ``ir_text`` is cached under: this format, the llvmlite
    version, the target and the pipeline ``opt``."""
    h = hashlib.sha256()
    for part in (f"graphc-llvm-cache/{CACHE_FORMAT_VERSION}", llvmlite.__version__,
                 target.triple, target.cpu, target.features, opt, ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


#: a kernel's index entry (per-kernel cache: its payload is the digest of the entry
#: holding its object code, a ``.gco`` entry of one object)
KERNEL_SUFFIX = ".gck"


def entry_path(directory: str, key: str, suffix: str = ".gco") -> str:
    return os.path.join(directory, f"{key[:40]}{suffix}")


def read_entry(path: str, key: str) -> bytes | None:
    """The object code in ``path`` if its header matches ``key`` exactly, else None
    (also when the file is not the user's alone: :func:`.cachedir.read_trusted`)."""
    blob = cachedir.read_trusted(path)
    if blob is None or len(blob) < _HEADER.size:
        return None
    magic, version, digest, checksum, size = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size:]
    if (magic != _MAGIC or version != CACHE_FORMAT_VERSION
            or digest != bytes.fromhex(key) or size != len(payload)
            or hashlib.sha256(payload).digest() != checksum):
        return None
    cachedir.touch(path)                     # its last use, for LRU eviction
    return payload


def write_entry(path: str, key: str, payload: bytes) -> None:
    """Atomically write a cache entry (never leaves a half-written file at ``path``)."""
    header = _HEADER.pack(_MAGIC, CACHE_FORMAT_VERSION, bytes.fromhex(key),
                          hashlib.sha256(payload).digest(), len(payload))
    try:
        before = cachedir.disk_bytes(os.lstat(path))      # an entry being replaced
    except OSError:
        before = 0
    if write_atomic(path, header + payload):
        try:
            added = cachedir.disk_bytes(os.lstat(path)) - before
        except OSError:                                     # evicted by another process
            return
        cachedir.after_write(os.path.dirname(path), path, added)


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
