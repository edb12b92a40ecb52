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
import os
import threading
import time

import numpy as np
from llvmlite import ir

I32, I64 = ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

#: the signature every launched native function has
JOB_TYPE = ir.FunctionType(VOID, [I64, I64, PTR, PTR])
JOB_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_void_p)

#: bytes of barrier state a launcher hands to the native function
BARRIER_STATE_BYTES = 128
_SPINS_BEFORE_YIELD = 1 << 14   # ~0.4 ms of pause
_SPINS_BEFORE_SLEEP = 1 << 15

# pool control block (bytes); each hot word on its own cache line
_GEN, _DONE, _SLEEPERS, _QUIT, _ACK = 0, 64, 128, 192, 320
_FN, _ARGS, _NTHREADS, _BARRIER = 256, 264, 272, 280
_POOL_BYTES = 384
_SYS_FUTEX, _FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 202, 128, 129


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


def _is_x86(module) -> bool:
    return (module.triple or "").startswith(("x86_64", "i686")) or not module.triple


def _helper(module, name, fnty):
    return module.globals.get(name) or ir.Function(module, fnty, name)


def _pause(b, module) -> None:
    if _is_x86(module):
        b.call(_helper(module, "llvm.x86.sse2.pause", ir.FunctionType(VOID, [])), [])


def _spin_until(b, fn, cond, name, yield_after=_SPINS_BEFORE_YIELD,
                sleep_after=_SPINS_BEFORE_SLEEP):
    """Emit a loop that waits until ``cond(b)`` is true: ``pause`` spins first, then
    ``sched_yield``, then ``usleep(20)`` so that a thread stacked on our CPU gets it."""
    module = fn.module
    yield_fn = _helper(module, "sched_yield", ir.FunctionType(I32, []))
    usleep = _helper(module, "usleep", ir.FunctionType(I32, [I32]))
    pre = b.block
    loop, body, slow, yld, nap, nxt, out = (fn.append_basic_block(f"{name}.{n}") for n in
                                            ("loop", "body", "slow", "yield", "nap", "next",
                                             "out"))
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(I64(0), pre)
    b.cbranch(cond(b), out, body)
    b.position_at_end(body)
    b.cbranch(b.icmp_signed("<", i, I64(yield_after)), nxt, slow)
    b.position_at_end(slow)
    b.cbranch(b.icmp_signed("<", i, I64(sleep_after)), yld, nap)
    b.position_at_end(yld)
    b.call(yield_fn, [])
    b.branch(nxt)
    b.position_at_end(nap)
    b.call(usleep, [I32(20)])
    b.branch(nxt)
    b.position_at_end(nxt)
    _pause(b, module)
    inext = b.add(i, I64(1))
    i.add_incoming(inext, nxt)
    b.branch(loop)
    b.position_at_end(out)


def emit_barrier(module: ir.Module) -> ir.Function:
    """Emit (once) ``void graphc_barrier(ptr state, i64 nthreads)``.

    ``state`` points to BARRIER_STATE_BYTES zeroed bytes: the arrival counter (i32 at
    byte 0) and the generation (i32 at byte 64, its own cache line).  The last thread
    to arrive resets the counter and bumps the generation (release); the others wait
    until they see the generation change (acquire), so everything written before the
    barrier by any thread is visible after it to all.
    """
    name = "graphc_barrier"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64]), name)
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    state, nthreads = fn.args
    entry, last, wait = (fn.append_basic_block(n) for n in ("entry", "last", "wait"))
    b = ir.IRBuilder(entry)
    gen_ptr = b.gep(state, [I64(16)], source_etype=I32)
    gen = b.load_atomic(gen_ptr, "acquire", 4, typ=I32)
    old = b.atomic_rmw("add", state, I32(1), "acq_rel")
    b.cbranch(b.icmp_signed(">=", b.add(old, I32(1)), b.trunc(nthreads, I32)), last, wait)

    b.position_at_end(last)
    b.atomic_rmw("xchg", state, I32(0), "monotonic")
    b.atomic_rmw("add", gen_ptr, I32(1), "release")
    b.ret_void()

    b.position_at_end(wait)
    _spin_until(b, fn, lambda b: b.icmp_signed(
        "!=", b.load_atomic(gen_ptr, "acquire", 4, typ=I32), gen), "bar")
    b.ret_void()
    return fn


def _futex(b, module, word, op, val):
    """syscall(SYS_futex, word, op, val, NULL, NULL, 0) on Linux x86-64; else no-op."""
    if not (module.triple or "x86_64-unknown-linux").startswith("x86_64") or \
            "linux" not in (module.triple or "linux"):
        return
    sysc = _helper(module, "syscall", ir.FunctionType(I64, [I64], var_arg=True))
    null = ir.Constant(PTR, None)
    b.call(sysc, [I64(_SYS_FUTEX), word, I32(op), val, null, null, I32(0)])


def _fld(b, pool, off):
    """Pointer to the pool-state field at byte offset ``off``."""
    return b.gep(pool, [I64(off)], source_etype=ir.IntType(8))


def _emit_runtime(module: ir.Module) -> None:
    """Emit the pool's native side: ``graphc_rt_worker`` and ``graphc_rt_run``."""
    emit_barrier(module)
    _emit_worker(module)
    _emit_run(module)


def _emit_worker(module: ir.Module) -> None:
    """void graphc_rt_worker(ptr pool, i64 w, i64 spins): spin, then futex-sleep, on
    the job generation; run each job as thread w+1; return only when told to quit."""
    fld = _fld
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64]), "graphc_rt_worker")
    pool, w, spins = fn.args
    entry, top, spin, body, sleep, got, call, done, out = (fn.append_basic_block(n) for n in (
        "entry", "top", "spin", "body", "sleep", "got", "call", "done", "out"))
    b = ir.IRBuilder(entry)
    gen_p, done_p, sleepers_p, quit_p = (fld(b, pool, o) for o in (_GEN, _DONE, _SLEEPERS, _QUIT))
    b.branch(top)
    b.position_at_end(top)
    seen = b.phi(I32, "seen")
    seen.add_incoming(I32(0), entry)
    b.branch(spin)
    b.position_at_end(spin)
    i = b.phi(I64, "i")
    i.add_incoming(I64(0), top)
    g = b.load_atomic(gen_p, "acquire", 4, typ=I32)
    b.cbranch(b.icmp_signed("!=", g, seen), got, body)
    b.position_at_end(body)
    _pause(b, module)
    inext = b.add(i, I64(1))
    i.add_incoming(inext, body)
    b.cbranch(b.icmp_signed("<", inext, spins), spin, sleep)
    b.position_at_end(sleep)  # idle for long: sleep until the generation changes
    b.atomic_rmw("add", sleepers_p, I32(1), "seq_cst")
    _futex(b, module, gen_p, _FUTEX_WAIT_PRIVATE, seen)
    b.atomic_rmw("sub", sleepers_p, I32(1), "seq_cst")
    i.add_incoming(I64(0), sleep)
    b.branch(spin)
    b.position_at_end(got)
    quit_ = b.load_atomic(quit_p, "acquire", 4, typ=I32)
    b.cbranch(b.icmp_signed("!=", quit_, I32(0)), out, call)
    b.position_at_end(call)
    job = b.load(fld(b, pool, _FN), typ=PTR)
    args = b.load(fld(b, pool, _ARGS), typ=PTR)
    nth = b.load(fld(b, pool, _NTHREADS), typ=I64)
    barrier = b.load(fld(b, pool, _BARRIER), typ=PTR)
    b.atomic_rmw("add", fld(b, pool, _ACK), I32(1), "release")
    tid = b.add(w, I64(1))
    run_blk = fn.append_basic_block("run")
    b.cbranch(b.icmp_signed("<", tid, nth), run_blk, done)
    b.position_at_end(run_blk)
    _indirect_call(b, job, [tid, nth, args, barrier])
    b.branch(done)
    b.position_at_end(done)
    b.atomic_rmw("add", done_p, I32(1), "release")
    seen.add_incoming(g, done)
    b.branch(top)
    b.position_at_end(out)
    b.ret_void()


def _emit_run(module: ir.Module) -> None:
    """void graphc_rt_run(ptr pool, ptr fn, i64 n, ptr args, ptr barrier, i64 nworkers):
    publish a job, wake sleeping workers, run thread 0's part, wait for the rest."""
    fld = _fld
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, PTR, I64, PTR, PTR, I64]),
                     "graphc_rt_run")
    pool, job, nth, args, barrier, nworkers = fn.args
    entry, wake, go = (fn.append_basic_block(n) for n in ("entry", "wake", "go"))
    b = ir.IRBuilder(entry)
    gen_p, done_p, sleepers_p, ack_p = (fld(b, pool, o) for o in (_GEN, _DONE, _SLEEPERS, _ACK))
    for off, val in ((_FN, job), (_ARGS, args), (_NTHREADS, nth), (_BARRIER, barrier)):
        b.store(val, fld(b, pool, off))
    target = b.add(b.load_atomic(done_p, "acquire", 4, typ=I32), b.trunc(nworkers, I32))
    ack_target = b.add(b.load_atomic(ack_p, "acquire", 4, typ=I32), b.trunc(nworkers, I32))
    b.atomic_rmw("add", gen_p, I32(1), "seq_cst")  # publishes the job (release)
    asleep = b.load_atomic(sleepers_p, "seq_cst", 4, typ=I32)
    b.cbranch(b.icmp_signed(">", asleep, I32(0)), wake, go)
    b.position_at_end(wake)
    _futex(b, module, gen_p, _FUTEX_WAKE_PRIVATE, I32(2 ** 31 - 1))
    # A woken worker may have been queued on our CPU: wait (yielding early) until every
    # worker picked the job up, so the scheduler spreads us before the work starts.
    _spin_until(b, fn, lambda b: b.icmp_signed(
        ">=", b.sub(b.load_atomic(ack_p, "acquire", 4, typ=I32), ack_target), I32(0)),
        "ack", yield_after=64, sleep_after=64)
    b.branch(go)
    b.position_at_end(go)
    _indirect_call(b, job, [I64(0), nth, args, barrier])
    _spin_until(b, fn, lambda b: b.icmp_signed(
        ">=", b.sub(b.load_atomic(done_p, "acquire", 4, typ=I32), target), I32(0)), "join")
    b.ret_void()


def _indirect_call(b, fnptr, args):
    """Call a job through an opaque pointer (llvmlite's call reads ``function_type``)."""
    return b.call(_TypedPointer(fnptr, JOB_TYPE), args)


class _TypedPointer:
    """A pointer value seen as a callee of a known function type."""

    def __init__(self, ptr, fnty):
        self._ptr, self.function_type, self.type = ptr, fnty, ptr.type

    def get_reference(self):
        return self._ptr.get_reference()


def _emit_spin(module: ir.Module) -> None:
    """``void graphc_rt_spin(i64 n)``: n pause iterations (calibrates the spin budget)."""
    fn = ir.Function(module, ir.FunctionType(VOID, [I64]), "graphc_rt_spin")
    entry, loop, out = (fn.append_basic_block(n) for n in ("entry", "loop", "out"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", fn.args[0], I64(0)), loop, out)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(I64(0), entry)
    _pause(b, module)
    inext = b.add(i, I64(1))
    i.add_incoming(inext, loop)
    b.cbranch(b.icmp_signed("<", inext, fn.args[0]), loop, out)
    b.position_at_end(out)
    b.ret_void()


_RT = None
_RT_LOCK = threading.Lock()


def _runtime():
    """(CompiledModule, worker cfunc, run cfunc, spin iterations per µs), built once."""
    global _RT
    with _RT_LOCK:
        if _RT is None:
            from ..native import jit
            module = ir.Module(name="graphc_runtime")
            module.triple = jit.host_target().triple
            _emit_runtime(module)
            _emit_spin(module)
            cm = jit.compile_module(module)
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            worker = cm.cfunc("graphc_rt_worker", None, p, i64, i64)
            run = cm.cfunc("graphc_rt_run", None, p, p, i64, p, p, i64)
            spin = cm.cfunc("graphc_rt_spin", None, i64)
            _RT = (cm, worker, run, _calibrate(spin))
        return _RT


def _calibrate(spin) -> float:
    """Pause iterations per microsecond on this CPU (best of a few short runs)."""
    n, best = 20000, float("inf")
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
        for w in range(workers):
            t = threading.Thread(target=self._work, args=(worker, w, spins, cpus[w]),
                                 daemon=True, name=f"graphc-worker-{w + 1}")
            t.start()

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
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


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
            return lambda: direct(0, 1, args, barrier)
        run = _pool(n).run
        lock = self._lock

        def launch():
            with lock:  # the barrier state supports one launch at a time
                run(addr, n, args, barrier)
        return launch

    def __call__(self, args: int = 0):
        self.bind(args)()
