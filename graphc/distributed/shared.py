"""Gradients summed through one machine's shared memory: an all-reduce without copies.

When every rank of a job runs on one machine, MPI can give them one block of memory that
all of them map (``MPI_Win_allocate_shared``, MPI-3).  Each rank's gradient region is
then a *slot* of that window: its gradient graph writes its gradients there, and after
one barrier every rank's update graph reads all N slots directly and sums them inside
its fused update loop, in rank order.  Nothing is copied or sent: where
``MPI_Allreduce`` moves the 2 MB of an MLP's gradients through Open MPI's
shared-memory transport in segments (each a handshake between the ranks, and each a
chance to wait for a rank the OS has descheduled), this costs one barrier and one
extra read of each peer's gradients -- from the shared L3 cache, not RAM.

The same sum, in the same order, on every rank: the replicas stay bit-identical, and a
run repeats bit-identically (the order does not depend on timing).

Ordering: the window is locked once (``Lock_all``, passive target) and each exchange is
``Win_sync`` + barrier + ``Win_sync``, the MPI-3 recipe for shared-memory windows in the
unified model.  One barrier per step is enough because the window holds *two* sets of
slots, used on alternate steps: step k writes set k % 2, and a rank writes that set again
at step k + 2 only after the barrier of step k + 1, which no peer enters before it has
finished its update of step k (the last read of set k % 2).  (With one set, a second
barrier after the update would have to hold every rank back until the slowest finished
reading.)

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
    """2 x N gradient regions -- two sets (alternate steps) of one slot per rank -- in one
    node-shared MPI window.

    ``mine`` is this rank's region of the current set (the gradient graph writes it),
    ``views()`` every rank's views of the current set, rank after rank (the update
    graph reads them); :meth:`exchange` (collective) is the point after which every
    rank's slot of the current set is readable, :meth:`flip` (local) moves to the other
    set after the update."""

    SETS = 2

    def __init__(self, comm, params: list[np.ndarray], extra: int = 1):
        MPI = C.mpi()
        self.comm = comm
        world, rank = comm.Get_size(), comm.Get_rank()
        slot = -(-region_nbytes(params, extra) // ALIGN) * ALIGN
        n = self.SETS * world
        # rank 0 allocates all slots in one piece (others 0 bytes), so the slots are
        # contiguous and aligned however Open MPI places per-rank segments
        self.win = MPI.Win.Allocate_shared(n * slot + ALIGN if rank == 0 else 0, 1,
                                           comm=comm)
        mem, _ = self.win.Shared_query(0)
        raw = np.frombuffer(mem, np.uint8)
        off = (-raw.ctypes.data) % ALIGN
        blocks = [raw[off + i * slot:off + (i + 1) * slot] for i in range(n)]
        for s in range(self.SETS):
            blocks[s * world + rank][:] = 0
        regions = [GradRegion(params, extra, b) for b in blocks]
        self.sets = [regions[s * world:(s + 1) * world] for s in range(self.SETS)]
        self._views = [[v for r in regs for v in r.views] for regs in self.sets]
        self.rank, self.current = rank, 0
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self._sync = self.win.Sync
        self._barrier = comm.Barrier
        self.exchange()

    @property
    def mine(self) -> GradRegion:
        return self.sets[self.current][self.rank]

    def exchange(self):
        """This rank's slot written; after this, every slot of the current set is
        readable (collective: a barrier, under the caller's watchdog)."""
        self._sync()
        self._barrier()
        self._sync()

    def flip(self):
        """The next step uses the other set of slots (after this step's update)."""
        self.current ^= 1

    def views(self) -> list[np.ndarray]:
        """Every rank's gradient views of the current set, rank after rank (the update
        graph's inputs)."""
        return self._views[self.current]

    def loss_sum(self) -> float:
        """The ranks' losses summed in float32, in rank order."""
        s = np.float32(0)
        for r in self.sets[self.current]:
            s = np.float32(s + r.loss_slot[0])
        return float(s)

    def close(self):
        """Free the window (collective); the regions must not be used afterwards."""
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None
