"""Optimizers as IR: each emits its update rule into the training-step graph.

The learning rate is a runtime input of the compiled step (``opt.lr``, 0-d): a schedule
(``schedule=``, see ``graphc.schedules``) or ``step.lr = x`` changes it between calls with
no recompile.  The other hyper-parameters are constants in the graph; the state (momentum
buffers, Adam moments and step count) lives in graph inputs that the step updates in place.
``clip_grad_norm=`` clips the gradients by their global norm inside the step (a graph op
of the optimizer pass).  Semantics follow PyTorch's SGD and Adam/AdamW so benchmarks
compare like with like.
"""
from __future__ import annotations

import math

import numpy as np

from .ir import GraphcError
from .passes.optimizer import LR_INPUT
from .schedules import Schedule, constant, cosine, step_decay, warmup  # noqa: F401


def _number(opt, name, v, lo=None, hi=None, lo_open=False, hi_open=True):
    """``v`` as a float if it is a finite real number within the bounds, else GraphcError.

    Hyper-parameters become constants of the compiled graph: a NaN learning rate would
    turn every parameter into NaN on the first step, silently."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                             np.floating)):
        raise GraphcError(f"{opt}: {name} must be a real number, got {type(v).__name__} "
                          f"{v!r}")
    x = float(v)
    bad = not math.isfinite(x)
    if lo is not None:
        bad = bad or (x <= lo if lo_open else x < lo)
    if hi is not None:
        bad = bad or (x >= hi if hi_open else x > hi)
    if bad:
        rng = (("(" if lo_open else "[") + f"{lo}, " if lo is not None else "(-inf, ") + \
            (f"{hi}" + (")" if hi_open else "]") if hi is not None else "inf)")
        raise GraphcError(f"{opt}: {name}={v!r} is out of range; it must be a finite "
                          f"number in {rng}")
    return x


def _scalar(E, v, like):
    return E.const(v, like.dtype, like.shape)


class Optimizer:
    lr_input = True              # the learning rate is a graph input (see module docstring)
    schedule = None              # step index -> learning rate, or None (constant lr)
    clip_grad_norm = None        # max global gradient norm, or None

    def _extras(self, schedule, clip_grad_norm):
        if schedule is not None and not callable(schedule):
            raise GraphcError(f"{type(self).__name__}: schedule must be a function of the "
                              f"step index (e.g. gc.optim.cosine(...)), got {schedule!r}")
        if clip_grad_norm is not None and not (np.isfinite(clip_grad_norm)
                                               and clip_grad_norm > 0):
            raise GraphcError(f"{type(self).__name__}: clip_grad_norm must be a positive "
                              f"number, got {clip_grad_norm}")
        self.schedule, self.clip_grad_norm = schedule, clip_grad_norm

    def shared_state(self):
        return []

    def param_state(self, p):
        return []

    def emit_shared(self, E, shared):
        return []

    def init_state(self, graph_state_inputs):
        """Initial arrays for the state inputs ``append_update`` created."""
        out = []
        for v in graph_state_inputs:
            first = self.schedule(0) if self.schedule is not None else self.lr
            out.append(np.full(v.shape, first, v.dtype) if v.name == LR_INPUT
                       else np.zeros(v.shape, v.dtype))
        return out

    def _lr(self, E, lr, p):
        """The learning rate broadcast like ``p``: the graph input, or a constant."""
        return _scalar(E, self.lr, p) if lr is None else E.broadcast(lr, p.shape)


class SGD(Optimizer):
    """p -= lr * d, d = g + wd·p (+ momentum buffer v = mu·v + d; nesterov: d + mu·v)."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, *, schedule=None,
                 clip_grad_norm=None):
        self._extras(schedule, clip_grad_norm)
        lr = _number("SGD", "lr", lr, 0, lo_open=True)
        momentum = _number("SGD", "momentum", momentum, 0, 1, hi_open=False)
        weight_decay = _number("SGD", "weight_decay", weight_decay, 0)
        if nesterov and momentum == 0:
            raise GraphcError("SGD: nesterov needs momentum > 0")
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, \
            weight_decay

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay})")

    def param_state(self, p):
        return [("momentum", np.zeros(p.shape, p.dtype))] if self.momentum else []

    def emit(self, E, p, g, state, shared, lr=None):
        if self.weight_decay:
            g = E.add(g, E.mul(_scalar(E, self.weight_decay, p), p))
        new_state = []
        if self.momentum:
            (buf,) = state
            buf = E.add(E.mul(_scalar(E, self.momentum, p), buf), g)
            new_state = [buf]
            g = E.add(g, E.mul(_scalar(E, self.momentum, p), buf)) if self.nesterov else buf
        return E.sub(p, E.mul(self._lr(E, lr, p), g)), new_state


class Adam(Optimizer):
    """Adam with bias correction; ``decoupled=True`` (or AdamW) applies weight decay to
    the parameter directly instead of adding it to the gradient."""

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False, *,
                 schedule=None, clip_grad_norm=None):
        self._extras(schedule, clip_grad_norm)
        name = "AdamW" if decoupled else "Adam"
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise GraphcError(f"{name}: betas must be a pair (beta1, beta2), got "
                              f"{betas!r}") from None
        lr = _number(name, "lr", lr, 0, lo_open=True)
        b1 = _number(name, "betas[0]", b1, 0, 1)
        b2 = _number(name, "betas[1]", b2, 0, 1)
        eps = _number(name, "eps", eps, 0, lo_open=True)
        weight_decay = _number(name, "weight_decay", weight_decay, 0)
        if decoupled and lr * weight_decay >= 1:
            raise GraphcError(f"{name}: lr * weight_decay = {lr * weight_decay} must be < 1 "
                              "(decoupled decay multiplies the weights by 1 - lr*wd)")
        self.lr, self.betas, self.eps = lr, (b1, b2), eps
        self.weight_decay, self.decoupled = weight_decay, decoupled

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")

    def shared_state(self):
        return [("step", np.zeros((), np.float32))]

    def param_state(self, p):
        return [("m", np.zeros(p.shape, p.dtype)), ("v", np.zeros(p.shape, p.dtype))]

    def emit_shared(self, E, shared):
        (t,) = shared
        return [E.add(t, E.const(1.0, t.dtype))]

    def emit(self, E, p, g, state, shared, lr=None):
        (t,) = shared
        b1, b2 = self.betas
        m, v = state
        if self.weight_decay and not self.decoupled:
            g = E.add(g, E.mul(_scalar(E, self.weight_decay, p), p))
        m = E.add(E.mul(_scalar(E, b1, p), m), E.mul(_scalar(E, 1 - b1, p), g))
        v = E.add(E.mul(_scalar(E, b2, p), v), E.mul(_scalar(E, 1 - b2, p), E.mul(g, g)))
        # Scalar bias corrections, computed once per step (in the step's dtype).
        tt = E.cast(t, dtype=p.dtype) if t.dtype != p.dtype else t
        one = E.const(1.0, p.dtype)
        lr0 = E.const(self.lr, p.dtype) if lr is None else lr
        c1 = E.div(lr0, E.sub(one, E.pow(E.const(b1, p.dtype), tt)))
        c2 = E.div(one, E.sub(one, E.pow(E.const(b2, p.dtype), tt)))
        denom = E.add(E.sqrt(E.mul(v, E.broadcast(c2, p.shape))), _scalar(E, self.eps, p))
        upd = E.div(E.mul(m, E.broadcast(c1, p.shape)), denom)
        if self.weight_decay and self.decoupled:       # p * (1 - lr * wd)
            keep = E.sub(one, E.mul(lr0, E.const(self.weight_decay, p.dtype)))
            p = E.mul(p, E.broadcast(keep, p.shape))
        return E.sub(p, upd), [m, v]


class AdamW(Adam):
    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, *, schedule=None,
                 clip_grad_norm=None):
        super().__init__(lr, betas, eps, weight_decay, decoupled=True, schedule=schedule,
                         clip_grad_norm=clip_grad_norm)
