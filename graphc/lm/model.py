"""A decoder-only character transformer (GPT-2 arrangement): learned token and position
embeddings, ``layers`` pre-LN blocks of causal multi-head attention (fused qkv) and a
GELU MLP, a final LayerNorm and an untied head with bias.  The defaults are the
benchmark's architecture (bench/transformer_step.py): d 128, 4 heads of 32, MLP
128-512-128 with tanh-GELU, 2 blocks, context 64."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import functions as F
from .. import nn


@dataclass
class LMConfig:
    vocab: int = 65
    context: int = 64
    dim: int = 128
    heads: int = 4
    layers: int = 2
    hidden: int = 512
    dropout: float = 0.0
    eps: float = 1e-5

    def to_dict(self):
        return asdict(self)


class CharTransformer(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.dim)
        self.pos = nn.Embedding(cfg.context, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = [nn.TransformerBlock(cfg.dim, cfg.heads, cfg.hidden, cfg.eps,
                                           dropout=cfg.dropout) for _ in range(cfg.layers)]
        for i, blk in enumerate(self.blocks):
            setattr(self, f"h{i}", blk)
        self.ln_f = nn.LayerNorm(cfg.dim, cfg.eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab, init=nn.transformer_layers.normal_init(0.02))

    def set_training(self, on: bool):
        """Dropout on (training) or off (evaluation, sampling)."""
        self.drop.training = on
        for blk in self.blocks:
            for d in blk.dropouts():
                d.training = on

    def forward(self, params, ids):
        """Logits (B, T, vocab) for ids (B, T)."""
        T = np.shape(ids)[1]
        x = F.add(self.tok(params["tok"], ids),
                  self.pos(params["pos"], np.arange(T, dtype=np.int32)))
        x = self.drop({}, x)
        for i, blk in enumerate(self.blocks):
            x = blk(params[f"h{i}"], x)
        return self.head(params["head"], self.ln_f(params["ln_f"], x))

    def loss(self, params, ids, targets):
        """Mean cross-entropy (nats per character) of the next character."""
        logits = self(params, ids)
        B, T, V = np.shape(logits)
        return nn.cross_entropy(F.reshape(logits, (B * T, V)), F.reshape(targets, (B * T,)))

    def token_losses(self, params, ids, targets):
        """Per-position cross-entropy (B, T) -- for evaluation with padding."""
        logits = self(params, ids)
        B, T, V = np.shape(logits)
        return F.reshape(nn.cross_entropy(F.reshape(logits, (B * T, V)),
                                          F.reshape(targets, (B * T,)), reduction="none"),
                         (B, T))
