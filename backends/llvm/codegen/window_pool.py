"""Pooling over unpadded windows as explicit vectors (``window.py`` falls back to its loop
nests for padding, wide rows and strided operands).

A pooled row of ``OW`` outputs is ``nv = ceil(OW / VW)`` vectors.  For output vector
``v`` and window row ``i`` one wide load takes the ``(VW - 1)·sw + kw`` contiguous
input elements its windows cover; tap ``j`` of the VW windows is the shuffle of lanes
``j, j + sw, j + 2·sw, ...`` of it.  The loop vectorizer gives these stride-``sw``
accesses as gathers (or scalarised loads), which made LeNet's 2×2 pooling kernels
second only to the GEMMs among the window kernels on Zen 3.

The arithmetic is the loop nests': max-pool's argmax starts at the window's first tap
and moves to a later one that is greater or NaN (PyTorch), average pooling sums the taps
in row-major order and divides by kh·kw, so results are the same bits.  The backward
pass of max-pooling over windows that tile the image (stride = kernel, kw = 2) finds
each window's argmax once per vector and writes both columns of a window row as one
interleaved wide store.
"""
from __future__ import annotations

from llvmlite import ir

from graphc.ir.ops.window import node_geometry as geometry

from . import knobs
from .window_rows import MAX_VECTORS, _bool_vec, _emitter, _nv, _shifted, _store_row, spill_rows

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)

#: False: always the loop nests (tests, measurements; the graph key covers it)
ENABLED = knobs.WINDOW_POOL
#: at most this many taps unrolled per output vector
MAX_TAPS = 64


def _plain(v) -> bool:
    """Rows of unit stride, each row right after the previous one."""
    return v.strides[-1] == 1 and v.strides[-2] == v.shape[-1]


def pool_fits(node, views) -> bool:
    """Forward pooling (max, select, avg) without padding over plain rows."""
    g = geometry(node)
    return (ENABLED and g.ph == 0 and g.pw == 0 and all(_plain(v) for v in views)
            and _nv(g.ow, views[0].st.dtype) <= MAX_VECTORS and g.kh * g.kw <= MAX_TAPS)


def grad_fits(node, views) -> bool:
    """max_pool2d_grad over 2-wide windows that tile the rows (stride = kernel)."""
    g = geometry(node)
    return (ENABLED and g.ph == 0 and g.pw == 0 and (g.sh, g.sw) == (g.kh, g.kw)
            and g.kw == 2 and all(_plain(v) for v in views)
            and _nv(g.ow, views[0].st.dtype) <= MAX_VECTORS and g.kh * g.kw <= MAX_TAPS)


class _Rows:
    """Loads of the taps of VW consecutive windows of one window row."""

    def __init__(self, cg, b, ptrs, node, dtype):
        self.cg, self.b, self.ptrs = cg, b, ptrs
        self.g = geometry(node)
        self.em = _emitter(cg, dtype)
        self.vw = self.em.s.vw
        self.nv = _nv(self.g.ow, dtype)
        self.span = (self.vw - 1) * self.g.sw + self.g.kw     # input elements per vector
        self.wt = ir.VectorType(self.em.t, self.span)
        self.mload = self.em.m.globals.get(f"llvm.masked.load.v{self.span}{self._sfx()}.p0")
        if self.mload is None:
            mt = ir.VectorType(I1, self.span)
            self.mload = ir.Function(self.em.m, ir.FunctionType(
                self.wt, [ir.PointerType(), I32, mt, self.wt]),
                f"llvm.masked.load.v{self.span}{self._sfx()}.p0")

    def _sfx(self):
        return "f32" if isinstance(self.em.t, ir.FloatType) else "f64"

    def out_lanes(self, v):
        """Valid output lanes of vector v (None: all)."""
        tail = self.g.ow - v * self.vw
        return None if tail >= self.vw else tail

    def wide(self, view, n, c, h, v):
        """The ``span`` input elements under output vector v of row h."""
        b, em, g = self.b, self.em, self.g
        p = _shifted(b, em, self.cg.addr(b, self.ptrs, view, [n, c, h, I64(0)]),
                     v * self.vw * g.sw)
        tail = self.out_lanes(v)
        need = self.span if tail is None else (tail - 1) * g.sw + g.kw
        if need >= self.span:
            ld = b.load(p, typ=self.wt)
            ld.align = em.align
            return ld
        mask = _bool_vec([q < need for q in range(self.span)])
        return b.call(self.mload, [p, I32(em.align), mask, ir.Constant(self.wt, None)])

    def tap(self, wide, j):
        """Tap j of the VW windows: lanes j, j + sw, ... of ``wide``."""
        idx = [j + lane * self.g.sw for lane in range(self.vw)]
        return self.b.shuffle_vector(wide, ir.Constant(self.wt, ir.Undefined),
                                     ir.Constant(ir.VectorType(I32, self.vw), idx))


def _argmax(rows, b, x, n, c, oh, v, carry=None):
    """(max, picked carry, tap index as <VW x i32>) of output vector v of row oh."""
    g = rows.g
    if rows.out_lanes(v) == 1:
        return _argmax_lane0(rows, b, x, n, c, oh, v, carry)
    best = picked = arg = None
    for i in range(g.kh):
        h = b.add(b.mul(oh, I64(g.sh)), I64(i))
        wx = rows.wide(x, n, c, h, v)
        wc = rows.wide(carry, n, c, h, v) if carry is not None else None
        for j in range(g.kw):
            t = rows.tap(wx, j)
            tc = rows.tap(wc, j) if wc is not None else None
            tapv = ir.Constant(ir.VectorType(I32, rows.vw), [i * g.kw + j] * rows.vw)
            best, picked, arg = _argmax_step(b, (best, picked, arg), t, tc, tapv)
    return best, picked, arg


def _argmax_step(b, state, t, tc, tap):
    """(max, picked, argmax) after tap ``t`` (carry ``tc``, index ``tap``): the first
    tap starts it; a later one wins when greater or NaN (PyTorch's rule)."""
    best, picked, arg = state
    if best is None:
        return t, tc, tap
    upd = b.or_(b.fcmp_ordered(">", t, best), b.fcmp_unordered("uno", t, t))
    return (b.select(upd, t, best), None if tc is None else b.select(upd, tc, picked),
            b.select(upd, tap, arg))


def _argmax_lane0(rows, b, x, n, c, oh, v, carry=None):
    """:func:`_argmax` of a vector with one valid lane, from scalar loads.  LLVM 20's
    x86 code generator miscompiles the shuffles when only lane 0 of the taps is used:
    on AVX-512 it compared the first tap with itself (fuzz seed 151887; float64 1×2
    windows over rows 2 wide, float32 2×3 windows with a 17th output)."""
    g, em = rows.g, rows.em
    vt = ir.VectorType(em.t, rows.vw)
    it = ir.VectorType(I32, rows.vw)
    best = picked = arg = None
    for i in range(g.kh):
        h = b.add(b.mul(oh, I64(g.sh)), I64(i))
        for j in range(g.kw):
            col = I64(v * rows.vw * g.sw + j)
            t = rows.cg.load(b, rows.ptrs, x, [n, c, h, col])
            tc = rows.cg.load(b, rows.ptrs, carry, [n, c, h, col]) if carry is not None \
                else None
            best, picked, arg = _argmax_step(b, (best, picked, arg), t, tc, I32(i * g.kw + j))

    def lane0(val, typ):
        return None if val is None else b.insert_element(
            ir.Constant(typ, None), val, I32(0))
    return lane0(best, vt), lane0(picked, vt), lane0(arg, it)


def _plane_loop(cg, b, lo, hi, split, N, C, OH, body):
    def unit(u):
        n, c = split(b, u, N, C)
        cg.loop(b, I64(0), I64(OH), lambda oh: body(n, c, oh), "oh", vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)


def pool(cg, b, k, ptrs, lo, hi, operands, split):
    """max_pool2d / max_pool2d_select / avg_pool2d over (n, c) planes [lo, hi)."""
    node, out = k.node, k.stores[0][1]
    g = geometry(node)
    rows = _Rows(cg, b, ptrs, node, out.st.dtype)
    em, vw, nv = rows.em, rows.vw, rows.nv
    last_whole = g.oh - spill_rows(g.oh, g.ow, nv, vw)

    def body(n, c, oh):
        vals = []
        for v in range(nv):
            if node.op == "avg_pool2d":
                s = None
                for i in range(g.kh):
                    wx = rows.wide(operands[0], n, c, b.add(b.mul(oh, I64(g.sh)), I64(i)), v)
                    for j in range(g.kw):
                        t = rows.tap(wx, j)
                        s = t if s is None else b.fadd(s, t)
                div = ir.Constant(em.vt, [float(g.kh * g.kw)] * vw)
                vals.append(b.fdiv(s, div))
            else:
                carry = operands[1] if node.op == "max_pool2d_select" else None
                best, picked, _ = _argmax(rows, b, operands[0], n, c, oh, v, carry)
                vals.append(picked if carry is not None else best)
        _store_row(b, em, cg.addr(b, ptrs, out, [n, c, oh, I64(0)]), vals, g.ow,
                   b.icmp_signed("<", oh, I64(last_whole)))
    _plane_loop(cg, b, lo, hi, split, g.n, g.c, g.oh, body)


def max_grad(cg, b, k, ptrs, lo, hi, x, gv, split, zero_plane):
    """max_pool2d_grad, windows tiling the rows 2 wide: per output vector the argmax,
    then per window row one interleaved store of (g or 0, g or 0) pairs."""
    node, out = k.node, k.stores[0][1]
    g = geometry(node)
    rows = _Rows(cg, b, ptrs, node, out.st.dtype)
    em, vw, nv = rows.em, rows.vw, rows.nv
    covers = (g.oh * g.sh, g.ow * g.sw) == (g.h, g.w)
    last_whole = g.h - spill_rows(g.h, g.w, 1, 2 * vw * nv)
    zero = em.zero
    pairs = ir.Constant(ir.VectorType(I32, 2 * vw), [q // 2 + (q % 2) * vw
                                                     for q in range(2 * vw)])

    def unit(u):
        n, c = split(b, u, g.n, g.c)
        if not covers:
            zero_plane(cg, b, ptrs, out, n, c, g.h, g.w)

        def row(oh):
            args, gvals = [], []
            for v in range(nv):
                args.append(_argmax(rows, b, x, n, c, oh, v)[2])
                tail = rows.out_lanes(v)
                gp = _shifted(b, em, cg.addr(b, ptrs, gv, [n, c, oh, I64(0)]), v * vw)
                gvals.append(em.vload(b, gp, None if tail is None else
                                      _bool_vec([lane < tail for lane in range(vw)])))
            # row by row, vectors in order: a row's whole last vector spills over the
            # start of the next row, which is written after it
            for i in range(g.kh):
                h = b.add(b.mul(oh, I64(g.sh)), I64(i))
                for v in range(nv):
                    cols = [b.select(b.icmp_signed("==", args[v], ir.Constant(
                        args[v].type, [i * 2 + j] * vw)), gvals[v], zero) for j in range(2)]
                    wide = b.shuffle_vector(cols[0], cols[1], pairs)
                    p = _shifted(b, em, cg.addr(b, ptrs, out, [n, c, h, I64(0)]),
                                 v * vw * 2)
                    tail = rows.out_lanes(v)
                    if tail is None:
                        _store(b, em, wide, p, None)
                        continue
                    mask = _bool_vec([q < 2 * tail for q in range(2 * vw)])
                    if not covers:
                        _store(b, em, wide, p, mask)
                        continue
                    whole = b.icmp_signed("<", h, I64(last_whole))
                    with b.if_else(whole) as (then, otherwise):
                        with then:
                            _store(b, em, wide, p, None)
                        with otherwise:
                            _store(b, em, wide, p, mask)
        cg.loop(b, I64(0), I64(g.oh), row, "oh", vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)


def _store(b, em, val, ptr, mask):
    """A 2·VW-lane store (masked: through llvm.masked.store of that width)."""
    if mask is None:
        st = b.store(val, ptr)
        st.align = em.align
        return
    sfx = "f32" if isinstance(em.t, ir.FloatType) else "f64"
    n = val.type.count
    name = f"llvm.masked.store.v{n}{sfx}.p0"
    fn = em.m.globals.get(name)
    if fn is None:
        fn = ir.Function(em.m, ir.FunctionType(ir.VoidType(), [
            val.type, ir.PointerType(), I32, ir.VectorType(I1, n)]), name)
    b.call(fn, [val, ptr, I32(em.align), mask])
