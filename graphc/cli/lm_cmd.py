"""``graphc train transformer`` and ``graphc sample transformer``: the character language
model (graphc.lm) -- train on pydoc_data.topics or ``--text FILE``, report nats/char,
save a checkpoint; generate text from one."""
from __future__ import annotations

import math
import time

from ..ir import GraphcError

LM_MODELS = ("transformer",)


def _need_lm(args):
    if args.model not in LM_MODELS:
        raise GraphcError(f"graphc sample works with the language model "
                          f"({', '.join(LM_MODELS)}), not {args.model!r}")


def run_train(args) -> int:
    from ..lm import LMConfig, load_corpus
    from ..lm.sample import save
    from ..lm.train import LN2, TrainConfig, train
    from ..nn import num_params
    t0 = time.perf_counter()
    corpus = load_corpus(getattr(args, "text", None))
    mcfg = LMConfig(vocab=len(corpus.vocab), dropout=getattr(args, "dropout", None) or 0.0)
    tcfg = TrainConfig()
    for key, attr in (("steps", "steps"), ("batch", "batch_size"), ("lr", "lr"),
                      ("optimizer", "optimizer"), ("seed", "seed"), ("threads", "threads"),
                      ("backend", "backend")):
        v = getattr(args, attr, None)
        if v is not None:
            setattr(tcfg, key, v)
    tcfg.eval_every = max(1, min(tcfg.eval_every, tcfg.steps))
    print(f"graphc train transformer -- decoder-only character LM on {corpus.name}\n"
          f"  data   {len(corpus.text):,} characters, vocabulary {len(corpus.vocab)}; split by "
          f"position: train {len(corpus.train):,} / val {len(corpus.val):,} / test "
          f"{len(corpus.test):,}\n"
          f"  model  {mcfg.layers} pre-LN blocks, d {mcfg.dim}, {mcfg.heads} heads, MLP "
          f"{mcfg.dim}-{mcfg.hidden}-{mcfg.dim} tanh-GELU, context {mcfg.context}; "
          f"{tcfg.optimizer} lr {tcfg.lr}, batch {tcfg.batch}x{mcfg.context}, "
          f"{tcfg.steps} steps; backend {tcfg.backend}", flush=True)
    model, params, res = train(corpus, mcfg, tcfg, log=lambda s: print(s, flush=True))
    print(f"  ({num_params(params):,} parameters, {res.step_ms:.1f} ms/step)")
    if getattr(args, "checkpoint_dir", None):
        path = save(args.checkpoint_dir, params, mcfg, corpus.vocab,
                    {"corpus": corpus.name, "train": res.train, "val": res.val,
                     "test": res.test, "unigram": res.unigram, "steps": tcfg.steps})
        print(f"checkpoint: {path}")
    if getattr(args, "json_log", None):
        import json
        with open(args.json_log, "w") as f:
            json.dump({"train": res.train, "val": res.val, "test": res.test,
                       "unigram": res.unigram, "history": res.history}, f)
    print(f"  loss (nats/char):  train {res.train:.3f}   val {res.val:.3f}   test "
          f"{res.test:.3f}   unigram baseline {res.unigram:.3f}")
    print(f"  loss (bits/char):  train {res.train / LN2:.3f}   val {res.val / LN2:.3f}   "
          f"test {res.test / LN2:.3f}   unigram baseline {res.unigram / LN2:.3f}")
    print(f"  {time.perf_counter() - t0:.1f} s in all; perplexity {math.exp(res.test):.2f}")
    print(f"test loss {res.test:.3f} nats/char", flush=True)
    return 0


def run_sample(args) -> int:
    from ..lm.sample import Sampler, load
    _need_lm(args)
    model, params, vocab, meta = load(args.checkpoint)
    s = Sampler(model, params, vocab, backend=args.backend)
    text = s.generate(args.prompt, args.tokens, args.temperature, args.top_k, args.seed)
    print(args.prompt + text)
    return 0
