"""Global-norm gradient clipping as graph ops, emitted by the optimizer pass before the
update: ``g_i *= min(1, max_norm / (||g||_2 + 1e-6))`` with ``||g||`` over *all*
gradients (PyTorch's ``clip_grad_norm_``).

Being IR, it runs on every backend and fuses with the update: each gradient's squared sum
is one reduction, the scale is a scalar, and the multiply joins the elementwise update
kernel -- no extra pass over memory, no Python between backward and update.
"""
from __future__ import annotations

from graphc.ir import Emitter, Value

EPS = 1e-6


def global_norm(E: Emitter, grads: list[Value], dtype) -> Value:
    """sqrt(sum of every gradient's squared entries), a scalar of ``dtype``."""
    total = None
    for g in grads:
        sq = E.mul(g, g)
        s = E.sum(sq, axes=tuple(range(g.ndim)), keepdims=False) if g.ndim else sq
        if s.dtype != dtype:
            s = E.cast(s, dtype=dtype)
        total = s if total is None else E.add(total, s)
    return E.sqrt(total)


def clip_by_global_norm(E: Emitter, grads: list[Value], max_norm: float
                        ) -> tuple[list[Value], Value]:
    """(clipped gradients, the global norm before clipping)."""
    if not grads:
        return grads, None
    dtype = grads[0].dtype
    norm = global_norm(E, grads, dtype)
    coef = E.div(E.const(float(max_norm), dtype), E.add(norm, E.const(EPS, dtype)))
    scale = E.minimum(coef, E.const(1.0, dtype))
    out = []
    for g in grads:
        s = scale if g.dtype == dtype else E.cast(scale, dtype=g.dtype)
        out.append(E.mul(g, E.broadcast(s, g.shape)))
    return out, norm
