"""Elementwise array functions (``gc.add``, ``gc.exp``, ``gc.where``, ``gc.cast`` ...):
one IR node each on traced operands, numpy on plain arrays."""
from __future__ import annotations

import numpy as np

from ..ir import DTypeError, ShapeError
from ..ir import dtypes as dt
from ..ir.ops.shape import broadcast_shapes
from ..source import describe, user_source
from ..symbolic import SymbolicArray as Tracer, deepest_context
from .operands import _elementwise, _is_weak, _prep


def add(x, y): return _elementwise("add", x, y)
def subtract(x, y): return _elementwise("sub", x, y)
def multiply(x, y): return _elementwise("mul", x, y)
def divide(x, y): return _elementwise("div", x, y, floating=True)
def maximum(x, y): return _elementwise("maximum", x, y)
def minimum(x, y): return _elementwise("minimum", x, y)
def less(x, y): return _elementwise("lt", x, y)
def less_equal(x, y): return _elementwise("le", x, y)
def greater(x, y): return _elementwise("gt", x, y)
def greater_equal(x, y): return _elementwise("ge", x, y)
def equal(x, y): return _elementwise("eq", x, y)
def not_equal(x, y): return _elementwise("ne", x, y)
def logical_and(x, y): return _elementwise("logical_and", x, y, dtype=dt.bool_)
def logical_or(x, y): return _elementwise("logical_or", x, y, dtype=dt.bool_)
def logical_not(x): return _elementwise("logical_not", x, dtype=dt.bool_)


def floor_divide(x, y): return _elementwise("floor_divide", x, y)
def remainder(x, y): return _elementwise("remainder", x, y)


mod = remainder


def power(x, y):
    if isinstance(x, Tracer) and _is_weak(y) and not isinstance(y, bool):
        if y == 1:
            return x
        if y == 2:
            return multiply(x, x)
    return _elementwise("pow", x, y, floating=True)


def negative(x): return _elementwise("neg", x)
def abs(x): return _elementwise("abs", x)
def sign(x): return _elementwise("sign", x)
def exp(x): return _elementwise("exp", x, floating=True)
def log(x): return _elementwise("log", x, floating=True)
def tanh(x): return _elementwise("tanh", x, floating=True)
def erf(x): return _elementwise("erf", x, floating=True)
def sqrt(x): return _elementwise("sqrt", x, floating=True)
def square(x): return multiply(x, x)
def log1p(x): return _elementwise("log1p", x, floating=True)
def expm1(x): return subtract(exp(x), 1.0)
def reciprocal(x): return divide(1.0, x)


def sigmoid(x): return _elementwise("sigmoid", x, floating=True)


def relu(x):
    return _elementwise("relu", x)


def stop_gradient(x):
    return _elementwise("stop_gradient", x)


def clip(x, lo=None, hi=None):
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x


def where(cond, x, y):
    ctx = deepest_context(cond, x, y)
    if ctx is None:
        return np.where(cond, x, y)
    c = cond if isinstance(cond, Tracer) and cond.dtype == dt.bool_ else not_equal(cond, 0)
    try:
        shape = broadcast_shapes(c.shape, np.shape(x), np.shape(y))
    except ShapeError as e:
        raise ShapeError(f"where: {e} (in op 'where'\n  at {describe(user_source())})") from None
    (cv,) = _prep(ctx, [c], dtype=dt.bool_, shape=shape)
    xv, yv = _prep(ctx, [x, y], shape=shape)
    return ctx.emit("where", cv, xv, yv)


def cast(x, dtype):
    try:
        dtype = dt.as_dtype(dtype)
    except DTypeError as e:
        raise DTypeError(f"cast: {e} (at {user_source()})") from None
    if not isinstance(x, Tracer):
        return np.asarray(x).astype(dtype)
    return x if x.dtype == dtype else x.ctx.emit("cast", x.value, dtype=dtype)


astype = cast
