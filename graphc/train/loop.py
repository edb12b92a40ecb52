"""The training loop: epochs of shuffled mini-batches, one compiled update per batch,
validation metrics and early stopping per epoch, checkpoints, resume, final test.

Resume guarantee: a run interrupted at any point and resumed from its last checkpoint
ends with bit-identical parameters to an uninterrupted run (same backend and threads).
It holds because everything that decides the update sequence is in the checkpoint:
parameters, optimizer state, best parameters and early-stopping counters, and the data
Generator's state at the *start* of the current epoch plus the index of the next batch
(the epoch's permutation is redrawn from that state and the done batches skipped).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .. import data as gdata
from ..data import augment
from ..ir import GraphcError
from . import checkpoint as ckpt
from .config import TrainConfig
from .curves import plot_history
from .metrics import Evaluator, headline
from .progress import JsonLog, Progress
from .setup import Prepared, backend_options, compile_step, copy_arrays, param_arrays


@dataclass
class RunState:
    """The loop's position and early-stopping memory (all of it goes in the checkpoint)."""
    epoch: int = 0                 # completed epochs
    batch: int = 0                 # next batch index within the current epoch
    step: int = 0                  # updates done
    epoch_rng: str = ""            # data Generator state at the start of the epoch
    loss_sum: float = 0.0          # this epoch's training-loss sum so far
    train_seconds: float = 0.0     # this epoch's time in steps so far
    best_val: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    finished: bool = False
    stop_kind: str = ""            # "" | "max_epochs" | "early"
    stop_reason: str = ""
    history: list = field(default_factory=list)


@dataclass
class TrainResult:
    history: list
    test: dict
    stop_reason: str
    best_epoch: int
    params: dict
    backend: str
    seconds: float
    checkpoint: str | None = None
    params_tree: object = None      # the best parameters in their nested structure


class Trainer:
    def __init__(self, prepared: Prepared, progress: Progress | None = None):
        self.p, self.cfg = prepared, prepared.config
        self.progress = progress or Progress(self.cfg.progress)
        from ..step import compile_count
        self.compiles_before = compile_count()
        self.step, self.backend = compile_step(prepared, self.cfg.backend, self.cfg.threads,
                                               notice=self.progress.line)
        self.evaluate = Evaluator(prepared.model, self.backend, prepared.y_scaler,
                                  notice=self.progress.line,
                                  **backend_options(self.backend, self.cfg.threads))
        tr = prepared.splits.train
        transform = augment.make(self.cfg.augment, tr.X.shape[1], prepared.spec.image)
        self.batches = gdata.Batches(tr.X, tr.y, self.cfg.batch_size, self.cfg.seed,
                                     transform)
        self.live_params = param_arrays(self.step.params)
        self.best = copy_arrays(self.live_params)
        self.state = RunState()
        self.last_checkpoint = None

    def settings(self) -> dict:
        """Every knob of this run as JSON data (for --json, checkpoints, saved models)."""
        from dataclasses import asdict
        d = {k: v for k, v in asdict(self.cfg).items() if k != "extra"}
        d["widths"] = list(d["widths"]) if d["widths"] is not None else None
        sched = self.step.lr_schedule
        d.update(optimizer_rule=repr(self.step.optimizer),
                 schedule=sched.to_dict() if hasattr(sched, "to_dict") else None,
                 steps_per_epoch=self.batches.per_epoch, backend_used=self.backend)
        return d

    # ---- checkpoints ---------------------------------------------------------------------
    def _meta(self) -> dict:
        s = self.state
        return {"config": self.cfg.resume_identity(), "settings": self.settings(),
                "epoch": s.epoch, "batch": s.batch,
                "step": s.step, "epoch_rng": s.epoch_rng, "loss_sum": s.loss_sum,
                "train_seconds": s.train_seconds, "best_val": s.best_val,
                "best_epoch": s.best_epoch, "wait": s.wait, "finished": s.finished,
                "stop_kind": s.stop_kind, "stop_reason": s.stop_reason, "history": s.history,
                "backend": self.backend}

    def save_checkpoint(self):
        if not self.cfg.checkpoint_dir:
            return None
        arrays = {f"param/{k}": v for k, v in self.live_params.items()}
        arrays.update({f"opt/{k}": v for k, v in self.step.opt_state.items()})
        arrays.update({f"best/{k}": v for k, v in self.best.items()})
        self.last_checkpoint = ckpt.save(self.cfg.checkpoint_dir, self.state.epoch,
                                         self.state.step, arrays, self._meta())
        return self.last_checkpoint

    def resume(self, where) -> str:
        """Load the latest checkpoint (``where`` True) or the file ``where``."""
        if where is True:
            found = ckpt.list_checkpoints(self.cfg.checkpoint_dir)
            if not found:
                self.progress.line(f"no checkpoint in {self.cfg.checkpoint_dir}; "
                                   "starting from scratch")
                return ""
            path = found[-1]
        else:
            path = str(where)
        arrays, meta = ckpt.load(path)
        ckpt.check_identity(path, meta.get("config", {}), self.cfg.resume_identity())
        ckpt.restore_into(path, "param", arrays, self.live_params)
        ckpt.restore_into(path, "opt", arrays, self.step.opt_state)
        ckpt.restore_into(path, "best", arrays, self.best)
        s = self.state
        try:
            for k in ("epoch", "batch", "step", "epoch_rng", "loss_sum", "train_seconds",
                      "best_val", "best_epoch", "wait", "finished", "stop_kind", "stop_reason",
                      "history"):
                setattr(s, k, meta[k])
            self.batches.set_rng_state(s.epoch_rng)
        except (KeyError, ValueError, TypeError) as e:
            raise ckpt.CheckpointError(f"checkpoint {path}: bad run state ({e})") from None
        if s.batch > self.batches.per_epoch:
            raise ckpt.CheckpointError(f"checkpoint {path}: batch {s.batch} beyond the "
                                       f"{self.batches.per_epoch} batches of an epoch")
        self.step.steps = s.step
        if s.finished and s.stop_kind == "max_epochs" and s.epoch < self.cfg.epochs:
            s.finished, s.stop_kind, s.stop_reason = False, "", ""   # train longer
        self.progress.line(f"resumed from {path} (epoch {s.epoch}, batch {s.batch}, "
                           f"update {s.step})")
        return path

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, s = self.cfg, self.state
        t_start = time.perf_counter()
        resumed = self.resume(cfg.resume) if cfg.resume else ""
        log = JsonLog(cfg.json_log, append=bool(resumed))
        log.write("config", {**self.settings(), "resumed_from": resumed or None})
        try:
            if not s.finished:
                self._epochs(log)
            test = self._final_test(log)
        finally:
            log.close()
        if cfg.plot and s.history:
            plot_history(s.history, cfg.plot, f"{self.p.spec.name} on {cfg.dataset}")
            self.progress.line(f"curves written to {cfg.plot}")
        return TrainResult(s.history, test, s.stop_reason, s.best_epoch,
                           {k: v for k, v in self.best.items()}, self.backend,
                           time.perf_counter() - t_start, self.last_checkpoint,
                           _unflatten_like(self.step.params, self.best))

    def _epochs(self, log: JsonLog):
        cfg, s, b = self.cfg, self.state, self.batches
        per_epoch = b.per_epoch
        while s.epoch < cfg.epochs:
            s.epoch_rng = b.rng_state()
            shown = s.epoch + 1
            self.progress.start_epoch(shown, cfg.epochs, per_epoch, s.batch)
            for xb, yb in b.epoch(start=s.batch):
                t0 = time.perf_counter()
                loss = self.step(xb, yb)
                s.train_seconds += time.perf_counter() - t0
                if not np.isfinite(loss):
                    self.progress.end_epoch()
                    raise GraphcError(f"the training loss became {loss} at update {s.step + 1} "
                                      f"(epoch {shown}); lower the learning rate "
                                      f"(--lr, now {cfg.lr})")
                s.loss_sum += loss
                s.batch += 1
                s.step += 1
                self.progress.update(loss)
                if cfg.checkpoint_steps and s.step % cfg.checkpoint_steps == 0 \
                        and s.batch < per_epoch:
                    self.save_checkpoint()
            self.progress.end_epoch()
            self._end_epoch(log, per_epoch)
            if s.finished:
                break
        if not s.finished:
            s.finished, s.stop_kind = True, "max_epochs"
            s.stop_reason = f"reached the maximum of {cfg.epochs} epochs"
        s.epoch_rng = b.rng_state()          # at an epoch boundary: the next epoch's start
        self.save_checkpoint()

    def _end_epoch(self, log: JsonLog, per_epoch: int):
        cfg, s = self.cfg, self.state
        record = {"epoch": s.epoch + 1, "step": s.step, "train_loss": s.loss_sum / per_epoch,
                  "lr": self.step.lr}
        record.update(self.evaluate(self.step.params, self.p.splits.val, "val"))
        seconds = max(s.train_seconds, 1e-9)
        record["samples_per_s"] = per_epoch * cfg.batch_size / seconds
        s.history.append(record)
        log.write("epoch", record)
        self.progress.line(_epoch_line(record, cfg.epochs, self.step.lr_schedule is not None))
        s.epoch, s.batch, s.loss_sum, s.train_seconds = s.epoch + 1, 0, 0.0, 0.0
        if record["val_loss"] < s.best_val - cfg.tol:
            s.best_val, s.best_epoch, s.wait = record["val_loss"], s.epoch, 0
            for k, v in self.live_params.items():
                self.best[k][...] = v
        else:
            s.wait += 1
            if cfg.patience and s.wait >= cfg.patience:
                s.finished, s.stop_kind = True, "early"
                s.stop_reason = (f"early stop: validation loss did not improve by {cfg.tol} "
                                 f"for {cfg.patience} epochs (best {s.best_val:.4g} at "
                                 f"epoch {s.best_epoch})")
        if not s.finished and cfg.checkpoint_every and s.epoch % cfg.checkpoint_every == 0 \
                and s.epoch < cfg.epochs:
            s.epoch_rng = self.batches.rng_state()
            self.save_checkpoint()

    def _final_test(self, log: JsonLog) -> dict:
        s = self.state
        best_tree = _unflatten_like(self.step.params, self.best)
        test = self.evaluate(best_tree, self.p.splits.test, "test")
        from ..step import compile_count
        test.update(best_epoch=s.best_epoch, stop_reason=s.stop_reason, updates=s.step,
                    step_compiles=compile_count() - self.compiles_before)
        log.write("test", test)
        self.progress.line(f"stopped: {s.stop_reason}")
        self.progress.line(f"test set: loss {test['test_loss']:.4f}, {headline(test, 'test')} "
                           f"(best parameters, from epoch {s.best_epoch})")
        return test


def _epoch_line(r: dict, epochs: int, show_lr: bool = False) -> str:
    metric = (f"val_acc {100 * r['val_accuracy']:5.1f}%" if "val_accuracy" in r
              else f"val_r2 {r['val_r2']:.3f} val_mse {r['val_mse']:.5g}")
    lr = f"  lr {r['lr']:.3g}" if show_lr else ""
    return (f"epoch {r['epoch']:>3}/{epochs}  train_loss {r['train_loss']:.4f}  "
            f"val_loss {r['val_loss']:.4f}  {metric}{lr}  {r['samples_per_s']:,.0f} samples/s")


def _unflatten_like(tree, flat: dict):
    from .. import pytree
    leaves, td = pytree.flatten(tree)
    return pytree.unflatten(td, [flat[k] for k in pytree.paths(td)])


def train(config: TrainConfig, spec=None, dataset=None, progress=None) -> TrainResult:
    """Train ``config.model`` (or ``spec``) as configured; the library entry point."""
    from .setup import prepare, resolve
    if spec is None:
        spec, _ = resolve(config.model)
    if config.checkpoint_dir:
        os.makedirs(config.checkpoint_dir, exist_ok=True)
    return Trainer(prepare(spec, config, dataset), progress).run()
