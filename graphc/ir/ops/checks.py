"""Run-time checks recorded in the graph: ``check_index`` (an identity on class labels and
indices that says which range they must lie in).

Out-of-range labels must never give a silently wrong number (``one_hot`` of label 10 with
10 classes is a row of zeros, a loss of 0) nor be used as an offset.  Tracing cannot see
values, so the op that needs the range (``one_hot``, ``cross_entropy``) records it as this
node; every backend checks the labels before anything runs (``graphc.backends.guard``)
and raises :class:`RangeError` naming the bad value, its position and the user's line.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, RangeError
from ..registry import register


def check_range(labels, limit: int, what: str, source: str | None = None) -> None:
    """Raise RangeError unless every element of ``labels`` is in ``[0, limit)``."""
    a = np.asarray(labels)
    if a.size == 0:
        return
    if a.dtype.kind in "iu":
        ok = int(a.min()) >= 0 and int(a.max()) < limit
    else:
        ok = bool(np.all((a >= 0) & (a < limit)))
    if ok:
        return
    flat = int(np.flatnonzero(~((a >= 0) & (a < limit)))[0])
    pos = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    at = f" (at {source})" if source else ""
    raise RangeError(f"{what}: label {a.reshape(-1)[flat]} at position {pos} is out of "
                     f"range [0, {limit}) ({limit} classes){at}")


def _check(attrs, ins):
    limit = attrs.get("limit")
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1:
        raise DTypeError(f"check_index: limit must be a positive int, got {limit!r}")
    return {"limit": int(limit), "what": str(attrs.get("what", "check_index"))}


def _infer(attrs, x):
    if x.dtype.kind not in "iu":
        raise DTypeError(f"{attrs['what']}: labels must be integers, got {x.dtype}")
    return x


register("check_index", "elementwise", _infer, check=_check,
         doc="identity on integer labels that must lie in [0, limit) (checked before a run)")
