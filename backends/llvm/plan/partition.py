"""Per-kernel finishing: dimensions merged, the cut over threads chosen.

A multi-thread kernel is cut into ``nchunks`` fixed pieces (a range of one loop
dimension, or a column/row block of a GEMM's product) that the threads claim
dynamically; what a piece computes and the order of every reduction depend only on the
shapes, so results are bit-identical for any thread count.  Kernels small enough to run
on thread 0 alone are ``single``.
"""
from __future__ import annotations

import numpy as np

from ..codegen import gemm as gemm_mod
from ..codegen import gemm_parallel
from .kernels import (Col2imGemmKernel, Im2colGemmKernel, Copy, CopyKernel, CustomKernel, DotKernel, Gemm,
                      GemmKernel, GemmPartition, Kernel, LoopKernel, LoopPartition)
from .views import View

SINGLE_THREAD_ELEMS = 1 << 14    # smaller loop kernels run on thread 0 only
#: a multi-thread kernel is cut into up to this many chunks per thread, claimed
#: dynamically: a thread slowed down (shared core) ends up doing fewer of them
CHUNKS_PER_THREAD = 4


def merge_dims(shape, views):
    """Drop size-1 dims and merge adjacent dims every view walks contiguously."""
    keep = [d for d in range(len(shape)) if shape[d] != 1]
    shp = [shape[d] for d in keep]
    sts = [[v.strides[d] for d in keep] for v in views]
    i = len(shp) - 2
    while i >= 0:
        if all(s[i] == s[i + 1] * shp[i + 1] for s in sts):
            shp[i] = shp[i] * shp[i + 1]
            del shp[i + 1]
            for s in sts:
                s[i] = s[i + 1]
                del s[i + 1]
        i -= 1
    return tuple(shp), [tuple(s) for s in sts]


def finish(k: Kernel, threads: int) -> None:
    """Merge dims (loop and copy kernels), choose the partition, decide single-thread."""
    if isinstance(k, CopyKernel):
        _finish_copies(k)
    elif isinstance(k, (Col2imGemmKernel, Im2colGemmKernel)):
        k.chunks = min(k.max_chunks, threads)
        k.single = threads > 1 and k.nchunks == 1
    elif isinstance(k, CustomKernel):
        from ..codegen.lowerings import LOWERINGS
        k.chunks = LOWERINGS[k.node.op].chunks(k, threads)
        k.single = threads > 1 and k.nchunks == 1
    elif isinstance(k, DotKernel):
        from ..codegen import dot
        g = k.gemm
        units = dot.plan_shape(g.m, g.n, g.a.st.dtype)[3]
        k.gpart = GemmPartition(dot.chunks(g.m, g.n, g.k, g.a.st.dtype, threads), False,
                                units, 1, None)
        k.single = threads > 1 and k.nchunks == 1
    elif isinstance(k, GemmKernel):
        k.gpart = gemm_partition(k.gemm, gemm_parallel.chunks_for(threads))
        k.single = threads > 1 and k.nchunks == 1
    else:
        _finish_loop(k, threads)


def _finish_copies(k: CopyKernel) -> None:
    new = []
    for c in k.copies:
        shp, (ss, ds) = merge_dims(c.dst.shape, [c.src, c.dst])
        new.append(Copy(src=View(c.src.st, c.src.offset, shp, ss),
                        dst=View(c.dst.st, c.dst.offset, shp, ds)))
    k.copies = new
    k.single = True


def _finish_loop(k: LoopKernel, threads: int) -> None:
    shp, sts = merge_dims(k.shape, k.views())
    it = iter(sts)
    k.shape = shp

    def rebuild(v):
        return View(v.st, v.offset, shp, next(it))
    # the same order as LoopKernel.views(): loads, stores, each reduction's out and acc
    k.loads = {t: rebuild(v) for t, v in k.loads.items()}
    k.stores = [(t, rebuild(v)) for t, v in k.stores]
    for r in k.reductions:
        r.out = rebuild(r.out)
        if r.acc is not None:
            r.acc = rebuild(r.acc)
    k.part = loop_partition(shp, k.reductions, threads)
    k.single = threads > 1 and k.nchunks == 1


def loop_partition(shp, reductions, threads: int) -> LoopPartition | None:
    """The cut of a loop kernel of (merged) shape ``shp``: the first dimension no
    reduction reduces with at least two elements per thread (in blocks of 16 when it is
    the innermost and long); None when the kernel is small or cannot be cut."""
    reduced = set()
    for r in reductions:
        reduced |= {d for d in range(len(shp)) if r.out.strides[d] == 0}
    cands = [d for d in range(len(shp)) if d not in reduced]
    size = int(np.prod(shp, dtype=np.int64))
    if not (threads > 1 and size >= SINGLE_THREAD_ELEMS and cands):
        return None
    big = [d for d in cands if shp[d] >= 2 * threads]
    if not big:
        return None
    d = big[0]
    unit = 16 if d == len(shp) - 1 and shp[d] >= 32 * threads else 1
    nchunks = max(1, min(threads * CHUNKS_PER_THREAD, -(-shp[d] // unit)))
    return LoopPartition(d, unit, nchunks)


def gemm_spec(g: Gemm):
    """The micro-kernel tile for this GEMM: the host's choice, or 8 rows where that
    computes fewer vectors (:func:`..codegen.gemm.shape_spec`)."""
    spec = gemm_mod.default_spec(g.a.st.dtype, g.trans_a, g.trans_b)
    return gemm_mod.shape_spec(spec, g.m, g.n)


def gemm_partition(g: Gemm, chunks: int) -> GemmPartition:
    """The fixed split of a GEMM's C into at most ``chunks`` pieces
    (:func:`..codegen.gemm_parallel.partition`, which :class:`..runtime.gemmcall.GemmPlan` uses too,
    so that benchmarks and tests run the step's split)."""
    return GemmPartition(*gemm_parallel.partition(g.m, g.n, g.k, g.trans_b, gemm_spec(g), chunks))
