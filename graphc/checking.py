"""``gc.check_grads``: derivatives checked against central finite differences.

Like ``jax.test_util.check_grads`` and ``torch.autograd.gradcheck``: every floating
argument is promoted to float64, the function's outputs are compared along random
directions -- forward mode (``gc.jvp``) against the directional difference quotient, reverse
mode (``gc.value_and_grad`` of a random projection of the outputs) against the
difference quotient of every element.  ``order=2`` checks the derivative functions
themselves the same way (grad-of-grad, jvp-of-jvp), and so on.  Finite differences are the
oracle here, never the method: graphc differentiates graphs.
"""
from __future__ import annotations

import numpy as np

from . import pytree
from .api import jit, jvp, value_and_grad
from .ir import ArgumentError, GradCheckError

_MODES = ("fwd", "rev")


def check_grads(fn, args, order=1, modes=("fwd", "rev"), eps=None, rtol=None, atol=None,
                seed=0):
    """Compare ``fn``'s derivatives up to ``order`` with central finite differences in
    float64; returns None or raises :class:`GradCheckError` naming the argument, the mode
    (and order) and the worst element.

    ``args``: a tuple of arrays or pytrees of arrays (integer and bool leaves are held
    fixed: labels, masks).  ``eps`` is the difference step (default 1e-6), ``rtol``/``atol``
    the tolerance (default 1e-5 per order: nested quotients lose digits)."""
    if isinstance(modes, str):
        modes = (modes,)
    bad = [m for m in modes if m not in _MODES]
    if bad or not modes:
        raise ArgumentError(f"check_grads: modes must be a subset of {_MODES}, got {modes!r}")
    if not isinstance(order, int) or order < 1:
        raise ArgumentError(f"check_grads: order must be a positive integer, got {order!r}")
    if not isinstance(args, (tuple, list)):
        args = (args,)
    leaves, tree = pytree.flatten(list(args))
    leaves = [np.asarray(x) for x in leaves]
    diff = [i for i, x in enumerate(leaves) if x.dtype.kind == "f"]
    if not diff:
        raise ArgumentError("check_grads: no floating-point argument to differentiate")
    leaves = [x.astype(np.float64) if i in diff else x for i, x in enumerate(leaves)]
    eps = 1e-6 if eps is None else float(eps)
    tol = 1e-5 if rtol is None else float(rtol)
    rng = np.random.default_rng(seed)
    names = pytree.paths(tree, "args")

    def flat_fn(*xs):       # differentiable leaves in, flat outputs out
        full = list(leaves)
        for i, x in zip(diff, xs):
            full[i] = x
        out = fn(*pytree.unflatten(tree, full))
        return tuple(pytree.flatten(out)[0])

    xs = [leaves[i] for i in diff]
    labels = [names[i] for i in diff]
    _check(flat_fn, xs, labels, order, modes, eps, tol, atol, rng, 1)


def _check(f, xs, labels, order, modes, eps, tol, atol, rng, level):
    ev = jit(f, backend="numpy")
    outs = [np.asarray(o, np.float64) for o in ev(*xs)]
    scale = tol * (10.0 ** (level - 1))
    a_tol = scale if atol is None else float(atol) * (10.0 ** (level - 1))
    what = f"order {level}"
    if "fwd" in modes:
        ts = [rng.normal(size=x.shape) for x in xs]
        _, tans = jvp(f, tuple(xs), tuple(ts))
        up = ev(*[x + eps * t for x, t in zip(xs, ts)])
        down = ev(*[x - eps * t for x, t in zip(xs, ts)])
        for j, (t, u, d) in enumerate(zip(tans, up, down)):
            fd = (np.asarray(u, np.float64) - np.asarray(d, np.float64)) / (2 * eps)
            _compare(np.asarray(t, np.float64), fd, f"forward mode (jvp), {what}",
                     f"output {j} along a random tangent of every argument", scale, a_tol)
    if "rev" in modes:
        cts = [rng.normal(size=o.shape) for o in outs]

        def proj(*a):
            return _project(f, cts, a)
        _, grads = value_and_grad(proj, argnums=tuple(range(len(xs))))(*xs)
        pj = jit(proj, backend="numpy")
        xp = [a.copy() for a in xs]         # perturbed one element at a time, in place
        for i, (x, g) in enumerate(zip(xs, grads)):
            fd = np.zeros_like(x)
            for idx in np.ndindex(x.shape):
                xp[i][idx] = x[idx] + eps
                up = float(pj(*xp))
                xp[i][idx] = x[idx] - eps
                fd[idx] = (up - float(pj(*xp))) / (2 * eps)
                xp[i][idx] = x[idx]
            _compare(np.asarray(g, np.float64), fd, f"reverse mode (grad), {what}",
                     f"argument {labels[i]}", scale, a_tol)
    if level < order:
        n = len(xs)
        if "fwd" in modes:
            ts = [rng.normal(size=x.shape) for x in xs]
            _check(lambda *a: tuple(jvp(f, a, tuple(ts))[1]), xs, labels, order, ("fwd",),
                   eps, tol, atol, rng, level + 1)
        if "rev" in modes:
            cts = [rng.normal(size=o.shape) for o in outs]

            def grads_of(*a):
                return tuple(value_and_grad(lambda *b: _project(f, cts, b),
                                            argnums=tuple(range(n)))(*a)[1])
            _check(grads_of, xs, labels, order, ("rev",), eps, tol, atol, rng, level + 1)


def _project(f, cts, a):
    """sum_j <f(a)_j, cts_j>: the scalar whose gradient is the VJP of ``cts``."""
    total = 0.0
    for o, c in zip(f(*a), cts):
        total = total + _vdot(o, c)
    return total


def _vdot(o, c):
    from .functions import sum as gsum
    return gsum(o * c)


def _compare(got, want, mode, where, rtol, atol):
    if got.shape != want.shape:
        raise GradCheckError(f"check_grads: {mode}: {where}: derivative shape {got.shape}, "
                             f"finite differences {want.shape}")
    err = np.abs(got - want)
    bound = atol + rtol * np.abs(want)
    bad = ~(err <= bound)           # NaN counts as bad
    if bad.any():
        excess = np.where(np.isnan(err), np.inf, err - bound)
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), err.shape))
        raise GradCheckError(
            f"check_grads: {mode} disagrees with central finite differences for {where}: "
            f"worst element {list(idx) if idx else '(scalar)'}: derivative "
            f"{float(got[idx]):.9g}, finite differences {float(want[idx]):.9g} (|diff| {err[idx]:.3g} > {bound[idx]:.3g}; "
            f"{int(bad.sum())} of {bad.size} elements off)")
