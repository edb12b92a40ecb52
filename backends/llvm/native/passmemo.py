"""Small results of the graph passes kept in the disk cache, beside the object code.

The memory-schedule search (``passes/schedule.py``) scores ten candidate orders with
a liveness analysis and a buffer assignment each: half of a compile that then finds
its code on disk, and ~10 ms of every new graph.  Its answer depends only on the
graph's structure (:func:`graphc.passes.schedule.structure_key`), so it is kept here
as a small JSON entry (``.gcm``) under that key salted with the code that computes it
(the caller passes the source digest): a later process, or a new graph that differs
in its constants alone, runs only the chosen heuristic.  Entries follow the disk
cache's rules (:func:`.diskcache.read_entry`: the user's own file, header and checksum);
anything else is a miss.  With the disk cache off there is no memo.
"""
from __future__ import annotations

import hashlib
import json

from .diskcache import cache_dir, entry_path, read_entry, write_entry

SUFFIX = ".gcm"


class PassMemo:
    """``get(key)`` / ``put(key, dict)`` over the disk cache, keys salted with ``salt``."""

    def __init__(self, salt: str):
        self.salt = salt

    def _entry(self, key: str):
        directory = cache_dir()
        if directory is None:
            return None, None
        k = hashlib.sha256(f"graphc-pass-memo\0{self.salt}\0{key}".encode()).hexdigest()
        return entry_path(directory, k, SUFFIX), k

    def get(self, key: str):
        path, k = self._entry(key)
        payload = read_entry(path, k) if path is not None else None
        if payload is None:
            return None
        try:
            value = json.loads(payload)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict) -> None:
        path, k = self._entry(key)
        if path is not None:
            write_entry(path, k, json.dumps(value, sort_keys=True).encode())
