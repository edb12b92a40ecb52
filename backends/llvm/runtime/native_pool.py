"""The native side of the worker pool, as LLVM IR: ``graphc_rt_worker``,
``graphc_rt_run``, ``graphc_rt_spin`` (the launcher's module, :func:`build_module`) and
the spin barrier the step function calls (:func:`emit_barrier`).  See
:mod:`.parallel` (the Python side: the pool's threads, the launcher) for why the
workers live in native code.

Only a compile imports this module (and llvmlite.ir with it): the launcher's module is
cached on disk like any other (``parallel._runtime``), so a disk-cache hit loads it
without building its IR.
"""

from __future__ import annotations

from llvmlite import ir

I32, I64 = ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

#: the signature every launched native function has
JOB_TYPE = ir.FunctionType(VOID, [I64, I64, PTR, PTR])

_SPINS_BEFORE_YIELD = 1 << 14   # ~0.4 ms of pause
_SPINS_BEFORE_SLEEP = 1 << 15

# pool control block (bytes, inside parallel._POOL_BYTES); each hot word on its own
# cache line
_GEN, _DONE, _SLEEPERS, _QUIT, _ACK = 0, 64, 128, 192, 320
_FN, _ARGS, _NTHREADS, _BARRIER = 256, 264, 272, 280
_SYS_FUTEX, _FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 202, 128, 129


def build_module(triple: str) -> ir.Module:
    """The launcher's module: the worker loop, the job runner and the spin calibrator."""
    module = ir.Module(name="graphc_runtime")
    module.triple = triple
    _emit_runtime(module)
    _emit_spin(module)
    return module


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

    ``state`` points to ``parallel.BARRIER_STATE_BYTES`` zeroed bytes: the arrival
    counter (i32 at byte 0) and the generation (i32 at byte 64, its own cache line).  The last thread
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
