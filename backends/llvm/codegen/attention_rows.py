"""The attention kernels' shared helpers (:class:`Row`: stack slots, vectorizable loops,
view access, GEMM-library calls, the (batch, head) loops of a chunk) and the row kernels
of ``sdpa`` / ``sdpa_grad`` for operands whose rows are not contiguous (read element by
element through their views; ``attention_tiles.py`` is the fast path).

Forward, per query row ``i``: keys in blocks of :data:`BLOCK` (only ``j <= i`` when
causal: the masked half is never computed); a block's scores go to a stack row, then an
*online softmax* -- running max ``m`` and sum ``l``, the output row rescaled by
``exp(m_old - m_new)`` when a later block raises the max -- so any key length runs in a
fixed scratch.  Backward, per query row and block of keys (a first pass for the row's
max and sum when it has more than one block): the scores again, the softmax,
``dp_j = g_i . v_j``, ``ds_j = p_j (dp_j - D) * scale`` (``D = sum_j p_j dp_j`` from a
single block, else ``g_i . o_i``), then ``dq_i += ds_j k_j``, ``dk_j += ds_j q_i``,
``dv_j += p_j g_i`` for the unmasked keys only: any key length, two blocks of scratch.
Dot products and row sums are vectorized with reassociation
(``Codegen.loop(reorder=True)``): their order is fixed by the shapes alone.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..native import kernellib
from ..plan.views import View, c_strides
from . import gemm as gemm_mod
from . import mathfn
from .custom import reg_type

I32, I64 = ir.IntType(32), ir.IntType(64)
#: query rows x keys of one tile of the GEMM path (scores of a tile on the stack)
TILE = 64
#: keys per block of the row kernels (strided operands): a row of scores on the stack
BLOCK = 64


def units(node):
    q = node.inputs[0]
    return q.shape[:-2]


class Row:
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
        #: the most keys a row loop runs over (min of the key length and a block)
        self.keys = min(k.node.inputs[1].shape[-2], BLOCK)

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
        if reorder and not isinstance(hi, int) and self.keys < 8:
            # a key loop shorter than any vector: forcing it only made LLVM warn
            # (two keys, float64: fuzz seed 242026)
            reorder = False
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
            self.get(pa, j), self.get(pb, j)))), vec=True, reorder=True)     # n: keys
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
        batch = units(self.k.node)
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


def grad_views(k):
    """Views of dq, dk, dv inside sdpa_grad's flat output."""
    vo = k.stores[0][1]
    s0 = vo.strides[0] if vo.strides else 1
    out, at = [], vo.offset
    for x in k.node.inputs[:3]:
        out.append(View(vo.st, at, x.shape, tuple(s * s0 for s in c_strides(x.shape))))
        at += int(np.prod(x.shape, dtype=np.int64)) * s0
    return out


def sdpa_rows(cg, b, k, ptrs, chunk):
    """Forward through rows (strided operands): per query row, keys in blocks of
    :data:`BLOCK` with an online softmax (running max and sum, the output row rescaled
    when a later block raises the max): any key length in a fixed scratch."""
    n = k.node
    q, kk, v = n.inputs
    vq, vk, vv, vo = k.loads[q], k.loads[kk], k.loads[v], k.stores[0][1]
    L, d = q.shape[-2:]
    S, dv = v.shape[-2:]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    R = Row(cg, b, k, ptrs)
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


def sdpa_grad_rows(cg, b, k, ptrs, chunk):
    """Backward through rows (strided operands): per query row, keys in blocks of
    :data:`BLOCK` -- with more than one block, a first pass for the row's max and sum
    (online, as the forward) and D = g . o; per block the scores again, P, dP_j = g . v_j,
    dS = P (dP - D) scale, and the row's dq, dk, dv updates.  A row whose keys fit one
    block takes D = sum_j P_j dP_j from it (exact zeros for a one-hot softmax, as the
    tiled kernel).  The scratch is two blocks of stack whatever the key length."""
    n = k.node
    q, kk, v, o, g = n.inputs
    vq, vk, vv, vo, vg = (k.loads[x] for x in (q, kk, v, o, g))
    dq, dk, dvw = grad_views(k)
    L, d = q.shape[-2:]
    S, dv = v.shape[-2:]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    one_block = S <= BLOCK
    R = Row(cg, b, k, ptrs)
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


def pos(b, x):
    """max(x, 0) of an i64."""
    return b.select(b.icmp_signed(">", x, I64(0)), x, I64(0))
