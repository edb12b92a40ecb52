"""Reductions over axes (``gc.sum``, ``gc.max``, ``gc.mean``, ``gc.var``,
``gc.logsumexp`` ...), with numpy's ``axis``/``keepdims``; ``min`` and ``mean`` are
composites of the IR's ``max`` and ``sum``."""
from __future__ import annotations

import builtins

import numpy as np

from ..ir import ShapeError
from ..ir import dtypes as dt
from ..source import describe, user_source
from ..symbolic import SymbolicArray as Tracer
from .elementwise import add, cast, exp, log, multiply, negative, stop_gradient, subtract
from .shapes import squeeze


def _reduce(op, np_fn, x, axis, keepdims):
    if not isinstance(x, Tracer):
        return np_fn(x, axis=axis, keepdims=keepdims)
    v = x.value
    if v.dtype == dt.bool_:
        v = x.ctx.emit("cast", v, dtype=dt.int64).value
    return x.ctx.emit(op, v, axes=axis, keepdims=keepdims)


def sum(x, axis=None, keepdims=False, dtype=None):
    out = _reduce("sum", np.sum, x, axis, keepdims)
    return cast(out, dtype) if dtype is not None else out


def max(x, axis=None, keepdims=False):
    return _reduce("max", np.max, x, axis, keepdims)


amax = max


def min(x, axis=None, keepdims=False):
    if not isinstance(x, Tracer):
        return np.min(x, axis=axis, keepdims=keepdims)
    return negative(max(negative(x), axis, keepdims))


amin = min


def mean(x, axis=None, keepdims=False, dtype=None):
    if not isinstance(x, Tracer):
        return np.mean(x, axis=axis, keepdims=keepdims, dtype=dtype)
    axes = range(x.ndim) if axis is None else \
        [a % builtins.max(x.ndim, 1) for a in ((axis,) if isinstance(axis, int) else axis)]
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if x.ndim else 1
    if n == 0:
        raise ShapeError(f"mean over an empty axis (axis {axis} of shape {x.shape}) is "
                         f"undefined (numpy gives nan) (at {describe(user_source())})")
    s = sum(x, axis, keepdims)
    if not isinstance(s, Tracer):
        return s
    s = cast(s, dtype) if dtype is not None else s
    if s.dtype.kind != "f":
        s = cast(s, dt.float32)
    return multiply(s, 1.0 / n) if n != 1 else s


def var(x, axis=None, keepdims=False):
    d = subtract(x, mean(x, axis, keepdims=True))
    return mean(multiply(d, d), axis, keepdims)


def logsumexp(x, axis=None, keepdims=False):
    m = stop_gradient(max(x, axis, keepdims=True))
    out = add(log(sum(exp(subtract(x, m)), axis, keepdims=True)), m)
    if not keepdims:
        out = squeeze(out, axis if axis is not None else tuple(range(np.ndim(x))))
    return out
