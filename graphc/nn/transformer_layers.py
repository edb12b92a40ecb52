"""Transformer layers: Embedding, LayerNorm, Dropout, GELU, CausalSelfAttention, MLP and a
pre-LN TransformerBlock (GPT-2's arrangement: ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``).

Functional Modules like the rest of ``gc.nn``: ``init(seed)`` returns the arrays,
``layer(params, x)`` computes.  Linear weights are (in, out) as in ``gc.nn.Linear``.
``Dropout`` reads ``self.training`` (set it False for evaluation, or build the model with
``dropout=0``).
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ..ir import GraphcError
from .layers import Linear
from .module import Module
from .transformer import dropout, embedding, gelu, layer_norm, scaled_dot_product_attention


def normal_init(std):
    """N(0, std^2) -- GPT-2's 0.02 for embeddings and projections."""
    def init(rng, shape, dtype=np.float32):
        return (rng.standard_normal(shape) * std).astype(dtype)
    init.__name__ = f"normal_{std}"
    return init


class Embedding(Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, std=0.02, dtype=np.float32):
        super().__init__()
        if int(num_embeddings) <= 0 or int(embedding_dim) <= 0:
            raise GraphcError(f"Embedding: sizes must be positive, got ({num_embeddings}, "
                              f"{embedding_dim})")
        self.num, self.dim, self.std, self.dtype = (int(num_embeddings), int(embedding_dim),
                                                    float(std), np.dtype(dtype))

    def init_own(self, rng):
        return {"weight": normal_init(self.std)(rng, (self.num, self.dim), self.dtype)}

    def forward(self, params, ids):
        return embedding(ids, params["weight"])

    def __repr__(self):
        return f"Embedding({self.num}, {self.dim})"


class LayerNorm(Module):
    def __init__(self, dim: int, eps=1e-5, affine=True, dtype=np.float32):
        super().__init__()
        self.dim, self.eps, self.affine, self.dtype = int(dim), float(eps), affine, dtype

    def init_own(self, rng):
        if not self.affine:
            return {}
        return {"weight": np.ones(self.dim, self.dtype), "bias": np.zeros(self.dim, self.dtype)}

    def forward(self, params, x):
        return layer_norm(x, params.get("weight"), params.get("bias"), self.eps)

    def __repr__(self):
        return f"LayerNorm({self.dim}, eps={self.eps})"


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise GraphcError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.training = float(p), True

    def forward(self, params, x):
        return dropout(x, self.p, self.training)

    def __repr__(self):
        return f"Dropout(p={self.p})"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise GraphcError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, params, x):
        return gelu(x, self.approximate)

    def __repr__(self):
        return f"GELU(approximate={self.approximate!r})"


class CausalSelfAttention(Module):
    """Multi-head self-attention with one fused qkv Linear (d -> 3d) and an output
    projection; ``(B, T, d) -> (B, T, d)``."""

    def __init__(self, dim: int, heads: int, causal=True, p_drop=0.0):
        super().__init__()
        if int(dim) % int(heads):
            raise GraphcError(f"CausalSelfAttention: dim {dim} is not a multiple of "
                              f"heads {heads}")
        self.dim, self.heads, self.causal = int(dim), int(heads), causal
        self.qkv = Linear(dim, 3 * dim, init=normal_init(0.02))
        self.proj = Linear(dim, dim, init=normal_init(0.02))
        self.drop = Dropout(p_drop)

    def forward(self, params, x):
        B, T, d = np.shape(x)
        H = self.heads
        qkv = self.qkv(params["qkv"], x)                            # (B, T, 3d)
        qkv = F.transpose(F.reshape(qkv, (B, T, 3, H, d // H)), (2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]                            # (B, H, T, hd)
        a = scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        a = F.reshape(F.transpose(a, (0, 2, 1, 3)), (B, T, d))
        return self.drop({}, self.proj(params["proj"], a))


class MLP(Module):
    """d -> hidden -> d with a GELU between (tanh approximation by default, as GPT-2)."""

    def __init__(self, dim: int, hidden: int, approximate="tanh", p_drop=0.0):
        super().__init__()
        self.fc = Linear(dim, hidden, init=normal_init(0.02))
        self.act = GELU(approximate)
        self.out = Linear(hidden, dim, init=normal_init(0.02))
        self.drop = Dropout(p_drop)

    def forward(self, params, x):
        h = self.act({}, self.fc(params["fc"], x))
        return self.drop({}, self.out(params["out"], h))


class TransformerBlock(Module):
    """Pre-LN block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int | None = None, eps=1e-5,
                 causal=True, dropout=0.0, approximate="tanh"):
        super().__init__()
        self.ln1 = LayerNorm(dim, eps)
        self.attn = CausalSelfAttention(dim, heads, causal, dropout)
        self.ln2 = LayerNorm(dim, eps)
        self.mlp = MLP(dim, hidden or 4 * dim, approximate, dropout)

    def forward(self, params, x):
        x = F.add(x, self.attn(params["attn"], self.ln1(params["ln1"], x)))
        return F.add(x, self.mlp(params["mlp"], self.ln2(params["ln2"], x)))

    def dropouts(self):
        return [self.attn.drop, self.mlp.drop]
