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

OPTIMIZERS = ("sgd", "momentum", "adam")
RESUME_KEYS = ("model", "dataset", "batch_size", "lr", "optimizer", "momentum",
               "weight_decay", "seed", "val", "test", "widths", "label_column")


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
        if self.resume and not self.checkpoint_dir and self.resume is True:
            raise GraphcError("--resume needs --checkpoint-dir (or a checkpoint file path)")
        return self

    def make_optimizer(self):
        if self.optimizer == "adam":
            return optim.Adam(self.lr, weight_decay=self.weight_decay)
        momentum = self.momentum if self.optimizer == "momentum" else 0.0
        return optim.SGD(self.lr, momentum=momentum, weight_decay=self.weight_decay)

    def resume_identity(self) -> dict:
        d = asdict(self)
        out = {k: d[k] for k in RESUME_KEYS}
        out["widths"] = list(out["widths"]) if out["widths"] is not None else None
        return out


def from_model_defaults(spec, **overrides) -> TrainConfig:
    """A config with the model's default hyper-parameters, then ``overrides`` (not None)."""
    h = spec.defaults()
    base = {k: h[k] for k in ("epochs", "batch_size", "lr", "optimizer", "patience", "tol",
                              "val", "test") if k in h}
    if "widths" in h:
        base["widths"] = tuple(h["widths"])
    base["dataset"] = spec.dataset
    base["model"] = spec.name
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base).validate()
