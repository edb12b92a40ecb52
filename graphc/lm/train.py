"""Training and evaluation of the character LM, in nats (and bits) per character.

Batches are random windows of the training split (``batch`` x ``context`` characters,
each position predicting the next character), drawn from one seeded generator.
Validation and test loss are the mean over every next-character prediction in
consecutive non-overlapping windows of the split (so each prediction sees between 0 and
``context - 1`` characters of context); the training loss is measured the same way on
evenly spaced windows of the training split, as many as the validation split has.
The baseline beside them is the unigram model: the test split under the training
split's character frequencies.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import optim
from ..api import jit
from ..ir import GraphcError
from ..step import compile_step
from .corpus import Corpus, unigram_nats
from .model import CharTransformer, LMConfig

EVAL_BATCH = 32
LN2 = math.log(2.0)


@dataclass
class TrainConfig:
    steps: int = 1500
    batch: int = 16
    lr: float = 3e-3
    optimizer: str = "adam"
    seed: int = 0
    eval_every: int = 250
    threads: int | None = None
    backend: str = "llvm"


@dataclass
class Result:
    train: float
    val: float
    test: float
    unigram: float
    history: list = field(default_factory=list)
    seconds: float = 0.0
    step_ms: float = 0.0


def windows(ids: np.ndarray, context: int, count: int | None = None):
    """(inputs, targets) of non-overlapping windows (or ``count`` evenly spaced ones)."""
    n = (len(ids) - 1) // context
    if n < 1:
        raise GraphcError(f"a split of {len(ids)} characters is shorter than one context "
                          f"window ({context + 1})")
    starts = np.arange(n) * context
    if count is not None and count < n:
        starts = np.linspace(0, len(ids) - context - 1, count).astype(np.int64)
    x = np.stack([ids[s:s + context] for s in starts])
    y = np.stack([ids[s + 1:s + context + 1] for s in starts])
    return x, y


class Evaluator:
    """Mean next-character loss over windows, with one compiled (EVAL_BATCH, T) forward."""

    def __init__(self, model: CharTransformer, backend="llvm", threads=None):
        opts = {} if backend != "llvm" or threads is None else {"threads": threads}
        self.model = model
        self.fn = jit(model.token_losses, backend=backend, **opts)

    def __call__(self, params, x, y) -> float:
        total, n = 0.0, 0
        for i in range(0, len(x), EVAL_BATCH):
            xb, yb = x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]
            k = len(xb)
            if k < EVAL_BATCH:                 # pad with copies; only k rows count
                xb = np.concatenate([xb, np.repeat(xb[:1], EVAL_BATCH - k, 0)])
                yb = np.concatenate([yb, np.repeat(yb[:1], EVAL_BATCH - k, 0)])
            losses = np.asarray(self.fn(params, xb, yb), np.float64)[:k]
            total += float(losses.sum())
            n += losses.size
        return total / n


def make_optimizer(name, lr):
    if name == "adam":
        return optim.Adam(lr)
    if name == "sgd":
        return optim.SGD(lr)
    if name == "momentum":
        return optim.SGD(lr, momentum=0.9)
    raise GraphcError(f"unknown optimizer {name!r} (adam, sgd, momentum)")


def train(corpus: Corpus, mcfg: LMConfig, tcfg: TrainConfig, log=print):
    """Train from scratch; returns (model, params, Result)."""
    model = CharTransformer(mcfg)
    params = model.init(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed + 1)
    T, B = mcfg.context, tcfg.batch
    hi = len(corpus.train) - T - 1
    if hi <= 0:
        raise GraphcError(f"the training split ({len(corpus.train)} characters) is shorter "
                          f"than one window of {T + 1}")

    def batch():
        s = rng.integers(0, hi, B)
        idx = s[:, None] + np.arange(T)
        return corpus.train[idx], corpus.train[idx + 1]

    opts = {"seed": tcfg.seed, "backend": tcfg.backend}
    if tcfg.threads is not None and tcfg.backend == "llvm":
        opts["threads"] = tcfg.threads
    t0 = time.perf_counter()
    x0, y0 = batch()
    step = compile_step(model.loss, params, make_optimizer(tcfg.optimizer, tcfg.lr),
                           (x0, y0), **opts)
    log(f"  compiled the step in {time.perf_counter() - t0:.2f} s")
    evaluator = None
    val_w = windows(corpus.val, T)
    train_w = windows(corpus.train, T, count=len(val_w[0]))

    def evaluate(split_w):
        nonlocal evaluator
        model.set_training(False)
        try:
            if evaluator is None:
                evaluator = Evaluator(model, tcfg.backend, tcfg.threads)
            return evaluator(step.params, *split_w)
        finally:
            model.set_training(True)

    history, t_steps, recent = [], 0.0, []
    for i in range(1, tcfg.steps + 1):
        xb, yb = batch() if i > 1 else (x0, y0)
        ts = time.perf_counter()
        recent.append(step(xb, yb))
        t_steps += time.perf_counter() - ts
        if not np.isfinite(recent[-1]):
            raise GraphcError(f"step {i}: the loss became {recent[-1]}; lower --lr")
        if i % tcfg.eval_every == 0 or i == tcfg.steps:
            v = evaluate(val_w)
            history.append({"step": i, "batch_loss": float(np.mean(recent)), "val": v})
            log(f"  step {i:5d}  batch loss {np.mean(recent):.3f}  val {v:.3f} nats/char "
                f"({v / LN2:.3f} bits)  {1e3 * t_steps / i:.1f} ms/step")
            recent = []
    res = Result(train=evaluate(train_w), val=history[-1]["val"] if history else
                 evaluate(val_w), test=evaluate(windows(corpus.test, T)),
                 unigram=unigram_nats(corpus.train, corpus.test, len(corpus.vocab)),
                 history=history, seconds=time.perf_counter() - t0,
                 step_ms=1e3 * t_steps / max(tcfg.steps, 1))
    return model, step.params, res
