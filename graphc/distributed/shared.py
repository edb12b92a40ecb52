"""Gradients summed through one machine's shared memory: an all-reduce without copies.

When every rank of a job runs on one machine, MPI can give them one block of memory that
all of them map (``MPI_Win_allocate_shared``, MPI-3).  Each rank's gradient region is
then a *slot* of that window: its gradient graph writes its gradients there, and after
one barrier every rank's update graph reads all N slots directly and sums them inside
its fused update loop, in rank order.  Nothing is copied or sent: where
``MPI_Allreduce`` moves the 2 MB of an MLP's gradients through Open MPI's
shared-memory transport in segments (each a handshake between the ranks, and each a
chance to wait for a rank the OS has descheduled), this costs two barriers and one
extra read of each peer's gradients -- from the shared L3 cache, not RAM.

The same sum, in the same order, on every rank: the replicas stay bit-identical, and a
run repeats bit-identically (the order does not depend on timing).

Ordering: the window is locked once (``Lock_all``, passive target) and each exchange is
``Win_sync`` + barrier + ``Win_sync``, the MPI-3 recipe for shared-memory windows in the
unified model.  A second barrier after the update keeps a rank from overwriting its
slot with the next step's gradients while a peer still reads it.

Only for jobs on a single machine (``MPI_Comm_split_type(COMM_TYPE_SHARED)`` spans the
world); across machines the step falls back to ``MPI_Allreduce``.
"""
from __future__ import annotations

import numpy as np

from . import comm as C
from .region import ALIGN, GradRegion, region_nbytes


def single_node(comm) -> bool:
    """True when every rank of ``comm`` shares this machine's memory (collective)."""
    MPI = C.mpi()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size() == comm.Get_size()
    finally:
        node.Free()


class SharedGrads:
    """N gradient regions, one per rank, in one node-shared MPI window.

    ``regions[r]`` is rank r's; ``mine`` this rank's.  :meth:`exchange` is the point
    after which every rank's gradients are visible to every rank; :meth:`release`
    the point after which no rank reads them any more (collective, both)."""

    def __init__(self, comm, params: list[np.ndarray], extra: int = 1):
        MPI = C.mpi()
        self.comm = comm
        world, rank = comm.Get_size(), comm.Get_rank()
        slot = -(-region_nbytes(params, extra) // ALIGN) * ALIGN
        # rank 0 allocates all slots in one piece (others 0 bytes), so the slots are
        # contiguous and aligned however Open MPI places per-rank segments
        self.win = MPI.Win.Allocate_shared(world * slot + ALIGN if rank == 0 else 0, 1,
                                           comm=comm)
        mem, _ = self.win.Shared_query(0)
        raw = np.frombuffer(mem, np.uint8)
        off = (-raw.ctypes.data) % ALIGN
        blocks = [raw[off + r * slot:off + (r + 1) * slot] for r in range(world)]
        blocks[rank][:] = 0
        self.regions = [GradRegion(params, extra, b) for b in blocks]
        self.mine = self.regions[rank]
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self._sync = self.win.Sync
        self._barrier = comm.Barrier
        self.exchange()

    def exchange(self):
        """This rank's slot written; after this, every slot is readable (collective)."""
        self._sync()
        self._barrier()
        self._sync()

    release = exchange

    def views(self) -> list[np.ndarray]:
        """Every rank's gradient views, rank after rank (the update graph's inputs)."""
        return [v for r in self.regions for v in r.views]

    def loss_sum(self) -> float:
        """The ranks' losses summed in float32, in rank order."""
        s = np.float32(0)
        for r in self.regions:
            s = np.float32(s + r.loss_slot[0])
        return float(s)
