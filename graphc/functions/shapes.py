"""Shape functions: ``reshape``, ``transpose``, ``broadcast_to``, ``expand_dims``,
``squeeze``, ``concatenate``, ``stack``; view ops in the IR (no data moves) except the
concatenation."""
from __future__ import annotations

import numpy as np

from ..ir import ShapeError
from ..source import user_source
from ..symbolic import SymbolicArray as Tracer, deepest_context
from .operands import result_dtype


def _resolve_shape(shape, size):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: more than one -1 in {shape} (at {user_source()})")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ShapeError(f"reshape: cannot reshape {size} elements to {shape} "
                             f"(at {user_source()})")
        shape = tuple(size // known if d == -1 else d for d in shape)
    return shape


def reshape(x, shape):
    if not isinstance(x, Tracer):
        return np.reshape(x, shape)
    shape = _resolve_shape(shape, x.size)
    return x if shape == x.shape else x.ctx.emit("reshape", x.value, shape=shape)


def transpose(x, axes=None):
    if not isinstance(x, Tracer):
        return np.transpose(x, axes)
    if x.ndim < 2 and axes is None:
        return x
    return x.ctx.emit("transpose", x.value, perm=axes)


def swapaxes(x, a, b):
    perm = list(range(np.ndim(x)))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, tuple(perm))


def broadcast_to(x, shape):
    ctx = deepest_context(x)
    if ctx is None:
        return np.broadcast_to(x, shape)
    v = ctx.lift(x)
    return ctx.emit("broadcast_to", v, shape=tuple(shape)) if v.shape != tuple(shape) \
        else ctx.wrap(v)


def expand_dims(x, axis):
    shape = list(np.shape(x))
    axes = (axis,) if isinstance(axis, int) else axis
    for a in sorted(a % (len(shape) + len(axes)) for a in axes):
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def squeeze(x, axis=None):
    shape = np.shape(x)
    if axis is None:
        axes = {i for i, d in enumerate(shape) if d == 1}
    else:
        axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
        if any(shape[a] != 1 for a in axes):
            raise ShapeError(f"squeeze: axis {axis} of shape {shape} is not 1 (at {user_source()})")
    return reshape(x, tuple(d for i, d in enumerate(shape) if i not in axes))


def concatenate(xs, axis=0):
    xs = list(xs)
    ctx = deepest_context(*xs)
    if ctx is None:
        return np.concatenate(xs, axis=axis)
    dtype = result_dtype(*xs)
    vals = [ctx.lift(x, dtype if not isinstance(x, Tracer) else None) for x in xs]
    vals = [v if v.dtype == dtype else ctx.emit("cast", v, dtype=dtype).value for v in vals]
    return ctx.emit("concatenate", *vals, axis=axis)


def stack(xs, axis=0):
    return concatenate([expand_dims(x, axis) for x in xs], axis=axis)
