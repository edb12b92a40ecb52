"""One parallel region per native call: the persistent native worker pool and its launcher.

The compiled training step is one native function with the *job signature*
``void fn(i64 tid, i64 nthreads, ptr args, ptr barrier)``.  :class:`Launcher` runs it
on T threads at once: thread 0 is the caller, T-1 are persistent worker threads.
Inside, the threads claim *chunks* of the step's kernels (pieces fixed by the plan:
``plan/partition.py``) with an atomic counter per segment of independent kernels; a segment
ends when a done counter says all its chunks are finished (``codegen/dynamic.py``), so
a thread the OS has not scheduled yet holds nobody up — no Python between kernels.  Which thread runs a chunk depends on timing; what a chunk computes
and the order of every reduction inside it do not, so results are identical for any
thread count.

Why the workers live entirely in native code (measured on the 2-vCPU VM):

* Python-level hand-off (semaphores, events) costs GIL hand-offs and futex wake-ups:
  ~40 µs median per launch with millisecond tails, and the scheduler often stacked a
  woken worker on the caller's CPU so it ran *after* thread 0's share (1-thread
  speed with 2 threads).
* So each worker thread enters ``graphc_rt_worker`` once through ctypes (GIL
  released) and never comes back: it spins (``pause``) on a job-generation word,
  runs the job through a function pointer, counts itself done, and after
  ``GRAPHC_SPIN_US`` (default 5000 µs) of idleness sleeps in ``futex`` (Linux) so an
  idle program does not burn a core.  ``graphc_rt_run`` publishes a job, wakes
  sleepers, runs thread 0's share and spins until all workers are done — one ctypes
  call per launch.
* The barrier is a centralised counter + generation word updated with LLVM atomics;
  waiters spin with ``pause`` and fall back to ``sched_yield`` after a while, so an
  oversubscribed machine degrades instead of livelocking.  Its state is a buffer
  owned by the :class:`Launcher`, so two launchers never share a barrier.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import threading
import time

import numpy as np

#: stack of each worker thread (glibc's default for a process with an 8 MiB stack limit)
WORKER_STACK_BYTES = 8 << 20
#: stack a caller's thread needs for thread 0's share to run on it: the GEMM drivers keep
#: their packing buffers on the stack (a packed Aᵀ block is 256 KiB, a group of B panels
#: up to 192 KiB: codegen/gemm.py), with room left for the Python frames beneath the call.  A
#: smaller one (musl's 128 KiB default, a ``threading.stack_size`` the program set) has
#: its calls run on a thread of WORKER_STACK_BYTES instead (:func:`_run_on_big_stack`).
CALLER_STACK_BYTES = 2 << 20

#: the signature every launched native function has (as LLVM IR: ``native_pool.JOB_TYPE``)
JOB_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_void_p)

#: bytes of barrier state a launcher hands to the native function
BARRIER_STATE_BYTES = 128
#: bytes of the pool's control block (``native_pool``'s field offsets lie inside it)
_POOL_BYTES = 384


#: more threads than this is a typo, not a machine (each thread has a stack and a slot)
MAX_THREADS = 1024


def num_threads(threads=None) -> int:
    """``threads`` if given, else GRAPHC_NUM_THREADS, else the number of cores.

    A bad value -- 0, negative, not a whole number, more than :data:`MAX_THREADS` -- is
    a ``ConfigError`` naming where it came from (never a silent default)."""
    from graphc.ir import ConfigError
    cores = os.cpu_count() or 1
    if threads is None:
        env = os.environ.get("GRAPHC_NUM_THREADS", "")
        if not env.strip():
            return cores
        where, text = f"GRAPHC_NUM_THREADS={env}", env.strip()
    else:
        where, text = f"threads={threads!r}", threads
    try:
        if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
            raise ValueError
        n = int(text)
    except (TypeError, ValueError):
        n = None
    if n is None or n < 1:
        raise ConfigError(f"{where}: the thread count must be a whole number >= 1 (unset "
                          f"GRAPHC_NUM_THREADS to use every core: {cores} here)")
    if n > MAX_THREADS:
        raise ConfigError(f"{where}: more than {MAX_THREADS} threads (this machine has "
                          f"{cores} cores)")
    return n


_RT = None
_RT_LOCK = threading.Lock()


def _runtime():
    """(CompiledModule, worker cfunc, run cfunc, spin iterations per µs), built once."""
    global _RT
    with _RT_LOCK:
        if _RT is None:
            from .. import source_digest
            from ..native import jit
            target = jit.host_target()

            def build():
                from . import native_pool
                return native_pool.build_module(target.triple)
            # keyed by the backend's sources (which write the module) and the target
            # (jit.cache_key adds llvmlite's version): a process that finds it on disk
            # neither builds nor prints its IR, nor imports llvmlite.ir
            cm = jit.compile_keyed(jit.cache_key("graphc-runtime\0" + source_digest(),
                                                 target), build,
                                   require=("graphc_rt_worker", "graphc_rt_run",
                                            "graphc_rt_spin"))
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            worker = cm.cfunc("graphc_rt_worker", None, p, i64, i64)
            run = cm.cfunc("graphc_rt_run", None, p, p, i64, p, p, i64)
            spin = cm.cfunc("graphc_rt_spin", None, i64)
            _RT = (cm, worker, run, _calibrate(spin))
        return _RT


def _calibrate(spin) -> float:
    """Pause iterations per microsecond on this CPU (best of a few short runs: 5000
    pauses, ~0.1 ms each on Zen 3, gave the same rate as 20000 -- which cost every
    process that starts a pool ~1.7 ms)."""
    n, best = 5000, float("inf")
    for _ in range(3):
        t = time.perf_counter()
        spin(n)
        best = min(best, time.perf_counter() - t)
    return n / max(best * 1e6, 1e-3)


def spin_microseconds() -> float:
    """How long idle workers spin before sleeping (GRAPHC_SPIN_US, default 5000)."""
    env = os.environ.get("GRAPHC_SPIN_US", "").strip()
    return float(env) if env else 5000.0


def _pinning() -> bool:
    return (os.environ.get("GRAPHC_PIN_THREADS", "1") != "0"
            and hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity"))


def _worker_cpu(w: int):
    """The CPU worker ``w`` is pinned to: the (w+1)-th allowed one (None: no pinning)."""
    if not _pinning():
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[(w + 1) % len(cpus)] if len(cpus) > 1 else None


def _pin_worker(cpu) -> None:
    """Pin the calling worker thread to ``cpu``.

    Why: on the 2-vCPU VM the scheduler never moved a thread to an idle CPU at
    wake-up (only the periodic balancer did, after milliseconds): a worker woken from
    its futex sleep stayed queued behind the caller (barrier waits of ~0.4-4 ms).
    Pinned workers plus :func:`_steer_caller` keep the threads on distinct CPUs.
    """
    if cpu is None:
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


try:
    _sched_getcpu = ctypes.CDLL(None).sched_getcpu
    _sched_getcpu.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc/Linux
    _sched_getcpu = None


def _steer_caller(worker_cpus) -> None:
    """If the calling thread sits on a worker's CPU, move it off (affinity is restored
    right away, which leaves the thread where it now is)."""
    if not worker_cpus or _sched_getcpu is None or _sched_getcpu() not in worker_cpus:
        return
    try:
        old = os.sched_getaffinity(0)
        free = old - worker_cpus
        if free:
            os.sched_setaffinity(0, free)
            os.sched_setaffinity(0, old)
    except OSError:
        pass


def _thread_stack_bytes() -> int | None:
    """Size of the calling thread's stack (``pthread_getattr_np``: glibc and musl; for
    the main thread glibc reports its RLIMIT_STACK), None where it cannot be asked."""
    try:
        libc = ctypes.CDLL(None)
        get, stack, destroy = (libc.pthread_getattr_np, libc.pthread_attr_getstack,
                               libc.pthread_attr_destroy)
        libc.pthread_self.restype = ctypes.c_void_p
    except (OSError, AttributeError):
        return None
    attr = ctypes.create_string_buffer(256)         # pthread_attr_t: 56 bytes on x86-64
    if get(ctypes.c_void_p(libc.pthread_self()), attr) != 0:
        return None
    try:
        addr, size = ctypes.c_void_p(), ctypes.c_size_t()
        if stack(attr, ctypes.byref(addr), ctypes.byref(size)) != 0:
            return None
        return size.value
    finally:
        destroy(attr)


_CALLER = threading.local()


def _caller_has_stack() -> bool:
    """Whether this thread's stack holds thread 0's share (asked once per thread)."""
    ok = getattr(_CALLER, "ok", None)
    if ok is None:
        size = _thread_stack_bytes()
        ok = _CALLER.ok = size is None or size >= CALLER_STACK_BYTES
    return ok


def _big_stack_thread(target, name: str) -> threading.Thread:
    """A started daemon thread with a WORKER_STACK_BYTES stack, whatever
    ``threading.stack_size`` the program set (restored afterwards)."""
    previous = threading.stack_size()
    try:
        threading.stack_size(WORKER_STACK_BYTES)
    except (ValueError, RuntimeError):      # a platform that cannot set it
        pass
    try:
        t = threading.Thread(target=target, daemon=True, name=name)
        t.start()
        return t
    finally:
        threading.stack_size(previous)


class _BigStack:
    """One thread with a big stack that runs calls for callers whose own stack is too
    small: a Python hand-off (tens of µs) instead of a SIGSEGV in a packing buffer."""

    def __init__(self):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        _big_stack_thread(self._serve, "graphc-big-stack")

    def _serve(self) -> None:
        while True:
            fn, done, raised = self.jobs.get()
            try:
                fn()
            except BaseException as e:      # noqa: BLE001 -- handed back to the caller
                raised.append(e)
            done.set()

    def call(self, fn) -> None:
        done, raised = threading.Event(), []
        self.jobs.put((fn, done, raised))
        done.wait()
        if raised:
            raise raised[0]


_BIG: _BigStack | None = None
_BIG_LOCK = threading.Lock()


def _run_on_big_stack(fn) -> None:
    global _BIG
    with _BIG_LOCK:
        if _BIG is None:
            _BIG = _BigStack()
        big = _BIG
    big.call(fn)


class _Pool:
    """T-1 persistent worker threads living in ``graphc_rt_worker`` (native code)."""

    def __init__(self, workers: int):
        _, worker, self.run_native, per_us = _runtime()
        self.lock = threading.Lock()
        self.block = np.zeros(_POOL_BYTES // 8, dtype=np.int64)
        self.ptr = self.block.ctypes.data
        self.workers = workers
        spins = max(1, int(spin_microseconds() * per_us))
        cpus = [_worker_cpu(w) for w in range(workers)]
        self.worker_cpus = frozenset(c for c in cpus if c is not None)
        # the GEMM drivers keep their packing buffers on the stack (up to ~450 KiB:
        # codegen/gemm.py), so a worker never inherits a small stack size the program
        # may have set (threading.stack_size): it would crash, not raise
        for w in range(workers):
            _big_stack_thread(functools.partial(self._work, worker, w, spins, cpus[w]),
                              f"graphc-worker-{w + 1}")

    def _work(self, worker, w: int, spins: int, cpu) -> None:
        _pin_worker(cpu)
        worker(self.ptr, w, spins)  # native: returns only when the pool quits

    def run(self, fn_addr: int, n: int, args: int, barrier: int) -> None:
        with self.lock:
            _steer_caller(self.worker_cpus)
            self.run_native(self.ptr, fn_addr, n, args, barrier, self.workers)


_POOLS: dict[int, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools_in_child() -> None:
    """After fork only the forking thread exists: pools must be rebuilt, not waited on."""
    global _POOLS_LOCK, _BIG, _BIG_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()
    _BIG, _BIG_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def _pool(nthreads: int) -> _Pool:
    with _POOLS_LOCK:
        pool = _POOLS.get(nthreads)
        if pool is None:
            pool = _POOLS[nthreads] = _Pool(nthreads - 1)
        return pool


def _address(fn) -> int:
    if isinstance(fn, int):
        return fn
    return ctypes.cast(fn, ctypes.c_void_p).value


class Launcher:
    """Runs a native job ``fn(tid, nthreads, args, barrier)`` on ``nthreads`` threads.

    ``fn`` is a function address (or a ctypes function).  ``barrier`` is a private
    zeroed buffer of BARRIER_STATE_BYTES for :func:`emit_barrier`'s function.
    """

    def __init__(self, fn, nthreads=None):
        self.addr = _address(fn)
        self.nthreads = num_threads(nthreads)
        self.state = np.zeros(BARRIER_STATE_BYTES // 4, dtype=np.int32)
        self._lock = threading.Lock()

    def bind(self, args: int = 0):
        """A zero-argument callable running the job with the ``args`` pointer."""
        barrier = self.state.ctypes.data
        n, addr = self.nthreads, self.addr
        if n == 1:
            direct = JOB_CTYPE(addr)

            def launch():
                if _caller_has_stack():
                    direct(0, 1, args, barrier)
                else:       # thread 0's share on a stack big enough for it
                    _run_on_big_stack(lambda: direct(0, 1, args, barrier))
            return launch
        run = _pool(n).run
        lock = self._lock

        def launch():
            with lock:  # the barrier state supports one launch at a time
                if _caller_has_stack():
                    run(addr, n, args, barrier)
                else:
                    _run_on_big_stack(lambda: run(addr, n, args, barrier))
        return launch

    def __call__(self, args: int = 0):
        self.bind(args)()


def __getattr__(name):
    # the native side's IR names (``JOB_TYPE``, ``emit_barrier``), as before the split:
    # imported on use, so the Python launcher does not load llvmlite.ir
    if name in ("JOB_TYPE", "emit_barrier"):
        from . import native_pool
        return getattr(native_pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
