"""Operands of the array functions: numpy's promotion (Python scalars weak), the
``cast`` and ``broadcast_to`` nodes it implies, and the eager path on plain arrays.

IR elementwise ops take operands of one shape and dtype, so :func:`_prep` lifts every
operand into the trace with a common dtype and broadcast shape.  Outside a trace the
numpy backend's own implementation of each op runs (:func:`_eager`, :func:`apply`), so
eager and traced results agree.
"""
from __future__ import annotations

import numpy as np

from ..ir import DTypeError, ShapeError
from ..ir import dtypes as dt
from ..ir.ops.shape import broadcast_shapes
from ..source import describe, user_source
from ..symbolic import SymbolicArray as Tracer, deepest_context


def _is_weak(x):
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def result_dtype(*xs, floating=False):
    """numpy promotion, with Python scalars weak (they take the array's dtype)."""
    strong = [x.dtype if isinstance(x, Tracer) else np.asarray(x).dtype
              for x in xs if not _is_weak(x)]
    strong = [dt.float32 if d == np.float16 else d for d in strong]
    res = np.result_type(*strong) if strong else np.dtype(np.float32)
    weak_float = any(isinstance(x, float) for x in xs if _is_weak(x))
    if (floating or weak_float) and res.kind != "f":
        res = dt.float32
    if res.kind == "b" and any(isinstance(x, int) and not isinstance(x, bool)
                               for x in xs if _is_weak(x)):
        res = dt.int64
    if res.kind in "iu" and res not in dt.INTS:
        res = dt.int64
    return dt.as_dtype(res)


def _prep(ctx, xs, dtype=None, floating=False, shape=None, op=None):
    """Lift operands into ``ctx``'s graph with a common dtype and broadcast shape."""
    try:
        dtype = dtype or result_dtype(*xs, floating=floating)
    except DTypeError as e:
        raise DTypeError(f"{op or 'operands'}: {e} (at {user_source()})") from None
    vals = []
    for x in xs:
        v = ctx.lift(x, dtype if not isinstance(x, Tracer) else None)
        if v.dtype != dtype:
            v = ctx.emit("cast", v, dtype=dtype).value
        vals.append(v)
    if shape is None:
        try:
            shape = broadcast_shapes(*[v.shape for v in vals])
        except ShapeError as e:
            what = f"{op}: " if op else ""
            raise ShapeError(f"{what}{e} (in op '{op or 'broadcast'}' with operands "
                             + ", ".join(str(v.type) for v in vals)
                             + f"\n  at {describe(user_source())})") from None
    return [v if v.shape == shape else ctx.emit("broadcast_to", v, shape=shape).value
            for v in vals]


def _elementwise(op, *xs, dtype=None, floating=False):
    ctx = deepest_context(*xs)
    if ctx is None:
        return _eager(op, xs, dtype, floating)
    return ctx.emit(op, *_prep(ctx, xs, dtype, floating, op=op))


def _eager(op, xs, dtype, floating):
    """``op`` on arrays, outside any trace: the numpy backend's own implementation of the
    op (the oracle's table, not a copy of it), on operands promoted and broadcast as the
    tracer would, so eager and traced results agree."""
    from ..backends.numpy_backend import IMPLS     # imports only numpy and graphc.ir
    dtype = dtype or result_dtype(*xs, floating=floating)
    arrays = np.broadcast_arrays(*[np.asarray(x, dtype=dtype) for x in xs])
    out = IMPLS[op]({}, *arrays)
    return out[()] if isinstance(out, np.ndarray) and out.ndim == 0 else out


def apply(op, x, **attrs):
    """One IR op ``op`` on one operand: recorded when ``x`` is traced, else computed by
    the numpy backend's implementation, with ``attrs`` normalised by the op's own check
    and the operand validated by its shape rule (the same errors as when tracing)."""
    if isinstance(x, Tracer):
        return x.ctx.emit(op, x.value, **attrs)
    from ..backends.numpy_backend import IMPLS     # imports only numpy and graphc.ir
    from ..ir import GraphcError, TensorType, get_op
    x = np.asarray(x)
    opdef = get_op(op)
    try:
        t = TensorType(x.shape, x.dtype)
        attrs = opdef.check_attrs(attrs, [t])
        opdef.infer(attrs, t)
    except GraphcError as e:
        raise type(e)(f"{e} (in op '{op}' at {user_source()})") from None
    return IMPLS[op](attrs, x)
