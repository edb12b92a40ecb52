"""Shared pieces of shape/dtype rules."""
import numpy as np

from .. import dtypes as dt
from ..errors import DTypeError, ShapeError
from ..graph import TensorType


def same_type(op, *ts) -> TensorType:
    """Elementwise ops take operands of one shape and dtype (the tracer broadcasts/casts)."""
    t0 = ts[0]
    for t in ts[1:]:
        if t.shape != t0.shape:
            raise ShapeError(f"{op}: operand shapes {t0.shape} and {t.shape} differ")
        if t.dtype != t0.dtype:
            raise DTypeError(f"{op}: operand dtypes {t0.dtype} and {t.dtype} differ")
    return t0


def need_float(op, t):
    if not dt.is_float(t.dtype):
        raise DTypeError(f"{op} needs a float operand, got {t.dtype}")


def need_numeric(op, t):
    if t.dtype == dt.bool_:
        raise DTypeError(f"{op} needs a numeric operand, got bool")


def norm_axes(op, axes, ndim):
    """Normalise ``axes`` (None, int or sequence; negatives allowed) to a sorted tuple."""
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of range for a {ndim}-d operand")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))
