"""Finite-difference oracles shared by the tests (float64, central differences)."""
from __future__ import annotations

import numpy as np

H = 1e-6


def fd_vjp(f, xs, ct, which, h=H):
    """d<ct, f(xs)>/dxs[i] for i in ``which`` by central differences, elementwise."""
    xs = [np.array(x, dtype=np.float64) if i in which else np.array(x) for i, x in enumerate(xs)]
    out = []
    for i in which:
        g = np.zeros_like(xs[i])
        for idx in np.ndindex(xs[i].shape):
            old = xs[i][idx]
            xs[i][idx] = old + h
            up = np.sum(ct * f(*xs))
            xs[i][idx] = old - h
            down = np.sum(ct * f(*xs))
            xs[i][idx] = old
            g[idx] = (up - down) / (2 * h)
        out.append(g)
    return out


def fd_jvp(f, xs, ts, h=H):
    """Directional derivative of f at xs along ts (None = no tangent) by central differences."""
    up = [x + h * t if t is not None else x for x, t in zip(xs, ts)]
    down = [x - h * t if t is not None else x for x, t in zip(xs, ts)]
    return (np.asarray(f(*up), np.float64) - np.asarray(f(*down), np.float64)) / (2 * h)


def fd_grad(f, x, h=H):
    """Gradient of a scalar function of one array."""
    return fd_vjp(lambda a: f(a), [x], np.float64(1.0), [0], h)[0]
