"""Losses and activations built from the array functions (so they trace and differentiate)."""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ..ir import ShapeError
from ..source import user_source
from ..tracing import Tracer

relu, sigmoid, tanh = F.relu, F.sigmoid, F.tanh


def softplus(x):
    """log(1 + e**x), stable: max(x, 0) + log1p(e**-|x|)."""
    return F.add(F.maximum(x, 0.0), F.log1p(F.exp(F.negative(F.abs(x)))))


def log_softmax(x, axis=-1):
    """x - logsumexp(x): the max is subtracted first so exp never overflows."""
    m = F.stop_gradient(F.max(x, axis, keepdims=True))
    z = F.subtract(x, m)
    return F.subtract(z, F.log(F.sum(F.exp(z), axis, keepdims=True)))


def softmax(x, axis=-1):
    m = F.stop_gradient(F.max(x, axis, keepdims=True))
    e = F.exp(F.subtract(x, m))
    return F.divide(e, F.sum(e, axis, keepdims=True))


def _check_labels(op, logits, labels):
    if np.shape(labels) != np.shape(logits)[:-1]:
        raise ShapeError(f"{op}: labels of shape {np.shape(labels)} do not match logits of "
                         f"shape {np.shape(logits)} (labels need the logits' shape without "
                         f"the class axis) (at {user_source()})")
    dtype = labels.dtype if isinstance(labels, Tracer) else np.asarray(labels).dtype
    if dtype.kind not in "iu":
        raise ShapeError(f"{op}: labels must be integer class indices, got {dtype} "
                         f"(at {user_source()})")


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy with integer class labels (mean over the batch)."""
    _check_labels("cross_entropy", logits, labels)
    logp = log_softmax(logits, -1)
    picked = F.sum(F.multiply(logp, F.one_hot(labels, np.shape(logits)[-1],
                                              logp.dtype, what="cross_entropy")), -1)
    return _reduce(F.negative(picked), reduction)


def mse(pred, target, reduction="mean"):
    d = F.subtract(pred, target)
    return _reduce(F.multiply(d, d), reduction)


def hinge(scores, labels, reduction="mean"):
    """Binary hinge loss max(0, 1 - y·s) for labels y in {-1, +1} (or {0, 1}, mapped).

    Integer/bool labels become ``+1 where label > 0 else -1``: right for both {0, 1} and
    {-1, +1}, without looking at the values (traced labels have none).
    """
    y = labels
    ldt = labels.dtype if isinstance(labels, Tracer) else np.asarray(labels).dtype
    if ldt.kind in "iub":
        sdt = np.dtype(scores.dtype)
        y = F.where(F.greater(labels, 0), F.cast(1, sdt), F.cast(-1, sdt))
    return _reduce(F.maximum(F.subtract(1.0, F.multiply(y, scores)), 0.0), reduction)


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Stable BCE: max(x,0) - x·t + log(1 + e**-|x|)."""
    t = F.cast(targets, np.dtype(logits.dtype)) if not isinstance(targets, float) else targets
    loss = F.add(F.subtract(F.maximum(logits, 0.0), F.multiply(logits, t)),
                 F.log1p(F.exp(F.negative(F.abs(logits)))))
    return _reduce(loss, reduction)


def _reduce(x, reduction):
    if reduction == "mean":
        return F.mean(x)
    if reduction == "sum":
        return F.sum(x)
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
