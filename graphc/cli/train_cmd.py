"""``graphc train MODEL``: the main job -- train, report per-epoch metrics, test at the end."""
from __future__ import annotations

import time

from ..ir import GraphcError
from ..nn import num_params as num_params_of
from ..train import Trainer, prepare, resolve
from ..train.modelfile import check_save_path, save_model
from ..train.progress import Progress
from .common import MODEL_KEYS, overrides

TRAIN_KEYS = MODEL_KEYS + ("epochs", "momentum", "weight_decay", "patience", "tol",
                           "nesterov", "lr_schedule", "warmup", "lr_step", "lr_gamma",
                           "min_lr", "clip_grad_norm", "val", "test", "memory_budget", "augment",
                           "checkpoint_dir", "checkpoint_every", "checkpoint_steps",
                           "resume", "json_log", "plot", "progress", "backend", "threads")


def architecture(module) -> str:
    """``64-256-128-10`` for a stack of Linear layers ('' if not one)."""
    from ..nn import Linear, Sequential
    layers = module.layers if isinstance(module, Sequential) else [module]
    lins = [m for m in layers if isinstance(m, Linear)]
    if not lins:
        return ""
    return "-".join(str(w) for w in [lins[0].in_features] + [m.out_features for m in lins])


def describe(p, backend) -> str:
    cfg, tr = p.config, p.splits.train
    ds = f"{cfg.dataset}: train {len(tr)} / val {len(p.splits.val)} / test {len(p.splits.test)}"
    ds += f", {tr.X.shape[1]} features"
    if p.spec.task != "regression":
        ds += f", {2 if p.spec.task == 'binary' else int(p.model.out_features or 0)} classes"
    opt = cfg.optimizer + (f"(momentum {cfg.momentum}{', nesterov' if cfg.nesterov else ''})"
                           if cfg.optimizer == "momentum" else "")
    if cfg.weight_decay:
        opt += f" weight decay {cfg.weight_decay}"
    sched = ""
    if cfg.lr_schedule != "constant" or cfg.warmup:
        sched = f" ({cfg.lr_schedule}" + (f", warm-up {cfg.warmup} updates" if cfg.warmup
                                          else "") + ")"
    if cfg.clip_grad_norm:
        sched += f", grad-norm clip {cfg.clip_grad_norm}"
    if cfg.memory_budget:
        sched += f", remat budget {cfg.memory_budget:g}"
    if cfg.augment != "none":
        sched += f", augment {cfg.augment}"
    return (f"graphc train {p.spec.name} -- {p.spec.description}\n"
            f"  data   {ds}\n"
            f"  model  {architecture(p.model.module)} ({num_params_of(p.params):,} "
            f"parameters); {opt} lr {cfg.lr}{sched}, batch "
            f"{cfg.batch_size}, up to {cfg.epochs} epochs (patience {cfg.patience}); "
            f"backend {backend}")


def run(args) -> int:
    from .lm_cmd import LM_MODELS, run_train
    if args.model in LM_MODELS:                  # the character LM has its own loop
        if getattr(args, "distributed", None):
            raise GraphcError(f"--distributed is not supported for {args.model} (the "
                              "character LM has its own training loop); drop it")
        return run_train(args)
    if getattr(args, "distributed", None):
        from ..distributed.cli import run_train
        return run_train(args, overrides(args, TRAIN_KEYS))
    t0 = time.perf_counter()
    spec, cfg = resolve(args.model, **overrides(args, TRAIN_KEYS))
    if args.save:                       # before any work: a run must not end unsaveable
        check_save_path(args.save, avoid=[cfg.dataset, cfg.json_log, cfg.plot])
    progress = Progress(cfg.progress)
    trainer = Trainer(prepare(spec, cfg), progress)
    progress.line(describe(trainer.p, trainer.backend))
    result = trainer.run()
    if args.save:
        save_model(args.save, trainer.p, result.params_tree, result.test,
                   {"history": result.history, "backend": result.backend,
                    "best_epoch": result.best_epoch, "stop_reason": result.stop_reason})
        progress.line(f"model saved to {args.save} (use it: graphc predict {args.save} "
                      "DATA.csv, graphc eval, or gc.load_model)")
    if result.checkpoint:
        progress.line(f"checkpoint: {result.checkpoint}")
    from ..train.metrics import headline
    print(f"test {headline(result.test, 'test')} -- {spec.name} on {cfg.dataset}, "
          f"{len(result.history)} epochs, {time.perf_counter() - t0:.1f} s", flush=True)
    return 0
