"""Mini-batches shuffled each epoch by a seeded numpy Generator.

The last partial batch is *dropped*: a compiled step has static shapes, so every batch
must have exactly ``batch_size`` rows (one compiled step, no recompiles, no masks in the
loss).  Since the permutation changes every epoch, every sample is still seen -- just
not in every epoch.  Evaluation uses the whole split at once, so nothing is dropped there.

Determinism for resume: an epoch's order is one ``rng.permutation`` drawn at the start of
the epoch; a checkpoint stores the Generator's state *before* that draw plus the index of
the next batch, so a resumed run replays exactly the same batches.  With a ``transform`` (training-data
augmentation, ``augment.py``) one key is drawn right after the permutation and batch k is
transformed with a Generator seeded by (key, k): replayed on resume too.
"""
from __future__ import annotations

import json

import numpy as np

from ..ir import GraphcError


class Batches:
    def __init__(self, X, y, batch_size: int, seed: int = 0, transform=None):
        batch_size = int(batch_size)
        if batch_size <= 0:
            raise GraphcError(f"batch size must be positive, got {batch_size}")
        if batch_size > len(X):
            raise GraphcError(f"batch size {batch_size} is larger than the {len(X)} training "
                              f"samples; use --batch-size {len(X)} or less")
        self.X, self.y, self.batch_size = X, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.transform = transform          # (X_batch, Generator) -> X_batch, or None

    @property
    def per_epoch(self) -> int:
        """Updates per epoch (the partial last batch is dropped)."""
        return len(self.X) // self.batch_size

    def rng_state(self) -> str:
        """The Generator's state as a JSON string (checkpoints store no pickles)."""
        return json.dumps(self.rng.bit_generator.state)

    def set_rng_state(self, text: str):
        state = json.loads(text)
        if state.get("bit_generator") != type(self.rng.bit_generator).__name__:
            raise GraphcError(f"checkpoint RNG is {state.get('bit_generator')}, expected "
                              f"{type(self.rng.bit_generator).__name__}")
        self.rng.bit_generator.state = state

    def epoch(self, start: int = 0):
        """Yield ``(X_batch, y_batch)`` for one epoch, beginning at batch ``start``."""
        order = self.rng.permutation(len(self.X))
        key = int(self.rng.integers(2 ** 63)) if self.transform is not None else None
        bs = self.batch_size
        for k in range(start, self.per_epoch):
            idx = order[k * bs:(k + 1) * bs]
            x = np.ascontiguousarray(self.X[idx])
            if self.transform is not None:
                x = self.transform(x, np.random.default_rng([key, k]))
            yield x, np.ascontiguousarray(self.y[idx])
