"""``TrainConfig``: every knob of a training run, with the model's defaults filled in.

The fields in ``RESUME_KEYS`` decide the sequence of parameter updates; a checkpoint
records them and ``--resume`` refuses a checkpoint whose values differ (it would not
continue the same run).  ``epochs`` may change on resume (to train longer).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .. import optim
from ..ir import GraphcError
from ..schedules import SCHEDULES, make_schedule

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
RESUME_KEYS = ("model", "dataset", "batch_size", "lr", "optimizer", "momentum",
               "weight_decay", "seed", "val", "test", "widths", "label_column", "nesterov",
               "lr_schedule", "warmup", "lr_step", "lr_gamma", "min_lr", "clip_grad_norm",
               "augment")


@dataclass
class TrainConfig:
    model: str = "mlp"
    dataset: str | None = None            # None: the model's default dataset
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9                 # used by optimizer="momentum"
    weight_decay: float = 0.0
    nesterov: bool = False                # with optimizer="momentum"
    lr_schedule: str = "constant"         # constant | step | cosine (graphc.schedules)
    warmup: int = 0                       # linear warm-up over this many updates
    lr_step: int = 0                      # step schedule: epochs between decays
    lr_gamma: float = 0.1                 # step schedule: decay factor
    min_lr: float = 0.0                   # cosine schedule: final learning rate
    clip_grad_norm: float | None = None   # global gradient-norm clipping (None: off)
    memory_budget: float | None = None    # remat budget: bytes, or a fraction in (0, 1]
    augment: str = "none"                 # training-batch augmentation: none | shift:N
    seed: int = 0
    patience: int = 10                    # early stopping: epochs without improvement
    tol: float = 1e-4                     # ... by at least this much (val loss)
    val: float = 0.15
    test: float = 0.15
    widths: tuple | None = None           # mlp hidden widths
    label_column: str | None = None       # CSV label column (name or index)
    backend: str = "llvm"
    threads: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1             # epochs between checkpoints (0: only at the end)
    checkpoint_steps: int = 0             # also every N updates (0: off)
    resume: str | bool | None = None      # True: latest in checkpoint_dir; or a file path
    json_log: str | None = None
    plot: str | None = None
    progress: str = "auto"                # auto | bar | lines | none
    passes: tuple | None = None           # user passes, "FILE.py:FN[:AFTER]" (--pass)
    extra: dict = field(default_factory=dict)

    def validate(self):
        if self.optimizer not in OPTIMIZERS:
            raise GraphcError(f"unknown optimizer {self.optimizer!r}; choose one of "
                              f"{', '.join(OPTIMIZERS)}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) <= 0:
                raise GraphcError(f"{name.replace('_', '-')} must be positive, got "
                                  f"{getattr(self, name)}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise GraphcError(f"learning rate must be positive, got {self.lr}")
        if self.patience < 0 or self.tol < 0 or self.checkpoint_every < 0 \
                or self.checkpoint_steps < 0:
            raise GraphcError("patience, tol, checkpoint-every and checkpoint-steps must be "
                              ">= 0")
        if self.nesterov and self.optimizer != "momentum":
            raise GraphcError(f"--nesterov needs --optimizer momentum (got {self.optimizer})")
        if self.lr_schedule not in SCHEDULES:
            raise GraphcError(f"unknown lr schedule {self.lr_schedule!r}; choose one of "
                              f"{', '.join(SCHEDULES)}")
        if self.lr_schedule == "step" and self.lr_step <= 0:
            raise GraphcError("--lr-schedule step needs --lr-step N (epochs between decays)")
        if self.warmup < 0 or self.lr_step < 0 or not (self.lr_gamma > 0) \
                or not (0 <= self.min_lr < self.lr):
            raise GraphcError("need --warmup >= 0, --lr-step >= 0, --lr-gamma > 0 and "
                              f"0 <= --min-lr < --lr (got warmup {self.warmup}, lr-step "
                              f"{self.lr_step}, lr-gamma {self.lr_gamma}, min-lr {self.min_lr})")
        if self.clip_grad_norm is not None and not (np.isfinite(self.clip_grad_norm)
                                                    and self.clip_grad_norm > 0):
            raise GraphcError(f"--clip-grad-norm must be a positive number, got "
                              f"{self.clip_grad_norm}")
        if self.memory_budget is not None and not self.memory_budget > 0:
            raise GraphcError(f"--memory-budget must be positive (bytes, or a fraction in "
                              f"(0, 1]), got {self.memory_budget}")
        from ..data import augment
        augment.parse(self.augment)
        if self.resume and not self.checkpoint_dir and self.resume is True:
            raise GraphcError("--resume needs --checkpoint-dir (or a checkpoint file path)")
        return self

    def make_optimizer(self, steps_per_epoch: int | None = None):
        """The optimizer, with its lr schedule when ``steps_per_epoch`` is known."""
        extra = {"clip_grad_norm": self.clip_grad_norm}
        if steps_per_epoch:
            extra["schedule"] = self.make_schedule(steps_per_epoch)
        if self.optimizer == "adam":
            return optim.Adam(self.lr, weight_decay=self.weight_decay, **extra)
        if self.optimizer == "adamw":
            return optim.AdamW(self.lr, weight_decay=self.weight_decay, **extra)
        momentum = self.momentum if self.optimizer == "momentum" else 0.0
        return optim.SGD(self.lr, momentum=momentum, nesterov=self.nesterov,
                         weight_decay=self.weight_decay, **extra)

    def make_schedule(self, steps_per_epoch: int):
        """``lr_schedule`` over ``epochs`` epochs of ``steps_per_epoch`` updates (None:
        a constant learning rate with no warm-up)."""
        if self.lr_schedule == "constant" and not self.warmup:
            return None
        return make_schedule(self.lr_schedule, self.lr, self.epochs * steps_per_epoch,
                             self.warmup, self.lr_step * steps_per_epoch, self.lr_gamma,
                             self.min_lr)

    def resume_identity(self) -> dict:
        d = asdict(self)
        out = {k: d[k] for k in RESUME_KEYS}
        out["widths"] = list(out["widths"]) if out["widths"] is not None else None
        return out


def from_model_defaults(spec, **overrides) -> TrainConfig:
    """A config with the model's default hyper-parameters, then ``overrides`` (not None)."""
    h = spec.defaults()
    base = {k: h[k] for k in ("epochs", "batch_size", "lr", "optimizer", "patience", "tol",
                              "val", "test", "augment", "lr_schedule") if k in h}
    if "widths" in h:
        base["widths"] = tuple(h["widths"])
    base["dataset"] = spec.dataset
    base["model"] = spec.name
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base).validate()
