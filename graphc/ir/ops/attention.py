"""``sdpa``: scaled dot-product attention as one op, and ``sdpa_grad``, its VJP.

``sdpa(q, k, v, causal, scale)`` is ``softmax(scale * q kᵀ, masked) v`` over operands
``(*B, L, d)``, ``(*B, S, d)``, ``(*B, S, dv)`` with equal batch dims; with ``causal``
query ``i`` sees keys ``j <= i`` (torch's ``is_causal``, aligned at the top left).  As
one op a backend can run it as one kernel per (batch, head) that never stores the
scores and skips the masked half (the LLVM backend does: ``codegen/attention.py``).

``sdpa_grad(q, k, v, o, g)`` is ``(dq, dk, dv)`` for the output ``o`` and its
cotangent ``g``, packed into one flat vector ``[dq.ravel(), dk.ravel(), dv.ravel()]``
(a node has one output; the VJP of ``sdpa`` slices it back into three views).  It
recomputes the softmax ``P`` from ``q`` and ``k`` (nothing but the operands and the
output is saved); ``dS = P (dP - D)`` with ``dP = g vᵀ`` and ``D = rowsum(P dP)``, so a
row whose softmax is one-hot (a single key: causal row 0, or ``S = 1``) gets ``dS = 0``
exactly, its true value.  ``o`` must be ``sdpa(q, k, v)``: a backend may take
``D = rowsum(g o)`` instead (FlashAttention's identity), as the LLVM kernel does for
rows with more keys than one tile of them.

Higher derivatives come from the *composite*: the same function written with IR ops
(:func:`composite`, :func:`composite_grad`), whose nodes are emitted and differentiated
locally, op by op, with their own rules (:func:`local_vjp`, :func:`local_jvp`).  So
``sdpa_grad``'s VJP and both JVPs are ordinary graphs of matmuls and elementwise ops,
and any order of derivative works; only the first reverse pass is fused.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..emitter import Emitter
from ..errors import DTypeError, ShapeError
from ..graph import TensorType
from ..registry import get_op, register
from ._rules import size
from .linalg import swap_last


def _check(attrs, ins):
    q, k, v = ins[:3]
    extra = (("o", ins[3]), ("g", ins[4])) if len(ins) > 3 else ()
    for name, t in (("q", q), ("k", k), ("v", v)) + extra:
        if not dt.is_float(t.dtype) or t.dtype != q.dtype:
            raise DTypeError(f"sdpa: {name} must be float like q ({q.dtype}), got {t.dtype}")
        if len(t.shape) < 2:
            raise ShapeError(f"sdpa: {name} must be at least 2-d, got {t.shape}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]) or q.shape[-1] != k.shape[-1] \
            or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"sdpa: q {q.shape}, k {k.shape}, v {v.shape} do not fit (need "
                         "q (*B, L, d), k (*B, S, d), v (*B, S, dv), equal batch dims)")
    if k.shape[-2] == 0:
        raise ShapeError(f"sdpa: no keys (k {k.shape}): softmax over an empty axis")
    for t in ins[3:]:
        if t.shape != q.shape[:-1] + v.shape[-1:]:
            raise ShapeError(f"sdpa_grad: output/cotangent {t.shape} is not the output's "
                             f"shape {q.shape[:-1] + v.shape[-1:]}")
    return {"causal": bool(attrs.get("causal", False)), "scale": float(attrs["scale"])}


def _infer(attrs, q, k, v):
    return TensorType(q.shape[:-1] + v.shape[-1:], q.dtype)


def _grad_infer(attrs, q, k, v, o, g):
    return TensorType((size(q.shape) + size(k.shape) + size(v.shape),), q.dtype)


def mask(L, S) -> np.ndarray:
    """True where query ``i`` may attend key ``j`` (causal: ``j <= i``)."""
    return np.tril(np.ones((L, S), bool))


def pairs(L, S, causal) -> int:
    """(query, key) pairs computed: the causal half is skipped."""
    return sum(min(i + 1, S) for i in range(L)) if causal else L * S


def _flops(attrs, out, q, k, v):
    nb = size(q.shape[:-2])
    return 2 * nb * pairs(q.shape[-2], k.shape[-2], attrs["causal"]) * (q.shape[-1] + v.shape[-1])


def _grad_flops(attrs, out, q, k, v, o, g):
    return 2 * _flops(attrs, None, q, k, v)


# ---- the composite: the same functions in IR ops ---------------------------------------------
def _probs(E, q, k, attrs):
    """softmax(scale * q kᵀ) with the causal mask, as ops (the max is a stop_gradient)."""
    s = E.matmul(q, swap_last(E, k))
    s = E.mul(s, E.const(attrs["scale"], s.dtype, s.shape))
    if attrs["causal"]:
        L, S = s.shape[-2:]
        s = E.where(E.broadcast(E.op("constant", value=mask(L, S)), s.shape), s,
                    E.const(float("-inf"), s.dtype, s.shape))
    keep = s.shape[:-1] + (1,)
    m = E.stop_gradient(E.reshape(E.max(s, axes=(s.ndim - 1,), keepdims=False), keep))
    e = E.exp(E.sub(s, E.broadcast(m, s.shape)))
    den = E.reshape(E.sum(e, axes=(s.ndim - 1,), keepdims=False), keep)
    return E.div(e, E.broadcast(den, s.shape))


def composite(E, q, k, v, attrs):
    return E.matmul(_probs(E, q, k, attrs), v)


def composite_grad(E, q, k, v, o, g, attrs):
    """sdpa_grad's flat (dq, dk, dv) in ops: dP = g vᵀ, dS = P (dP - rowsum(P dP))."""
    p = _probs(E, q, k, attrs)
    dv = E.matmul(swap_last(E, p), g)
    dp = E.matmul(g, swap_last(E, v))
    keep = p.shape[:-1] + (1,)
    d = E.reshape(E.sum(E.mul(p, dp), axes=(p.ndim - 1,), keepdims=False), keep)
    ds = E.mul(E.mul(p, E.sub(dp, E.broadcast(d, p.shape))),
               E.const(attrs["scale"], p.dtype, p.shape))
    dq = E.matmul(ds, k)
    dk = E.matmul(swap_last(E, ds), q)
    flat = [E.reshape(x, (size(x.shape),)) for x in (dq, dk, dv)]
    return E.concatenate(*flat, axis=0)


class _Recorder(Emitter):
    """An emitter that remembers the nodes it appends (a composite's nodes)."""

    def __init__(self, E):
        super().__init__(E.graph, E.role, E.source, E.before)
        self.nodes = []

    def op(self, name, *inputs, **attrs):
        v = super().op(name, *inputs, **attrs)
        self.nodes.append(v.node)
        return v


def local_vjp(E, build, inputs, ct):
    """Cotangents of ``inputs`` for ``build(E, *inputs)`` (a composite) given the output
    cotangent ``ct``: the composite is emitted, then each of its nodes' VJP rules runs in
    reverse order (reverse-mode AD over a few nodes, as the autodiff pass does)."""
    R = _Recorder(E)
    out = build(R, *inputs)
    cts = {out: ct}
    for node in reversed(R.nodes):
        gout = cts.get(node.output)
        rule = get_op(node.op).vjp
        if gout is None or rule is None or node.op == "constant":
            continue
        for x, c in zip(node.inputs, rule(E, node, gout)):
            if c is None or not dt.is_float(x.dtype):
                continue
            cts[x] = c if x not in cts else E.add(cts[x], c)
    return [cts.get(x) for x in inputs]


def local_jvp(E, build, inputs, tangents):
    """The output tangent of ``build(E, *inputs)`` (forward mode over its nodes)."""
    R = _Recorder(E)
    out = build(R, *inputs)
    tan = {x: t for x, t in zip(inputs, tangents) if t is not None}
    for node in R.nodes:
        ts = [tan.get(x) for x in node.inputs]
        rule = get_op(node.op).jvp
        if all(t is None for t in ts) or rule is None or not dt.is_float(node.output.dtype):
            continue
        t = rule(E, node, ts)
        if t is not None:
            tan[node.output] = t
    return tan.get(out)


# ---- rules ----------------------------------------------------------------------------------
def unpack(E, flat, q, k, v):
    """(dq, dk, dv) views of sdpa_grad's flat output."""
    out, at = [], 0
    for x in (q, k, v):
        n = size(x.shape)
        part = E.slice(flat, starts=(at,), stops=(at + n,), steps=(1,))
        out.append(E.reshape(part, x.shape))
        at += n
    return out


def _vjp(E, n, g):
    q, k, v = n.inputs
    return unpack(E, E.sdpa_grad(q, k, v, n.output, g, **n.attrs), q, k, v)


def _jvp(E, n, t):
    return local_jvp(E, lambda R, q, k, v: composite(R, q, k, v, n.attrs), n.inputs, t)


def _grad_vjp(E, n, ct):
    return local_vjp(E, lambda R, *xs: composite_grad(R, *xs, n.attrs), n.inputs, ct)


def _grad_jvp(E, n, t):
    return local_jvp(E, lambda R, *xs: composite_grad(R, *xs, n.attrs), n.inputs, t)


register("sdpa", "other", _infer, _vjp, _jvp, check=_check, flops=_flops,
         doc="softmax(scale q k^T, causal mask) v, one op (the fused attention)")
register("sdpa_grad", "other", _grad_infer, _grad_vjp, _grad_jvp, check=_check,
         flops=_grad_flops, doc="sdpa's (dq, dk, dv) packed flat, softmax recomputed")
