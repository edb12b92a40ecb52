"""One parallel region per native call: a spin barrier in LLVM IR and a thread launcher.

The compiled training step is one native function ``step(tid, nthreads, args...)``.
Python starts it on T threads at once (thread 0 is the caller; T-1 persistent worker
threads are woken per call); ctypes releases the GIL, so all T run natively in
parallel.  Inside, every kernel computes the fixed share of its iteration space that
belongs to ``tid`` (see ``gemm.emit_gemm_parallel``) and dependent kernels are
separated by :func:`emit_barrier` calls — no Python between kernels.  Shares depend
only on the shapes and T, and every output element is computed by exactly one thread
in a fixed order, so results do not depend on timing.

The barrier is a centralised counter + generation word updated with LLVM atomics.
Waiters spin with ``pause`` and fall back to ``sched_yield`` after a while, so an
oversubscribed machine degrades instead of livelocking.  Its state is a small buffer
owned by the :class:`Launcher` and passed to the native function as an argument, so
two launchers never share a barrier.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
from llvmlite import ir

I32, I64 = ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()

#: bytes of barrier state a launcher hands to the native function
BARRIER_STATE_BYTES = 128
_SPINS_BEFORE_YIELD = 1 << 14


def num_threads(threads=None) -> int:
    """``threads`` if given, else GRAPHC_NUM_THREADS, else the number of cores."""
    if threads is None:
        env = os.environ.get("GRAPHC_NUM_THREADS", "")
        threads = int(env) if env.strip() else (os.cpu_count() or 1)
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"thread count must be >= 1, got {threads}")
    return threads


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
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, I64]), name)
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    state, nthreads = fn.args
    yield_fn = module.globals.get("sched_yield") or ir.Function(
        module, ir.FunctionType(I32, []), "sched_yield")
    x86 = (module.triple or "").startswith(("x86_64", "i686")) or not module.triple
    pause = None
    if x86:
        pause = module.globals.get("llvm.x86.sse2.pause") or ir.Function(
            module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")

    entry = fn.append_basic_block("entry")
    last, spin, wait, yld, out = (fn.append_basic_block(n) for n in
                                  ("last", "spin", "wait", "yield", "out"))
    b = ir.IRBuilder(entry)
    gen_ptr = b.gep(state, [I64(16)], source_etype=I32)
    gen = b.load_atomic(gen_ptr, "acquire", 4, typ=I32)
    old = b.atomic_rmw("add", state, I32(1), "acq_rel")
    n32 = b.trunc(nthreads, I32)
    b.cbranch(b.icmp_signed(">=", b.add(old, I32(1)), n32), last, spin)

    b.position_at_end(last)
    b.atomic_rmw("xchg", state, I32(0), "monotonic")
    b.atomic_rmw("add", gen_ptr, I32(1), "release")
    b.ret_void()

    b.position_at_end(spin)
    i = b.phi(I64, "spins")
    i.add_incoming(I64(0), entry)
    cur = b.load_atomic(gen_ptr, "acquire", 4, typ=I32)
    b.cbranch(b.icmp_signed("!=", cur, gen), out, wait)

    b.position_at_end(wait)
    if pause is not None:
        b.call(pause, [])
    inext = b.add(i, I64(1))
    b.cbranch(b.icmp_signed(">", inext, I64(_SPINS_BEFORE_YIELD)), yld, spin)
    b.position_at_end(yld)
    b.call(yield_fn, [])
    b.branch(spin)
    i.add_incoming(inext, wait)
    i.add_incoming(inext, yld)

    b.position_at_end(out)
    b.ret_void()
    return fn


class _Pool:
    """T-1 persistent worker threads that each run ``fn(tid, T, *args)`` on request."""

    def __init__(self, workers: int):
        self.lock = threading.Lock()
        self.go = [threading.Semaphore(0) for _ in range(workers)]
        self.done = threading.Semaphore(0)
        self.job = None
        self.errors: list = []
        for w in range(workers):
            t = threading.Thread(target=self._work, args=(w,), daemon=True,
                                 name=f"graphc-worker-{w + 1}")
            t.start()

    def _work(self, w: int) -> None:
        while True:
            self.go[w].acquire()
            fn, args, n = self.job
            try:
                fn(w + 1, n, *args)
            except BaseException as e:  # pragma: no cover - native code does not raise
                self.errors.append(e)
            finally:
                self.done.release()

    def run(self, fn, args, n: int) -> None:
        with self.lock:
            self.job, self.errors = (fn, args, n), []
            for w in range(n - 1):
                self.go[w].release()
            try:
                fn(0, n, *args)
            finally:
                for _ in range(n - 1):
                    self.done.acquire()
            if self.errors:
                raise self.errors[0]


_POOLS: dict[int, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(nthreads: int) -> _Pool:
    with _POOLS_LOCK:
        pool = _POOLS.get(nthreads)
        if pool is None:
            pool = _POOLS[nthreads] = _Pool(nthreads - 1)
        return pool


class Launcher:
    """Runs a native ``fn(tid: i64, nthreads: i64, *args)`` on ``nthreads`` threads.

    ``fn`` is a ctypes function (its call releases the GIL).  With ``barrier=True``
    a private zeroed barrier-state buffer is passed as the first of ``args``.
    """

    def __init__(self, fn, nthreads=None, barrier: bool = False):
        self.fn = fn
        self.nthreads = num_threads(nthreads)
        self.state = np.zeros(BARRIER_STATE_BYTES // 4, dtype=np.int32) if barrier else None
        self._lock = threading.Lock()

    def bind(self, *args):
        """A zero-argument callable running ``fn`` with ``args`` (ints cached once)."""
        if self.state is not None:
            args = (self.state.ctypes.data,) + args
        fn, n = self.fn, self.nthreads
        if n == 1:
            return lambda: fn(0, 1, *args)
        pool = _pool(n)
        lock = self._lock

        def run():
            with lock:  # the barrier state supports one launch at a time
                pool.run(fn, args, n)
        return run

    def __call__(self, *args):
        self.bind(*args)()
