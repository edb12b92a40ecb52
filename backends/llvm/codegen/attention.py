"""LLVM kernels of the attention ops (``graphc.ir.ops.attention``): ``sdpa`` and its VJP
``sdpa_grad``, one loop nest per (batch, head), the scores never stored beyond a row.

Both are ``custom`` entries of the lowering table (``ATTENTION``: emit, chunks), so
their kernel is the plan's ``CustomKernel`` reading q, k, v (and g) through their views
-- the heads of a fused qkv product are strided views, never copied.  A chunk is a
fixed range of the first batch dim, so results do not depend on the thread count.

Forward, per query row ``i``: keys in blocks of :data:`BLOCK` (only ``j <= i`` when
causal: the masked half is never computed); a block's scores go to a stack row, then an
*online softmax* -- running max ``m`` and sum ``l``, the output row rescaled by
``exp(m_old - m_new)`` when a later block raises the max -- so any key length runs in a
fixed scratch.  Backward, per query row and block of keys (a first pass for the row's
max and sum when it has more than one block): the scores again, the softmax,
``dp_j = g_i . v_j``, ``ds_j = p_j (dp_j - D) * scale`` (``D = sum_j p_j dp_j`` from a
single block, else ``g_i . o_i``), then ``dq_i += ds_j k_j``, ``dk_j += ds_j q_i``,
``dv_j += p_j g_i`` for the unmasked keys only: any key length, two blocks of scratch.  Dot products and row sums are
vectorized with reassociation (``Codegen.loop(reorder=True)``): their order is fixed
by the shapes alone.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..native import kernellib
from ..plan.views import View, c_strides
from . import gemm as gemm_mod
from . import mathfn
from .custom import CHUNKS_PER_THREAD, SINGLE_ELEMS, reg_type

I32, I64 = ir.IntType(32), ir.IntType(64)
#: query rows x keys of one tile of the GEMM path (scores of a tile on the stack)
TILE = 64
#: keys per block of the row kernels (strided operands): a row of scores on the stack
BLOCK = 64


def _units(node):
    q = node.inputs[0]
    return q.shape[:-2]


def _chunks(k, threads):
    batch = _units(k.node)
    q, kk = k.node.inputs[:2]
    work = int(np.prod(batch, dtype=np.int64)) * q.shape[-2] * kk.shape[-2] * q.shape[-1]
    if threads <= 1 or not batch or batch[0] < 2 or work < SINGLE_ELEMS:
        return 1
    return max(1, min(threads * CHUNKS_PER_THREAD, batch[0]))


class _Row:
    """Helpers over one kernel: scalar slots, vectorizable loops, element access."""

    def __init__(self, cg, b, k, ptrs):
        self.cg, self.b, self.k, self.ptrs = cg, b, k, ptrs
        self.t = reg_type(k.node.inputs[0].dtype)
        #: exp has a vector form (float32; float64 calls libm: that loop stays scalar)
        self.vector_exp = self.t == ir.FloatType()
        spec = gemm_mod.default_spec(k.node.inputs[0].dtype)
        self.vw = spec.vw
        #: rows per GEMM strip of a tile: whole micro-kernel tiles, ~16 rows (causal)
        self.strip = spec.mr * max(1, 16 // spec.mr) if k.node.attrs["causal"] else TILE

    def c(self, v):
        return ir.Constant(self.t, v)

    def slot(self, n=None):
        with self.b.goto_entry_block():
            return self.b.alloca(self.t, size=None if n is None else I64(n))

    def get(self, p, j=None):
        b = self.b
        if j is not None:
            p = b.gep(p, [j], source_etype=self.t, inbounds=True)
        return b.load(p, typ=self.t)

    def put(self, p, val, j=None):
        b = self.b
        if j is not None:
            p = b.gep(p, [j], source_etype=self.t, inbounds=True)
        b.store(val, p)

    def ld(self, view, idx):
        return self.cg.load(self.b, self.ptrs, view, idx)

    def st(self, view, idx, val):
        self.cg.store(self.b, self.ptrs, view, idx, val)

    def loop(self, lo, hi, body, vec=False, reorder=False, name="j"):
        lo = lo if isinstance(lo, ir.Value) else I64(lo)
        hi = hi if isinstance(hi, ir.Value) else I64(hi)
        self.cg.loop(self.b, lo, hi, body, name, vectorize=vec, reorder=reorder)

    def dot(self, va, ia, vb, ib, n):
        """sum_c a[ia + [c]] * b[ib + [c]] over c < n (vectorized, reassociated)."""
        acc = self.slot()
        self.put(acc, self.c(0.0))
        b = self.b
        self.loop(0, n, lambda c: self.put(acc, b.fadd(self.get(acc), b.fmul(
            self.ld(va, ia + [c]), self.ld(vb, ib + [c])))), vec=True, reorder=True, name="c")
        return self.get(acc)

    def rowdot(self, pa, pb, n):
        """sum_j pa[j] * pb[j] over j < n of two stack rows (vectorized, reassociated)."""
        acc = self.slot()
        self.put(acc, self.c(0.0))
        b = self.b
        self.loop(0, n, lambda j: self.put(acc, b.fadd(self.get(acc), b.fmul(
            self.get(pa, j), self.get(pb, j)))), vec=True, reorder=True)
        return self.get(acc)

    def axpy(self, vy, iy, alpha, vx, ix, n):
        """y[iy + [c]] += alpha * x[ix + [c]] over c < n (vectorized)."""
        b = self.b
        self.loop(0, n, lambda c: self.st(vy, iy + [c], b.fadd(
            self.ld(vy, iy + [c]), b.fmul(alpha, self.ld(vx, ix + [c])))), vec=True, name="c")

    def fill(self, vy, iy, val, n):
        self.loop(0, n, lambda c: self.st(vy, iy + [c], val), vec=True, name="c")

    def minv(self, a, b):
        """min of two i64 values."""
        return self.b.select(self.b.icmp_signed("<", a, b), a, b)

    def tile(self):
        """A TILE x TILE scratch of scores (64-byte aligned, in the entry block)."""
        with self.b.goto_entry_block():
            p = self.b.alloca(self.t, size=I64(TILE * TILE))
        p.align = 64
        return p

    def at(self, p, off):
        return self.b.gep(p, [off], source_etype=self.t, inbounds=True)

    def addr(self, view, idx):
        return self.cg.addr(self.b, self.ptrs, view, idx)

    def gemm(self, ta, tb, a, lda, bb, ldb, c, ldc, kdim, rows, cols, beta=1, r0=None,
             c0=None):
        """C[r0:rows, c0:cols] (=, beta 0 | +=, beta 1) op(A) op(B) over kdim, through
        the GEMM library (row-major strides in elements; r0, c0 default 0)."""
        spec = gemm_mod.default_spec(self.k.node.inputs[0].dtype, ta, tb)
        fn = kernellib.gemm_function(self.cg.m, spec)
        self.b.call(fn, [a, bb, c, kdim, I64(lda), I64(ldb), I64(ldc), r0 or I64(0), rows,
                         c0 or I64(0), cols, I32(beta)])

    def maxv(self, a, b):
        return mathfn.intrinsic(self.b, "maximum", self.t, a, b)

    def heads(self, chunk, body):
        """body(batch index list) for every (batch, head) of this chunk."""
        batch = _units(self.k.node)
        idx = []
        k = self.k

        def rec(d):
            if d == len(batch):
                body(list(idx))
                return
            if d == 0 and k.nchunks > 1:
                lo, hi = self.cg.part_range(self.b, chunk, batch[0], 1, k.nchunks)
            else:
                lo, hi = I64(0), I64(batch[d])

            def inner(i):
                idx.append(i)
                rec(d + 1)
                idx.pop()
            self.cg.loop(self.b, lo, hi, inner, f"h{d}", vectorize=False)
        rec(0)

    def keys_of(self, i, S, causal):
        """Keys row ``i`` attends: min(i + 1, S) when causal, else S."""
        if not causal:
            return I64(S)
        b = self.b
        n = b.add(i, I64(1))
        return b.select(b.icmp_signed("<", n, I64(S)), n, I64(S))


def tiled(k) -> bool:
    """The GEMM-tile path: every operand and the output walk their rows contiguously."""
    return all(v.strides and v.strides[-1] == 1
               for v in list(k.loads.values()) + [k.stores[0][1]])


def _sdpa(cg, b, k, ptrs, chunk):
    if tiled(k):
        return _sdpa_tiles(cg, b, k, ptrs, chunk)
    n = k.node
    q, kk, v = n.inputs
    vq, vk, vv, vo = k.loads[q], k.loads[kk], k.loads[v], k.stores[0][1]
    L, d = q.shape[-2:]
    S, dv = v.shape[-2:]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    R = _Row(cg, b, k, ptrs)
    srow, m, l, blk = R.slot(BLOCK), R.slot(), R.slot(), R.slot()

    def head(h):
        def row(i):
            jmax = R.keys_of(i, S, causal)
            R.put(m, R.c(float("-inf")))
            R.put(l, R.c(0.0))
            R.fill(vo, h + [i], R.c(0.0), dv)
            nblk = b.sdiv(b.add(jmax, I64(BLOCK - 1)), I64(BLOCK))

            def block(jb):
                j0 = b.mul(jb, I64(BLOCK))
                j1 = b.add(j0, I64(BLOCK))
                cnt = b.sub(b.select(b.icmp_signed("<", j1, jmax), j1, jmax), j0)
                R.loop(0, cnt, lambda j: R.put(srow, b.fmul(
                    R.dot(vq, h + [i], vk, h + [b.add(j0, j)], d), R.c(scale)), j))
                R.put(blk, R.c(float("-inf")))
                R.loop(0, cnt, lambda j: R.put(blk, R.maxv(R.get(blk), R.get(srow, j))),
                       vec=True)
                m_old = R.get(m)
                m_new = R.maxv(m_old, R.get(blk))
                alpha = mathfn.exp(b, b.fsub(m_old, m_new))
                R.put(blk, R.c(0.0))

                def expo(j):
                    e = mathfn.exp(b, b.fsub(R.get(srow, j), m_new))
                    R.put(srow, e, j)
                    R.put(blk, b.fadd(R.get(blk), e))
                R.loop(0, cnt, expo, vec=True, reorder=R.vector_exp)
                R.put(l, b.fadd(b.fmul(R.get(l), alpha), R.get(blk)))
                R.loop(0, dv, lambda c: R.st(vo, h + [i, c], b.fmul(R.ld(vo, h + [i, c]), alpha)),
                       vec=True, name="c")
                R.loop(0, cnt, lambda j: R.axpy(vo, h + [i], R.get(srow, j),
                                                vv, h + [b.add(j0, j)], dv))
                R.put(m, m_new)
            R.loop(0, nblk, block, name="jb")
            tot = R.get(l)
            R.loop(0, dv, lambda c: R.st(vo, h + [i, c], b.fdiv(R.ld(vo, h + [i, c]), tot)),
                   vec=True, name="c")
        R.loop(0, L, row, name="i")
    R.heads(chunk, head)


def _grad_views(k):
    """Views of dq, dk, dv inside sdpa_grad's flat output."""
    vo = k.stores[0][1]
    s0 = vo.strides[0] if vo.strides else 1
    out, at = [], vo.offset
    for x in k.node.inputs[:3]:
        out.append(View(vo.st, at, x.shape, tuple(s * s0 for s in c_strides(x.shape))))
        at += int(np.prod(x.shape, dtype=np.int64)) * s0
    return out


def _sdpa_grad(cg, b, k, ptrs, chunk):
    """Backward through rows (strided operands): per query row, keys in blocks of
    :data:`BLOCK` -- with more than one block, a first pass for the row's max and sum
    (online, as the forward) and D = g . o; per block the scores again, P, dP_j = g . v_j,
    dS = P (dP - D) scale, and the row's dq, dk, dv updates.  A row whose keys fit one
    block takes D = sum_j P_j dP_j from it (exact zeros for a one-hot softmax, as the
    tiled kernel).  The scratch is two blocks of stack whatever the key length."""
    if tiled(k):
        return _sdpa_grad_tiles(cg, b, k, ptrs, chunk)
    n = k.node
    q, kk, v, o, g = n.inputs
    vq, vk, vv, vo, vg = (k.loads[x] for x in (q, kk, v, o, g))
    dq, dk, dvw = _grad_views(k)
    L, d = q.shape[-2:]
    S, dv = v.shape[-2:]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    one_block = S <= BLOCK
    R = _Row(cg, b, k, ptrs)
    prow, dprow = R.slot(BLOCK), R.slot(BLOCK)
    m, l, Dg, acc = R.slot(), R.slot(), R.slot(), R.slot()
    zero = R.c(0.0)

    def span(jb, jmax):
        j0 = b.mul(jb, I64(BLOCK))
        return j0, b.sub(R.minv(b.add(j0, I64(BLOCK)), jmax), j0)

    def head(h):
        R.loop(0, S, lambda j: (R.fill(dk, h + [j], zero, d), R.fill(dvw, h + [j], zero, dv)))

        def row(i):
            jmax = R.keys_of(i, S, causal)
            nblk = b.sdiv(b.add(jmax, I64(BLOCK - 1)), I64(BLOCK))

            def scores(j0, cnt):
                R.loop(0, cnt, lambda j: R.put(prow, b.fmul(
                    R.dot(vq, h + [i], vk, h + [b.add(j0, j)], d), R.c(scale)), j))
                R.put(acc, R.c(float("-inf")))
                R.loop(0, cnt, lambda j: R.put(acc, R.maxv(R.get(acc), R.get(prow, j))),
                       vec=True)
                return R.get(acc)

            def expsum(cnt, mx, store):
                R.put(acc, zero)

                def expo(j):
                    e = mathfn.exp(b, b.fsub(R.get(prow, j), mx))
                    if store:
                        R.put(prow, e, j)
                    R.put(acc, b.fadd(R.get(acc), e))
                R.loop(0, cnt, expo, vec=True, reorder=R.vector_exp)
                return R.get(acc)

            if not one_block:           # the row's max and sum over its blocks first
                R.put(m, R.c(float("-inf")))
                R.put(l, zero)

                def stat(jb):
                    j0, cnt = span(jb, jmax)
                    m_old = R.get(m)
                    m_new = R.maxv(m_old, scores(j0, cnt))
                    tot = expsum(cnt, m_new, False)
                    R.put(l, b.fadd(b.fmul(R.get(l), mathfn.exp(b, b.fsub(m_old, m_new))),
                                    tot))
                    R.put(m, m_new)
                R.loop(0, nblk, stat, name="jb")
                R.put(Dg, R.dot(vg, h + [i], vo, h + [i], dv))
            R.fill(dq, h + [i], zero, d)

            def block(jb):
                j0, cnt = span(jb, jmax)
                if one_block:
                    mx = scores(j0, cnt)
                    tot = expsum(cnt, mx, True)
                    R.loop(0, cnt, lambda j: R.put(prow, b.fdiv(R.get(prow, j), tot), j),
                           vec=True)
                else:
                    scores(j0, cnt)
                    mx, tot = R.get(m), R.get(l)
                    R.loop(0, cnt, lambda j: R.put(prow, b.fdiv(mathfn.exp(
                        b, b.fsub(R.get(prow, j), mx)), tot), j), vec=True)
                R.loop(0, cnt, lambda j: R.put(dprow, R.dot(vg, h + [i], vv,
                                                            h + [b.add(j0, j)], dv), j))
                D = R.rowdot(prow, dprow, cnt)
                if not one_block:
                    D = b.select(b.icmp_signed("==", nblk, I64(1)), D, R.get(Dg))

                def upd(j):
                    p = R.get(prow, j)
                    jj = b.add(j0, j)
                    ds = b.fmul(b.fmul(p, b.fsub(R.get(dprow, j), D)), R.c(scale))
                    R.axpy(dq, h + [i], ds, vk, h + [jj], d)
                    R.axpy(dk, h + [jj], ds, vq, h + [i], d)
                    R.axpy(dvw, h + [jj], p, vg, h + [i], dv)
                R.loop(0, cnt, upd)
            R.loop(0, nblk, block, name="jb")
        R.loop(0, L, row, name="i")
    R.heads(chunk, head)


def _tiles(R, b, n, h, body):
    """body(q0, nq, nkt): per tile of TILE query rows, with the key tiles it needs
    (causal: only those at or left of the diagonal)."""
    q, kk = n.inputs[:2]
    L, S = q.shape[-2], kk.shape[-2]

    def qtile(qt):
        q0 = b.mul(qt, I64(TILE))
        nq = R.minv(I64(TILE), b.sub(I64(L), q0))
        last = R.minv(b.add(q0, nq), I64(S)) if n.attrs["causal"] else I64(S)
        body(q0, nq, b.sdiv(b.add(last, I64(TILE - 1)), I64(TILE)))
    R.loop(0, -(-L // TILE), qtile, name="qt")


def _strips(R, b, n, body):
    """body(r0, r1) over strips of rows [0, n): a few GEMM row tiles each when causal
    (each strip's products stop at its diagonal), the whole tile otherwise."""
    sh = R.strip
    if sh >= TILE:
        body(I64(0), n)
        return

    def one(si):
        r0 = b.mul(si, I64(sh))
        body(r0, R.minv(b.add(r0, I64(sh)), n))
    R.loop(0, b.sdiv(b.add(n, I64(sh - 1)), I64(sh)), one, name="st")


def _cols(R, b, causal, q0, r1, k0, nk):
    """Keys of the tile at ``k0`` that query rows below ``q0 + r1`` see, rounded up to
    whole vectors (causal), or all ``nk``."""
    if not causal:
        return nk
    vw = R.vw
    x = b.sub(b.add(q0, r1), k0)
    return R.minv(nk, b.mul(b.sdiv(b.add(x, I64(vw - 1)), I64(vw)), I64(vw)))


def _scores(R, b, vq, vk, h, q0, nq, k0, nk, sbuf, d, causal):
    """sbuf[:nq, :nk] = Q[q0:q0+nq] K[k0:k0+nk]ᵀ (unscaled; causal: only up to each
    strip's diagonal)."""
    def strip(r0, r1):
        R.gemm(False, True, R.addr(vq, h + [b.add(q0, r0), I64(0)]), vq.strides[-2],
               R.addr(vk, h + [k0, I64(0)]), vk.strides[-2], R.at(sbuf, b.mul(r0, I64(TILE))),
               TILE, I64(d), b.sub(r1, r0), _cols(R, b, causal, q0, r1, k0, nk), beta=0)
    _strips(R, b, nq, strip)


def _rows_times(R, b, a, vbm, h, k0, vc, q0, nq, nk, ncols, causal):
    """C[q0:q0+nq] += A[:nq, :nk] B[k0:k0+nk] with A a stack tile (causal: each strip
    of rows only over the keys it sees)."""
    def strip(r0, r1):
        kk = _cols(R, b, causal, q0, r1, k0, nk)
        R.gemm(False, False, R.at(a, b.mul(r0, I64(TILE))), TILE,
               R.addr(vbm, h + [k0, I64(0)]), vbm.strides[-2],
               R.addr(vc, h + [b.add(q0, r0), I64(0)]), vc.strides[-2], kk, b.sub(r1, r0),
               I64(ncols))
    _strips(R, b, nq, strip)


def _keys_times(R, b, a, vbm, h, q0, vc, k0, nq, nk, ncols, causal):
    """C[k0:k0+nk] += A[:nq, :nk]ᵀ B[q0:q0+nq] with A a stack tile (causal: each strip
    of keys only over the query rows that see it)."""
    def strip(c0, c1):
        rs = b.sub(b.add(k0, c0), q0) if causal else I64(0)
        rs = b.select(b.icmp_signed(">", rs, I64(0)), rs, I64(0))
        kk = b.sub(nq, rs)
        kk = b.select(b.icmp_signed(">", kk, I64(0)), kk, I64(0))
        R.gemm(True, False, R.at(a, b.add(b.mul(rs, I64(TILE)), c0)), TILE,
               R.addr(vbm, h + [b.add(q0, rs), I64(0)]), vbm.strides[-2],
               R.addr(vc, h + [b.add(k0, c0), I64(0)]), vc.strides[-2], kk, b.sub(c1, c0),
               I64(ncols))
    _strips(R, b, nk, strip)


def _limit(R, b, causal, i, k0, nk):
    """Keys of row ``i`` within the tile at ``k0``: all nk, or up to the diagonal."""
    if not causal:
        return nk
    return R.minv(b.sub(b.add(i, I64(1)), k0), nk)


def _sdpa_tiles(cg, b, k, ptrs, chunk):
    """Forward through GEMM tiles: per query tile, over its key tiles, S = Q Kᵀ into a
    stack tile, an online softmax per row (running max and sum, the output row rescaled
    when the max grows), masked keys zeroed, then O += P V; O /= l at the end."""
    n = k.node
    q, kk, v = n.inputs
    vq, vk, vv, vo = k.loads[q], k.loads[kk], k.loads[v], k.stores[0][1]
    d, S, dv = q.shape[-1], kk.shape[-2], v.shape[-1]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    R = _Row(cg, b, k, ptrs)
    sbuf, m, l, acc = R.tile(), R.slot(TILE), R.slot(TILE), R.slot()
    zero = R.c(0.0)

    def head(h):
        def qtile(q0, nq, nkt):
            def init(r):
                R.put(m, R.c(float("-inf")), r)
                R.put(l, zero, r)
                R.fill(vo, h + [b.add(q0, r)], zero, dv)
            R.loop(0, nq, init, name="r")

            def ktile(kt):
                k0 = b.mul(kt, I64(TILE))
                nk = R.minv(I64(TILE), b.sub(I64(S), k0))
                _scores(R, b, vq, vk, h, q0, nq, k0, nk, sbuf, d, causal)

                def row(r):
                    i = b.add(q0, r)
                    jl = _limit(R, b, causal, i, k0, nk)
                    sr = R.at(sbuf, b.mul(r, I64(TILE)))
                    R.put(acc, R.c(float("-inf")))

                    def smax(j):
                        x = b.fmul(R.get(sr, j), R.c(scale))
                        R.put(sr, x, j)
                        R.put(acc, R.maxv(R.get(acc), x))
                    R.loop(0, jl, smax, vec=True)
                    m_old = R.get(m, r)
                    m_new = R.maxv(m_old, R.get(acc))
                    alpha = mathfn.exp(b, b.fsub(m_old, m_new))
                    R.put(acc, zero)

                    def expo(j):
                        e = mathfn.exp(b, b.fsub(R.get(sr, j), m_new))
                        R.put(sr, e, j)
                        R.put(acc, b.fadd(R.get(acc), e))
                    R.loop(0, jl, expo, vec=True, reorder=R.vector_exp)
                    R.loop(jl, nk, lambda j: R.put(sr, zero, j), vec=True)
                    R.put(l, b.fadd(b.fmul(R.get(l, r), alpha), R.get(acc)), r)
                    R.put(m, m_new, r)
                    R.loop(0, dv, lambda c: R.st(vo, h + [i, c], b.fmul(
                        R.ld(vo, h + [i, c]), alpha)), vec=True, name="c")
                R.loop(0, nq, row, name="r")
                _rows_times(R, b, sbuf, vv, h, k0, vo, q0, nq, nk, dv, causal)
            R.loop(0, nkt, ktile, name="kt")

            def fin(r):
                i = b.add(q0, r)
                tot = R.get(l, r)
                R.loop(0, dv, lambda c: R.st(vo, h + [i, c], b.fdiv(R.ld(vo, h + [i, c]), tot)),
                       vec=True, name="c")
            R.loop(0, nq, fin, name="r")
        _tiles(R, b, n, h, qtile)
    R.heads(chunk, head)


def _sdpa_grad_tiles(cg, b, k, ptrs, chunk):
    """Backward through GEMM tiles (FlashAttention-2's order): per query tile, the row
    statistics (from the one key tile when S <= TILE, else a first pass over the key
    tiles); per key tile P (masked keys 0), dP = g Vᵀ, dS = P (dP - D) scale, then
    dV += Pᵀ g, dK += dSᵀ Q, dQ += dS K.  D is rowsum(P dP) from the tile when all the
    query tile's keys are in one key tile (S <= TILE, or the first causal query tile),
    as the numpy oracle computes it: a row whose softmax is exactly one-hot -- a single
    key (causal row 0, S = 1), or every other key underflowed -- then gets D = dP_j
    bitwise and dS exactly 0, its true value (rowsum(g o) would differ from dP_j by
    rounding, ~1e-7, which Adam's normalisation turns into a whole step).  With several
    key tiles D = rowsum(g o), FlashAttention's identity (equal when o = sdpa(q, k, v)),
    so no pass over the keys is added; every such row has more than TILE keys."""
    n = k.node
    q, kk, v, o, g = n.inputs
    vq, vk, vv, vo, vg = (k.loads[x] for x in (q, kk, v, o, g))
    dq, dk, dvw = _grad_views(k)
    d, S, dv = q.shape[-1], kk.shape[-2], v.shape[-1]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    one_tile = S <= TILE
    R = _Row(cg, b, k, ptrs)
    pbuf, dbuf = R.tile(), R.tile()
    m, l, D, acc = R.slot(TILE), R.slot(TILE), R.slot(TILE), R.slot()
    zero = R.c(0.0)

    def stats(h, q0, nq, nkt):
        """m, l of each row over all its keys (S > TILE: before the main pass)."""
        R.loop(0, nq, lambda r: (R.put(m, R.c(float("-inf")), r), R.put(l, zero, r)), name="r")

        def ktile(kt):
            k0 = b.mul(kt, I64(TILE))
            nk = R.minv(I64(TILE), b.sub(I64(S), k0))
            _scores(R, b, vq, vk, h, q0, nq, k0, nk, pbuf, d, causal)

            def row(r):
                jl = _limit(R, b, causal, b.add(q0, r), k0, nk)
                sr = R.at(pbuf, b.mul(r, I64(TILE)))
                R.put(acc, R.c(float("-inf")))
                R.loop(0, jl, lambda j: R.put(acc, R.maxv(R.get(acc), b.fmul(
                    R.get(sr, j), R.c(scale)))), vec=True)
                m_old = R.get(m, r)
                m_new = R.maxv(m_old, R.get(acc))
                R.put(acc, zero)
                R.loop(0, jl, lambda j: R.put(acc, b.fadd(R.get(acc), mathfn.exp(b, b.fsub(
                    b.fmul(R.get(sr, j), R.c(scale)), m_new)))), vec=True,
                    reorder=R.vector_exp)
                R.put(l, b.fadd(b.fmul(R.get(l, r), mathfn.exp(b, b.fsub(m_old, m_new))),
                                R.get(acc)), r)
                R.put(m, m_new, r)
            R.loop(0, nq, row, name="r")
        R.loop(0, nkt, ktile, name="kt")

    def head(h):
        R.loop(0, S, lambda j: (R.fill(dk, h + [j], zero, d), R.fill(dvw, h + [j], zero, dv)))

        def qtile(q0, nq, nkt):
            def init(r):
                i = b.add(q0, r)
                if not one_tile:
                    R.put(D, R.dot(vg, h + [i], vo, h + [i], dv), r)
                R.fill(dq, h + [i], zero, d)
            R.loop(0, nq, init, name="r")
            if not one_tile:
                stats(h, q0, nq, nkt)
            # the query tile's keys in one key tile: D = rowsum(P dP) from that tile
            in_one = b.icmp_signed("==", nkt, I64(1)) if not one_tile else None

            def ktile(kt):
                k0 = b.mul(kt, I64(TILE))
                nk = R.minv(I64(TILE), b.sub(I64(S), k0))
                _scores(R, b, vq, vk, h, q0, nq, k0, nk, pbuf, d, causal)

                def probs(r):
                    jl = _limit(R, b, causal, b.add(q0, r), k0, nk)
                    sr = R.at(pbuf, b.mul(r, I64(TILE)))
                    if one_tile:
                        R.put(acc, R.c(float("-inf")))

                        def smax(j):
                            x = b.fmul(R.get(sr, j), R.c(scale))
                            R.put(sr, x, j)
                            R.put(acc, R.maxv(R.get(acc), x))
                        R.loop(0, jl, smax, vec=True)
                        mx = R.get(acc)
                        R.put(acc, zero)

                        def expo(j):
                            e = mathfn.exp(b, b.fsub(R.get(sr, j), mx))
                            R.put(sr, e, j)
                            R.put(acc, b.fadd(R.get(acc), e))
                        R.loop(0, jl, expo, vec=True, reorder=R.vector_exp)
                        tot = R.get(acc)
                        R.loop(0, jl, lambda j: R.put(sr, b.fdiv(R.get(sr, j), tot), j),
                               vec=True)
                    else:
                        mx, tot = R.get(m, r), R.get(l, r)
                        R.loop(0, jl, lambda j: R.put(sr, b.fdiv(mathfn.exp(b, b.fsub(
                            b.fmul(R.get(sr, j), R.c(scale)), mx)), tot), j), vec=True)
                    R.loop(jl, nk, lambda j: R.put(sr, zero, j), vec=True)
                R.loop(0, nq, probs, name="r")
                # dP = g V^T (into dbuf), then dS in place (0 at masked keys)
                _scores(R, b, vg, vv, h, q0, nq, k0, nk, dbuf, dv, causal)

                def dsrow(r):
                    pr = R.at(pbuf, b.mul(r, I64(TILE)))
                    dr = R.at(dbuf, b.mul(r, I64(TILE)))
                    jl = _limit(R, b, causal, b.add(q0, r), k0, nk)
                    Dr = R.rowdot(pr, dr, jl)
                    if not one_tile:
                        Dr = b.select(in_one, Dr, R.get(D, r))

                    def one(j):
                        p = R.get(pr, j)
                        R.put(dr, b.fmul(b.fmul(p, b.fsub(R.get(dr, j), Dr)), R.c(scale)), j)
                    R.loop(0, jl, one, vec=True)
                    R.loop(jl, nk, lambda j: R.put(dr, zero, j), vec=True)
                R.loop(0, nq, dsrow, name="r")
                _keys_times(R, b, pbuf, vg, h, q0, dvw, k0, nq, nk, dv, causal)
                _keys_times(R, b, dbuf, vq, h, q0, dk, k0, nq, nk, d, causal)
                _rows_times(R, b, dbuf, vk, h, k0, dq, q0, nq, nk, d, causal)
            R.loop(0, nkt, ktile, name="kt")
        _tiles(R, b, n, h, qtile)
    R.heads(chunk, head)


ATTENTION = {
    "sdpa": (_sdpa, _chunks),
    "sdpa_grad": (_sdpa_grad, _chunks),
}
