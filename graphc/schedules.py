"""Learning-rate schedules: functions of the update index (0 for the first update).

The compiled step takes its learning rate as a runtime input, so a schedule costs one
scalar store per step and never a recompile.  ``gc.optim.SGD(0.1, schedule=cosine(0.1,
1000))`` or ``step.lr_schedule = ...``; ``graphc train --lr-schedule cosine --warmup 100``.

Each schedule is a small object (callable, printable, ``to_dict`` for checkpoints and
JSON logs) following PyTorch's schedulers' formulas:

* ``constant(lr)``;
* ``step_decay(lr, step_size, gamma)``: lr · gamma^(t // step_size) (``StepLR``);
* ``cosine(lr, total_steps, min_lr)``: min_lr + (lr - min_lr)(1 + cos(π t / T)) / 2
  (``CosineAnnealingLR``), held at min_lr after T;
* ``warmup(inner, warmup_steps)``: lr rising linearly to ``inner(0)`` over the first
  ``warmup_steps`` updates ((t + 1) / warmup_steps of it), then ``inner(t - warmup_steps)``.
"""
from __future__ import annotations

import math

from .ir import GraphcError

SCHEDULES = ("constant", "step", "cosine")


def _positive(name, v, allow_zero=False):
    try:
        ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    except TypeError:
        ok = False
    if not ok:
        raise GraphcError(f"schedule: {name} must be a {'non-negative' if allow_zero else 'positive'}"
                          f" number, got {v!r}")
    return v


class Schedule:
    kind = "schedule"

    def __call__(self, t: int) -> float:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: v for k, v in vars(self).items()
                                      if not isinstance(v, Schedule)},
                **{k: v.to_dict() for k, v in vars(self).items() if isinstance(v, Schedule)}}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{self.kind}({args})"


class constant(Schedule):
    kind = "constant"

    def __init__(self, lr):
        self.lr = _positive("lr", lr)

    def __call__(self, t):
        return self.lr


class step_decay(Schedule):
    kind = "step"

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _positive("lr", lr)
        self.step_size = int(_positive("step_size", step_size))
        self.gamma = _positive("gamma", gamma)

    def __call__(self, t):
        return self.lr * self.gamma ** (int(t) // self.step_size)


class cosine(Schedule):
    kind = "cosine"

    def __init__(self, lr, total_steps, min_lr=0.0):
        self.lr = _positive("lr", lr)
        self.total_steps = int(_positive("total_steps", total_steps))
        self.min_lr = _positive("min_lr", min_lr, allow_zero=True)
        if self.min_lr > self.lr:
            raise GraphcError(f"schedule: min_lr {min_lr} is above lr {lr}")

    def __call__(self, t):
        t = min(int(t), self.total_steps)
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t /
                                                                     self.total_steps)) / 2


class warmup(Schedule):
    kind = "warmup"

    def __init__(self, inner, warmup_steps):
        if not callable(inner):
            inner = constant(inner)
        self.inner = inner
        self.warmup_steps = int(_positive("warmup_steps", warmup_steps, allow_zero=True))

    def __call__(self, t):
        t = int(t)
        if t < self.warmup_steps:
            return self.inner(0) * (t + 1) / self.warmup_steps
        return self.inner(t - self.warmup_steps)


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0,
                  step_size: int = 0, gamma: float = 0.1, min_lr: float = 0.0) -> Schedule:
    """The CLI's schedule: ``name`` in SCHEDULES, with linear warm-up when asked."""
    if name not in SCHEDULES:
        raise GraphcError(f"unknown lr schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    after = max(int(total_steps) - int(warmup_steps), 1)
    if name == "constant":
        s = constant(lr)
    elif name == "step":
        if not step_size:
            raise GraphcError("--lr-schedule step needs --lr-step N (epochs between decays)")
        s = step_decay(lr, step_size, gamma)
    else:
        s = cosine(lr, after, min_lr)
    return warmup(s, warmup_steps) if warmup_steps else s
