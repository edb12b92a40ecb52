"""``graphc train MODEL --distributed sync``: the training loop on every rank of a job.

Every rank prepares the same model and data (``graphc.train.prepare``, a pure function
of the config), builds the data-parallel step on its shard size (global batch / ranks)
and walks the :class:`ShardedSampler`.  Rank 0 alone prints, evaluates the validation
split after each epoch (it broadcasts the early-stopping decision), writes checkpoints
and the JSON log, and tests at the end.

Checkpoints (``--checkpoint-steps N`` / per epoch) are written atomically by rank 0 with
``graphc.train.checkpoint``: parameters, optimizer state, best parameters, the run state
and every rank's sampler position.  A restarted job (``graphc launch --max-restarts``,
or the same command with ``--resume``) loads it on rank 0, broadcasts it, and each rank
continues from its own recorded position: the parameters end bit-identical to an
uninterrupted run with the same rank count.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np

from ..ir import GraphcError
from ..train import checkpoint as ckpt
from ..train.metrics import Evaluator, headline
from ..train.progress import JsonLog, Progress
from ..train.setup import backend_options, copy_arrays, param_arrays
from . import comm as C
from .sampler import ShardedSampler
from .sync import DataParallelStep


class RankZeroProgress(Progress):
    """Progress that prints on rank 0 only (other ranks stay silent)."""

    def __init__(self, mode, rank):
        super().__init__(mode if rank == 0 else "none")


def run_state() -> dict:
    return {"epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "best_val": math.inf,
            "best_epoch": 0, "wait": 0, "finished": False, "stop_reason": "",
            "history": [], "comm_seconds": 0.0}


class SyncTrainer:
    def __init__(self, prepared, opts, comm=None):
        self.p, self.cfg, self.opts = prepared, prepared.config, opts
        self.comm = comm if comm is not None else C.world()
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        self.progress = RankZeroProgress(self.cfg.progress, self.rank)
        tr = prepared.splits.train
        self.sampler = ShardedSampler(len(tr), self.cfg.batch_size, self.rank, self.world,
                                      self.cfg.seed)
        b = self.sampler.local_batch
        bopts = backend_options(self.cfg.backend, self.cfg.threads)
        self.step = DataParallelStep(prepared.model.loss, prepared.params,
                                     self.cfg.make_optimizer(), (tr.X[:b], tr.y[:b]),
                                     comm=self.comm, buckets=opts.get("buckets", 1),
                                     reduce=opts.get("reduce"),
                                     timeout=opts.get("comm_timeout"),
                                     backend=self.cfg.backend, **bopts)
        self.evaluate = Evaluator(prepared.model, self.cfg.backend, prepared.y_scaler,
                                  notice=self.progress.line, **bopts) if self.rank == 0 \
            else None
        self.live = param_arrays(self.step.params)
        self.best = copy_arrays(self.live) if self.rank == 0 else None
        self.s = run_state()

    # ---- checkpoints ---------------------------------------------------------------------
    def _identity(self) -> dict:
        return {**self.cfg.resume_identity(), "world": self.world, "mode": "sync"}

    def save_checkpoint(self):
        """Rank 0 writes; every rank's sampler position travels in the meta."""
        positions = self.comm.allgather([self.rank, self.s["epoch"], self.s["batch"]]) \
            if self.world > 1 else [[0, self.s["epoch"], self.s["batch"]]]
        if self.rank != 0 or not self.cfg.checkpoint_dir:
            return None
        arrays = {f"param/{k}": v for k, v in self.live.items()}
        arrays.update({f"opt/{k}": v for k, v in self.step.opt_state.items()})
        arrays.update({f"best/{k}": v for k, v in self.best.items()})
        meta = {"config": self._identity(), "state": self.s, "positions": positions}
        return ckpt.save(self.cfg.checkpoint_dir, self.s["epoch"], self.s["step"], arrays,
                         meta)

    def resume(self) -> str:
        """Rank 0 loads the latest checkpoint and broadcasts it; '' when there is none."""
        found, msg = None, ""
        if self.rank == 0 and self.cfg.checkpoint_dir:
            paths = ckpt.list_checkpoints(self.cfg.checkpoint_dir)
            found = paths[-1] if paths else None
        meta = None
        if self.rank == 0 and found:
            try:
                arrays, meta = ckpt.load(found)
                ckpt.check_identity(found, meta.get("config", {}), self._identity())
                ckpt.restore_into(found, "param", arrays, self.live)
                ckpt.restore_into(found, "opt", arrays, self.step.opt_state)
                ckpt.restore_into(found, "best", arrays, self.best)
            except GraphcError as e:
                meta, msg = None, str(e)
        meta, msg = self.comm.bcast((meta, msg), root=0) if self.world > 1 else (meta, msg)
        if msg:
            raise ckpt.CheckpointError(msg)
        if meta is None:
            return ""
        self.step.broadcast_from_root(list(self.live.values())
                                      + list(self.step.opt_state.values()),
                                      "checkpoint broadcast")
        self.s = meta["state"]
        pos = {r: (e, b) for r, e, b in meta["positions"]}
        if (pos[self.rank][0], pos[self.rank][1]) != (self.s["epoch"], self.s["batch"]):
            raise ckpt.CheckpointError(f"{found}: rank {self.rank}'s sampler position "
                                       f"{pos[self.rank]} differs from the run's")
        self.step.steps = self.s["step"]
        self.progress.line(f"resumed from {found} (epoch {self.s['epoch']}, batch "
                           f"{self.s['batch']}, update {self.s['step']})")
        return found or "resumed"

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, s = self.cfg, self.s
        resumed = self.resume() if cfg.resume else ""
        s = self.s
        log = JsonLog(cfg.json_log if self.rank == 0 else None, append=bool(resumed))
        tr = self.p.splits.train
        every = cfg.checkpoint_steps
        try:
            while not s["finished"] and s["epoch"] < cfg.epochs:
                self.progress.start_epoch(s["epoch"] + 1, cfg.epochs, self.sampler.per_epoch,
                                          s["batch"])
                t_epoch, comm0 = time.perf_counter(), self.step.totals["comm"]
                done = 0
                for idx in self.sampler.epoch(s["epoch"], s["batch"]):
                    loss = self.step(tr.X[idx], tr.y[idx])
                    if not np.isfinite(loss):
                        raise GraphcError(f"the training loss became {loss} at update "
                                          f"{s['step'] + 1}; lower the learning rate")
                    s["loss_sum"] += loss
                    s["batch"] += 1
                    s["step"] += 1
                    done += 1
                    self.progress.update(loss)
                    if every and s["step"] % every == 0 and s["batch"] < self.sampler.per_epoch:
                        self.save_checkpoint()
                self.progress.end_epoch()
                self._end_epoch(log, time.perf_counter() - t_epoch,
                                self.step.totals["comm"] - comm0, done)
            if not s["finished"]:
                s["finished"] = True
                s["stop_reason"] = f"reached the maximum of {cfg.epochs} epochs"
            self.save_checkpoint()
            return self._final_test(log)
        finally:
            log.close()

    def _end_epoch(self, log, seconds, comm_seconds, done):
        cfg, s = self.cfg, self.s
        steps = max(done, 1)
        record = None
        if self.rank == 0:
            record = {"epoch": s["epoch"] + 1, "step": s["step"],
                      "train_loss": s["loss_sum"] / self.sampler.per_epoch, "ranks": self.world,
                      "samples_per_s": steps * cfg.batch_size / max(seconds, 1e-9),
                      "comm_s_per_step": comm_seconds / steps,
                      "step_s": seconds / steps}
            record.update(self.evaluate(self.step.params, self.p.splits.val, "val"))
            s["history"].append(record)
            log.write("epoch", record)
            metric = (f"val_acc {100 * record['val_accuracy']:5.1f}%"
                      if "val_accuracy" in record else f"val_r2 {record['val_r2']:.3f}")
            self.progress.line(
                f"epoch {record['epoch']:>3}/{cfg.epochs}  train_loss "
                f"{record['train_loss']:.4f}  val_loss {record['val_loss']:.4f}  {metric}  "
                f"{record['samples_per_s']:,.0f} samples/s  comm "
                f"{1e3 * record['comm_s_per_step']:.2f} ms/step ({self.world} ranks)")
            if record["val_loss"] < s["best_val"] - cfg.tol:
                s["best_val"], s["best_epoch"], s["wait"] = record["val_loss"], s["epoch"] + 1, 0
                for k, v in self.live.items():
                    self.best[k][...] = v
            else:
                s["wait"] += 1
                if cfg.patience and s["wait"] >= cfg.patience:
                    s["finished"] = True
                    s["stop_reason"] = (f"early stop: validation loss did not improve by "
                                        f"{cfg.tol} for {cfg.patience} epochs")
        # every rank takes rank 0's decision (and its bookkeeping, for checkpoints)
        shared = {k: s[k] for k in ("finished", "stop_reason", "best_val", "best_epoch",
                                    "wait")}
        if self.world > 1:
            shared = self.comm.bcast(shared, root=0)
        s.update(shared)
        s["epoch"], s["batch"], s["loss_sum"] = s["epoch"] + 1, 0, 0.0
        if not s["finished"] and cfg.checkpoint_every and s["epoch"] % cfg.checkpoint_every == 0 \
                and s["epoch"] < cfg.epochs:
            self.save_checkpoint()

    def _final_test(self, log) -> dict:
        if self.rank != 0:
            return {}
        from .. import pytree
        leaves, td = pytree.flatten(self.step.params)
        best_tree = pytree.unflatten(td, [self.best[k] for k in pytree.paths(td)])
        test = self.evaluate(best_tree, self.p.splits.test, "test")
        test.update(best_epoch=self.s["best_epoch"], stop_reason=self.s["stop_reason"],
                    updates=self.s["step"], ranks=self.world,
                    comm_s_per_step=self.step.totals["comm"] / max(self.step.steps, 1))
        log.write("test", test)
        self.progress.line(f"stopped: {self.s['stop_reason']}")
        self.progress.line(f"test set: loss {test['test_loss']:.4f}, {headline(test, 'test')} "
                           f"(best parameters, from epoch {self.s['best_epoch']})")
        test["best_params"] = self.best
        return test


def dump_json(obj) -> str:
    return json.dumps(obj, sort_keys=True)
