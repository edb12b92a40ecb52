"""A GEMM split over threads: the fixed partition of C into chunks, and the functions
that run a thread's chunks of it.

The partition (:func:`partition`) is decided once per product from its shape and tile,
not by timing, so every element's summation order and therefore every bit of the result
is the same for any thread count; which thread claims a chunk only changes who computes
it.  The compiled step (:mod:`..plan.partition`) and :class:`..runtime.gemmcall.GemmPlan`
(tests, benchmarks, the tuner) both cut a product this way; :func:`emit_gemm_parallel`
and :func:`emit_gemm_entry` are the Python-callable drivers of the kernel library's
micro-kernels (:mod:`.gemm`).
"""
from __future__ import annotations

from dataclasses import replace

from llvmlite import ir

from .gemm import I32, I64, MIN_WORK_PER_THREAD, PTR, GemmSpec, as_spec, emit_gemm
from .loops import counted_loop


#: fewest accumulators a re-tiled column chunk may keep (:func:`partition`): two FMA pipes
#: of 4-cycle latency need 8 in flight, and a tile of 8 also loads a vector per 4 FMAs
MIN_ACCUMULATORS = 12

#: a multi-thread GEMM is cut into up to this many chunks per thread (claimed dynamically
#: by the step's threads: one slowed down by another process ends up doing fewer)
CHUNKS_PER_THREAD = 4


#: fewest rows a chunk of a packed-Aᵀ product is cut to (:func:`packed_row_parts`): each
#: chunk packs every panel of B again, which at 98 rows (784 rows in 8 chunks) made 2t
#: 784×128×512 and 512×128×256 (the MLP's weight gradients) 8-10 % slower than one
#: chunk per thread (Zen 3, interleaved medians and best calls)
MIN_PACKED_ROWS = 192


def chunks_for(threads: int) -> int:
    """Chunks a GEMM is cut into for ``threads`` threads (1 thread: one)."""
    return threads * CHUNKS_PER_THREAD if threads > 1 else 1


def partition(m: int, n: int, k: int, trans_b: bool, spec: GemmSpec, chunks: int,
              retile: bool = True) -> tuple:
    """The fixed split of an m×n×k product's C into at most ``chunks`` pieces:
    ``(parts, by_cols, units, width, spec)`` -- ``parts`` chunks of ``units`` blocks of
    ``width`` columns (``by_cols``) or rows; chunk ``c`` covers blocks
    ``units*c//parts : units*(c+1)//parts``.  Vector-width column blocks when there are
    enough of them (always for ``trans_b``, whose B panels are packed per column block),
    else MR-row blocks; small products stay in one piece.  ``retile``: column chunks
    that are not whole 3-vector panels would run a narrower edge tile in every chunk, so
    they get 2-vector tiles (8x32) instead -- unless that tile keeps fewer than
    :data:`MIN_ACCUMULATORS` (AVX2's 4x3 would become 4x2: 8 accumulators, measured
    0.6-0.8x as fast as whole-panel chunks of 4x3 on Zen 3), then the chunks are whole
    panels (``width`` NR).  The compiled step (:mod:`..plan.partition`)
    and :class:`..runtime.gemmcall.GemmPlan` (tests, benchmarks, the tuner) both use it."""
    work = m * n * max(k, 1)
    parts = min(chunks, max(1, work // (MIN_WORK_PER_THREAD // CHUNKS_PER_THREAD)))
    threads = max(1, chunks // CHUNKS_PER_THREAD)

    def split(spec):
        cunits, runits = -(-n // spec.vw), -(-m // spec.mr)
        by_cols = cunits >= parts * spec.nv or (trans_b and runits < parts)
        cut = parts
        if spec.trans_a and spec.pack_a and not trans_b and runits >= parts:
            by_cols = False     # a packed Aᵀ: each chunk packs its own rows once
            cut = packed_row_parts(m, parts, threads)
        units = cunits if by_cols else runits
        return (max(1, min(cut, units)), by_cols, units,
                spec.vw if by_cols else spec.mr, spec)
    p = split(spec)
    if retile and p[1] and p[0] > 1 and spec.nv == 3 and (-(-p[2] // p[0])) % 3:
        if 2 * spec.mr >= MIN_ACCUMULATORS:
            p = split(replace(spec, nv=2))
        else:             # too few accumulators at 2 vectors: whole-panel column chunks
            panels = -(-n // spec.nr)
            last = (n - (panels - 1) * spec.nr) / spec.nr
            p = (balanced_parts(panels, max(1, min(parts, panels)), threads, last),
                 True, panels, spec.nr, spec)
    return p


def packed_row_parts(m: int, parts: int, threads: int) -> int:
    """Row chunks of a packed-Aᵀ product: every chunk packs all of B's panels again, so
    each thread gets as many chunks (at most ``parts // threads``) as keep them
    :data:`MIN_PACKED_ROWS` rows or more -- one at least."""
    if parts <= threads:
        return parts
    return threads * max(1, min(parts // threads, m // (MIN_PACKED_ROWS * threads)))


def balanced_parts(units: int, parts: int, threads: int, last: float = 1.0) -> int:
    """The most chunks, at most ``parts``, whose split of ``units`` whole panels (the last
    one ``last`` full) gives ``threads`` equally fast threads the least work on the
    busiest one (chunk ``c`` on thread ``c % threads``, as they come when claimed in
    order).  Whole-panel chunks are coarse: 22 panels in 8 chunks are 2,3,3,3,2,3,3,3
    and one thread gets 12 of them -- 6 chunks of 3,4,4,3,4,4 give each 11 (Zen 3, 2
    threads, 512³ and 128×784×512: interleaved medians +4-10 %, best calls ~+7 %)."""
    if parts <= threads:
        return parts

    def busiest(p):
        load = [0.0] * threads
        for c in range(p):
            hi = units * (c + 1) // p
            load[c % threads] += hi - units * c // p - (1.0 - last if hi == units else 0.0)
        return round(max(load), 9)
    return min(range(parts, threads - 1, -1), key=busiest)


def emit_gemm_parallel(module: ir.Module, spec="float32", trans_a=False,
                       trans_b=False) -> ir.Function:
    """Emit ``spec.name + '_par'``: ``void(tid:i64, nthreads:i64, A, B, C, M, N, K,
    lda, ldb, ldc, beta:i32, parts, by_cols, units, width)`` computing chunks ``tid``,
    ``tid + nthreads``, ... of the fixed partition :func:`partition` made (its first four
    values; its tile must be ``spec``'s).  Which thread runs a chunk does not change
    what it computes, so results are bitwise identical for any thread count."""
    spec = as_spec(spec, trans_a, trans_b)
    name = spec.name + "_par"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    inner = emit_gemm(module, spec)
    fnty = ir.FunctionType(ir.VoidType(), [I64, I64, PTR, PTR, PTR] + [I64] * 6 + [I32]
                           + [I64] * 4)
    fn = ir.Function(module, fnty, name)
    fn.attributes.add("nounwind")
    tid, nth, A, B, C, M, N, K, lda, ldb, ldc, beta, parts, by_cols, units, width = fn.args
    for p in (A, B, C):
        p.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def smin(x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    cols = b.icmp_signed("!=", by_cols, I64(0))
    dim = b.select(cols, N, M)
    step = b.select(b.icmp_signed(">", nth, I64(0)), nth, I64(1))

    def chunk(b, c):
        lo = smin(b.mul(b.sdiv(b.mul(units, c), parts), width), dim)
        hi = smin(b.mul(b.sdiv(b.mul(units, b.add(c, I64(1))), parts), width), dim)
        i0 = b.select(cols, I64(0), lo)
        i1 = b.select(cols, M, hi)
        j0 = b.select(cols, lo, I64(0))
        j1 = b.select(cols, hi, N)
        b.call(inner, [A, B, C, K, lda, ldb, ldc, i0, i1, j0, j1, beta])
    # chunks tid, tid + nthreads, ... < parts
    nmine = b.sdiv(b.add(b.sub(parts, tid), b.sub(step, I64(1))), step)
    nmine = b.select(b.icmp_signed(">", nmine, I64(0)), nmine, I64(0))
    counted_loop(b, I64(0), nmine, 1, lambda b, i: chunk(b, b.add(tid, b.mul(i, step))),
                 "chunk", True, True)
    b.ret_void()
    return fn


def emit_gemm_entry(module: ir.Module, spec="float32", trans_a=False,
                    trans_b=False) -> ir.Function:
    """Emit ``spec.name + '_entry'``: ``void(tid:i64, nthreads:i64, argv:ptr, barrier:ptr)``
    (the job signature of :mod:`.parallel`) with ``argv`` = i64[14] {A, B, C, M, N, K,
    lda, ldb, ldc, beta, parts, by_cols, units, width} (the last four: :func:`partition`);
    ``barrier`` is unused.

    The Python entry point: a pointer to the arguments keeps a ctypes call at a
    fraction of a microsecond (each extra argument costs ~0.1 µs), which matters at 64³.
    """
    spec = as_spec(spec, trans_a, trans_b)
    name = spec.name + "_entry"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    par = emit_gemm_parallel(module, spec)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64, PTR, PTR]), name)
    fn.attributes.add("nounwind")
    tid, nth, argv, _barrier = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vals = []
    for i in range(14):
        v = b.load(b.gep(argv, [I64(i)], source_etype=I64), typ=I64)
        v.align = 8
        vals.append(v)
    ptrs = [b.inttoptr(v, PTR) for v in vals[:3]]
    b.call(par, [tid, nth] + ptrs + vals[3:9] + [b.trunc(vals[9], I32)] + vals[10:14])
    b.ret_void()
    return fn
