"""Gathers: ``take`` (``a[..., idx, ...]`` along one axis, the embedding lookup) and its
adjoint ``take_add`` (a scatter-add of rows into zeros, the embedding gradient).

``take(a, idx, axis)`` has shape ``a.shape[:axis] + idx.shape + a.shape[axis+1:]``;
``take_add(g, idx, axis, size)`` undoes it: rows of ``g`` added at ``idx`` into zeros of
size ``size`` along ``axis``.  Each is linear in its float operand and the other's VJP,
so derivatives of any order stay inside these two ops.  Indices are integer values in
``[0, size)``; the tracer records the range (``check_index``) and backends never read or
write outside the operand whatever the indices hold.
"""
from ..errors import DTypeError, ShapeError
from ..graph import TensorType
from ..registry import register
from ._rules import size


def _need_index(op, idx):
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"{op}: indices must be integers, got {idx.dtype}")


def _axis(op, attrs, nd):
    ax = int(attrs.get("axis", 0))
    if not -nd <= ax < nd:
        raise ShapeError(f"{op}: axis {ax} is out of range for a {nd}-d operand")
    return ax % nd


def _take_check(attrs, ins):
    a, idx = ins
    _need_index("take", idx)
    if len(a.shape) == 0:
        raise ShapeError("take: cannot index a 0-d operand")
    return {"axis": _axis("take", attrs, len(a.shape))}


def _take_infer(attrs, a, idx):
    ax = attrs["axis"]
    return TensorType(a.shape[:ax] + idx.shape + a.shape[ax + 1:], a.dtype)


def _take_vjp(E, n, g):
    a, idx = n.inputs
    ax = n.attrs["axis"]
    return [E.take_add(g, idx, axis=ax, size=a.shape[ax]), None]


def _take_jvp(E, n, t):
    return None if t[0] is None else E.take(t[0], n.inputs[1], axis=n.attrs["axis"])


def _take_add_check(attrs, ins):
    g, idx = ins
    _need_index("take_add", idx)
    ax, sz = int(attrs.get("axis", 0)), int(attrs["size"])
    k = len(idx.shape)
    if not 0 <= ax <= len(g.shape) - k or g.shape[ax:ax + k] != idx.shape:
        raise ShapeError(f"take_add: operand {g.shape} has no index block {idx.shape} "
                         f"at axis {ax}")
    if sz < 0:
        raise ShapeError(f"take_add: size must be >= 0, got {sz}")
    return {"axis": ax, "size": sz}


def _take_add_infer(attrs, g, idx):
    ax, k = attrs["axis"], len(idx.shape)
    return TensorType(g.shape[:ax] + (attrs["size"],) + g.shape[ax + k:], g.dtype)


def _take_add_vjp(E, n, g):
    return [E.take(g, n.inputs[1], axis=n.attrs["axis"]), None]


def _take_add_jvp(E, n, t):
    if t[0] is None:
        return None
    return E.take_add(t[0], n.inputs[1], axis=n.attrs["axis"], size=n.attrs["size"])


register("take", "other", _take_infer, _take_vjp, _take_jvp, check=_take_check,
         linear=True, flops=lambda attrs, out, a, idx: size(out.shape),
         doc="gather along an axis: a[..., idx, ...] (indices in [0, a.shape[axis]))")
register("take_add", "other", _take_add_infer, _take_add_vjp, _take_add_jvp,
         check=_take_add_check, linear=True,
         flops=lambda attrs, out, g, idx: size(g.shape),
         doc="scatter-add into zeros along an axis (the VJP of take)")
