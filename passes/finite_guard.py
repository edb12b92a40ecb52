"""``check_finite``: reject a training step whose loss or gradients are not finite, before
anything is written.

Two rewrites of the training-step graph, both plain IR (so every backend runs them):

* ``all_finite(graph, values)`` appends one flag: ``max(|x|)`` of each value (a fused
  reduction per gradient; NaN propagates through max, inf stays inf), the maxima combined
  with ``maximum`` (no overflow, unlike a sum) and compared ``< inf`` (false for NaN and
  for inf).
* ``select_updates(graph, ok)`` makes every in-place update ``where(ok, new, old)``: a
  rejected step writes back the old bytes, so parameters and optimizer state (momentum,
  Adam moments and step count) stay bit-exactly as they were and training can go on.

The flag is a graph output; the caller (``CompiledStep``) raises on it after the call.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import Emitter, Graph, Value


def all_finite(graph: Graph, values: list[Value]) -> Value:
    """A bool scalar: every element of every (float) value in ``values`` is finite."""
    E = Emitter(graph, "update")
    worst = None
    for v in values:
        if v.dtype.kind != "f" or v.size == 0:
            continue
        m = E.abs(v)
        if v.ndim:
            m = E.max(m, axes=None, keepdims=False)
        m = E.cast(m, dtype=np.float64) if m.dtype != np.float64 else m
        worst = m if worst is None else E.maximum(worst, m)
    if worst is None:
        return E.const(True, np.bool_)
    return E.lt(worst, E.const(np.inf, np.float64))


def select_updates(graph: Graph, ok: Value) -> Graph:
    """Every ``(old, new)`` in ``graph.updates`` becomes ``(old, where(ok, new, old))``
    (in place; returns ``graph``)."""
    E = Emitter(graph, "update")
    guarded = []
    for old, new in graph.updates:
        cond = E.broadcast(ok, old.shape)
        guarded.append((old, E.where(cond, new, old)))
    graph.updates = guarded
    return graph
