"""The GEMM-tile kernels of ``sdpa`` / ``sdpa_grad`` (every operand and the output walk
their rows contiguously -- the heads of a fused qkv product do): per (batch, head) and
per tile of TILE queries, each key tile's scores through the GEMM kernel library into a
stack tile stored *transposed* (a key per tile row, a query per column), so the softmax
runs down the columns (:class:`Cols`) -- one vector operation per key and vector of
queries, per-query statistics in stack vectors, no reduction across lanes and no loop
whose trip count depends on the query.  With ``causal``, key tiles right of the diagonal
are never visited, a tile crossing it is cut into strips whose products stop at the
diagonal, and the softmax passes skip the whole vectors of queries before a key.
"""
from __future__ import annotations

from . import mathfn
from .attention_rows import I64, TILE, Row, grad_views, pos


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
    (each strip's products stop at the diagonal), the whole tile otherwise."""
    sh = R.strip
    if sh >= TILE:
        body(I64(0), n)
        return

    def one(si):
        r0 = b.mul(si, I64(sh))
        body(r0, R.minv(b.add(r0, I64(sh)), n))
    R.loop(0, b.sdiv(b.add(n, I64(sh - 1)), I64(sh)), one, name="st")


def _scores_t(R, b, va, vb, h, k0, nk, q0, nq, buf, kdim, causal):
    """buf[j, r] = A[k0 + j] . B[q0 + r] (a key per stack row, a query per column:
    Sᵀ = K Qᵀ, or dPᵀ = V gᵀ), unscaled; causal: each strip of keys only from the first
    whole vector of queries that sees it."""
    vw = R.vw

    def strip(c0, c1):
        cs = I64(0)
        if causal:
            cs = pos(b, b.sub(b.add(k0, c0), q0))
            cs = R.minv(b.mul(b.sdiv(cs, I64(vw)), I64(vw)), nq)
        R.gemm(False, True, R.addr(va, h + [b.add(k0, c0), I64(0)]), va.strides[-2],
               R.addr(vb, h + [b.add(q0, cs), I64(0)]), vb.strides[-2],
               R.at(buf, b.add(b.mul(c0, I64(TILE)), cs)), TILE, I64(kdim), b.sub(c1, c0),
               b.sub(nq, cs), beta=0)
    _strips(R, b, nk, strip)


def _queries_times(R, b, a, vbm, h, k0, vc, q0, nq, nk, ncols, causal, beta):
    """C[q0 + r] (+)= sum_j a[j, r] B[k0 + j] (a stack tile, transposed: O = P V,
    dQ = dS K); causal: each strip of queries only over the keys it sees."""
    def strip(r0, r1):
        kk = R.minv(nk, pos(b, b.sub(b.add(q0, r1), k0))) if causal else nk
        R.gemm(True, False, R.at(a, r0), TILE, R.addr(vbm, h + [k0, I64(0)]),
               vbm.strides[-2], R.addr(vc, h + [b.add(q0, r0), I64(0)]), vc.strides[-2],
               kk, b.sub(r1, r0), I64(ncols), beta=beta)
    _strips(R, b, nq, strip)


def _keys_times(R, b, a, vbm, h, q0, vc, k0, nq, nk, ncols, causal):
    """C[k0 + j] += sum_r a[j, r] B[q0 + r] (a stack tile: dV = Pᵀ g, dK = dSᵀ Q);
    causal: each strip of keys only over the queries that see it."""
    def strip(c0, c1):
        rs = pos(b, b.sub(b.add(k0, c0), q0)) if causal else I64(0)
        R.gemm(False, False, R.at(a, b.add(b.mul(c0, I64(TILE)), rs)), TILE,
               R.addr(vbm, h + [b.add(q0, rs), I64(0)]), vbm.strides[-2],
               R.addr(vc, h + [b.add(k0, c0), I64(0)]), vc.strides[-2],
               pos(b, b.sub(nq, rs)), b.sub(c1, c0), I64(ncols))
    _strips(R, b, nk, strip)


class Cols:
    """The column-wise softmax of a transposed score tile (``buf[j, r]``: key j, query r):
    every pass runs along r -- one vector op per key and vector of queries, the row
    statistics (max, sum, D) kept per query in stack vectors -- so nothing reduces
    across lanes, no loop's trip count depends on the row, and no scalar code runs per
    query.  The sweep covers ``W`` columns (TILE, or L rounded up to whole vectors);
    masked entries (causal ``k0 + j > q0 + r``, keys past ``nk``, queries past ``nq``)
    are -inf before the exp and 0 after it, whatever the tile held there."""

    def __init__(self, R, b, L, causal, scale):
        self.R, self.b, self.causal, self.scale = R, b, causal, scale
        self.W = min(TILE, -(-L // R.vw) * R.vw)
        self.mx = R.slot(TILE)
        self.sm = R.slot(TILE)

    def sweep(self, body, lo=None):
        """body(r) over the W columns (from ``lo``), vectorized."""
        self.R.loop(lo or 0, self.W, body, vec=True, name="r")

    def keys(self, nk, body):
        """body(j, valid(r)) over the tile's keys."""
        R, b = self.R, self.b

        def key(j):
            thr = b.sub(b.add(self._k0, j), self._q0) if self.causal else None

            def valid(r):
                ok = b.icmp_signed("<", r, self._nq)
                if thr is not None:
                    ok = b.and_(ok, b.icmp_signed(">=", r, thr))
                return ok
            # causal: the whole vectors of queries before the first that sees key j
            # are all masked -- the passes skip them (zeros stored where read later)
            valid.lo = None
            if thr is not None:
                vw = I64(R.vw)
                valid.lo = R.minv(I64(self.W), b.mul(b.sdiv(pos(b, thr), vw), vw))
            body(j, valid)
        R.loop(0, nk, key, name="j")

    def at(self, buf, j):
        return self.R.at(buf, self.b.mul(j, I64(TILE)))

    def setup(self, q0, nq, k0):
        self._q0, self._nq, self._k0 = q0, nq, k0

    def scale_max(self, buf, nk):
        """buf = scale * buf, masked to -inf; self.mx[r] = max over the keys."""
        R, b = self.R, self.b
        self.sweep(lambda r: R.put(self.mx, R.c(float("-inf")), r))

        def key(j, valid):
            row = self.at(buf, j)

            def one(r):
                x = b.select(valid(r), b.fmul(R.get(row, r), R.c(self.scale)),
                             R.c(float("-inf")))
                R.put(row, x, r)
                R.put(self.mx, R.maxv(R.get(self.mx, r), x), r)
            self.sweep(one, valid.lo)
        self.keys(nk, key)

    def exp_sum(self, buf, nk, m, div=None):
        """buf = exp(buf - m[r]) (masked: 0), or that over div[r]; self.sm[r] = the
        sum of the exps."""
        R, b = self.R, self.b
        self.sweep(lambda r: R.put(self.sm, R.c(0.0), r))

        def key(j, valid):
            row = self.at(buf, j)

            def one(r):
                e = mathfn.exp(b, b.fsub(R.get(row, r), R.get(m, r)))
                R.put(self.sm, b.fadd(R.get(self.sm, r), e), r)
                R.put(row, e if div is None else b.fdiv(e, R.get(div, r)), r)
            if valid.lo is not None:
                R.loop(0, valid.lo, lambda r: R.put(row, R.c(0.0), r), vec=True, name="r")
            self.sweep(one, valid.lo)
        self.keys(nk, key)

    def divide(self, buf, nk, div):
        R, b = self.R, self.b

        def key(j, valid):
            row = self.at(buf, j)
            self.sweep(lambda r: R.put(row, b.fdiv(R.get(row, r), R.get(div, r)), r),
                       valid.lo)
        self.keys(nk, key)

    def online(self, m, l):
        """m, l after a tile (self.mx its max, self.sm its sum at the new max):
        l = l exp(m_old - m_new) + sum; returns nothing (alpha left in self.mx)."""
        R, b = self.R, self.b

        def one(r):
            m_old, m_new = R.get(m, r), R.maxv(R.get(m, r), R.get(self.mx, r))
            R.put(self.mx, mathfn.exp(b, b.fsub(m_old, m_new)), r)
            R.put(m, m_new, r)
        self.sweep(one)

    def rowsum_pdp(self, pbuf, dbuf, nk, D):
        """D[r] = sum_j P[j, r] dP[j, r] over the unmasked entries."""
        R, b = self.R, self.b
        self.sweep(lambda r: R.put(D, R.c(0.0), r))

        def key(j, valid):
            pr, dr = self.at(pbuf, j), self.at(dbuf, j)
            self.sweep(lambda r: R.put(D, b.fadd(R.get(D, r), b.select(
                valid(r), b.fmul(R.get(pr, r), R.get(dr, r)), R.c(0.0))), r), valid.lo)
        self.keys(nk, key)

    def ds(self, pbuf, dbuf, nk, D):
        """dbuf = P (dP - D[r]) scale (masked: 0), in place over dP."""
        R, b = self.R, self.b

        def key(j, valid):
            pr, dr = self.at(pbuf, j), self.at(dbuf, j)
            if valid.lo is not None:
                R.loop(0, valid.lo, lambda r: R.put(dr, R.c(0.0), r), vec=True, name="r")
            self.sweep(lambda r: R.put(dr, b.select(valid(r), b.fmul(b.fmul(
                R.get(pr, r), b.fsub(R.get(dr, r), R.get(D, r))), R.c(self.scale)),
                R.c(0.0)), r), valid.lo)
        self.keys(nk, key)


def sdpa_tiles(cg, b, k, ptrs, chunk):
    """Forward through GEMM tiles: per query tile, over its key tiles, Sᵀ = K Qᵀ into a
    stack tile, the column-wise softmax (:class:`_Cols`: running max and sum per query,
    the output rows rescaled when the max grows -- several key tiles only), then
    O (+)= Pᵀᵀ V; O /= l at the end.  With one key tile the product overwrites O."""
    n = k.node
    q, kk, v = n.inputs
    vq, vk, vv, vo = k.loads[q], k.loads[kk], k.loads[v], k.stores[0][1]
    L, d, S, dv = q.shape[-2], q.shape[-1], kk.shape[-2], v.shape[-1]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    one_tile = S <= TILE
    R = Row(cg, b, k, ptrs)
    C = Cols(R, b, L, causal, scale)
    sbuf, m, l = R.tile(), R.slot(TILE), R.slot(TILE)
    zero = R.c(0.0)

    def head(h):
        def qtile(q0, nq, nkt):
            C.sweep(lambda r: (R.put(m, R.c(float("-inf")), r), R.put(l, zero, r)))
            if not one_tile:
                R.loop(0, nq, lambda r: R.fill(vo, h + [b.add(q0, r)], zero, dv), name="r")

            def ktile(kt):
                k0 = b.mul(kt, I64(TILE))
                nk = R.minv(I64(TILE), b.sub(I64(S), k0))
                C.setup(q0, nq, k0)
                _scores_t(R, b, vk, vq, h, k0, nk, q0, nq, sbuf, d, causal)
                C.scale_max(sbuf, nk)
                C.online(m, l)                     # C.mx: alpha per query now
                C.exp_sum(sbuf, nk, m)
                C.sweep(lambda r: R.put(l, b.fadd(b.fmul(R.get(l, r), R.get(C.mx, r)),
                                                  R.get(C.sm, r)), r))
                if not one_tile:
                    def rescale(r):
                        i, alpha = b.add(q0, r), R.get(C.mx, r)
                        R.loop(0, dv, lambda c: R.st(vo, h + [i, c], b.fmul(
                            R.ld(vo, h + [i, c]), alpha)), vec=True, name="c")
                    R.loop(0, nq, rescale, name="r")
                _queries_times(R, b, sbuf, vv, h, k0, vo, q0, nq, nk, dv, causal,
                               beta=0 if one_tile else 1)
            R.loop(0, nkt, ktile, name="kt")

            def fin(r):
                i = b.add(q0, r)
                tot = R.get(l, r)
                R.loop(0, dv, lambda c: R.st(vo, h + [i, c], b.fdiv(R.ld(vo, h + [i, c]), tot)),
                       vec=True, name="c")
            R.loop(0, nq, fin, name="r")
        _tiles(R, b, n, h, qtile)
    R.heads(chunk, head)


def sdpa_grad_tiles(cg, b, k, ptrs, chunk):
    """Backward through GEMM tiles (FlashAttention-2's order, tiles transposed: a key
    per stack row): per query tile, the statistics m, l per query (from the one key
    tile when S <= TILE, else a first pass over the key tiles); per key tile Pᵀ,
    dPᵀ = V gᵀ, dSᵀ = P (dP - D) scale, then dV += Pᵀ g, dK += dSᵀ Q, dQ += dS K.
    D is rowsum(P dP) from the tile when all the query tile's keys are in one key tile
    (S <= TILE, or the first causal query tile), as the numpy oracle computes it: a row
    whose softmax is exactly one-hot -- a single key (causal row 0, S = 1), or every
    other key underflowed -- then gets D = dP_j bitwise and dS exactly 0, its true value
    (rowsum(g o) would differ from dP_j by rounding, ~1e-7, which Adam's normalisation
    turns into a whole step).  With several key tiles D = rowsum(g o), FlashAttention's
    identity (equal when o = sdpa(q, k, v)), so no pass over the keys is added; every
    such row has more than TILE keys."""
    n = k.node
    q, kk, v, o, g = n.inputs
    vq, vk, vv, vo, vg = (k.loads[x] for x in (q, kk, v, o, g))
    dq, dk, dvw = grad_views(k)
    L, d, S, dv = q.shape[-2], q.shape[-1], kk.shape[-2], v.shape[-1]
    causal, scale = n.attrs["causal"], n.attrs["scale"]
    one_tile = S <= TILE
    R = Row(cg, b, k, ptrs)
    C = Cols(R, b, L, causal, scale)
    pbuf, dbuf = R.tile(), R.tile()
    m, l, D = R.slot(TILE), R.slot(TILE), R.slot(TILE)
    zero = R.c(0.0)

    def stats(h, q0, nq, nkt):
        """m, l of each query over all its keys (S > TILE: before the main pass)."""
        C.sweep(lambda r: (R.put(m, R.c(float("-inf")), r), R.put(l, zero, r)))

        def ktile(kt):
            k0 = b.mul(kt, I64(TILE))
            nk = R.minv(I64(TILE), b.sub(I64(S), k0))
            C.setup(q0, nq, k0)
            _scores_t(R, b, vk, vq, h, k0, nk, q0, nq, pbuf, d, causal)
            C.scale_max(pbuf, nk)
            C.online(m, l)
            C.exp_sum(pbuf, nk, m)
            C.sweep(lambda r: R.put(l, b.fadd(b.fmul(R.get(l, r), R.get(C.mx, r)),
                                              R.get(C.sm, r)), r))
        R.loop(0, nkt, ktile, name="kt")

    def head(h):
        R.loop(0, S, lambda j: (R.fill(dk, h + [j], zero, d), R.fill(dvw, h + [j], zero, dv)))

        def qtile(q0, nq, nkt):
            if not one_tile:
                def init(r):
                    i = b.add(q0, r)
                    R.put(D, R.dot(vg, h + [i], vo, h + [i], dv), r)
                    R.fill(dq, h + [i], zero, d)
                R.loop(0, nq, init, name="r")
                stats(h, q0, nq, nkt)

            def ktile(kt):
                k0 = b.mul(kt, I64(TILE))
                nk = R.minv(I64(TILE), b.sub(I64(S), k0))
                C.setup(q0, nq, k0)
                _scores_t(R, b, vk, vq, h, k0, nk, q0, nq, pbuf, d, causal)
                C.scale_max(pbuf, nk)
                if one_tile:
                    C.exp_sum(pbuf, nk, C.mx)
                    C.divide(pbuf, nk, C.sm)
                else:
                    C.exp_sum(pbuf, nk, m, div=l)
                _scores_t(R, b, vv, vg, h, k0, nk, q0, nq, dbuf, dv, causal)
                if one_tile:
                    C.rowsum_pdp(pbuf, dbuf, nk, D)
                else:
                    with b.if_then(b.icmp_signed("==", nkt, I64(1))):
                        C.rowsum_pdp(pbuf, dbuf, nk, D)
                C.ds(pbuf, dbuf, nk, D)
                _keys_times(R, b, pbuf, vg, h, q0, dvw, k0, nq, nk, dv, causal)
                _keys_times(R, b, dbuf, vq, h, q0, dk, k0, nq, nk, d, causal)
                _queries_times(R, b, dbuf, vk, h, k0, dq, q0, nq, nk, d, causal,
                               beta=0 if one_tile else 1)
            R.loop(0, nkt, ktile, name="kt")
        _tiles(R, b, n, h, qtile)
    R.heads(chunk, head)
