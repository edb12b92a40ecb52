"""``--save``: the best parameters as a plain .npz, written atomically (shared by the
single-process and the distributed ``graphc train``)."""
from __future__ import annotations

import os
import tempfile

import numpy as np


def save_params(path: str, params: dict):
    """Best parameters as a plain .npz (written atomically like checkpoints)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".params-", suffix=".tmp", dir=d)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **params)
    os.replace(tmp, path)
