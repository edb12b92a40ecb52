"""Arrays made from a shape or from labels: ``zeros_like``, ``ones_like``, ``full``,
``one_hot``.  Their sizes are checked against the machine's memory before anything is
allocated (:mod:`graphc.ir.limits`)."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from ..ir.limits import refuse_too_big
from ..ir.ops.checks import check_range
from ..source import describe, user_source
from ..symbolic import SymbolicArray as Tracer
from .elementwise import cast, equal
from .shapes import expand_dims


def zeros_like(x, dtype=None):
    if not isinstance(x, Tracer):
        return np.zeros_like(x, dtype=dtype)
    return full(x.shape, 0, dtype or x.dtype, like=x)


def ones_like(x, dtype=None):
    if not isinstance(x, Tracer):
        return np.ones_like(x, dtype=dtype)
    return full(x.shape, 1, dtype or x.dtype, like=x)


def _count(shape) -> int:
    """Elements of ``shape`` as a Python int (no int64 overflow for absurd shapes)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def full(shape, value, dtype=dt.float32, like=None):
    if not isinstance(like, Tracer):
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        refuse_too_big(np.dtype(dt.as_dtype(dtype)).itemsize * _count(shape),
                       f"full{shape}", describe(user_source()))
        return np.full(shape, value, dtype=dtype)
    c = like.ctx.const(value, dt.as_dtype(dtype))
    return like.ctx.emit("broadcast_to", c, shape=tuple(shape)) if tuple(shape) else like.ctx.wrap(c)


def one_hot(labels, num_classes, dtype=dt.float32, what="one_hot"):
    """``labels[..., None] == arange(num_classes)`` as ``dtype`` (how cross_entropy gathers).

    A label outside ``[0, num_classes)`` raises RangeError (naming ``what``, the value and
    its position) -- eagerly here, or for traced labels before the compiled graph runs
    (a ``check_index`` node) -- instead of giving a row of zeros."""
    # the result and the arange of classes, checked before either is allocated
    lshape = tuple(labels.shape if isinstance(labels, Tracer) else np.shape(labels))
    need = _count(lshape) * int(num_classes) * np.dtype(dt.as_dtype(dtype)).itemsize \
        + 16 * int(num_classes)
    refuse_too_big(need, f"{what} of labels {lshape} over "
                   f"{int(num_classes)} classes", describe(user_source()))
    if not isinstance(labels, Tracer):
        labels = np.asarray(labels)
        check_range(labels, int(num_classes), what, user_source())
        return (labels[..., None] == np.arange(num_classes)).astype(dtype)
    labels = labels.ctx.emit("check_index", labels.value, limit=int(num_classes), what=what)
    classes = np.arange(num_classes, dtype=labels.dtype)
    return cast(equal(expand_dims(labels, -1), classes), dtype)
