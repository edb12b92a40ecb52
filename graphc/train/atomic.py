"""Atomic ``.npz`` writes: a temporary file in the target's directory, flushed and
fsynced, then ``os.replace``d over the final name, then the directory fsynced.

A crash (or SIGKILL, or a full disk) mid-write leaves the previous file untouched, and a
write that fails in Python removes its temporary file: nothing half-written is ever left
under the final name or beside it.  Shared by checkpoints and saved models.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np


def savez_atomic(path: str, payload: dict, prefix: str = ".graphc-") -> str:
    """Write ``payload`` (name -> array) to ``path`` as an uncompressed .npz, atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)
    return path


def fsync_dir(directory: str):
    """Make a rename durable (best effort: some filesystems refuse directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
