"""Window kernels over short image rows as explicit vectors (``window.py`` falls back to its
loop nests when a case does not fit).

LeNet's rows are 5..28 elements wide.  Written as scalar loops with masked tails
(``Codegen.loop(masked=True)``) the loop vectorizer recomputes a lane mask from the
loop bounds for every access; ``col2im``'s gather did so for each of its kh·kw taps of
every pixel (measured: the biggest window kernel of the LeNet step on Zen 3).  Here a
row is ``nv = ceil(width / VW)`` vectors (VW: the host's vector lanes, as the GEMM
kernels' ``default_spec``), a tap's lanes are a mask known when the code is generated
(``col2im``: the kernel's taps are unrolled) or computed once per unit (``im2col``: one
unit is one tap), and the row itself is a handful of masked vector loads and stores.

Which elements are read, written and summed, and in which order, is what the loop
nests do: ``col2im`` sums each pixel's taps in row-major order starting from +0.0 (a
tap outside the patch matrix is skipped, which adds nothing: a sum started at +0.0
is never -0.0), so results are the same bits as the numpy reference and as the
fallback, for any thread count (the units are the same).  Masked-off lanes are never
accessed, so a row's vector may start before its first element.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.ir.ops.window import node_geometry as geometry

from . import gemm as gemm_mod
from . import knobs

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)

#: False: always the loop nests (tests, measurements; the graph key covers it)
ENABLED = knobs.WINDOW_ROWS
#: at most this many vectors per row (wider rows: the loop nests)
MAX_VECTORS = 8
#: at most this many unrolled masked loads per row of col2im (code size, compile time)
MAX_COL2IM_LOADS = 256


def _emitter(cg, dtype) -> gemm_mod.Emitter:
    return gemm_mod.Emitter(cg.m, gemm_mod.default_spec(np.dtype(dtype).name))


def lanes(dtype) -> int:
    """Vector lanes of ``dtype`` on the host (the GEMM kernels' width)."""
    return gemm_mod.default_spec(np.dtype(dtype).name).vw


def _nv(width, dtype) -> int:
    return -(-width // lanes(dtype))


def _bool_vec(bits):
    return ir.Constant(ir.VectorType(I1, len(bits)), [I1(int(x)) for x in bits])


def _shifted(b, em, ptr, shift):
    """``ptr + shift`` elements (not inbounds: the vector may start before the row)."""
    if isinstance(shift, int) and shift == 0:
        return ptr
    return b.gep(ptr, [shift if isinstance(shift, ir.Value) else I64(shift)],
                 source_etype=em.t)


def _store_row(b, em, ptr, vals, width, spill=None):
    """Store vector ``v`` of ``vals`` at ``ptr + v·VW``.  The last one is masked to
    ``width`` unless ``spill`` (an i1) is true: then it is stored whole, over the start
    of the next row, which its own store overwrites later (masked stores are slow on
    some CPUs: microcoded on AMD Zen 2/3)."""
    vw = em.s.vw
    for v, val in enumerate(vals):
        p = _shifted(b, em, ptr, v * vw)
        tail = width - v * vw
        if tail >= vw:
            em.vstore(b, val, p)
            continue
        mask = _bool_vec([lane < tail for lane in range(vw)])
        if spill is None:
            em.vstore(b, val, p, mask)
            continue
        with b.if_else(spill) as (whole, masked):
            with whole:
                em.vstore(b, val, p)
            with masked:
                em.vstore(b, val, p, mask)


def spill_rows(rows, width, nv, vw) -> int:
    """Rows ``[rows - t, rows)`` of a block of contiguous rows of ``width`` whose whole
    last vector would reach past the block: those must store it masked."""
    over = nv * vw - width
    return min(rows, -(-over // width)) if over > 0 else 0


# ---- col2im at stride 1 ----------------------------------------------------------------------------
def col2im_fits(node, cols_view, out_view) -> bool:
    """col2im at stride 1 over rows of contiguous patch-matrix columns and image pixels."""
    g = geometry(node)
    if not ENABLED or tuple(node.attrs["stride"]) != (1, 1) or cols_view.strides[1] != 1 or \
            out_view.strides[-1] != 1 or out_view.strides[-2] != g.w:
        return False
    nv = _nv(g.w, out_view.st.dtype)
    return nv <= MAX_VECTORS and g.kh * g.kw * nv <= MAX_COL2IM_LOADS


def col2im(cg, b, k, ptrs, lo, hi, cols, split):
    """Units [lo, hi) of (n, c) planes: each row of the image is ``nv`` accumulators, every
    tap (i, j) adds its patch-matrix row segment as masked loads (the lanes whose source
    column is in range: fixed per (j, vector); the row of taps i: one flag per image row)."""
    node = k.node
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(node)
    out = k.stores[0][1]
    dtype = out.st.dtype
    em = _emitter(cg, dtype)
    vw, nv = em.s.vw, _nv(W, dtype)
    none = _bool_vec([0] * vw)

    def tap_lanes(j, v):
        return [0 <= v * vw + lane + pw - j * dw < OW and v * vw + lane < W
                for lane in range(vw)]

    def unit(u):
        n, c = split(b, u, N, C)

        def row(h):
            acc = [em.zero] * nv
            for i in range(kh):
                oh = b.add(h, I64(ph - i * dh))
                ok = b.and_(b.icmp_signed(">=", oh, I64(0)), b.icmp_signed("<", oh, I64(OH)))
                ohc = b.select(ok, oh, I64(0))
                for j in range(kw):
                    base = cg.addr(b, ptrs, cols, [c, I64(i), I64(j), n, ohc, I64(0)])
                    for v in range(nv):
                        bits = tap_lanes(j, v)
                        if not any(bits):
                            continue
                        mask = b.select(ok, _bool_vec(bits), none)
                        p = _shifted(b, em, base, v * vw + pw - j * dw)
                        acc[v] = b.fadd(acc[v], em.vload(b, p, mask))
            spill = b.icmp_signed("<", h, I64(H - spill_rows(H, W, nv, vw)))
            _store_row(b, em, cg.addr(b, ptrs, out, [n, c, h, I64(0)]), acc, W, spill)
        cg.loop(b, I64(0), I64(H), row, "h", vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)


# ---- im2col with unit column stride -----------------------------------------------------------------
def im2col_fits(node, x_view, cols_view) -> bool:
    g = geometry(node)
    return (ENABLED and g.sw == 1 and x_view.strides[-1] == 1 and cols_view.strides[1] == 1
            and _nv(g.ow, cols_view.st.dtype) <= MAX_VECTORS)


def im2col(cg, b, k, ptrs, lo, hi, x, out, split, valid_range):
    """Units [lo, hi) of (c, i, j, n): output row oh of the unit is the image row
    oh·sh - ph + i·dh shifted by j·dw - pw, masked to the in-image columns (a mask per
    vector computed once per unit), or zeros for rows outside the image."""
    node = k.node
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(node)
    dtype = out.st.dtype
    em = _emitter(cg, dtype)
    vw, nv = em.s.vw, _nv(OW, dtype)
    iota = ir.Constant(ir.VectorType(I32, vw), list(range(vw)))
    last_whole = OH - spill_rows(OH, OW, nv, vw)      # rows below it may spill

    def splat(x):
        vt = ir.VectorType(I32, vw)
        v = b.insert_element(ir.Constant(vt, ir.Undefined), x, I32(0))
        return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, vw), [0] * vw))

    def unit(u):
        c, i, j, n = split(b, u, C, kh, kw, N)
        hoff = b.sub(b.mul(i, I64(dh)), I64(ph))
        woff = b.sub(b.mul(j, I64(dw)), I64(pw))
        r0, r1 = valid_range(b, hoff, sh, H, OH)
        masks = []
        for v in range(nv):
            # the source column of each lane (i32: one register of lanes)
            src = b.add(iota, splat(b.trunc(b.add(woff, I64(v * vw)), I32)))
            ok = b.and_(b.icmp_signed(">=", src, splat(I32(0))),
                        b.icmp_signed("<", src, splat(I32(W))))
            if (v + 1) * vw > OW:
                ok = b.and_(ok, _bool_vec([v * vw + lane < OW for lane in range(vw)]))
            masks.append(ok)

        def dst(oh):
            return cg.addr(b, ptrs, out, [c, i, j, n, oh, I64(0)])

        def zero_row(oh):
            _store_row(b, em, dst(oh), [em.zero] * nv, OW,
                       b.icmp_signed("<", oh, I64(last_whole)))

        def row(oh):
            hh = b.add(b.mul(oh, I64(sh)), hoff)
            base = cg.addr(b, ptrs, x, [n, c, hh, I64(0)])
            vals = [em.vload(b, _shifted(b, em, base, b.add(woff, I64(v * vw))),
                             masks[v]) for v in range(nv)]
            _store_row(b, em, dst(oh), vals, OW, b.icmp_signed("<", oh, I64(last_whole)))
        cg.loop(b, I64(0), r0, zero_row, "zr0", vectorize=False)
        cg.loop(b, r0, r1, row, "row", vectorize=False)
        cg.loop(b, r1, I64(OH), zero_row, "zr1", vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)
