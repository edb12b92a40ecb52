"""numpy reference implementations of the sliding-window ops (``graphc.ir.ops.window``).

Each op loops over the kh·kw window taps in row-major order and does whole-array work per
tap, so the float sums run in the same order as the LLVM kernels (taps in order, from
zero).  Max pooling follows PyTorch's CPU kernel: a window's argmax starts at its first
in-image element and moves to a later element when that one is greater or NaN.
"""
from __future__ import annotations

import numpy as np

from graphc.ir.ops.window import geometry


def _geom(a, image):
    g = geometry(a, image)
    return g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.oh, g.ow


def _taps(a, image):
    """(tap index, (row slice, column slice) into the padded image) per window tap."""
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _geom(a, image)
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                               slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _pad(x, a, value=0.0):
    ph, pw = a["padding"]
    if not (ph or pw):
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _crop(xp, a, image):
    ph, pw = a["padding"]
    return xp[:, :, ph:ph + image[2], pw:pw + image[3]]


def im2col(a, x):
    n, c = x.shape[:2]
    kh, kw, *_, oh, ow = _geom(a, x.shape)
    xp = _pad(x, a)
    cols = np.empty((c, kh * kw, n, oh, ow), x.dtype)
    for t, (si, sj) in _taps(a, x.shape):
        cols[:, t] = xp[:, :, si, sj].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * oh * ow)


def col2im(a, cols):
    image = a["shape"]
    n, c, h, w = image
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _geom(a, image)
    c6 = cols.reshape(c, kh * kw, n, oh, ow)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), cols.dtype)
    for t, (si, sj) in _taps(a, image):
        xp[:, :, si, sj] += c6[:, t].transpose(1, 0, 2, 3)
    return np.ascontiguousarray(_crop(xp, a, image))


def avg_pool2d(a, x):
    kh, kw = a["kernel"]
    xp = _pad(x, a)
    s = None
    for _, (si, sj) in _taps(a, x.shape):
        s = xp[:, :, si, sj].copy() if s is None else s + xp[:, :, si, sj]
    return s / x.dtype.type(kh * kw)


def avg_pool2d_grad(a, g):
    image = a["shape"]
    kh, kw = a["kernel"]
    ph, pw = a["padding"]
    gd = g / g.dtype.type(kh * kw)
    xp = np.zeros((image[0], image[1], image[2] + 2 * ph, image[3] + 2 * pw), g.dtype)
    for _, (si, sj) in _taps(a, image):
        xp[:, :, si, sj] += gd
    return np.ascontiguousarray(_crop(xp, a, image))


def argmax_taps(a, x):
    """(tap index of each window's argmax, window maxima), PyTorch's rule."""
    xp = _pad(x, a, -np.inf)
    valid = _pad(np.ones((1, 1) + x.shape[2:], bool), a, False)
    best = arg = None
    for t, (si, sj) in _taps(a, x.shape):
        v, ok = xp[:, :, si, sj], valid[:, :, si, sj]
        if best is None:
            best = np.full(v.shape, -np.inf, x.dtype)
            arg = np.full(v.shape, -1, np.int64)
        upd = ok & ((arg < 0) | (v > best) | np.isnan(v))
        best = np.where(upd, v, best)
        arg = np.where(upd, t, arg)
    return arg, best


def max_pool2d(a, x):
    return argmax_taps(a, x)[1]


def max_pool2d_select(a, x, t):
    arg, _ = argmax_taps(a, x)
    tp = _pad(t, a)
    out = np.zeros(arg.shape, t.dtype)
    for k, (si, sj) in _taps(a, x.shape):
        out = np.where(arg == k, tp[:, :, si, sj], out)
    return out


def max_pool2d_grad(a, x, g):
    arg, _ = argmax_taps(a, x)
    ph, pw = a["padding"]
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), g.dtype)
    zero = g.dtype.type(0)
    for k, (si, sj) in _taps(a, x.shape):
        xp[:, :, si, sj] += np.where(arg == k, g, zero)
    return np.ascontiguousarray(_crop(xp, a, x.shape))


IMPLS = {"im2col": im2col, "col2im": col2im, "avg_pool2d": avg_pool2d,
         "avg_pool2d_grad": avg_pool2d_grad, "max_pool2d": max_pool2d,
         "max_pool2d_select": max_pool2d_select, "max_pool2d_grad": max_pool2d_grad}
