"""Checkpoints of the char LM and text generation from one.

A checkpoint directory holds ``charlm.npz``: every parameter by its pytree path plus one
JSON string (``meta``: the model config, the vocabulary, the corpus name and the final
metrics) -- no pickle, written atomically (temporary file, then ``os.replace``).

Sampling compiles the forward pass once for a (1, context) window and reuses it for
every token: the prompt's last ``context`` characters are placed at positions
``0..n-1`` (the rest padded; causal attention keeps the padding out of position
``n-1``), and the next character is drawn from position ``n-1``'s logits divided by
the temperature, restricted to the ``top_k`` likeliest when given.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .. import pytree
from ..api import jit
from ..ir import GraphcError
from .model import CharTransformer, LMConfig

FILE = "charlm.npz"


def save(directory: str, params, cfg: LMConfig, vocab, meta: dict) -> str:
    os.makedirs(directory, exist_ok=True)
    leaves, tree = pytree.flatten(params)
    names = pytree.paths(tree, "params")
    arrays = {n: np.asarray(x) for n, x in zip(names, leaves)}
    arrays["meta"] = np.array(json.dumps({"config": cfg.to_dict(), "vocab": "".join(vocab),
                                          **meta}))
    path = os.path.join(directory, FILE)
    fd, tmp = tempfile.mkstemp(prefix=".charlm-", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load(directory: str):
    """(model, params, vocab, meta) from a checkpoint directory (or the .npz itself)."""
    path = directory if directory.endswith(".npz") else os.path.join(directory, FILE)
    if not os.path.isfile(path):
        raise GraphcError(f"no char LM checkpoint at {path} (train one with "
                          "`graphc train transformer --checkpoint-dir DIR`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data.pop("meta")))
        cfg = LMConfig(**meta["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GraphcError(f"{path}: not a char LM checkpoint ({e})") from None
    model = CharTransformer(cfg)
    template = model.init(0)
    leaves, tree = pytree.flatten(template)
    names = pytree.paths(tree, "params")
    out = []
    for n, t in zip(names, leaves):
        a = data.get(n)
        if a is None or a.shape != t.shape or a.dtype != t.dtype:
            raise GraphcError(f"{path}: parameter {n} is missing or has the wrong shape/dtype")
        out.append(a)
    return model, pytree.unflatten(tree, out), meta["vocab"], meta


class Sampler:
    """Next-character generation with one compiled forward (no retrace per token)."""

    def __init__(self, model: CharTransformer, params, vocab: str, backend="llvm"):
        model.set_training(False)
        self.model, self.params, self.vocab = model, params, vocab
        self.index = {c: i for i, c in enumerate(vocab)}
        self.T = model.cfg.context
        self.forward = jit(model.forward, backend=backend)
        self.calls = 0

    def encode(self, s):
        bad = [c for c in s if c not in self.index]
        if bad:
            raise GraphcError(f"prompt character {bad[0]!r} is not in the model's vocabulary")
        return [self.index[c] for c in s]

    def generate(self, prompt: str, tokens: int, temperature=1.0, top_k=None, seed=0) -> str:
        if temperature <= 0:
            raise GraphcError(f"temperature must be > 0, got {temperature}")
        rng = np.random.default_rng(seed)
        ids = self.encode(prompt) or [self.index.get(" ", 0)]
        out = []
        window = np.zeros((1, self.T), np.int32)
        for _ in range(int(tokens)):
            ctx = ids[-self.T:]
            window[0, :] = 0
            window[0, :len(ctx)] = ctx
            logits = np.asarray(self.forward(self.params, window), np.float64)[0, len(ctx) - 1]
            self.calls += 1
            logits = logits / temperature
            if top_k is not None and 0 < top_k < len(logits):
                cut = np.partition(logits, -top_k)[-top_k]
                logits = np.where(logits >= cut, logits, -np.inf)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            nxt = int(rng.choice(len(p), p=p))
            ids.append(nxt)
            out.append(self.vocab[nxt])
        return "".join(out)
