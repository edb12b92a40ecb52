"""Kernels of their own for ops that are neither elementwise nor reductions nor GEMMs:
``take`` (gather), ``take_add`` (scatter-add, take's VJP) and ``philox_uniform``
(counter-based random numbers).

Each entry of ``KERNELS`` is ``(emit, chunks)``: ``chunks(kernel, threads)`` fixes how
many pieces the kernel is cut into (from shapes only, so results are the same for any
thread count) and ``emit(codegen, b, kernel, ptrs, chunk)`` writes the loops of piece
``chunk`` with the codegen's helpers (``nest``, ``load``, ``store``).  The kernel's
``loads`` map each operand to its view, ``stores[0]`` is the output's view.

Indices are compared (unsigned, so negatives fail too) against the axis size before
any address is formed: an index out of range reads nothing (its row is zero) and
writes nothing -- the tracer's range check (``check_index``) reports it before the run.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.ir.ops import random as philox

I32, I64 = ir.IntType(32), ir.IntType(64)


def reg_type(dtype) -> ir.Type:
    """Register type of one element (as ``lowerings.reg_type``; lowerings imports this
    module, so it is not imported back)."""
    return {np.dtype(np.float32): ir.FloatType(), np.dtype(np.float64): ir.DoubleType(),
            np.dtype(np.int32): I32, np.dtype(np.int64): I64,
            np.dtype(np.bool_): ir.IntType(1)}[np.dtype(dtype)]


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"

SINGLE_ELEMS = 1 << 14       # smaller kernels run on one thread
CHUNKS_PER_THREAD = 4


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


def _zero(t):
    return ir.Constant(t, 0.0 if isinstance(t, (ir.FloatType, ir.DoubleType)) else 0)


def _chunks_over(extent, total, threads):
    if threads <= 1 or total < SINGLE_ELEMS or extent < 2:
        return 1
    return max(1, min(threads * CHUNKS_PER_THREAD, extent))


def _range(cg, b, k, chunk, extent):
    return cg.part_range(b, chunk, extent, 1, k.nchunks)


def _index(cg, b, ptrs, view, idx, limit):
    """(in-range flag, index clamped to 0 when out of range) as i64."""
    r = cg.load(b, ptrs, view, idx)
    if r.type != I64:
        r = b.sext(r, I64)
    ok = b.icmp_unsigned("<", r, I64(limit))
    return ok, b.select(ok, r, I64(0))


# ---- take --------------------------------------------------------------------------------------
def _take_out(k):
    return k.stores[0][1]


def _take_chunks(k, threads):
    out = _take_out(k)
    return _chunks_over(out.shape[0] if out.shape else 1, _size(out.shape), threads)


def _take(cg, b, k, ptrs, chunk):
    n = k.node
    a, idx = n.inputs
    ax, nk = n.attrs["axis"], len(idx.shape)
    va, vi, vo = k.loads[a], k.loads[idx], _take_out(k)
    zero = _zero(reg_type(a.dtype))
    ranges = {0: _range(cg, b, k, chunk, vo.shape[0])} if k.nchunks > 1 else {}

    def body(i):
        ok, r = _index(cg, b, ptrs, vi, i[ax:ax + nk], a.shape[ax])
        val = cg.load(b, ptrs, va, i[:ax] + [r] + i[ax + nk:])
        cg.store(b, ptrs, vo, i, b.select(ok, val, zero))
    cg.nest(b, vo.shape, ranges, body)


# ---- take_add ------------------------------------------------------------------------------------
def _scatter_dim(k):
    """The output dim the pieces split (never the scattered one), or None."""
    n = k.node
    ax, nd = n.attrs["axis"], len(n.output.shape)
    if ax < nd - 1:
        return nd - 1
    return 0 if ax > 0 else None


def _take_add_chunks(k, threads):
    d = _scatter_dim(k)
    if d is None:
        return 1
    return _chunks_over(k.node.output.shape[d], _size(k.node.inputs[0].shape), threads)


def _take_add(cg, b, k, ptrs, chunk):
    n = k.node
    g, idx = n.inputs
    ax, nk, size = n.attrs["axis"], len(idx.shape), n.attrs["size"]
    vg, vi, vo = k.loads[g], k.loads[idx], _take_out(k)
    t = reg_type(g.dtype)
    zero = _zero(t)
    d = _scatter_dim(k)
    ro, rg = {}, {}
    if k.nchunks > 1:
        lohi = _range(cg, b, k, chunk, vo.shape[d])
        ro[d] = lohi
        rg[d if d < ax else d + nk - 1] = lohi
    cg.nest(b, vo.shape, ro, lambda i: cg.store(b, ptrs, vo, i, zero))

    def body(i):
        ok, r = _index(cg, b, ptrs, vi, i[ax:ax + nk], size)
        oi = i[:ax] + [r] + i[ax + nk:]
        x = b.select(ok, cg.load(b, ptrs, vg, i), zero)
        old = cg.load(b, ptrs, vo, oi)
        cg.store(b, ptrs, vo, oi, b.fadd(old, x) if is_float(g.dtype) else b.add(old, x))
    cg.nest(b, vg.shape, rg, body)


# ---- philox_uniform ------------------------------------------------------------------------------
def _philox_chunks(k, threads):
    out = _take_out(k)
    return _chunks_over(out.shape[0] if out.shape else 1, _size(out.shape), threads)


def _philox(cg, b, k, ptrs, chunk):
    """Philox4x32-10 exactly as ``graphc.ir.ops.random.philox_bits``."""
    n = k.node
    (key,) = n.inputs
    vk, vo = k.loads[key], _take_out(k)
    seed = cg.load(b, ptrs, vk, [I64(0)])
    step = cg.load(b, ptrs, vk, [I64(1)])
    m32 = I64(32)
    k0 = b.trunc(seed, I32)
    k1 = b.xor(b.trunc(b.lshr(seed, m32), I32), I32(n.attrs["salt"]))
    s_lo, s_hi = b.trunc(step, I32), b.trunc(b.lshr(step, m32), I32)
    shape = vo.shape
    cstr = [_size(shape[d + 1:]) for d in range(len(shape))]
    ranges = {0: _range(cg, b, k, chunk, shape[0])} if k.nchunks > 1 else {}
    out_t = reg_type(n.output.dtype)

    def mulhilo(m, c):
        p = b.mul(I64(m), b.zext(c, I64))
        return b.trunc(b.lshr(p, m32), I32), b.trunc(p, I32)

    def body(i):
        flat = I64(0)
        for iv, s in zip(i, cstr):
            flat = b.add(flat, b.mul(iv, I64(s)))
        c0, c1, c2, c3 = b.trunc(flat, I32), b.trunc(b.lshr(flat, m32), I32), s_lo, s_hi
        kk0, kk1 = k0, k1
        for r in range(philox.ROUNDS):
            h0, l0 = mulhilo(philox.M0, c0)
            h1, l1 = mulhilo(philox.M1, c2)
            c0, c1, c2, c3 = (b.xor(b.xor(h1, c1), kk0), l1, b.xor(b.xor(h0, c3), kk1), l0)
            kk0, kk1 = b.add(kk0, I32(philox.W0)), b.add(kk1, I32(philox.W1))
        if out_t == ir.FloatType():
            u = b.fmul(b.sitofp(b.lshr(c0, I32(8)), out_t), ir.Constant(out_t, 2.0 ** -24))
        else:
            w = b.xor(b.shl(b.zext(c0, I64), I64(21)), b.lshr(b.zext(c1, I64), I64(11)))
            w = b.and_(w, I64((1 << 53) - 1))
            u = b.fmul(b.sitofp(w, out_t), ir.Constant(out_t, 2.0 ** -53))
        cg.store(b, ptrs, vo, i, u)
    cg.nest(b, shape, ranges, body)


KERNELS = {
    "take": (_take, _take_chunks),
    "take_add": (_take_add, _take_add_chunks),
    "philox_uniform": (_philox, _philox_chunks),
}
