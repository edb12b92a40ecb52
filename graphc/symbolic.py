"""The symbolic array every trace records through: data and the errors of a static graph.

:class:`SymbolicArray` holds a graph value and its trace context (shape and dtype are
static; values exist only in the graph) and refuses what a static graph cannot record
(``bool()``, ``int()``, ``np.asarray`` of a traced value).  Its numpy-style operators
live on the subclass :class:`graphc.tracing.Tracer`, which is built on the array
functions (``graphc.functions``); the functions themselves only need this base class,
so the two modules do not import each other.
"""
from __future__ import annotations

import linecache

from .ir import TraceError, Value
from .source import user_frame, user_source


def deepest_context(*xs):
    """The innermost trace context among the operands (None: no symbolic operand)."""
    ctx = None
    for x in xs:
        if isinstance(x, SymbolicArray) and (ctx is None or x.ctx.depth > ctx.depth):
            ctx = x.ctx
    return ctx


class SymbolicArray:
    """A symbolic array: shape and dtype are static, values exist only in the graph."""
    __array_priority__ = 1000
    __slots__ = ("value", "ctx")

    def __init__(self, value: Value, ctx):
        self.value, self.ctx = value, ctx

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    ndim = property(lambda self: len(self.value.shape))
    size = property(lambda self: self.value.size)

    def __repr__(self):
        return f"Tracer(%{self.value.name}: {self.value.type})"

    def __len__(self):
        if not self.shape:
            raise TraceError("len() of a 0-d traced value")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ---- what a static graph cannot record ------------------------------------------------
    def _concrete(self, what):
        f = user_frame()
        where = "<unknown>"
        if f is not None:
            code = linecache.getline(f.f_code.co_filename, f.f_lineno).strip()
            where = f"{user_source()}: {code}" if code else user_source()
        v = self.value
        raise TraceError(
            f"{what} needs the value of a traced array (%{v.name} = {v.node.op} ...: "
            f"{v.type}), at {where}\n"
            "Tracing records a static graph, not values, so data-dependent Python control "
            "flow cannot be traced: use gc.where(cond, a, b) for an elementwise choice, "
            "gc.maximum/gc.minimum for clamps, or make the condition a Python value known "
            "before tracing.")

    def __bool__(self):
        self._concrete("bool() (an `if`, `while`, `and`/`or` or `assert` on a tensor)")

    def __int__(self):
        self._concrete("int()")

    def __float__(self):
        self._concrete("float()")

    def __index__(self):
        self._concrete("using a traced value as an index")

    def __array__(self, dtype=None, copy=None):
        self._concrete("converting to a numpy array (np.asarray / np.array)")

    __hash__ = object.__hash__
