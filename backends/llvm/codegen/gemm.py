"""GEMM without BLAS: a register-blocked micro-kernel emitted with ``llvmlite.ir``.

``C[i0:i1, j0:j1] (=|+=) op(A) · op(B)`` for row-major float32/float64 operands, where
``op(A)`` is ``A`` (M×K, ``lda``) or, with ``trans_a``, the transpose of a K×M array, and
``op(B)`` is ``B`` (K×N, ``ldb``) or, with ``trans_b``, the transpose of an N×K array.
These are the three products an MLP's forward and backward passes need.

Why it is built this way (docs/benchmarks.md has the measurements):

* The micro-kernel keeps an MR×NR tile of C in vector registers as loop-carried phi
  values (≤ 24 accumulators so nothing spills), loops once over K, loads a row of
  op(B) as NV vectors (``align`` = element size: nothing else is guaranteed),
  broadcasts one element of op(A) per row and issues ``llvm.fma``; C is touched only
  after the loop.  LLVM turns this into the FMA-bound loop a BLAS kernel has.
* Edge tiles (sizes 1, primes, non-multiples of the vector width) are handled by
  masking: every B/C access goes through ``llvm.masked.load/store`` with a lane mask
  from the panel's column count (free with AVX-512 mask registers), so nothing
  outside the operands is read or written; leftover rows use a one-row kernel and
  panels at most one vector wide a one-vector kernel.  Three kernels in all, shared
  by every variant of a dtype in a module (each costs ~8 ms of compile time).
* K is blocked by KC so that a K×NR panel of B stays in L2 while every row tile of
  the range streams past it; with ``trans_b`` that panel is packed (transposed) into
  a stack buffer once per panel, which makes op(B) rows contiguous.  With ``trans_a``
  and ``pack_a`` the first panel's tiles also store the op(A) elements they broadcast
  into contiguous MR×KC strips, which the other panels read (:func:`emit_gemm`).
* The function computes a *range* of C (rows i0:i1, columns j0:j1): threads own
  disjoint ranges, and every element's summation order (K blocks in order, k in
  order inside a block) does not depend on the range, so results are bitwise
  identical for any thread count.  :mod:`.gemm_parallel` holds the fixed partition
  of C into chunks and the ``(tid, nthreads, ...)`` drivers that run them.
* Everything is emitted into a caller-supplied ``ir.Module`` so the full backend can
  put GEMMs into the one module of a training step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from llvmlite import ir

from ..native import jit
from .gemm_pack import NNPanels, emit_pack_bt
from .loops import counted_loop, mark_no_unroll

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()

#: minimum multiply-adds per thread before a GEMM is split across threads
MIN_WORK_PER_THREAD = 1 << 19
#: when a call's row range has at most PREFETCH_MAX_ROWS rows, its MR-row tiles use a
#: micro-kernel that prefetches, at each k, row k of the B panel PREFETCH_B panels
#: ahead (0: never).  At batch 16 a forward product's weight panel serves only two
#: row tiles, so it streams from L3 at the hardware prefetcher's pace; prefetching
#: one panel ahead made the MLP step's first layer ~7% faster (Zen 5).  With many row
#: tiles per panel (batch 128) the panel is in L1/L2 anyway and the prefetches cost ~3%.
#: The default of ``GemmSpec.pf``; the tuner (:mod:`..native.tuning`) measures both.
PREFETCH_B = 1
PREFETCH_MAX_ROWS = 16
#: bytes of the stack buffer a ``pack_a`` call packs a row block of Aᵀ into, per K block
#: (at least one MR×KC strip): 784 rows at K = 128 are 2 blocks of 392 (Zen 3: 512 KiB of
#: L2 per core; one block measured ~1 % faster at 784×128×512, two re-pack B panels
#: once more)
A_PACK_BYTES = 256 * 1024


def a_pack_elements(spec) -> int:
    """Elements of ``spec``'s A-packing buffer (:data:`A_PACK_BYTES`, at least one strip)."""
    item = 4 if spec.dtype == "float32" else 8
    return max(A_PACK_BYTES // item, spec.mr * spec.kc)


@dataclass(frozen=True)
class GemmSpec:
    """One GEMM variant. ``vw`` lanes per vector; the tile is ``mr`` × ``nv*vw``."""

    dtype: str = "float32"
    trans_a: bool = False
    trans_b: bool = False
    mr: int = 6
    nv: int = 4
    vw: int = 16
    kc: int = 256
    #: B-panel prefetch distance in panels of the few-row tiles (0: no prefetch)
    pf: int = PREFETCH_B
    #: 1: copy each K×NR panel of a non-transposed B into a contiguous buffer when the
    #: call has more than PREFETCH_MAX_ROWS rows (see :func:`.gemm_pack.emit_pack_b`)
    pack: int = 0
    #: 1: with ``trans_a``, a call of more than one panel and PREFETCH_MAX_ROWS rows
    #: packs op(A) = Aᵀ into contiguous MR×KC tile strips (in row blocks of at most
    #: :data:`A_PACK_BYTES`): the first panel's tiles store what they broadcast, the
    #: other panels read the strips (see :func:`emit_gemm`)
    pack_a: int = 0

    @property
    def nr(self) -> int:
        return self.nv * self.vw

    @property
    def name(self) -> str:
        t = ("t" if self.trans_a else "n") + ("t" if self.trans_b else "n")
        d = {"float32": "f32", "float64": "f64"}[self.dtype]
        pf = "" if self.pf == PREFETCH_B else f"_pf{self.pf}"
        pk = "_pk" if self.pack and not self.trans_b else ""
        pa = "_pa" if self.pack_a and self.trans_a else ""
        return f"graphc_gemm_{d}_{t}_{self.mr}x{self.nr}_kc{self.kc}{pf}{pk}{pa}"

    @classmethod
    def of(cls, c, dtype="float32", trans_a=False, trans_b=False, vw=None) -> "GemmSpec":
        """The variant of a :class:`..native.tuning.TileChoice` ``c`` for a dtype and
        transposition (``vw``: the host's vector width for that dtype)."""
        dtype = np.dtype(dtype).name
        if vw is None:
            vw = vector_bits() // (8 * np.dtype(dtype).itemsize)
        return cls(dtype, bool(trans_a), bool(trans_b), c.mr, c.nv, vw, c.kc, c.pf, c.pack,
                   getattr(c, "pack_a", 0))


def vector_bits(target=None) -> int:
    """Width of the host's widest float vectors (512 with AVX-512F, 256 with AVX2)."""
    t = target or jit.host_target()
    return 512 if t.has_feature("avx512f") else 256 if t.has_feature("avx2") else 128


def default_spec(dtype="float32", trans_a=False, trans_b=False) -> GemmSpec:
    """The host's GEMM variant: the tile, K block and prefetch that
    :mod:`..native.tuning` chose for this CPU (measured by the tuner, or its table of
    known-good defaults per CPU family), with this dtype's vector width."""
    from ..native import tuning
    dtype = np.dtype(dtype).name
    if dtype not in ("float32", "float64"):
        raise TypeError(f"gemm: unsupported dtype {dtype}")
    return GemmSpec.of(tuning.choice(), dtype, trans_a, trans_b)


def panel_vectors(n: int, spec) -> int:
    """Vectors the micro-kernels compute across ``n`` columns: NV per panel of NR, and
    as many as the last panel's columns need (its edge kernels are 1..NV vectors wide)."""
    full, rem = divmod(n, spec.nr)
    return full * spec.nv + -(-rem // spec.vw)


def shape_spec(spec: GemmSpec, m: int, n: int) -> GemmSpec:
    """The tile for an m×n product from the host's ``spec``: that tile, or with AVX-512's
    4-vector tiles 8 rows (8x48; 8x32 with a transposed B, whose panels are packed per
    call: narrower panels measured faster there) when that computes fewer vectors --
    leftover rows at ~3x the cost of tile rows (the one-row kernel), vectors past a
    last panel's edge at full cost.  Batch 16: 2 full 8-row tiles instead of 2x6 + 4
    single rows, 1.5x faster; 512³ keeps 6x64 (8 whole panels; 8x48 computes 33 vectors
    a row for 32: ~3 % slower, Zen 5).  Only the tile changes: the same bits."""
    if spec.nv != 4:
        return spec
    alt = replace(spec, mr=8, nv=2 if spec.trans_b else 3)

    def cost(s):
        return (m - m % s.mr + 3 * (m % s.mr)) * panel_vectors(n, s)
    return alt if cost(alt) < cost(spec) else spec


# --------------------------------------------------------------------------- IR helpers


def _scalar_type(spec):
    return ir.FloatType() if spec.dtype == "float32" else ir.DoubleType()


def _declare(module, name, fnty):
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, fnty, name)
    return fn


class Emitter:
    """Per-(module, spec) helpers: intrinsic declarations and typed GEP/load/store."""

    def __init__(self, module, spec):
        self.m, self.s = module, spec
        self.t = _scalar_type(spec)
        self.vt = ir.VectorType(self.t, spec.vw)
        self.mt = ir.VectorType(I1, spec.vw)
        self.align = 4 if spec.dtype == "float32" else 8
        sfx = f"v{spec.vw}{'f32' if spec.dtype == 'float32' else 'f64'}"
        self.fma = _declare(module, f"llvm.fma.{sfx}",
                            ir.FunctionType(self.vt, [self.vt, self.vt, self.vt]))
        # old (alignment-argument) form: auto-upgraded by newer LLVMs, accepted by older
        self.mload = _declare(module, f"llvm.masked.load.{sfx}.p0",
                              ir.FunctionType(self.vt, [PTR, I32, self.mt, self.vt]))
        self.mstore = _declare(module, f"llvm.masked.store.{sfx}.p0",
                               ir.FunctionType(ir.VoidType(), [self.vt, PTR, I32, self.mt]))
        self.zero = ir.Constant(self.vt, [0.0] * spec.vw)

    def gep(self, b, ptr, idx):
        return b.gep(ptr, [idx], source_etype=self.t, inbounds=True)

    def vload(self, b, ptr, mask=None):
        if mask is None:
            ld = b.load(ptr, typ=self.vt)
            ld.align = self.align
            return ld
        return b.call(self.mload, [ptr, I32(self.align), mask, self.zero])

    def vstore(self, b, val, ptr, mask=None):
        if mask is None:
            st = b.store(val, ptr)
            st.align = self.align
        else:
            b.call(self.mstore, [val, ptr, I32(self.align), mask])

    def splat(self, b, x):
        v = b.insert_element(ir.Constant(self.vt, ir.Undefined), x, I32(0))
        return b.shuffle_vector(v, ir.Constant(self.vt, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, self.s.vw), [0] * self.s.vw))

    def lane_mask(self, b, nvalid, first=0):
        """<vw x i1>: first + lane < nvalid (nvalid is i64)."""
        lanes = ir.Constant(ir.VectorType(I64, self.s.vw), list(range(first, first + self.s.vw)))
        v = b.insert_element(ir.Constant(ir.VectorType(I64, self.s.vw), ir.Undefined),
                             nvalid, I32(0))
        v = b.shuffle_vector(v, ir.Constant(ir.VectorType(I64, self.s.vw), ir.Undefined),
                             ir.Constant(ir.VectorType(I32, self.s.vw), [0] * self.s.vw))
        return b.icmp_unsigned("<", lanes, v)


# --------------------------------------------------------------------------- micro-kernel


def _kernel_prefix(spec) -> str:
    d = {"float32": "f32", "float64": "f64"}[spec.dtype]
    return f"graphc_gemmk_{d}_{spec.mr}x{spec.nr}"


def _emit_kernel(em: Emitter, mr: int, nv: int, masked: bool,
                 prefetch: int = 0, last_only: bool = False,
                 pack_out: bool = False) -> ir.Function:
    """C[mr × nv·vw] (=|+=) A-tile · B-panel over kc; if ``masked`` only the first
    ``ncols`` columns are read or written (vectors wholly beyond them compute zeros).
    ``last_only``: only the last vector is masked, for calls whose ``ncols`` exceed
    (nv - 1)·vw (an edge tile of a panel exactly as many vectors wide as its columns
    need): without mask registers every masked vector costs a ``vmaskmovps`` per k.
    ``pack_out``: a last argument ``P`` receives the tile's strip of A packed, (r, k) at
    ``P[r + k*mr]`` (the elements the loop broadcasts, stored as it loads them: the first
    panel of a call packs A for the others, see :func:`emit_gemm`).

    Arguments: (A, B, C, kc, rs, ks, ldb, ldc, beta:i32, ncols:i64), pointers already
    offset to the tile.  A's element (r, k) is at ``r*rs + k*ks`` so one kernel serves
    A and Aᵀ; op(B) rows are contiguous (``trans_b`` packs first).  Shared by every
    GEMM variant of the same dtype and tile shape in a module.
    """
    s = em.s
    last_only = bool(masked and last_only and nv > 1)
    name = f"{_kernel_prefix(s)}_{mr}x{nv}{('l' if last_only else 'm') if masked else ''}"
    if prefetch:
        name += f"p{prefetch}"
    if pack_out:
        name += "a"
    fn = em.m.globals.get(name)
    if fn is not None:
        return fn
    fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR] + [I64] * 5 + [I32, I64]
                           + ([PTR] if pack_out else []))
    fn = ir.Function(em.m, fnty, name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")  # inlining 9 kernels into each driver triples compile time
    a, bp, c, kc, rs, ks, ldb, ldc, beta, ncols = fn.args[:10]
    pout = fn.args[10] if pack_out else None
    for p in fn.args[:3] + fn.args[10:]:
        p.add_attribute("noalias")
    entry, loop, done, acc_blk, st_blk = (fn.append_basic_block(n) for n in
                                          ("entry", "loop", "done", "accumulate", "store"))
    b = ir.IRBuilder(entry)
    masks = [em.lane_mask(b, ncols, v * s.vw)
             if masked and (v == nv - 1 or not last_only) else None for v in range(nv)]
    arows = [a] + [em.gep(b, a, b.mul(I64(r), rs)) for r in range(1, mr)]
    b.cbranch(b.icmp_signed(">", kc, I64(0)), loop, done)

    b.position_at_end(loop)
    k = b.phi(I64, "k")
    k.add_incoming(I64(0), entry)
    accs = [[b.phi(em.vt, f"c{r}_{v}") for v in range(nv)] for r in range(mr)]
    for row in accs:
        for acc in row:
            acc.add_incoming(em.zero, entry)
    brow = em.gep(b, bp, b.mul(k, ldb))
    bvec = [em.vload(b, em.gep(b, brow, I64(v * s.vw)), masks[v]) for v in range(nv)]
    if prefetch:    # (a prefetch never faults: no bounds needed)
        pf = _declare(em.m, "llvm.prefetch.p0",
                      ir.FunctionType(ir.VoidType(), [PTR, I32, I32, I32]))
        for v in range(nv):
            dst = b.gep(brow, [I64(prefetch * s.nr + v * s.vw)], source_etype=em.t)
            b.call(pf, [dst, I32(0), I32(3), I32(1)])
    koff = b.mul(k, ks)
    new = []
    pdst = em.gep(b, pout, b.mul(k, I64(mr))) if pack_out else None
    for r in range(mr):
        ld = b.load(em.gep(b, arows[r], koff), typ=em.t)
        ld.align = em.align
        if pack_out:
            st = b.store(ld, em.gep(b, pdst, I64(r)))
            st.align = em.align
        av = em.splat(b, ld)
        new.append([b.call(em.fma, [av, bvec[v], accs[r][v]]) for v in range(nv)])
    k1 = b.add(k, I64(1))
    k.add_incoming(k1, loop)
    for r in range(mr):
        for v in range(nv):
            accs[r][v].add_incoming(new[r][v], loop)
    mark_no_unroll(em.m, b.cbranch(b.icmp_signed("<", k1, kc), loop, done), name, True)

    b.position_at_end(done)
    _store_tile(em, b, (entry, loop, acc_blk, st_blk), new, masks, c, ldc, beta)
    return fn


def _store_tile(em, b, blocks, new, masks, c, ldc, beta) -> None:
    """The micro-kernel's epilogue: C (=|+=) the accumulated tile, masked as loaded
    (``beta`` 0 overwrites, else accumulates); a kc of 0 stores zeros."""
    entry, loop, acc_blk, st_blk = blocks
    mr, nv, s = len(new), len(new[0]), em.s
    fin = [[b.phi(em.vt) for v in range(nv)] for r in range(mr)]
    for r in range(mr):
        for v in range(nv):
            fin[r][v].add_incoming(em.zero, entry)
            fin[r][v].add_incoming(new[r][v], loop)
    cptrs = [[em.gep(b, c, b.add(b.mul(I64(r), ldc), I64(v * s.vw))) for v in range(nv)]
             for r in range(mr)]
    b.cbranch(b.icmp_signed("!=", beta, I32(0)), acc_blk, st_blk)

    b.position_at_end(acc_blk)
    for r in range(mr):
        for v in range(nv):
            old = em.vload(b, cptrs[r][v], masks[v])
            em.vstore(b, b.fadd(old, fin[r][v]), cptrs[r][v], masks[v])
    b.ret_void()

    b.position_at_end(st_blk)
    for r in range(mr):
        for v in range(nv):
            em.vstore(b, fin[r][v], cptrs[r][v], masks[v])
    b.ret_void()


# --------------------------------------------------------------------------- driver


def as_spec(spec, trans_a, trans_b) -> GemmSpec:
    if isinstance(spec, GemmSpec):
        return spec
    return default_spec(spec, trans_a, trans_b)


@dataclass
class TileKernels:
    """The micro-kernels one GEMM variant calls (see :func:`_tile_kernels`)."""
    wide: ir.Function                  # MR × NV, masked
    wide_pf: ir.Function               # the same, prefetching B panels (few-row calls)
    edges: list                        # edges[v - 1]: MR × v vectors, masked (v < NV)
    row: ir.Function                   # 1 × NV, leftover rows
    tall: ir.Function | None           # TALL·MR × 1 (see :func:`tall_rows`)
    full: tuple | None                 # (MR × NV, prefetching) unmasked, or None
    #: without mask registers: full_edges[v - 1], MR × v vectors unmasked (a last panel of
    #: exactly v vectors), and the tall tile unmasked (a last panel of one whole vector)
    full_edges: list | None = None
    tall_full: ir.Function | None = None
    #: a whole panel's MR × NV tile that also packs its strip of A (``GemmSpec.pack_a``)
    packing: ir.Function | None = None


def _tile_kernels(em: Emitter) -> TileKernels:
    """MR-row tiles NV vectors wide, the last panel's tiles as many vectors wide as its
    columns need (the vectors past its edge masked off), then leftover rows one at a
    time.  Masked loads/stores cost nothing measurable with AVX-512 mask registers, so
    there whole panels use the masked kernel too; without them
    (:func:`has_mask_registers`) whole panels get unmasked copies.  Every kernel costs
    ~8 ms of compile time (the kernel library's, once per machine).  A transposed B is
    packed per panel, so its variant has nothing to prefetch."""
    s = em.s
    # without mask registers an edge tile masks only its last vector (its others are
    # whole), and a last panel of whole vectors runs unmasked (Zen 3, best of calls, 1
    # thread, `tn` K = 128: 256×16 65.5 -> 77.8 GFLOP/s, 256×10 41.4 -> 44.3, 256×8
    # 48.8 -> 53.5; 512×256, whose last panel is 16 columns, 85-89 -> 87.5-88)
    lo = not has_mask_registers(s)
    wide = _emit_kernel(em, s.mr, s.nv, True, 0, lo)
    edges = [_emit_kernel(em, s.mr, v, True, 0, lo) for v in range(1, s.nv)]
    tall = tall_rows(s)
    full = full_edges = tall_full = None
    if lo:
        k_full = _emit_kernel(em, s.mr, s.nv, False)
        full = (k_full, _emit_kernel(em, s.mr, s.nv, False, s.pf)
                if s.pf and not s.trans_b else k_full)
        full_edges = [_emit_kernel(em, s.mr, v, False) for v in range(1, s.nv)]
        tall_full = _emit_kernel(em, tall, 1, False) if tall else None
    packing = (_emit_kernel(em, s.mr, s.nv, not lo, 0, lo, True)
               if s.pack_a and s.trans_a else None)
    return TileKernels(
        wide, _emit_kernel(em, s.mr, s.nv, True, s.pf, lo) if s.pf and not s.trans_b else wide,
        edges, _emit_kernel(em, 1, s.nv, True),
        _emit_kernel(em, tall, 1, True) if tall else None, full, full_edges, tall_full,
        packing)


def has_mask_registers(spec) -> bool:
    """Whether ``spec``'s vectors are AVX-512's (masked loads and stores are free there).

    Without mask registers (AVX2) a masked load is ``vmaskmovps``, slower than a plain
    load, and the NV lane masks of a 6x2 tile do not fit the 16 ymm registers beside 12
    accumulators, 2 B vectors and a broadcast: they are reloaded from the stack at every
    k (Zen 3: the 6x2 kernel's loop held 2 ``vmaskmovps`` and a mask reload per 12
    FMAs).  So there, whole panels get an unmasked kernel of the same tile."""
    return spec.vw * (4 if spec.dtype == "float32" else 8) * 8 >= 512


#: rows of the one-vector kernel's tall tiles as a multiple of MR (0: none).  A panel at
#: most one vector wide (a product with N <= VW, e.g. ``W·xᵀ`` at batch 16) keeps only MR
#: accumulators in an MR-row tile: with 8 on a CPU that needs 8 FMAs in flight (Zen 5:
#: 2 pipes x 4 cycles) any stall shows.  Its tall tiles keep TALL·MR.
TALL = 2


def tall_rows(spec) -> int:
    """Rows of the tall one-vector tiles of ``spec`` (0: none: the accumulators, the B
    vector and a broadcast would not fit the vector registers, or TALL is off)."""
    regs = 32 if has_mask_registers(spec) else 16
    rows = TALL * spec.mr
    return rows if TALL > 1 and rows + 2 <= regs and spec.nv > 1 else 0


def emit_gemm(module: ir.Module, spec="float32", trans_a=False, trans_b=False) -> ir.Function:
    """Emit (once per module) ``spec.name``: C[i0:i1, j0:j1] (=|+=) op(A)·op(B).

    ``spec`` is a :class:`GemmSpec` or a dtype (then the host's default tile and the
    ``trans_*`` flags are used).  Signature: ``void(A, B, C, K, lda, ldb, ldc, i0, i1,
    j0, j1, beta:i32)`` with row-major strides in elements; ``beta`` 0 overwrites C,
    1 accumulates into it.  The micro-kernels are shared by all variants of a dtype.
    """
    spec = as_spec(spec, trans_a, trans_b)
    fn = module.globals.get(spec.name)
    if fn is not None:
        return fn
    em = Emitter(module, spec)
    s = em.s
    fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR] + [I64] * 8 + [I32])
    fn = ir.Function(module, fnty, spec.name)
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")  # one copy per variant, called once per GEMM
    A, B, C, K, lda, ldb, ldc, i0, i1, j0, j1, beta = fn.args
    for p in (A, B, C):
        p.add_attribute("noalias")
    kern = _tile_kernels(em)
    tall = tall_rows(s)
    pack = emit_pack_bt(em) if s.trans_b else None
    pack_nn = NNPanels(em) if s.pack and not s.trans_b else None
    pack_a = bool(s.pack_a and s.trans_a)

    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pbuf = None
    if pack or pack_nn:
        pbuf = b.alloca(ir.ArrayType(em.t, s.kc * s.nr * (pack_nn.groups if pack_nn else 1)))
        pbuf.align = 64
    nonempty = b.and_(b.icmp_signed("<", i0, i1), b.icmp_signed("<", j0, j1))
    # K == 0 still runs one (empty) block so that beta == 0 zeroes C
    kblocks = b.select(b.icmp_signed(">", K, I64(0)),
                       b.sdiv(b.add(K, I64(s.kc - 1)), I64(s.kc)), I64(1))
    kblocks = b.select(nonempty, kblocks, I64(0))
    # row-tile strides of A: element (r, k) at r*rs + k*ks
    rs, ks = (I64(1), lda) if s.trans_a else (lda, I64(1))
    ifull_end = b.add(i0, b.mul(b.sdiv(b.sub(i1, i0), I64(s.mr)), I64(s.mr)))
    few_rows = b.icmp_signed("<=", b.sub(i1, i0), I64(PREFETCH_MAX_ROWS))
    # few rows: each panel serves at most a few tiles, so it is prefetched, not copied
    packing = b.not_(few_rows) if pack_nn else None
    abuf = packing_a = None
    if pack_a:
        abuf = b.alloca(ir.ArrayType(em.t, a_pack_elements(s)))
        abuf.align = 64
        # A is packed when its tiles serve more than one panel
        packing_a = b.and_(b.icmp_signed(">", b.sub(j1, j0), I64(s.nr)),
                           b.not_(few_rows))

    def over_kblocks(b, kbi):
        kb = b.mul(kbi, I64(s.kc))
        kc = b.sub(K, kb)
        kc = b.select(b.icmp_signed("<", kc, I64(s.kc)), kc, I64(s.kc))
        kc = b.select(b.icmp_signed("<", kc, I64(0)), I64(0), kc)
        beff = b.select(b.icmp_signed("==", kbi, I64(0)), beta, I32(1))

        def over_panels(b, jp, ib, fe, ie):
            """Panel jp of row block [ib, ie) (MR-row tiles up to fe, then single rows)."""
            nrem = b.sub(j1, jp)
            nrem = b.select(b.icmp_signed("<", nrem, I64(s.nr)), nrem, I64(s.nr))
            narrow = b.icmp_signed("<=", nrem, I64(s.vw))
            if s.trans_b:
                b.call(pack, [pbuf, em.gep(b, B, b.add(b.mul(jp, ldb), kb)), ldb, nrem, kc])
                bptr, ldbe = pbuf, I64(s.nr)
            elif pack_nn:
                src = em.gep(b, B, b.add(b.mul(kb, ldb), jp))
                packed = pack_nn.emit(b, pbuf, src, ldb, nrem, kc, jp, j0, j1, packing)
                bptr = b.select(packing, packed, src)
                ldbe = b.select(packing, I64(s.nr), ldb)
            else:
                bptr, ldbe = em.gep(b, B, b.add(b.mul(kb, ldb), jp)), ldb

            # pick the kernels once per panel; an indirect call keeps the row loops
            # tiny (no loop unswitching into copies per kernel)
            k_rows = b.select(few_rows, kern.wide_pf, kern.wide)
            if kern.full is not None:   # whole panels: unmasked (no mask registers)
                whole = b.icmp_signed("==", nrem, I64(s.nr))
                k_rows = b.select(whole, b.select(few_rows, kern.full[1], kern.full[0]), k_rows)
            for v in range(s.nv - 1, 0, -1):    # a last panel of v vectors
                k_edge = kern.edges[v - 1]
                if kern.full_edges is not None:     # exactly v whole vectors: unmasked
                    k_edge = b.select(b.icmp_signed("==", nrem, I64(v * s.vw)),
                                      kern.full_edges[v - 1], k_edge)
                k_rows = b.select(b.icmp_signed("<=", nrem, I64(v * s.vw)), k_edge, k_rows)

            def tile(b, ip, kernel, packed=False):
                cptr = em.gep(b, C, b.add(b.mul(ip, ldc), jp))
                aptr = em.gep(b, A, b.add(b.mul(ip, rs), b.mul(kb, ks)))
                if not packed:
                    b.call(kernel, [aptr, bptr, cptr, kc, rs, ks, ldbe, ldc, beff, nrem])
                    return
                # the tile's strip of the packed block: (r, k) at r + k*MR, written by the
                # block's first panel (a whole one: packing needs more than one panel)
                strip = em.gep(b, abuf, b.mul(b.sub(ip, ib), kc))
                with b.if_else(b.and_(packing_a, b.icmp_signed("==", jp, j0))) as (first, rest):
                    with first:
                        b.call(kern.packing, [aptr, bptr, cptr, kc, rs, ks, ldbe, ldc, beff,
                                              nrem, strip])
                    with rest:
                        b.call(kernel, [b.select(packing_a, strip, aptr), bptr, cptr, kc,
                                        b.select(packing_a, I64(1), rs),
                                        b.select(packing_a, I64(s.mr), ks),
                                        ldbe, ldc, beff, nrem])

            start = ib
            if kern.tall is not None:
                # one-vector panels: tall tiles first (from A as stored), then MR-row tiles
                ntall = b.mul(b.sdiv(b.sub(fe, ib), I64(tall)), I64(tall))
                start = b.add(ib, b.select(narrow, ntall, I64(0)))
                k_tall = kern.tall
                if kern.tall_full is not None:      # one whole vector: unmasked
                    k_tall = b.select(b.icmp_signed("==", nrem, I64(s.vw)), kern.tall_full,
                                      k_tall)
                counted_loop(b, ib, start, tall, lambda b, ip: tile(b, ip, k_tall), "it",
                              True, True)
            counted_loop(b, start, fe, s.mr, lambda b, ip: tile(b, ip, k_rows, bool(pack_a)),
                          "ip", True, True)
            counted_loop(b, fe, ie, 1, lambda b, ip: tile(b, ip, kern.row), "ir",
                          True, True)

        if not pack_a:
            counted_loop(b, j0, j1, s.nr, lambda b, jp: over_panels(b, jp, i0, ifull_end, i1),
                         "jp", True, True)
            return
        # row blocks of as many MR-row tiles as the buffer holds at this kc (one block
        # spanning the rows when A is not packed): the first panel packs a block's strips,
        # the others stream past them.  Blocks never change an element's sums.
        def cdiv(x, y):
            return b.sdiv(b.add(x, b.sub(y, I64(1))), y)
        tiles_max = b.sdiv(I64(a_pack_elements(s) // s.mr),
                           b.select(b.icmp_signed(">", kc, I64(1)), kc, I64(1)))
        ntiles = cdiv(b.sub(i1, i0), I64(s.mr))
        nblk = b.select(packing_a, cdiv(ntiles, tiles_max), I64(1))
        # blocks of equal tile counts (784 rows at 128 KiB: 4 x 196, not 3 x 256 + 16)
        mc = b.select(packing_a, b.mul(cdiv(ntiles, nblk), I64(s.mr)), b.sub(i1, i0))

        def row_block(b, bi):
            ib = b.add(i0, b.mul(bi, mc))
            ie = b.add(ib, mc)
            ie = b.select(b.icmp_signed("<", ie, i1), ie, i1)
            fe = b.select(b.icmp_signed("<", ie, ifull_end), ie, ifull_end)
            counted_loop(b, j0, j1, s.nr, lambda b, jp: over_panels(b, jp, ib, fe, ie),
                         "jp", True, True)
        counted_loop(b, I64(0), nblk, 1, row_block, "ib", True, True)

    counted_loop(b, I64(0), kblocks, 1, over_kblocks, "kb", True, True)
    b.ret_void()
    return fn
