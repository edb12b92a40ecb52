"""Checkpoints: parameters, optimizer state, best parameters, data-RNG state and position,
saved atomically as ``.npz`` with no pickle, the last two kept.

Atomic: written to a temporary file in the same directory, flushed and fsynced, then
``os.replace``d over the final name, so a crash (or SIGKILL) mid-write leaves the
previous checkpoint untouched.  Scalars and the run's state travel as one JSON string
(``meta``), stored as a numpy unicode array, so ``np.load(allow_pickle=False)`` reads it.

Loading validates everything -- zip integrity (CRC), required arrays, names, shapes and
dtypes against the live model -- and raises a GraphcError naming the file and what is
wrong; a bad latest checkpoint is never deleted or overwritten by the loader.
"""
from __future__ import annotations

import glob
import json
import os
import re
import zipfile

import numpy as np

from ..ir import GraphcError
from .atomic import savez_atomic

FORMAT = 1
KEEP = 2
_NAME = re.compile(r"ckpt-e(\d+)-s(\d+)\.npz$")


class CheckpointError(GraphcError, ValueError):
    """A checkpoint that cannot be used (corrupt, truncated, or from another run)."""


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt-e{epoch:05d}-s{step:08d}.npz"


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint files in ``directory``, oldest first (by update count, then epoch)."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-e*-s*.npz")):
        m = _NAME.search(os.path.basename(path))
        if m:
            found.append(((int(m.group(2)), int(m.group(1))), path))
    return [p for _, p in sorted(found)]


def save(directory: str, epoch: int, step: int, arrays: dict, meta: dict,
         keep: int = KEEP) -> str:
    """Atomically write one checkpoint, then prune to the newest ``keep``."""
    os.makedirs(directory, exist_ok=True)
    payload = {k: np.asarray(v, order="C") for k, v in arrays.items()}  # keeps 0-d
    payload["meta"] = np.array(json.dumps({**meta, "format": FORMAT}, sort_keys=True))
    final = savez_atomic(os.path.join(directory, checkpoint_name(epoch, step)), payload,
                         prefix=".ckpt-")
    for old in list_checkpoints(directory)[:-keep]:
        os.unlink(old)
    for stale in glob.glob(os.path.join(directory, ".ckpt-*.tmp")):
        try:
            os.unlink(stale)                 # left by a run killed mid-write
        except OSError:
            pass
    return final


def load(path: str) -> tuple[dict, dict]:
    """(arrays, meta) from a checkpoint file; CheckpointError if it is unreadable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}       # reading checks each member's CRC
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({e})"
                              + _previous_hint(path)) from None
    if "meta" not in arrays and "graphc_model" in arrays:
        raise CheckpointError(f"{path} is a saved model (graphc train --save), not a training "
                              "checkpoint; resume from a ckpt-*.npz in the --checkpoint-dir")
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no 'meta' record; not a graphc "
                              "checkpoint" + _previous_hint(path))
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: unreadable meta record ({e})"
                              + _previous_hint(path)) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')}, "
                              f"expected {FORMAT}")
    return arrays, meta


def _previous_hint(path: str) -> str:
    d = os.path.dirname(path) or "."
    others = [p for p in list_checkpoints(d) if os.path.abspath(p) != os.path.abspath(path)]
    if not others:
        return ""
    return (f"; the previous checkpoint {others[-1]} is kept -- resume from it with "
            f"--resume {others[-1]}")


def restore_into(path: str, prefix: str, arrays: dict, live: dict):
    """Copy ``prefix/<name>`` arrays into the live arrays in place, checking each."""
    wanted = {f"{prefix}/{k}" for k in live}
    have = {k for k in arrays if k.startswith(prefix + "/")}
    if wanted != have:
        missing, extra = sorted(wanted - have), sorted(have - wanted)
        raise CheckpointError(f"checkpoint {path} does not match this model: "
                              + (f"missing {missing[:5]}" if missing else "")
                              + (" " if missing and extra else "")
                              + (f"unexpected {extra[:5]}" if extra else ""))
    for name, target in live.items():
        src = arrays[f"{prefix}/{name}"]
        if src.shape != target.shape or src.dtype != target.dtype:
            raise CheckpointError(f"checkpoint {path}: {prefix}/{name} is "
                                  f"{src.dtype}{list(src.shape)}, the model has "
                                  f"{target.dtype}{list(target.shape)}")
    for name, target in live.items():
        target[...] = arrays[f"{prefix}/{name}"]


def check_identity(path: str, saved: dict, current: dict):
    """Refuse to resume a run configured differently (it would not be the same run)."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}"
             for k in current if saved.get(k) != current[k]]
    if diffs:
        raise CheckpointError(f"checkpoint {path} is from a different run configuration ("
                              + "; ".join(diffs) + ")")
