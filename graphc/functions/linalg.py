"""Matrix products: ``gc.matmul`` (numpy's batching and broadcasting, 1-d operands
promoted and squeezed back) and ``gc.dot``."""
from __future__ import annotations

import numpy as np

from ..ir import ShapeError, TraceError
from ..ir.ops.shape import broadcast_shapes
from ..source import user_source
from ..symbolic import SymbolicArray as Tracer, deepest_context
from .operands import result_dtype
from .shapes import reshape


def matmul(a, b):
    ctx = deepest_context(a, b)
    if ctx is None:
        return np.matmul(a, b)
    dtype = result_dtype(a, b, floating=True)
    av, bv = (ctx.lift(x, dtype if not isinstance(x, Tracer) else None) for x in (a, b))
    av, bv = (v if v.dtype == dtype else ctx.emit("cast", v, dtype=dtype).value
              for v in (av, bv))
    if av.ndim == 0 or bv.ndim == 0:
        raise ShapeError(f"matmul: operands must not be scalars, got shapes {av.shape} and "
                         f"{bv.shape} (at {user_source()}); use * for scaling")
    a1, b1 = av.ndim == 1, bv.ndim == 1
    if a1:
        av = ctx.emit("reshape", av, shape=(1,) + av.shape).value
    if b1:
        bv = ctx.emit("reshape", bv, shape=bv.shape + (1,)).value
    if av.shape[-1] != bv.shape[-2]:
        ctx.emit("matmul", av, bv)  # raises the ShapeError with op, shapes and source
    if bv.ndim == 2 and av.ndim > 2:
        # (..., M, K) @ (K, N): one GEMM over all rows (as torch does), not a batch of
        # GEMMs against a broadcast weight -- whose gradient would then be a batch of
        # products summed afterwards
        lead = av.shape[:-1]
        flat = ctx.emit("reshape", av, shape=(int(np.prod(lead, dtype=np.int64)),
                                                av.shape[-1])).value
        out = reshape(ctx.emit("matmul", flat, bv), lead + bv.shape[-1:])
        return reshape(out, out.shape[:-1]) if b1 else out
    try:
        batch = broadcast_shapes(av.shape[:-2], bv.shape[:-2])
    except ShapeError as e:
        raise ShapeError(f"matmul: {e} (at {user_source()})") from None
    if av.shape[:-2] != batch:
        av = ctx.emit("broadcast_to", av, shape=batch + av.shape[-2:]).value
    if bv.shape[:-2] != batch:
        bv = ctx.emit("broadcast_to", bv, shape=batch + bv.shape[-2:]).value
    out = ctx.emit("matmul", av, bv)
    if a1 or b1:
        shape = out.shape
        shape = shape[:-2] + ((shape[-2],) if not a1 else ()) + ((shape[-1],) if not b1 else ())
        out = reshape(out, shape)
    return out


def dot(a, b):
    if np.ndim(a) > 2 or np.ndim(b) > 2:
        raise TraceError("gc.dot supports 1-d and 2-d operands; use gc.matmul for batches")
    return matmul(a, b)
