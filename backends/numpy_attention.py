"""numpy reference of the attention ops (``graphc.ir.ops.attention``): the composite's
arithmetic in the operands' dtype -- scores, a max-subtracted softmax, the products."""
from __future__ import annotations

import numpy as np

from graphc.ir.ops.attention import mask


def _probs(a, q, k):
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(a["scale"])
    if a["causal"]:
        s = np.where(mask(*s.shape[-2:]), s, q.dtype.type(-np.inf))
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True, dtype=e.dtype)


def sdpa(a, q, k, v):
    return np.matmul(_probs(a, q, k), v)


def sdpa_grad(a, q, k, v, o, g):
    p = _probs(a, q, k)
    dv = np.matmul(np.swapaxes(p, -1, -2), g)
    dp = np.matmul(g, np.swapaxes(v, -1, -2))
    # D = rowsum(P dP): a one-hot row (one key) gets dS = 0 exactly, as the true gradient
    d = (p * dp).sum(-1, keepdims=True, dtype=p.dtype)
    ds = p * (dp - d) * q.dtype.type(a["scale"])
    dq, dk = np.matmul(ds, k), np.matmul(np.swapaxes(ds, -1, -2), q)
    return np.concatenate([dq.ravel(), dk.ravel(), dv.ravel()]).astype(q.dtype, copy=False)


IMPLS = {"sdpa": sdpa, "sdpa_grad": sdpa_grad}
