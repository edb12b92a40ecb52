"""The dynamic chunk scheduler inside the entry function (more than one thread).

Kernels between two required synchronisation points form a *segment*; its work is a
list of chunks that threads claim with an atomic counter, and a segment ends when all
its chunks are done.  A mixin of :class:`.module.Codegen` (it uses the module ``m``,
the ``plan`` and the thread count ``T``).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..plan.kernels import CopyKernel, GemmKernel

I32, I64 = ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()


class DynamicSchedule:
    def dynamic_phases(self, b, fn, tid, nth, argv, run):
        """Kernels between two required synchronisation points form a *segment*; its
        work is a list of chunks -- one per thread share of every multi-thread kernel,
        plus one chunk running the segment's thread-0-only kernels in order -- that
        threads claim with an atomic counter.  A segment ends when all its chunks are
        done (a done counter), not when all threads arrived: a thread the OS has not
        scheduled yet does not hold the others up, the others do its share.  What a
        chunk computes depends only on its index, so results stay bit-identical.

        Counters live in a buffer (argv slot ``len(slots)+2``, one cache line each)
        that the runtime zeroes before every call, so any number of threads (1..T) may
        run a call: shares are fixed by chunk index, not by thread.
        """
        plan = self.plan
        segs = _segments(plan.kernels)
        self.n_segments = len(segs)
        nslots = len(plan.slots)
        ctr = b.inttoptr(b.load(b.gep(argv, [I64(nslots + 2)], source_etype=I64), typ=I64),
                         PTR)
        yield_fn = self.m.globals.get("sched_yield") or ir.Function(
            self.m, ir.FunctionType(I32, []), "sched_yield")
        pause = ir.Function(self.m, ir.FunctionType(VOID, []), "llvm.x86.sse2.pause") \
            if (self.m.triple or "x86_64").startswith(("x86_64", "i686")) else None
        for si, seg in enumerate(segs):
            chunks = _chunks([plan.kernels[i] for i in seg], seg, self.T)
            wait, done = self.segment(b, fn, si, chunks, ctr, run)
            self.wait_segment(b, fn, si, len(chunks), wait, done, yield_fn, pause)

    def segment(self, b, fn, si, chunks, ctr, run):
        """Claim chunks of segment ``si`` with an atomic counter and run them until none
        is left (each done chunk counted).  Returns the (wait, spin, out) blocks of
        the wait that follows and the done counter."""
        n = len(chunks)
        claim = b.gep(ctr, [I64(16 * si)], source_etype=I64)
        done = b.gep(ctr, [I64(16 * si + 8)], source_etype=I64)
        head = fn.append_basic_block(f"seg{si}.claim")
        work = fn.append_basic_block(f"seg{si}.work")
        nxt = fn.append_basic_block(f"seg{si}.next")
        wait = [fn.append_basic_block(f"seg{si}.wait"), None, fn.append_basic_block(f"seg{si}.out")]
        b.branch(head)
        b.position_at_end(head)
        c = b.atomic_rmw("add", claim, I64(1), "monotonic")
        b.cbranch(b.icmp_signed("<", c, I64(n)), work, wait[0])
        b.position_at_end(work)
        sw = b.switch(c, nxt)
        for j0, items, n_run in _runs(chunks):
            blk = fn.append_basic_block(f"seg{si}.c{j0}")
            for j in range(j0, j0 + n_run):
                sw.add_case(I64(j), blk)
            b.position_at_end(blk)
            if n_run == 1:
                for i, part in items:
                    run(i, I64(part))
            else:       # chunks j0.. of one kernel: parts p0 + (c - j0), one call
                (i, p0), = items
                run(i, b.add(c, I64(p0 - j0)))
            b.branch(nxt)
        b.position_at_end(nxt)
        b.atomic_rmw("add", done, I64(1), "release")
        b.branch(head)
        return wait, done

    def wait_segment(self, b, fn, si, n, blocks, done, yield_fn, pause):
        """Wait until all ``n`` chunks of segment ``si`` are done (by whichever thread):
        a call of the entry module's one wait loop (:meth:`_wait_function`), not a loop
        per segment -- a transformer step has ~100 segments."""
        wait, _, out = blocks
        b.position_at_end(wait)
        b.call(self._wait_function(yield_fn, pause), [done, I64(n)])
        b.branch(out)
        b.position_at_end(out)

    def _wait_function(self, yield_fn, pause):
        """``void graphc_wait_done(ptr done, i64 n)`` (internal, once per module): spin
        until ``*done >= n`` (acquire), with ``pause``, yielding the CPU after a while."""
        wf = self.m.globals.get("graphc_wait_done")
        if wf is not None:
            return wf
        wf = ir.Function(self.m, ir.FunctionType(VOID, [PTR, I64]), "graphc_wait_done")
        wf.linkage = "internal"
        wf.attributes.add("nounwind")
        wf.attributes.add("noinline")
        done, n = wf.args
        entry, spin, fast, slow, out = (wf.append_basic_block(x) for x in
                                        ("entry", "spin", "fast", "slow", "out"))
        b = ir.IRBuilder(entry)
        b.branch(spin)
        b.position_at_end(spin)
        cnt = b.phi(I64)
        cnt.add_incoming(I64(0), entry)
        d = b.load_atomic(done, "acquire", 8, typ=I64)
        b.cbranch(b.icmp_signed(">=", d, n), out, fast)
        b.position_at_end(fast)
        if pause is not None:
            b.call(pause, [])
        cnext = b.add(cnt, I64(1))
        b.cbranch(b.icmp_signed(">", cnext, I64(1 << 12)), slow, spin)
        cnt.add_incoming(cnext, fast)
        b.position_at_end(slow)
        b.call(yield_fn, [])
        b.branch(spin)
        cnt.add_incoming(cnext, slow)
        b.position_at_end(out)
        b.ret_void()
        return wf


def _runs(chunks) -> list:
    """(first chunk index, its items, length) of the maximal runs of consecutive chunks
    that are consecutive parts of one kernel (a kernel's equal-cost chunks stay together
    in :func:`_chunks`' stable sort): the entry calls the kernel once per run with the
    part computed from the claimed index, not once per chunk -- the same chunk-to-part
    map in fewer instructions (a transformer step's entry: 835 chunks, 157 kernels)."""
    out = []
    for j, (_, items) in enumerate(chunks):
        if out and len(items) == 1 and len(out[-1][1]) == 1:
            j0, ((i0, p0),), n = out[-1]
            (i, part), = items
            if i == i0 and part == p0 + n and j == j0 + n:
                out[-1] = (j0, out[-1][1], n + 1)
                continue
        out.append((j, items, 1))
    return out


def _segments(kernels) -> list:
    """Kernel indices between synchronisation points (a barrier starts a segment)."""
    segs, cur = [], []
    for i, k in enumerate(kernels):
        if k.barrier and cur:
            segs.append(cur)
            cur = []
        cur.append(i)
    if cur:
        segs.append(cur)
    return segs


def _chunks(kernels, indices, T) -> list:
    """(cost, [(kernel index, part)]) of a segment, costliest first: one chunk running
    its thread-0-only kernels in order, one per piece of every multi-thread kernel."""
    chunks = []
    singles = [(i, k) for i, k in zip(indices, kernels) if k.single]
    if singles:
        chunks.append((sum(_cost(k, T) for _, k in singles), [(i, 0) for i, _ in singles]))
    for i, k in zip(indices, kernels):
        if not k.single:
            for part in range(k.nchunks):
                chunks.append((_cost(k, T) / k.nchunks, [(i, part)]))
    chunks.sort(key=lambda c: -c[0])
    return chunks


def _cost(k, T):
    """Rough work of a kernel (multiply-adds or element-ops) for ordering chunks."""
    if isinstance(k, GemmKernel):
        g = k.gemm
        return g.m * g.n * max(g.k, 1) + g.m * g.n * len(k.nodes)
    if isinstance(k, CopyKernel):
        return sum(int(np.prod(c.dst.shape)) for c in k.copies)
    return int(np.prod(k.shape)) * (1 + len(k.nodes) + len(k.reductions))
