"""LLVM kernels of the sliding-window ops (``graphc.ir.ops.window``): one loop nest each.

Each op is a ``custom`` entry of the lowering table (``KERNELS``: emit, chunks), so its
kernel is the plan's ``CustomKernel``: the node, its operands' views as ``loads``, its
output's view as the one store.  The kernel reads its operands through strided views (so
the NCHW transpose of a convolution's (out, n, oh, ow) product costs nothing).  Its work
is cut into *units* that never write the same bytes -- rows (c, i, j) times images n of
``im2col``; (n, c) planes of the pooling kernels and of ``col2im`` at stride 1; a channel
times a block of images for the tap-by-tap scatter-adds -- and a chunk is a fixed range
of units, so results do not depend on the thread count.  Sums run in the numpy reference's order: window taps in row-major order,
starting from zero (``col2im``, ``avg_pool2d``, ``avg_pool2d_grad``: the same bits).

Borders: the valid output columns of a tap are a range computed once per tap, so the
innermost loops carry no bounds checks; those short rows are vectorized with the tail
folded into masked operations (``row_loop``).  Pooling taps in padding are loaded from
a clamped index and masked out.  ``col2im`` at stride 1 is a gather: each pixel sums
its taps (masked loads), one store per pixel -- the tap-by-tap scatter re-reads and
re-writes every pixel kh·kw times (measured 2x slower at LeNet's shapes on Zen 4).

Max pooling follows PyTorch: a window's argmax starts at its first in-image element and
moves on to a later one that is greater or NaN.  Its backward pass, when windows neither
overlap nor touch padding (stride >= kernel, no padding: LeNet's 2x2), finds each argmax
once and writes every tap of the window (the gradient or 0); otherwise it walks the taps
in order, recomputing the argmax, and adds the gradient where the tap is the argmax
(numpy's order).
"""
from __future__ import annotations

from llvmlite import ir

from graphc.ir.ops.window import node_geometry as geometry

from ..plan.views import View
from . import window_pool, window_rows
from .custom import CHUNKS_PER_THREAD, SINGLE_ELEMS, reg_type
from .loops import SHORT_ROW

I1, I64 = ir.IntType(1), ir.IntType(64)


def units(node) -> int:
    """How many independent pieces of work the kernel of ``node`` has (see the module
    docstring): the thread chunks are fixed ranges of them."""
    g = geometry(node)
    if node.op == "im2col":
        return g.c * g.kh * g.kw * g.n
    if (node.op in ("col2im", "avg_pool2d_grad") and not gathers(node)) or \
            (node.op == "max_pool2d_grad" and not disjoint(node)):
        return g.c * -(-g.n // scatter_block(node))
    return g.n * g.c


def work(node) -> int:
    """Rough element-operations of the kernel (to decide whether threads pay)."""
    g = geometry(node)
    if node.op == "im2col":
        return g.c * g.kh * g.kw * g.n * g.oh * g.ow
    return g.n * g.c * max(g.h * g.w, g.oh * g.ow * g.kh * g.kw)


def gathers(node) -> bool:
    """col2im at stride 1 runs as a gather (``_col2im_gather``)."""
    return node.op == "col2im" and tuple(node.attrs["stride"]) == (1, 1)


def disjoint(node) -> bool:
    """Pooling windows that neither overlap nor touch padding."""
    (kh, kw), (sh, sw), (ph, pw) = (node.attrs[a] for a in ("kernel", "stride", "padding"))
    return sh >= kh and sw >= kw and not (ph or pw)


def patch_view(v: View, node) -> View:
    """The (C·kh·kw, N·OH·OW) patch matrix ``v`` as a 6-d view (c, i, j, n, oh, ow)."""
    n, c, h, w, kh, kw, *_, oh, ow = geometry(node)
    sk, sp = v.strides
    return View(v.st, v.offset, (c, kh, kw, n, oh, ow),
                (kh * kw * sk, kw * sk, sk, oh * ow * sp, ow * sp, sp))


# ---- small IR helpers ---------------------------------------------------------------------------
def _smax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _floordiv(b, a, s: int):
    """floor(a / s) for an i64 ``a`` of any sign and a constant s > 0."""
    if s == 1:
        return a
    q = b.sdiv(a, I64(s))
    neg = b.and_(b.icmp_signed("<", a, I64(0)),
                 b.icmp_signed("!=", b.mul(q, I64(s)), a))
    return b.sub(q, b.zext(neg, I64))


def valid_range(b, off, s, size, count):
    """[lo, hi) of o in [0, count) with 0 <= o·s + off < size (``off`` an i64 value)."""
    # o >= ceil(-off / s) = -floor(off / s) ... written as floor((-off + s - 1) / s)
    lo = _smax(b, _floordiv(b, b.add(b.neg(off), I64(s - 1)), s), I64(0))
    hi = _smin(b, b.add(_floordiv(b, b.sub(I64(size - 1), off), s), I64(1)), I64(count))
    return lo, _smax(b, hi, lo)


def _split(b, u, *sizes):
    """Digits of ``u`` in the mixed radix ``sizes`` (last fastest)."""
    out = []
    for s in reversed(sizes[1:]):
        out.append(b.urem(u, I64(s)))
        u = b.udiv(u, I64(s))
    out.append(u)
    return list(reversed(out))


def row_loop(cg, b, lo, hi, body, name="r", most=None):
    """``for i in [lo, hi): body(i)`` as a short row, vectorized with a masked tail --
    unless the row has at most ``most`` <= ``SHORT_ROW`` elements: that cannot pay, and
    LLVM failed such forced vectorizations with a warning on stderr (scatter-add rows of
    two windows; im2col rows of three outputs, fuzz seed 241869)."""
    wide = most is None or most > SHORT_ROW
    cg.loop(b, lo, hi, body, name, masked=wide, vectorize=wide)


def _zero_plane(cg, b, ptrs, v: View, n, c, h, w):
    t = reg_type(v.st.dtype)
    cg.loop(b, I64(0), I64(h), lambda y: cg.loop(
        b, I64(0), I64(w), lambda x: cg.store(b, ptrs, v, [n, c, y, x], ir.Constant(t, 0.0)),
        "zx"), "zy", vectorize=False)


# ---- emitters: emit(cg, b, kernel, ptrs, lo, hi) runs units [lo, hi) ----------------------------
def _im2col(cg, b, k, ptrs, lo, hi):
    node = k.node
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(node)
    x = _operand(k, 0)
    out = patch_view(k.stores[0][1], node)
    if window_rows.im2col_fits(node, x, k.stores[0][1]):
        return window_rows.im2col(cg, b, k, ptrs, lo, hi, x, out, _split, valid_range)
    zero = ir.Constant(reg_type(out.st.dtype), 0.0)

    def unit(u):
        c, i, j, n = _split(b, u, C, kh, kw, N)
        hoff = b.sub(b.mul(i, I64(dh)), I64(ph))
        woff = b.sub(b.mul(j, I64(dw)), I64(pw))
        r0, r1 = valid_range(b, hoff, sh, H, OH)
        c0, c1 = valid_range(b, woff, sw, W, OW)

        def idx(oh, ow):
            return [c, i, j, n, oh, ow]

        def zrow(oh, a, z):
            row_loop(cg, b, a, z, lambda ow: cg.store(b, ptrs, out, idx(oh, ow), zero), "zc",
                     OW)

        def row(oh):
            hh = b.add(b.mul(oh, I64(sh)), hoff)
            zrow(oh, I64(0), c0)
            row_loop(cg, b, c0, c1, lambda ow: cg.store(
                b, ptrs, out, idx(oh, ow),
                cg.load(b, ptrs, x, [n, c, hh, b.add(b.mul(ow, I64(sw)), woff)])), "cp", OW)
            zrow(oh, c1, I64(OW))
        cg.loop(b, I64(0), r0, lambda oh: zrow(oh, I64(0), I64(OW)), "zr0", vectorize=False)
        cg.loop(b, r0, r1, row, "row", vectorize=False)
        cg.loop(b, r1, I64(OH), lambda oh: zrow(oh, I64(0), I64(OW)), "zr1", vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)


#: a scatter unit covers this many elements of each patch row at least (contiguous reads)
SCATTER_SEGMENT = 4096


def scatter_block(node) -> int:
    """Images per unit of the tap-scatter kernels: one unit is (channel c, a block of
    images), so each of its taps reads one contiguous segment of patch row (c, i, j)."""
    n, *_, oh, ow = geometry(node)
    return max(1, min(n, -(-SCATTER_SEGMENT // max(1, oh * ow))))


def _scatter_taps(cg, b, k, ptrs, lo, hi, value):
    """Per unit (channel c, block of images): zero those planes, then for each tap (i, j)
    in order and each image, add ``value(n, c, i, j, oh, ow)`` at pixel
    (oh·s - p + i·d, ow·s - p + j·d) of every valid window."""
    node = k.node
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(node)
    nb = scatter_block(node)
    out = k.stores[0][1]

    def unit(u):
        c, blk = _split(b, u, C, -(-N // nb))
        n0 = b.mul(blk, I64(nb))
        n1 = _smin(b, b.add(n0, I64(nb)), I64(N))
        cg.loop(b, n0, n1, lambda n: _zero_plane(cg, b, ptrs, out, n, c, H, W), "zn",
                vectorize=False)

        def tap(i, j):
            hoff = b.sub(b.mul(i, I64(dh)), I64(ph))
            woff = b.sub(b.mul(j, I64(dw)), I64(pw))
            r0, r1 = valid_range(b, hoff, sh, H, OH)
            c0, c1 = valid_range(b, woff, sw, W, OW)

            def image(n):
                def row(oh):
                    hh = b.add(b.mul(oh, I64(sh)), hoff)

                    def col(ow):
                        at = [n, c, hh, b.add(b.mul(ow, I64(sw)), woff)]
                        old = cg.load(b, ptrs, out, at)
                        cg.store(b, ptrs, out, at, b.fadd(old, value(n, c, i, j, oh, ow)))
                    row_loop(cg, b, c0, c1, col, "col", OW)
                cg.loop(b, r0, r1, row, "row", vectorize=False)
            cg.loop(b, n0, n1, image, "img", vectorize=False)
        cg.loop(b, I64(0), I64(kh), lambda i: cg.loop(
            b, I64(0), I64(kw), lambda j: tap(i, j), "tj", vectorize=False), "ti",
            vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)


def _guarded_load(cg, b, ptrs, view, idx, ok, zero):
    """``view[idx] if ok else zero`` with the load only under ``ok`` (a diamond the loop
    vectorizer turns into a masked load)."""
    pre = b.block
    then = b.append_basic_block("ld")
    done = b.append_basic_block("ld.done")
    b.cbranch(ok, then, done)
    b.position_at_end(then)
    v = cg.load(b, ptrs, view, idx)
    b.branch(done)
    b.position_at_end(done)
    phi = b.phi(v.type)
    phi.add_incoming(zero, pre)
    phi.add_incoming(v, then)
    return phi


def _col2im_gather(cg, b, k, ptrs, lo, hi):
    """Stride 1: each pixel sums its taps (row-major order, from zero) from the patch
    matrix -- one store per pixel; the taps' loads are masked where out of range."""
    node = k.node
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(node)
    cols = patch_view(_operand(k, 0), node)
    out = k.stores[0][1]
    if window_rows.col2im_fits(node, _operand(k, 0), out):
        return window_rows.col2im(cg, b, k, ptrs, lo, hi, cols, _split)
    zero = ir.Constant(reg_type(out.st.dtype), 0.0)

    def unit(u):
        n, c = _split(b, u, N, C)

        def row(h):
            ohs, okh = [], []
            for i in range(kh):
                o = b.add(h, I64(ph - i * dh))
                ohs.append(o)
                okh.append(b.and_(b.icmp_signed(">=", o, I64(0)),
                                  b.icmp_signed("<", o, I64(OH))))

            def pixel(w):
                acc = None
                for i in range(kh):
                    for j in range(kw):
                        o = b.add(w, I64(pw - j * dw))
                        ok = b.and_(okh[i], b.and_(b.icmp_signed(">=", o, I64(0)),
                                                   b.icmp_signed("<", o, I64(OW))))
                        v = _guarded_load(cg, b, ptrs, cols, [c, I64(i), I64(j), n, ohs[i], o],
                                          ok, zero)
                        acc = b.fadd(zero, v) if acc is None else b.fadd(acc, v)
                cg.store(b, ptrs, out, [n, c, h, w], acc)
            row_loop(cg, b, I64(0), I64(W), pixel, "w")
        cg.loop(b, I64(0), I64(H), row, "h", vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)


def _col2im(cg, b, k, ptrs, lo, hi):
    if gathers(k.node):
        return _col2im_gather(cg, b, k, ptrs, lo, hi)
    cols = patch_view(_operand(k, 0), k.node)
    _scatter_taps(cg, b, k, ptrs, lo, hi,
                  lambda n, c, i, j, oh, ow: cg.load(b, ptrs, cols, [c, i, j, n, oh, ow]))


def _avg_grad(cg, b, k, ptrs, lo, hi):
    g = _operand(k, 0)
    kh, kw = k.node.attrs["kernel"]
    div = ir.Constant(reg_type(g.st.dtype), float(kh * kw))
    _scatter_taps(cg, b, k, ptrs, lo, hi,
                  lambda n, c, i, j, oh, ow: b.fdiv(cg.load(b, ptrs, g, [n, c, oh, ow]), div))


def _tap_loader(cg, b, ptrs, x: View, node, n, c, oh, ow):
    """load(i, j) -> (value, in-image flag or None) of tap (i, j) of window (oh, ow)."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(node)

    def coord(o, s, p, t, d, size):
        v = b.add(b.mul(o, I64(s)), I64(t * d - p))
        if not p:
            return v, None
        ok = b.and_(b.icmp_signed(">=", v, I64(0)), b.icmp_signed("<", v, I64(size)))
        return _smin(b, _smax(b, v, I64(0)), I64(size - 1)), ok

    def load(view, i, j):
        hh, okh = coord(oh, sh, ph, i, dh, H)
        ww, okw = coord(ow, sw, pw, j, dw, W)
        ok = okh if okw is None else okw if okh is None else b.and_(okh, okw)
        return cg.load(b, ptrs, view, [n, c, hh, ww]), ok, (hh, ww)
    return load


def _argmax(cg, b, ptrs, x, node, n, c, oh, ow, carry=None):
    """(max, [carried values at the argmax], argmax tap index) of window (oh, ow) of x;
    ``carry``: views whose element at the argmax is picked too (unrolled over taps)."""
    kh, kw = node.attrs["kernel"]
    t = reg_type(x.st.dtype)
    load = _tap_loader(cg, b, ptrs, x, node, n, c, oh, ow)
    best, found, arg = ir.Constant(t, float("-inf")), I1(0), I64(0)
    picked = [ir.Constant(t, 0.0) for _ in carry or ()]
    for i in range(kh):
        for j in range(kw):
            v, ok, _ = load(x, i, j)
            upd = b.or_(b.or_(b.not_(found), b.fcmp_ordered(">", v, best)),
                        b.fcmp_unordered("uno", v, v))
            if ok is not None:
                upd = b.and_(upd, ok)
                found = b.or_(found, ok)
            else:
                found = I1(1)
            best = b.select(upd, v, best)
            arg = b.select(upd, I64(i * kw + j), arg)
            for q, view in enumerate(carry or ()):
                picked[q] = b.select(upd, load(view, i, j)[0], picked[q])
    return best, picked, arg


def _pool_loop(cg, b, k, ptrs, lo, hi, body):
    """For each (n, c) plane in [lo, hi), each output (oh, ow): body(n, c, oh, ow)."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(k.node)

    def unit(u):
        n, c = _split(b, u, N, C)
        cg.loop(b, I64(0), I64(OH), lambda oh: row_loop(
            cg, b, I64(0), I64(OW), lambda ow: body(n, c, oh, ow), "ow"), "oh", vectorize=False)
    cg.loop(b, lo, hi, unit, "unit", vectorize=False)


def _vector_pool(cg, b, k, ptrs, lo, hi) -> bool:
    """Unpadded pooling as explicit vector rows (``window_pool``), when it fits."""
    ops = [_operand(k, i) for i in range(len(k.node.inputs))]
    if not window_pool.pool_fits(k.node, ops + [k.stores[0][1]]):
        return False
    window_pool.pool(cg, b, k, ptrs, lo, hi, ops, _split)
    return True


def _max_pool(cg, b, k, ptrs, lo, hi):
    if _vector_pool(cg, b, k, ptrs, lo, hi):
        return
    node, x, out = k.node, _operand(k, 0), k.stores[0][1]
    carry = [_operand(k, 1)] if node.op == "max_pool2d_select" else None

    def body(n, c, oh, ow):
        best, picked, _ = _argmax(cg, b, ptrs, x, node, n, c, oh, ow, carry)
        cg.store(b, ptrs, out, [n, c, oh, ow], picked[0] if carry else best)
    _pool_loop(cg, b, k, ptrs, lo, hi, body)


def _avg_pool(cg, b, k, ptrs, lo, hi):
    if _vector_pool(cg, b, k, ptrs, lo, hi):
        return
    node, x, out = k.node, _operand(k, 0), k.stores[0][1]
    kh, kw = node.attrs["kernel"]
    t = reg_type(x.st.dtype)

    def body(n, c, oh, ow):
        load = _tap_loader(cg, b, ptrs, x, node, n, c, oh, ow)
        s = None
        for i in range(kh):
            for j in range(kw):
                v, ok, _ = load(x, i, j)
                if ok is not None:
                    v = b.select(ok, v, ir.Constant(t, 0.0))
                s = v if s is None else b.fadd(s, v)
        cg.store(b, ptrs, out, [n, c, oh, ow], b.fdiv(s, ir.Constant(t, float(kh * kw))))
    _pool_loop(cg, b, k, ptrs, lo, hi, body)


def _max_grad(cg, b, k, ptrs, lo, hi):
    node, x, g, out = k.node, _operand(k, 0), _operand(k, 1), k.stores[0][1]
    if window_pool.grad_fits(node, [x, g, out]):
        return window_pool.max_grad(cg, b, k, ptrs, lo, hi, x, g, _split, _zero_plane)
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geometry(node)
    t = reg_type(out.st.dtype)
    zero = ir.Constant(t, 0.0)
    if disjoint(node):
        # disjoint windows: every tap of every window written once (g or 0)
        covers = (sh, sw) == (kh, kw) and (OH * sh, OW * sw) == (H, W)

        def unit(u):
            n, c = _split(b, u, N, C)
            if not covers:
                _zero_plane(cg, b, ptrs, out, n, c, H, W)

            def body(oh, ow):
                _, _, arg = _argmax(cg, b, ptrs, x, node, n, c, oh, ow)
                gv = cg.load(b, ptrs, g, [n, c, oh, ow])
                for i in range(kh):
                    for j in range(kw):
                        at = [n, c, b.add(b.mul(oh, I64(sh)), I64(i)),
                              b.add(b.mul(ow, I64(sw)), I64(j))]
                        cg.store(b, ptrs, out, at, b.select(
                            b.icmp_signed("==", arg, I64(i * kw + j)), gv, zero))
            cg.loop(b, I64(0), I64(OH), lambda oh: row_loop(
                cg, b, I64(0), I64(OW), lambda ow: body(oh, ow), "ow"), "oh", vectorize=False)
        cg.loop(b, lo, hi, unit, "unit", vectorize=False)
        return

    def value(n, c, i, j, oh, ow):
        _, _, arg = _argmax(cg, b, ptrs, x, node, n, c, oh, ow)
        tap = b.add(b.mul(i, I64(kw)), j)
        return b.select(b.icmp_signed("==", arg, tap), cg.load(b, ptrs, g, [n, c, oh, ow]),
                        zero)
    _scatter_taps(cg, b, k, ptrs, lo, hi, value)


_EMITTERS = {"im2col": _im2col, "col2im": _col2im, "avg_pool2d": _avg_pool,
             "avg_pool2d_grad": _avg_grad, "max_pool2d": _max_pool,
             "max_pool2d_select": _max_pool, "max_pool2d_grad": _max_grad}


def _operand(k, i) -> View:
    """The view of operand ``i`` of the kernel's node."""
    return k.loads[k.node.inputs[i]]


def emit(cg, b, k, ptrs, chunk):
    """The body of window kernel ``k`` (a ``CustomKernel``) for piece ``chunk`` of
    ``k.nchunks``: a fixed range of its units."""
    n_units, parts = units(k.node), k.nchunks
    if parts == 1:
        lo, hi = I64(0), I64(n_units)
    else:
        lo = b.sdiv(b.mul(I64(n_units), chunk), I64(parts))
        hi = b.sdiv(b.mul(I64(n_units), b.add(chunk, I64(1))), I64(parts))
    _EMITTERS[k.node.op](cg, b, k, ptrs, lo, hi)


def chunks(k, threads) -> int:
    """Pieces of a window kernel: up to CHUNKS_PER_THREAD unit ranges per thread, or one
    when the kernel is small (from shapes only: the same bits for any thread count)."""
    n_units = units(k.node)
    if threads > 1 and work(k.node) >= SINGLE_ELEMS and n_units >= 2:
        return max(1, min(threads * CHUNKS_PER_THREAD, n_units))
    return 1


#: the window ops' entries of the lowering table (kind ``custom``): op -> (emit, chunks)
KERNELS = {op: (emit, chunks) for op in _EMITTERS}
