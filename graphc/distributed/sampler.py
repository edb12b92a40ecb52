"""A deterministic sharded sampler: which rows each rank trains on, at every step.

Epoch ``e``'s order is ``default_rng([seed, e]).permutation(n)`` -- a pure function of the
seed and the epoch, so no generator state has to be saved: a restart from the checkpoint
position ``(epoch, step)`` replays exactly the batches an uninterrupted run would see.
Global batch ``k`` is rows ``order[k*B:(k+1)*B]``; rank ``r`` of ``N`` takes its ``r``-th
contiguous ``B/N`` of them, so the N shards of a step together are exactly the global
batch one rank with batch B would draw (N x B/N is the same data as 1 x B).  The last
partial global batch is dropped (static shapes), as in ``graphc.data.Batches``.
"""
from __future__ import annotations

import numpy as np

from ..ir import GraphcError


class ShardedSampler:
    def __init__(self, n: int, global_batch: int, rank: int = 0, world: int = 1,
                 seed: int = 0):
        n, global_batch, rank, world = int(n), int(global_batch), int(rank), int(world)
        if world < 1 or not 0 <= rank < world:
            raise GraphcError(f"sampler: rank {rank} is not in a world of {world}")
        if global_batch <= 0 or global_batch % world:
            raise GraphcError(f"sampler: the global batch {global_batch} must be a positive "
                              f"multiple of the {world} ranks (each rank gets batch/ranks "
                              "rows)")
        if global_batch > n:
            raise GraphcError(f"sampler: global batch {global_batch} is larger than the {n} "
                              "samples")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed = int(seed)
        self.local_batch = global_batch // world
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def per_epoch(self) -> int:
        """Steps (global batches) per epoch."""
        return self.n // self.global_batch

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of all ``n`` rows (the same on every rank)."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self.seed, int(epoch)])
                           .permutation(self.n))
        return self._cache[1]

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """This rank's rows of global batch ``step`` of ``epoch``."""
        if not 0 <= step < self.per_epoch:
            raise GraphcError(f"sampler: step {step} outside the {self.per_epoch} steps of "
                              "an epoch")
        start = step * self.global_batch + self.rank * self.local_batch
        return self.order(epoch)[start:start + self.local_batch]

    def epoch(self, epoch: int, start: int = 0):
        """Yield this rank's row indices for steps ``start..`` of ``epoch``."""
        for k in range(int(start), self.per_epoch):
            yield self.indices(epoch, k)
