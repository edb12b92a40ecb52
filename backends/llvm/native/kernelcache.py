"""The per-kernel object cache: a kernel compiled for one graph is reused by every other.

A kernel module's text names its one function after a digest of the text itself
(``codegen.module``), so a kernel compiled for one graph is the same symbol with the
same code in every other graph.  A compiled bundle of kernel modules is kept once,
content-addressed (its entry's key is the sha256 of its payload: the object and the
caller's meta), and each kernel's key points to it: a graph whose kernels were all
compiled before -- in any graph, any process -- compiles only its entry.  Kernels are
``weak_odr``: two objects that both define one (a bundle loaded for another of its
kernels) link without a clash.  Every read goes through the disk cache's trust and
checksum rules (:func:`.diskcache.read_entry`); a missing, corrupt or foreign entry is
a miss and the kernel is compiled again.

The backend keys most kernels before building their IR, by a digest of their plan data
(``plan/signature.py``, named ``gs_<digest>``): :func:`kernel_key` then hashes that
signature and the code generator's salt instead of the text.
"""
from __future__ import annotations

import hashlib
import os

from . import elfload
from .diskcache import (KERNEL_SUFFIX, cache_dir, cache_key, entry_path, join_objects,
                        read_entry, split_objects, write_entry)
from .stats import STATS
from .target import TargetInfo, host_target


#: kernel key -> (object digest, object, meta): this process's compiled or loaded bundles
_KERNEL_OBJECTS: dict = {}
KERNEL_FORMAT = 1


def clear() -> None:
    """Forget this process's bundles (the disk keeps them)."""
    _KERNEL_OBJECTS.clear()


def kernel_key(ir_text: str, target: TargetInfo | None = None, opt: str = "O3",
               salt: str = "") -> str:
    """The per-kernel cache key of one kernel module's IR text (``salt``: what else
    the caller wants kept apart)."""
    target = target or host_target()
    return cache_key(f"graphc-kernel/{KERNEL_FORMAT}\0{salt}\0" + ir_text, target, opt)


def _object_entry(obj: bytes, meta: bytes | None) -> tuple:
    payload = join_objects([obj], meta)
    return hashlib.sha256(payload).hexdigest(), payload


def keep_kernels(keys, obj: bytes, meta: bytes | None, write: bool = True) -> None:
    """Remember ``obj`` (a compiled bundle) for each of ``keys``; on disk too when the
    disk cache is on and ``write``."""
    digest, payload = _object_entry(obj, meta)
    for k in keys:
        _KERNEL_OBJECTS[k] = (digest, obj, meta)
    directory = cache_dir() if write else None
    if directory is None:
        return
    write_entry(entry_path(directory, digest), digest, payload)
    for k in keys:
        write_entry(entry_path(directory, k, KERNEL_SUFFIX), k, bytes.fromhex(digest))


def find_kernels(keys, use_disk_cache: bool = True) -> dict:
    """{key: (object digest, object, meta)} of the ``keys`` whose compiled code this
    process or the disk cache holds (several keys may share one object)."""
    out, objects = {}, {}
    directory = cache_dir() if use_disk_cache else None
    for k in keys:
        hit = _KERNEL_OBJECTS.get(k)
        if hit is None and directory is not None:
            hit = _read_kernel(directory, k, objects)
            if hit is not None:
                _KERNEL_OBJECTS[k] = hit
        if hit is not None:
            out[k] = hit
    return out


def _read_kernel(directory: str, key: str, objects: dict):
    path = entry_path(directory, key, KERNEL_SUFFIX)
    if not os.path.exists(path):
        return None
    ref = read_entry(path, key)
    if ref is None or len(ref) != 32:
        STATS["disk_rejects"] += 1
        return None
    digest = ref.hex()
    if digest in objects:
        return objects[digest]
    payload = read_entry(entry_path(directory, digest), digest)
    entry = None
    if payload is not None and hashlib.sha256(payload).hexdigest() == digest:
        entry = split_objects(payload)
    if entry is None or len(entry[0]) != 1:
        STATS["disk_rejects"] += 1
        return None
    try:
        # tables in bounds, this machine (symbols: checked with the graph's objects)
        elfload.validate(entry[0], lambda name: True)
    except elfload.Malformed:
        STATS["disk_rejects"] += 1
        return None
    objects[digest] = (digest, entry[0][0], entry[1])
    return objects[digest]
