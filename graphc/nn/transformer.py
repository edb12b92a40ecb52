"""Transformer functions with ``torch.nn.functional``'s signatures: ``embedding``,
``layer_norm``, ``gelu``, ``scaled_dot_product_attention``, ``dropout``.

They are compositions of IR ops (take, reductions, elementwise, batched matmul), so
their derivatives of every order come from the ops' own rules and the fusion pass
fuses their elementwise parts; on plain numpy arrays they run eagerly.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functions as F
from ..ir import GraphcError, ShapeError
from ..source import user_source
from ..symbolic import deepest_context
from ..tracing import Tracer


def embedding(ids, table):
    """``table[ids]``: rows of ``table`` (num_embeddings, dim) at integer ``ids`` of any
    shape; the backward scatter-adds into the table's rows."""
    if np.ndim(table) != 2:
        raise ShapeError(f"embedding: the table must be 2-d (num_embeddings, dim), got "
                         f"shape {np.shape(table)} (at {user_source()})")
    return F.take(table, ids, axis=0)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise over the last axis: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    The variance is the mean of squared deviations from the mean (two passes over the
    row, not ``E[x^2] - E[x]^2``), so no cancellation in float32 when |mean| >> std."""
    d = np.shape(x)[-1] if np.ndim(x) else None
    if d is None:
        raise ShapeError(f"layer_norm: needs at least a 1-d input (at {user_source()})")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and np.shape(p) != (d,):
            raise ShapeError(f"layer_norm: {name} of shape {np.shape(p)} does not match the "
                             f"last axis of {np.shape(x)} (need ({d},)) (at {user_source()})")
    mu = F.mean(x, -1, keepdims=True)
    c = F.subtract(x, mu)
    var = F.mean(F.multiply(c, c), -1, keepdims=True)
    y = F.multiply(c, F.divide(1.0, F.sqrt(F.add(var, float(eps)))))
    if weight is not None:
        y = F.multiply(y, weight)
    if bias is not None:
        y = F.add(y, bias)
    return y


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(x, approximate="none"):
    """``x * Phi(x)`` with the exact normal CDF (``approximate="none"``, through erf) or
    torch's tanh approximation (``"tanh"``)."""
    if approximate == "none":
        return F.multiply(F.multiply(x, 0.5), F.add(F.erf(F.multiply(x, 1 / math.sqrt(2))),
                                                    1.0))
    if approximate == "tanh":
        inner = F.multiply(F.add(x, F.multiply(F.multiply(F.multiply(x, x), x), 0.044715)),
                           _SQRT_2_OVER_PI)
        return F.multiply(F.multiply(x, 0.5), F.add(F.tanh(inner), 1.0))
    raise GraphcError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r} "
                      f"(at {user_source()})")


def _causal_mask(t_q, t_k):
    """True where query i may attend key j: j <= i (torch's is_causal, aligned at the
    top left, so every query sees key 0 and no row is fully masked)."""
    return np.tril(np.ones((t_q, t_k), bool))


#: trace attention as one ``sdpa`` op (fused kernels); False writes it out as ops (the
#: composite), for benchmarks and tests that compare the two
FUSED_ATTENTION = True


def scaled_dot_product_attention(q, k, v, is_causal=False):
    """``softmax(q k^T / sqrt(d)) v`` over inputs ``(..., T, d)`` (batch dims broadcast);
    with ``is_causal``, query ``i`` sees keys ``j <= i``."""
    qs, ks, vs = np.shape(q), np.shape(k), np.shape(v)
    if len(qs) < 2 or len(ks) < 2 or len(vs) < 2 or qs[-1] != ks[-1] or ks[-2] != vs[-2]:
        raise ShapeError(f"scaled_dot_product_attention: q {qs}, k {ks}, v {vs} do not fit "
                         "(need q (..., L, d), k (..., S, d), v (..., S, dv)) "
                         f"(at {user_source()})")
    ctx = deepest_context(q, k, v)
    dts = {t.dtype if isinstance(t, Tracer) else np.asarray(t).dtype for t in (q, k, v)}
    if FUSED_ATTENTION and ctx is not None and qs[:-2] == ks[:-2] == vs[:-2] and len(dts) == 1 \
            and dts <= {np.dtype(np.float32), np.dtype(np.float64)}:
        # one op (graphc.ir.ops.attention): the LLVM backend fuses it into one kernel
        return ctx.emit("sdpa", *[ctx.lift(t) for t in (q, k, v)], causal=bool(is_causal),
                        scale=1.0 / math.sqrt(qs[-1]))
    return _composite(q, k, v, is_causal)


def _composite(q, k, v, is_causal):
    """The attention written out (eagerly on arrays; traced when the operands' batch
    dims or dtypes differ): matmul, scale, mask, softmax, matmul."""
    qs, ks = np.shape(q), np.shape(k)
    s = F.multiply(F.matmul(q, F.swapaxes(k, -1, -2)), 1.0 / math.sqrt(qs[-1]))
    if is_causal:
        mask = _causal_mask(qs[-2], ks[-2])
        s = F.where(mask, s, -np.inf if not isinstance(s, Tracer) else float("-inf"))
    from .functional import softmax
    return F.matmul(softmax(s, -1), v)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``.

    Traced, the mask comes from ``philox_uniform`` (a counter-based generator): inside
    ``compile_step`` a function of its ``seed=``, the step number, the dropout site and
    the element index -- a new mask every step, the same one in the backward pass and
    when recomputed, for any thread count.  Outside compile_step (``gc.jit``,
    ``gc.grad``) the key is fixed (seed 0, step 0).  Eagerly (numpy arrays), numpy's
    default generator draws the mask."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise GraphcError(f"dropout: p must be in [0, 1], got {p} (at {user_source()})")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return F.multiply(x, 0.0)
    if not isinstance(x, Tracer):
        x = np.asarray(x)
        keep = np.random.default_rng().random(x.shape) >= p
        return np.where(keep, x / (1 - p), 0).astype(x.dtype)
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    key, salt = x.ctx.rng_key()
    u = x.ctx.emit("philox_uniform", key, shape=x.shape, dtype=dtype, salt=salt)
    scale = F.where(F.greater_equal(u, p), 1.0 / (1.0 - p), 0.0)
    return F.multiply(x, F.cast(scale, dtype))
