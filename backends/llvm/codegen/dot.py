"""Long-K products with a small output: dot products with vector accumulators along K.

``C = A · Bᵀ`` where both operands are rows along K -- A stored (M, K), B stored (N, K)
(the GEMM's ``nt`` case) -- with K long and one of M, N narrower than a vector: a conv
layer's weight gradient ``g @ colsᵀ`` (LeNet's conv1: 6 × 25 over K = 50 176).  The GEMM
micro-kernel broadcasts along K and puts N (or, computed transposed, M) in its vector
lanes: 6 of 16 lanes at conv1 on AVX-512, plus a packed copy of one operand per call.
Here the lanes run along K instead: a tile of ``p`` rows of one operand × ``q`` rows of
the other keeps ``p·q`` vector accumulators, and each k step loads ``p + q`` vectors for
``p·q`` fused multiply-adds with every lane used; nothing is packed.

K is walked in blocks of :data:`KBLOCK` elements, all of a chunk's tiles per block (the
accumulators wait in a stack buffer between blocks), so each operand row is read from
memory once and the narrow operand's block stays in L1 while the tiles pass it.

Every element is one vector chain: lane ``l`` sums ``a[k]·b[k]`` for k ≡ l (mod VW) in
k order from zero (a masked last vector adds zeros), then the lanes are added in order
(an ordered ``llvm.vector.reduce.fadd``).  That depends only on the shapes and the
vector width, never on the tiles, the chunks or the thread count: bit-identical results
on any number of threads.  A chunk (a thread's claim) is a fixed range of tiles.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from . import gemm as gemm_mod
from . import knobs, loops
from .lowerings import mem_type, reg_type

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()

#: eligible when K is at least this
MIN_K = 1024
#: K block (elements, a multiple of every vector width)
KBLOCK = 1024
#: False: never use the dot kernel (for comparisons)
ENABLED = knobs.DOT   # the graph key reads it (knobs.key_values)
#: the accumulators of all tiles of a chunk live on the stack: at most this many bytes
MAX_ACC_BYTES = 64 * 1024


def vector_width(dtype) -> int:
    return gemm_mod.vector_bits() // (8 * np.dtype(dtype).itemsize)


def vector_registers() -> int:
    return 32 if gemm_mod.vector_bits() >= 512 else 16


def tile(np_, nq, regs):
    """(p, q): rows of the long operand set P (``np_`` rows) and of the other (``nq``) per
    register tile: ``p·q`` accumulators + ``p + q`` loaded vectors fit in ``regs - 2``
    registers; fewest vector loads per k step over the whole product (edge tiles
    counted as full ones), then most accumulators."""
    best = None
    for q in range(1, min(nq, 8) + 1):
        for p in range(1, min(np_, 8) + 1):
            if p * q + p + q > regs - 2:
                continue
            loads = -(-np_ // p) * -(-nq // q) * (p + q)
            key = (loads, -p * q)
            if best is None or key < best[0]:
                best = (key, (p, q))
    return best[1]


def plan_shape(m, n, dtype):
    """(swap, p, q, units): P is the operand with more rows (B's rows when ``swap``),
    tiles of p × q rows, ``units`` tiles in all."""
    swap = n > m
    np_, nq = (n, m) if swap else (m, n)
    p, q = tile(np_, nq, vector_registers())
    return swap, p, q, -(-np_ // p) * -(-nq // q)


def eligible(m, n, k, dtype) -> bool:
    """Whether a ``nt`` product of M×N over K runs here: K long, the output narrower than
    a vector in one dimension, and every tile's accumulators within the stack buffer."""
    if not ENABLED or np.dtype(dtype).name not in ("float32", "float64"):
        return False
    vw = vector_width(dtype)
    if k < MIN_K or min(m, n) >= vw or min(m, n) < 1:
        return False
    swap, p, q, units = plan_shape(m, n, dtype)
    return units * p * q * vw * np.dtype(dtype).itemsize <= MAX_ACC_BYTES


def chunks(m, n, k, dtype, threads: int) -> int:
    """Fixed pieces (ranges of tiles): one per thread -- each piece streams its operand
    rows once, so more pieces than threads only add memory traffic."""
    units = plan_shape(m, n, dtype)[3]
    work = m * n * k
    return max(1, min(threads, units, work // gemm_mod.MIN_WORK_PER_THREAD))


def emit(cg, b, k, ptrs, tid) -> None:
    """The body of dot kernel ``k`` (a ``DotKernel``) for chunk ``tid``."""
    _Dot(cg, b, k, ptrs).emit(tid)


class _Dot:
    def __init__(self, cg, b, k, ptrs):
        self.cg, self.b, self.k, self.ptrs = cg, b, k, ptrs
        g = self.g = k.gemm
        self.dtype = np.dtype(g.a.st.dtype)
        self.swap, self.p, self.q, self.units = plan_shape(g.m, g.n, self.dtype)
        self.vw = vector_width(self.dtype)
        self.ft = reg_type(self.dtype)
        self.vt = ir.VectorType(self.ft, self.vw)
        self.zero = ir.Constant(self.vt, [0.0] * self.vw)
        spec = gemm_mod.GemmSpec(self.dtype.name, vw=self.vw)
        self.em = gemm_mod.Emitter(cg.m, spec)
        # rows along K: A (M, K) strides (lda, 1); op(B) (K, N) strides (1, ldb)
        ra = (g.a, g.a.strides[0], g.m)
        rb = (g.b, g.b.strides[1], g.n)
        self.P, self.Q = (rb, ra) if self.swap else (ra, rb)
        self.nqt = -(-self.Q[2] // self.q)

    # ---- addresses -------------------------------------------------------------------------
    def base(self, v):
        return self.cg.global_of(v.st) if v.st.kind == "global" else self.ptrs[v.st]

    def row_ptr(self, rows, i):
        """Pointer to element 0 of row ``i`` (i64) of a row set."""
        v, stride, _ = rows
        off = self.b.add(I64(v.offset), self.b.mul(i, I64(stride)))
        return self.b.gep(self.base(v), [off], source_etype=mem_type(v.st.dtype))

    def c_ptr(self, ip, iq):
        b, c = self.b, self.g.c
        m, n = (iq, ip) if self.swap else (ip, iq)
        off = b.add(I64(c.offset), b.add(b.mul(m, I64(c.strides[0])),
                                          b.mul(n, I64(c.strides[1]))))
        return b.gep(self.base(c), [off], source_etype=mem_type(c.st.dtype))

    # ---- code ------------------------------------------------------------------------------
    def shapes(self):
        """(p rows, q rows) of the tile kinds, keyed by (last p tile, last q tile)."""
        pe, qe = self.P[2] % self.p, self.Q[2] % self.q
        return {(lp, lq): ((pe if lp and pe else self.p), (qe if lq and qe else self.q))
                for lp in (False, True) for lq in (False, True)}

    def dispatch(self, u, body):
        """``body(pt, qt, pr, qr)`` for unit ``u`` with its tile's compile-time shape."""
        b = self.b
        pt, qt = b.sdiv(u, I64(self.nqt)), b.srem(u, I64(self.nqt))
        npt = -(-self.P[2] // self.p)
        lastp = b.icmp_signed("==", pt, I64(npt - 1))
        lastq = b.icmp_signed("==", qt, I64(self.nqt - 1))
        shapes = self.shapes()
        kinds = {}
        for key, shp in shapes.items():
            kinds.setdefault(shp, []).append(key)
        if len(kinds) == 1:
            body(pt, qt, *next(iter(kinds)))
            return
        end = b.append_basic_block("dot.kind.end")
        for shp, keys in kinds.items():
            cond = None
            for lp, lq in keys:
                c = b.and_(lastp if lp else b.not_(lastp), lastq if lq else b.not_(lastq))
                cond = c if cond is None else b.or_(cond, c)
            yes, no = b.append_basic_block("dot.kind"), b.append_basic_block("dot.kind.next")
            b.cbranch(cond, yes, no)
            b.position_at_end(yes)
            body(pt, qt, *shp)
            b.branch(end)
            b.position_at_end(no)
        b.branch(end)
        b.position_at_end(end)

    def acc_ptr(self, buf, u, u0, r, c):
        b = self.b
        slot = b.add(b.mul(b.sub(u, u0), I64(self.p * self.q)), I64(r * self.q + c))
        return b.gep(buf, [slot], source_etype=self.vt)

    def vload(self, ptr, mask=None):
        return self.em.vload(self.b, ptr, mask)

    def kblock(self, buf, u, u0, pt, qt, pr, qr, k0, nfull, tail):
        """Tile (pt, qt) of shape pr × qr over k in [k0, k0 + nfull) (whole vectors), then
        a masked vector of the K remainder when ``tail`` (i1)."""
        b, em, vw = self.b, self.em, self.vw
        prow = [self.row_ptr(self.P, b.add(b.mul(pt, I64(self.p)), I64(r))) for r in range(pr)]
        qrow = [self.row_ptr(self.Q, b.add(b.mul(qt, I64(self.q)), I64(c))) for c in range(qr)]
        aptr = [[self.acc_ptr(buf, u, u0, r, c) for c in range(qr)] for r in range(pr)]
        accs = [[b.load(aptr[r][c], typ=self.vt) for c in range(qr)] for r in range(pr)]
        for row in accs:
            for a in row:
                a.align = 64

        def step(accs, kk, mask):
            pv = [self.vload(em.gep(b, prow[r], kk), mask) for r in range(pr)]
            qv = [self.vload(em.gep(b, qrow[c], kk), mask) for c in range(qr)]
            return [[b.call(em.fma, [pv[r], qv[c], accs[r][c]]) for c in range(qr)]
                    for r in range(pr)]

        pre = b.block
        body = b.append_basic_block("dot.k")
        done = b.append_basic_block("dot.kdone")
        kend = b.add(k0, nfull)
        b.cbranch(b.icmp_signed("<", k0, kend), body, done)
        b.position_at_end(body)
        kk = b.phi(I64, "k")
        kk.add_incoming(k0, pre)
        phis = [[b.phi(self.vt) for _ in range(qr)] for _ in range(pr)]
        for r in range(pr):
            for c in range(qr):
                phis[r][c].add_incoming(accs[r][c], pre)
        new = step(phis, kk, None)
        k1 = b.add(kk, I64(vw))
        kk.add_incoming(k1, body)
        for r in range(pr):
            for c in range(qr):
                phis[r][c].add_incoming(new[r][c], body)
        loops.mark_no_unroll(self.cg.m, b.cbranch(b.icmp_signed("<", k1, kend), body, done),
                             f"{b.function.name}.dot{len(b.function.blocks)}", True)
        b.position_at_end(done)
        fin = [[b.phi(self.vt) for _ in range(qr)] for _ in range(pr)]
        for r in range(pr):
            for c in range(qr):
                fin[r][c].add_incoming(accs[r][c], pre)
                fin[r][c].add_incoming(new[r][c], body)
        rem = self.g.k % vw
        if rem:
            mask = ir.Constant(ir.VectorType(I1, vw), [1 if i < rem else 0 for i in range(vw)])
            pre2 = b.block
            tblk, tend = b.append_basic_block("dot.tail"), b.append_basic_block("dot.tailend")
            b.cbranch(tail, tblk, tend)
            b.position_at_end(tblk)
            tnew = step(fin, kend, mask)
            tb = b.block
            b.branch(tend)
            b.position_at_end(tend)
            out = [[b.phi(self.vt) for _ in range(qr)] for _ in range(pr)]
            for r in range(pr):
                for c in range(qr):
                    out[r][c].add_incoming(fin[r][c], pre2)
                    out[r][c].add_incoming(tnew[r][c], tb)
            fin = out
        for r in range(pr):
            for c in range(qr):
                st = b.store(fin[r][c], aptr[r][c])
                st.align = 64

    def finish(self, buf, u, u0, pt, qt, pr, qr):
        """C = the ordered lane sums of the tile's accumulators."""
        b = self.b
        name = f"llvm.vector.reduce.fadd.v{self.vw}{'f32' if self.dtype == np.float32 else 'f64'}"
        red = self.cg.m.globals.get(name) or ir.Function(
            self.cg.m, ir.FunctionType(self.ft, [self.ft, self.vt]), name)
        ct = mem_type(self.g.c.st.dtype)
        for r in range(pr):
            for c in range(qr):
                acc = b.load(self.acc_ptr(buf, u, u0, r, c), typ=self.vt)
                acc.align = 64
                s = b.call(red, [ir.Constant(self.ft, -0.0), acc])
                ip = b.add(b.mul(pt, I64(self.p)), I64(r))
                iq = b.add(b.mul(qt, I64(self.q)), I64(c))
                st = b.store(s if ct == self.ft else b.fptrunc(s, ct), self.c_ptr(ip, iq))
                st.align = self.dtype.itemsize

    def emit(self, tid):
        b, g, vw = self.b, self.g, self.vw
        parts = self.k.nchunks
        u0 = b.sdiv(b.mul(I64(self.units), tid), I64(parts))
        u1 = b.sdiv(b.mul(I64(self.units), b.add(tid, I64(1))), I64(parts))
        per = -(-self.units // parts)
        nvec = per * self.p * self.q
        buf = b.alloca(self.vt, I64(nvec))      # one vector slot per accumulator
        buf.align = 64

        def zero(bb, i):     # the chunk's accumulators start at zero
            st = b.store(self.zero, b.gep(buf, [i], source_etype=self.vt))
            st.align = 64
        loops.counted_loop(b, I64(0), I64(nvec), 1, zero, "dotz", True, True)
        K = g.k

        def over_kblocks(bb, k0):
            klen = b.sub(I64(K), k0)
            klen = b.select(b.icmp_signed("<", klen, I64(KBLOCK)), klen, I64(KBLOCK))
            nfull = b.mul(b.sdiv(klen, I64(vw)), I64(vw))
            tail = b.icmp_signed("<", nfull, klen)
            loops.counted_loop(b, u0, u1, 1, lambda bb, u: self.dispatch(
                u, lambda pt, qt, pr, qr: self.kblock(buf, u, u0, pt, qt, pr, qr, k0, nfull,
                                                      tail)), "dotu", True, True)
        loops.counted_loop(b, I64(0), I64(K), KBLOCK, over_kblocks, "dotkb", True, True)
        loops.counted_loop(b, u0, u1, 1, lambda bb, u: self.dispatch(
            u, lambda pt, qt, pr, qr: self.finish(buf, u, u0, pt, qt, pr, qr)), "dotf",
            True, True)
