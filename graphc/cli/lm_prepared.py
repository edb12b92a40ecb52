"""The character LM (``transformer``) as the graph commands see a model: ``graphc dot``,
``ir``, ``memplan`` and ``bench transformer`` take the same surface as a built-in's
``graphc.train.Prepared`` -- ``spec``, ``model``, ``params``, ``config``,
``splits.train``, ``example_batch()`` -- built from ``LMConfig``'s defaults (the
benchmark's architecture) over the default corpus's vocabulary, with windows of the
corpus's training split as the batch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import GraphcError
from ..train.config import TrainConfig


@dataclass
class LMSpec:
    name: str
    description: str


@dataclass
class LMModel:
    module: object
    loss: object


@dataclass
class Split:
    X: np.ndarray          # (windows, context) character ids
    y: np.ndarray          # the next character of each

    def __len__(self):
        return len(self.X)


@dataclass
class Splits:
    train: Split


@dataclass
class LMPrepared:
    config: TrainConfig
    spec: LMSpec
    model: LMModel
    splits: Splits
    params: dict

    def example_batch(self, batch_size=None):
        from ..train.setup import first_batch
        return first_batch(self.splits.train, batch_size or self.config.batch_size,
                           "windows")


#: what the LM trains with when the command line says nothing (graphc.lm.train's)
DEFAULTS = dict(batch_size=16, lr=3e-3, optimizer="adam")


def prepare_lm(name: str, **overrides) -> LMPrepared:
    from ..lm import CharTransformer, LMConfig, load_corpus
    from ..lm.train import windows
    if overrides.get("dataset"):
        raise GraphcError(f"{name}: --dataset does not apply (the corpus is "
                          "pydoc_data.topics; graphc train transformer --text FILE trains "
                          "on another)")
    if overrides.get("widths"):
        raise GraphcError(f"{name}: --widths is for mlp")
    corpus = load_corpus(None)
    mcfg = LMConfig(vocab=len(corpus.vocab))
    cfg = TrainConfig(model=name, **{**DEFAULTS, **{k: v for k, v in overrides.items()
                                                    if v is not None}}).validate()
    module = CharTransformer(mcfg)
    X, y = windows(corpus.train, mcfg.context)
    spec = LMSpec(name, f"decoder-only character LM ({mcfg.layers} pre-LN blocks, d "
                        f"{mcfg.dim}, {mcfg.heads} heads, context {mcfg.context}) on "
                        f"{corpus.name}")
    def loss(params, ids, targets):          # named like a built-in's graph
        return module.loss(params, ids, targets)
    loss.__name__ = loss.__qualname__ = f"{name}_loss"
    return LMPrepared(cfg, spec, LMModel(module, loss), Splits(Split(X, y)),
                      module.init(cfg.seed))
