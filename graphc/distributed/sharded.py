"""A sharded update through one machine's shared memory: reduce-scatter + all-gather
without copies.

:mod:`.shared` keeps every rank's gradients in one node-shared window, and every rank
sums *all* N slots and updates *all* parameters of its own replica: each rank reads the
whole of every peer's gradient from the other cores' caches (2.1 MB per peer per step for
MLP 784-512-256-10), and the update pass -- a memory-bound loop -- pays that cross-core
traffic directly.  Here the parameters and the optimizer's per-element state live in the
window too, **one copy for the whole machine**, and rank r sums and updates only its
shard -- a contiguous 1/N of every flat buffer:

    step k:   gradient graph (reads the shared parameters, writes rank r's slot)
              barrier A                          every slot of step k is written
              update of shard r: p[r] -= opt(sum_s g_s[r] / N)   (reduce-scatter + update)
              barrier B                          every shard is updated (all-gather)

Each rank reads 1/N of each peer's gradient and writes 1/N of the parameters; the next
forward reads the peers' freshly written shards of the parameters inside its GEMMs,
which are compute-bound and hide those reads far better than the streaming update can.
Two barriers per step instead of :mod:`.shared`'s one, and one set of gradient slots
instead of two: after barrier B nobody reads step k's slots any more.

The sum is the same as :mod:`.shared`'s -- ``g_0 + g_1 + ... + g_{N-1}`` left to right,
then ``· 1/N``, then the optimizer's elementwise rule, element by element -- so the two
give bit-identical parameters (tested).  It needs an elementwise update: an optimizer
with ``clip_grad_norm`` (a global norm over all gradients) is not shardable and keeps
:mod:`.shared`.  Scalar state (Adam's step count, the learning-rate input) stays private
to each rank: every rank computes the same value.

Ordering is :mod:`.shared`'s (``Lock_all`` once; ``Win_sync`` + barrier + ``Win_sync``).
Nothing outside the step writes the window except through :meth:`ShardedWindow.publish`
(rank 0 writes, then a barrier): between steps every rank only reads, and no rank writes
a parameter before all ranks have passed barrier A of the next step.
"""
from __future__ import annotations

import numpy as np

from . import comm as C
from .region import ALIGN, GradRegion, region_nbytes


def _round_up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def shard_bounds(n: int, itemsize: int, world: int) -> list[tuple[int, int]]:
    """[(lo, hi)] element ranges of ``n`` (a multiple of 64 bytes' worth) for ``world``
    ranks: contiguous, 64-byte aligned, as equal as the alignment allows."""
    per = ALIGN // itemsize
    units = n // per
    cuts = [round(units * r / world) * per for r in range(world + 1)]
    return list(zip(cuts, cuts[1:]))


def shardable(params: list[np.ndarray], optimizer, world: int) -> str:
    """'' when the sharded update applies, else why not."""
    if getattr(optimizer, "clip_grad_norm", None):
        return "clip_grad_norm needs the global gradient norm (not elementwise)"
    region = GradRegion(params, 0)
    for buf in region.buffers:
        if any(hi <= lo for lo, hi in shard_bounds(buf.size, buf.itemsize, world)):
            return f"a buffer of {buf.size} elements is too small for {world} shards"
    return ""


class ShardedWindow:
    """One node-shared window holding the parameters, ``kinds`` optimizer state regions
    (each laid out like the parameters) and one gradient slot per rank.

    ``params`` / ``states[k]`` / ``slots[r]`` are :class:`GradRegion` s (``views`` per
    parameter, ``buffers`` per dtype); ``bounds[b]`` is this rank's (lo, hi) of flat
    buffer ``b``.  Rank 0 fills the parameters from ``params`` (every rank must pass the
    same model) and zeroes the rest; the constructor ends with a barrier."""

    def __init__(self, comm, params: list[np.ndarray], kinds: int):
        MPI = C.mpi()
        self.comm = comm
        world, rank = comm.Get_size(), comm.Get_rank()
        p_bytes = _round_up(region_nbytes(params, 0))
        g_bytes = _round_up(region_nbytes(params, 1))
        total = (1 + kinds) * p_bytes + world * g_bytes
        self.win = MPI.Win.Allocate_shared(total + ALIGN if rank == 0 else 0, 1, comm=comm)
        mem, _ = self.win.Shared_query(0)
        raw = np.frombuffer(mem, np.uint8)
        off = (-raw.ctypes.data) % ALIGN
        self._lo, self._hi = raw.ctypes.data + off, raw.ctypes.data + off + total
        blocks, at = [], off
        for size in [p_bytes] * (1 + kinds) + [g_bytes] * world:
            blocks.append(raw[at:at + size])
            at += size
        if rank == 0:
            raw[off:off + total] = 0
        self.params = GradRegion(params, 0, blocks[0])
        self.states = [GradRegion(params, 0, b) for b in blocks[1:1 + kinds]]
        self.slots = [GradRegion(params, 1, b) for b in blocks[1 + kinds:]]
        self.rank, self.world = rank, world
        self.bounds = [shard_bounds(b.size, b.itemsize, world)[rank]
                       for b in self.params.buffers]
        if rank == 0:
            for dst, src in zip(self.params.views, params):
                dst[...] = src
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self._sync = self.win.Sync
        self._barrier = comm.Barrier
        self.exchange()

    @property
    def mine(self) -> GradRegion:
        return self.slots[self.rank]

    def holds(self, a: np.ndarray) -> bool:
        """True when ``a``'s memory lies in the window (shared by every rank)."""
        p = a.__array_interface__["data"][0]
        return self._lo <= p < self._hi

    def exchange(self):
        """Every rank's writes before this are visible to every rank after it
        (collective: a barrier, under the caller's watchdog)."""
        self._sync()
        self._barrier()
        self._sync()

    def shard(self, region: GradRegion) -> list[np.ndarray]:
        """This rank's slice of each flat buffer of ``region``."""
        return [buf[lo:hi] for buf, (lo, hi) in zip(region.buffers, self.bounds)]

    def loss_sum(self) -> float:
        """The ranks' losses summed in float32, in rank order."""
        s = np.float32(0)
        for r in self.slots:
            s = np.float32(s + r.loss_slot[0])
        return float(s)

    def close(self):
        """Free the window (collective); its arrays must not be used afterwards."""
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None
