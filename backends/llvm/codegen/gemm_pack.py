"""Packing of B panels for the GEMM micro-kernel.

With ``trans_b`` (B stored N×K, as PyTorch's ``x @ W.T`` stores W) op(B)'s rows are
strided; the micro-kernel wants each K×NR panel's rows contiguous, so the driver
copies the panel into a stack buffer once per (K block, panel) and the row tiles
stream past the packed copy.  A non-transposed B's panel rows are contiguous but
``ldb`` apart: with ``ldb`` a multiple of 2 KiB (N = 512 floats) the KC rows of a panel
fall into 2 of an L1's 64 sets, so the panel cannot stay in L1 while the row tiles
reuse it (Zen 3: 62 GFLOP/s at 512³ unpacked, 77 with the packed panels of ``trans_b``);
:func:`emit_pack_b` copies such a panel when the tuner's choice says so.

Such a copy read 96 bytes (AVX2's 24-float panel) of every B row, parts of two or three
cache lines whose rest the next panel's copy fetched again, from a K block of B (KC rows ×
``ldb``: 512 KiB at N = 512) as big as Zen 3's whole L2 -- the same product ran 5-17 %
slower `nn` than `nt` (whose packing reads whole rows of Bᵀ).  So whole groups of
:func:`pack_group` panels (at least :data:`PACK_GROUP_BYTES` of each row) are copied in
one pass (:func:`emit_pack_b_group`), both copies prefetching the rows ahead
(:data:`PACK_PREFETCH_ROWS`).  Zen 3, one thread, interleaved calls, median GFLOP/s:
128×784×512 54 → 66, 512³ 58 → 65, 128×256×512 62 → 68, 128×512×256 66 → 69.
"""

from __future__ import annotations

from llvmlite import ir

from .loops import counted_loop

I32, I64 = ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()


def _pack_function(em, name: str) -> ir.Function:
    """``void name(P, src, ldb, nrem, kc)``: the module's internal packing function of
    that name (a new, empty one the first time)."""
    fn = em.m.globals.get(name)
    if fn is not None:
        return fn
    fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I64, I64])
    fn = ir.Function(em.m, fnty, name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    for arg in fn.args[:2]:
        arg.add_attribute("noalias")
    return fn


#: edge of the square blocks the Bᵀ packing transposes in registers, per dtype
PACK_TILE = {"float32": 8, "float64": 8}  # 16×16 compiled 16 ms slower, ran no faster


def emit_pack_bt(em: Emitter) -> ir.Function:
    """P[kk*NR + jj] = B[(j+jj)*ldb + k + kk] for jj < nrem, kk < kc (B stored N×K).

    Turns an NR-column panel of op(B) = Bᵀ into contiguous rows for the micro-kernel.
    Full vw×vw blocks are transposed in registers (vw loads, vw·log2(vw) shuffles,
    vw stores); the ragged edges are copied element by element.
    """
    s = em.s
    name = f"{s.name}_packbt"
    fn = _pack_function(em, name)
    if fn.blocks:                          # already emitted into this module
        return fn
    p, bsrc, ldb, nrem, kc = fn.args
    vw, nr = PACK_TILE.get(s.dtype, s.vw), s.nr
    vw = min(vw, s.vw)
    tvt = ir.VectorType(em.t, vw)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nfull_j = b.mul(b.sdiv(nrem, I64(vw)), I64(vw))
    nfull_k = b.mul(b.sdiv(kc, I64(vw)), I64(vw))

    def tload(b, ptr):
        ld = b.load(ptr, typ=tvt)
        ld.align = em.align
        return ld

    def block_transpose(b, jj):
        def over_k(b, kk):
            rows = [tload(b, em.gep(b, bsrc, b.add(b.mul(b.add(jj, I64(r)), ldb), kk)))
                    for r in range(vw)]
            h = vw // 2
            while h >= 1:  # swap off-diagonal h×h blocks of every 2h×2h block
                new = list(rows)
                for i in range(vw):
                    if i & h:
                        continue
                    j = i + h
                    lo = [c if (c // h) % 2 == 0 else vw + c - h for c in range(vw)]
                    hi = [c + h if (c // h) % 2 == 0 else vw + c for c in range(vw)]
                    new[i] = b.shuffle_vector(rows[i], rows[j],
                                              ir.Constant(ir.VectorType(I32, vw), lo))
                    new[j] = b.shuffle_vector(rows[i], rows[j],
                                              ir.Constant(ir.VectorType(I32, vw), hi))
                rows = new
                h //= 2
            for r in range(vw):
                dst = em.gep(b, p, b.add(b.mul(b.add(kk, I64(r)), I64(nr)), jj))
                st = b.store(rows[r], dst)
                st.align = em.align
        counted_loop(b, I64(0), nfull_k, vw, over_k, "pk", True)

    counted_loop(b, I64(0), nfull_j, vw, block_transpose, "pj", True)

    def scalar_copy(b, jj, k_lo, k_hi, tag):
        def over_k(b, kk):
            ld = b.load(em.gep(b, bsrc, b.add(b.mul(jj, ldb), kk)), typ=em.t)
            st = b.store(ld, em.gep(b, p, b.add(b.mul(kk, I64(nr)), jj)))
            ld.align = st.align = em.align
        counted_loop(b, k_lo, k_hi, 1, over_k, tag, True, True)

    # ragged K tail of the full column blocks, then the ragged column tail
    counted_loop(b, I64(0), nfull_j, 1,
                  lambda b, jj: scalar_copy(b, jj, nfull_k, kc, "ek"), "ej", True, True)
    counted_loop(b, nfull_j, nrem, 1,
                  lambda b, jj: scalar_copy(b, jj, I64(0), kc, "tk"), "tj", True, True)
    b.ret_void()
    return fn


#: rows ahead the copy of a non-transposed B panel prefetches (0: none): its rows are
#: ``ldb`` apart, a few cache lines each, a pattern the hardware prefetchers follow badly
PACK_PREFETCH_ROWS = 16


def _prefetch(module) -> ir.Function:
    fn = module.globals.get("llvm.prefetch.p0")
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, I32, I32, I32]),
                         "llvm.prefetch.p0")
    return fn


def _line_offsets(spec, n: int) -> list:
    """An element in each cache line that ``n`` elements from any start may touch."""
    per_line = 64 // (4 if spec.dtype == "float32" else 8)
    return sorted(set(range(0, n, per_line)) | {n - 1})


def _prefetch_row(b, em, pf, src, ldb, line_offsets) -> None:
    """Prefetch the row PACK_PREFETCH_ROWS below ``src`` (a prefetch never faults; its
    address is computed without ``inbounds``: it may lie past the array)."""
    if not PACK_PREFETCH_ROWS:
        return
    ahead = b.gep(src, [b.mul(I64(PACK_PREFETCH_ROWS), ldb)], source_etype=em.t)
    for off in line_offsets:
        b.call(pf, [b.gep(ahead, [I64(off)], source_etype=em.t), I32(0), I32(3), I32(1)])


def emit_pack_b(em) -> ir.Function:
    """P[kk*NR + jj] = src[kk*ldb + jj] for jj < nrem, kk < kc (``src``: the panel's
    first element in a B stored K×N).

    One vector copy per panel row (lanes past ``nrem`` masked off in a narrow last
    panel; whole panels use plain loads, which AVX2 prefers)."""
    s = em.s
    d = "f32" if s.dtype == "float32" else "f64"
    name = f"graphc_gemm_packb_{d}_{s.nr}x{s.vw}"
    fn = _pack_function(em, name)
    if fn.blocks:                          # already emitted into this module
        return fn
    p, bsrc, ldb, nrem, kc = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pf = _prefetch(em.m)
    line_offsets = _line_offsets(s, s.nr)

    def copy_rows(b, masks):
        def row(b, kk):
            src = em.gep(b, bsrc, b.mul(kk, ldb))
            dst = em.gep(b, p, b.mul(kk, I64(s.nr)))
            _prefetch_row(b, em, pf, src, ldb, line_offsets)
            for v in range(s.nv):
                m = masks[v] if masks else None
                em.vstore(b, em.vload(b, em.gep(b, src, I64(v * s.vw)), m),
                          em.gep(b, dst, I64(v * s.vw)), m)
        counted_loop(b, I64(0), kc, 1, row, "pkb", True)

    with b.if_else(b.icmp_signed("==", nrem, I64(s.nr))) as (whole, edge):
        with whole:
            copy_rows(b, None)
        with edge:
            copy_rows(b, [em.lane_mask(b, nrem, v * s.vw) for v in range(s.nv)])
    b.ret_void()
    return fn


#: bytes of each B row a group copy reads at once: whole panels, at least this much, so a
#: row's cache lines are all used by the panels of one copy (one 96-byte panel row of
#: AVX2's 4x3 tile leaves parts of 2-3 lines that the next panel's copy fetched again)
PACK_GROUP_BYTES = 384


def pack_group(spec) -> int:
    """Panels of a non-transposed B that one copy packs (1: panel by panel)."""
    item = 4 if spec.dtype == "float32" else 8
    return max(1, -(-PACK_GROUP_BYTES // (spec.nr * item)))


def emit_pack_b_group(em) -> ir.Function:
    """P[g*KC*NR + kk*NR + jj] = src[kk*ldb + g*NR + jj] for g < G, jj < NR, kk < kc:
    G = :func:`pack_group` whole panels of a B stored K×N packed in one pass over its
    rows (each row's G·NR elements contiguous: every cache line read once, wholly)."""
    s = em.s
    d = "f32" if s.dtype == "float32" else "f64"
    g_count = pack_group(s)
    name = f"graphc_gemm_packbg_{d}_{s.nr}x{s.vw}_g{g_count}_kc{s.kc}"
    fn = _pack_function(em, name)
    if fn.blocks:
        return fn
    p, bsrc, ldb, _nrem, kc = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pf = _prefetch(em.m)
    line_offsets = _line_offsets(s, g_count * s.nr)

    def row(b, kk):
        src = em.gep(b, bsrc, b.mul(kk, ldb))
        _prefetch_row(b, em, pf, src, ldb, line_offsets)
        for g in range(g_count):
            dst = em.gep(b, p, b.add(I64(g * s.kc * s.nr), b.mul(kk, I64(s.nr))))
            for v in range(s.nv):
                em.vstore(b, em.vload(b, em.gep(b, src, I64(g * s.nr + v * s.vw)), None),
                          em.gep(b, dst, I64(v * s.vw)), None)
    counted_loop(b, I64(0), kc, 1, row, "pkg", True)
    b.ret_void()
    return fn


class NNPanels:
    """Where the driver's panel ``jp`` of a non-transposed B is read from when its call
    packs (``packing``): whole panels in groups of G = :func:`pack_group` from the
    range's first column, each group copied by one pass over its rows when its first
    panel comes (:func:`emit_pack_b_group`), the panels after the last whole group one
    by one (:func:`emit_pack_b`) into the buffer's first slot.  The buffer holds G
    KC×NR slots."""

    def __init__(self, em):
        self.em, self.groups = em, pack_group(em.s)
        self.single = emit_pack_b(em)
        self.group = emit_pack_b_group(em) if self.groups > 1 else None

    def emit(self, b, pbuf, src, ldb, nrem, kc, jp, j0, j1, packing):
        """Pack what panel ``jp`` of [j0, j1) needs (under ``packing``); returns the
        pointer to its packed KC×NR copy."""
        s = self.em.s
        if self.group is None:
            with b.if_then(packing):
                b.call(self.single, [pbuf, src, ldb, nrem, kc])
            return pbuf
        span = I64(self.groups * s.nr)
        rel = b.sub(jp, j0)
        grouped = b.icmp_signed("<", jp, b.add(j0, b.mul(b.sdiv(b.sub(j1, j0), span), span)))
        first = b.icmp_signed("==", b.srem(rel, span), I64(0))
        slot = b.select(grouped, b.srem(b.sdiv(rel, I64(s.nr)), I64(self.groups)), I64(0))
        with b.if_then(packing):
            with b.if_else(grouped) as (whole, single):
                with whole:
                    with b.if_then(first):
                        b.call(self.group, [pbuf, src, ldb, nrem, kc])
                with single:
                    b.call(self.single, [pbuf, src, ldb, nrem, kc])
        return self.em.gep(b, pbuf, b.mul(slot, I64(s.kc * s.nr)))
