"""Emitter: appends IR nodes with one call per op -- how derivative rules and passes
write graphs (``E.mul(g, y)``), and what the tracer builds on."""
from __future__ import annotations

import numpy as np

from .graph import Graph, Value
from .registry import get_op


class Emitter:
    def __init__(self, graph: Graph, role: str = "forward", source: str | None = None,
                 before=None):
        """Nodes are appended to the schedule, or inserted before node ``before``."""
        self.graph, self.role, self.source, self.before = graph, role, source, before

    def op(self, name: str, *inputs: Value, **attrs) -> Value:
        return self.graph.add(name, inputs, attrs, self.role, self.source, before=self.before)

    def __getattr__(self, name):
        get_op(name)  # raises GraphcError for unknown ops
        return lambda *inputs, **attrs: self.op(name, *inputs, **attrs)

    # ---- helpers used by many rules ------------------------------------------------------
    def const(self, value, dtype, shape=()) -> Value:
        """A constant; a scalar is stored once and broadcast (no big literal in the IR)."""
        arr = np.asarray(value, dtype=dtype)
        if arr.ndim == 0 and tuple(shape) != ():
            return self.op("broadcast_to", self.op("constant", value=arr), shape=tuple(shape))
        return self.op("constant", value=np.broadcast_to(arr, shape).copy() if shape else arr)

    def full_like(self, x: Value, v) -> Value:
        return self.const(v, x.dtype, x.shape)

    def zeros_like(self, x: Value) -> Value:
        return self.full_like(x, 0)

    def broadcast(self, x: Value, shape) -> Value:
        shape = tuple(shape)
        return x if x.shape == shape else self.op("broadcast_to", x, shape=shape)

    def reshape(self, x: Value, shape) -> Value:
        shape = tuple(shape)
        return x if x.shape == shape else self.op("reshape", x, shape=shape)

    def sum_to(self, x: Value, shape) -> Value:
        """Undo a numpy broadcast of ``shape`` to ``x.shape`` by summing (VJP of broadcast)."""
        shape = tuple(shape)
        if x.shape == shape:
            return x
        lead = x.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1)
        y = self.op("sum", x, axes=axes, keepdims=False) if axes else x
        return self.reshape(y, shape)

    def add_maybe(self, a: Value | None, b: Value | None) -> Value | None:
        """Sum of two possibly-absent (zero) tangents."""
        if a is None:
            return b
        if b is None:
            return a
        return self.op("add", a, b)
