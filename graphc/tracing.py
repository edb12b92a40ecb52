"""Tracing: run ordinary Python on Tracer tensors and record every op into a Graph.

A ``TraceContext`` owns the graph being built.  Tracers of an enclosing trace that a
nested trace meets (closures inside ``gc.grad(f)`` called while tracing) are *captured*
as extra inputs of the inner graph, so the inner graph can be differentiated alone and
then inlined back into the outer one with the captures bound to the outer tracers.
"""
from __future__ import annotations

import itertools
import linecache

import numpy as np

from . import functions as F
from . import pytree
from .ir import ArgumentError, Emitter, Graph, GraphcError, TraceError, Value
from .ir import dtypes as dt
from .source import user_frame, user_source
from .symbolic import SymbolicArray, deepest_context  # noqa: F401  (re-exported)


_creation = itertools.count()


class TraceContext:
    """One graph under construction.  ``depth`` orders contexts by creation: a context
    created while another is tracing is nested inside it, so it is deeper."""

    def __init__(self, name="graph"):
        self.graph = Graph(name)
        self.depth = next(_creation)
        # outer Value -> (outer Tracer, inner input Value), in capture order
        self.captures: dict[Value, tuple["Tracer", Value]] = {}
        self.active = False            # True while trace_into runs the function
        # random numbers (dropout): compile_step sets ``rng_input`` so that the first
        # random op adds an int64[2] (seed, step) input it feeds every step; elsewhere
        # the key is a constant (seed 0, step 0).  Each random op takes the next salt.
        self.rng_input = False
        self._rng_key = None
        self._salts = itertools.count(1)

    def rng_key(self) -> tuple[Value, int]:
        """(the (seed, step) key value, a fresh salt) for one random op."""
        if self._rng_key is None:
            if self.rng_input:
                self._rng_key = self.graph.add_input((2,), dt.int64, "rng", "data")
            else:
                self._rng_key = self.const(np.zeros(2, np.int64))
        return self._rng_key, next(self._salts)

    def escaped(self, what: str) -> TraceError:
        return TraceError(f"a traced value escaped the function that traced it ({what}), "
                          f"at {user_source() or '<unknown>'}; return it from the function "
                          "instead of storing it")

    def emit(self, op: str, *inputs: Value, **attrs) -> "Tracer":
        if not self.active:
            raise self.escaped(f"op '{op}'" + "".join(f" %{x.name}: {x.type}"
                                                      for x in inputs))
        src = user_source()
        try:
            v = Emitter(self.graph, "forward", src).op(op, *inputs, **attrs)
        except GraphcError as e:
            f = user_frame()
            text = linecache.getline(f.f_code.co_filename, f.f_lineno).strip() if f else ""
            raise type(e)(f"{e}\n    {text}" if text else str(e)) from None
        return Tracer(v, self)

    def wrap(self, v: Value) -> "Tracer":
        """A tracer of this context for a value of its graph."""
        return Tracer(v, self)

    def new_input(self, shape, dtype, name, kind="data") -> "Tracer":
        return Tracer(self.graph.add_input(shape, dtype, name, kind), self)

    def capture(self, t: "Tracer") -> Value:
        """The value of a tracer from an enclosing trace, as an input of this one."""
        if t.ctx is self:
            return t.value
        if t.ctx.depth > self.depth or not t.ctx.active:
            raise self.escaped(f"%{t.value.name}: {t.value.type}")
        if t.value not in self.captures:
            v = self.graph.add_input(t.shape, t.dtype, "capture_" + t.value.name, "data")
            self.captures[t.value] = (t, v)
        return self.captures[t.value][1]

    def const(self, value, dtype=None) -> Value:
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype.kind == "f" and arr.dtype not in dt.FLOATS:
            arr = arr.astype(dt.float32)
        if arr.dtype.kind == "U" or arr.dtype == object:
            raise TraceError(f"cannot use {type(value).__name__} {value!r} as an array "
                             f"(at {user_source()})")
        return self.emit("constant", value=arr).value

    def lift(self, x, dtype=None) -> Value:
        """Any operand (tracer, array, Python scalar) as a Value of this graph."""
        if isinstance(x, Tracer):
            return self.capture(x)
        return self.const(x, dtype)


class Tracer(SymbolicArray):
    """A symbolic array with numpy's operators and methods (each an array function)."""
    __slots__ = ()
    T = property(lambda self: F.transpose(self))
    __hash__ = SymbolicArray.__hash__     # defining __eq__ below would reset it

    # ---- operators ----------------------------------------------------------------------
    def __add__(self, o): return F.add(self, o)
    def __radd__(self, o): return F.add(o, self)
    def __sub__(self, o): return F.subtract(self, o)
    def __rsub__(self, o): return F.subtract(o, self)
    def __mul__(self, o): return F.multiply(self, o)
    def __rmul__(self, o): return F.multiply(o, self)
    def __truediv__(self, o): return F.divide(self, o)
    def __rtruediv__(self, o): return F.divide(o, self)
    def __floordiv__(self, o): return F.floor_divide(self, o)
    def __rfloordiv__(self, o): return F.floor_divide(o, self)
    def __mod__(self, o): return F.remainder(self, o)
    def __rmod__(self, o): return F.remainder(o, self)
    def __divmod__(self, o): return F.floor_divide(self, o), F.remainder(self, o)
    def __rdivmod__(self, o): return F.floor_divide(o, self), F.remainder(o, self)
    def __pow__(self, o): return F.power(self, o)
    def __rpow__(self, o): return F.power(o, self)
    def __matmul__(self, o): return F.matmul(self, o)
    def __rmatmul__(self, o): return F.matmul(o, self)
    def __neg__(self): return F.negative(self)
    def __pos__(self): return self
    def __abs__(self): return F.abs(self)
    def __lt__(self, o): return F.less(self, o)
    def __le__(self, o): return F.less_equal(self, o)
    def __gt__(self, o): return F.greater(self, o)
    def __ge__(self, o): return F.greater_equal(self, o)
    def __eq__(self, o): return F.equal(self, o)
    def __ne__(self, o): return F.not_equal(self, o)
    def __and__(self, o): return F.logical_and(self, o)
    def __or__(self, o): return F.logical_or(self, o)
    def __invert__(self): return F.logical_not(self)
    def __getitem__(self, idx): return F.getitem(self, idx)

    # ---- methods --------------------------------------------------------------------------
    def reshape(self, *shape):
        return F.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return F.transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return F.max(self, axis, keepdims=keepdims)
    def min(self, axis=None, keepdims=False): return F.min(self, axis, keepdims=keepdims)
    def astype(self, dtype): return F.cast(self, dtype)
    def flatten(self): return F.reshape(self, (-1,))
    def dot(self, o): return F.matmul(self, o)
    def squeeze(self, axis=None): return F.squeeze(self, axis)
    def clip(self, lo=None, hi=None): return F.clip(self, lo, hi)

    # ---- numpy's own functions on tracers ------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return F.dispatch_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return F.dispatch_function(func, args, kwargs)


def trace_into(ctx: TraceContext, fn, args, kinds=None, names=None):
    """Call ``fn(*args)`` on tracers for the array leaves of ``args``; record outputs.

    Returns (input tracers, output treedef).  ``kinds``/``names`` give per-leaf input kinds
    and names (default: data, named by argument name and pytree path).
    """
    leaves, treedef = pytree.flatten(list(args))
    names = names or pytree.paths(treedef)
    tracers = []
    for i, (leaf, name) in enumerate(zip(leaves, names)):
        if isinstance(leaf, Tracer):
            shape, dtype = leaf.shape, leaf.dtype
        else:
            arr = np.asarray(leaf, dtype=np.float32 if type(leaf) is float else None)
            if arr.dtype == np.float16 or arr.dtype.kind not in "fiub":
                raise ArgumentError(f"argument {name} is not an array of a supported dtype "
                                    f"(got {type(leaf).__name__} {getattr(arr, 'dtype', '')})")
            if arr.dtype.kind == "u" or (arr.dtype.kind == "i" and arr.dtype.itemsize < 4):
                arr = arr.astype(np.int64)
            shape, dtype = arr.shape, arr.dtype
        tracers.append(ctx.new_input(shape, dtype, name, kinds[i] if kinds else "data"))
    ctx.active = True
    try:
        out = fn(*pytree.unflatten(treedef, tracers))
        out_leaves, out_tree = pytree.flatten(out)
        outs = []
        for o in out_leaves:
            if isinstance(o, Tracer):
                outs.append(ctx.capture(o))
            else:
                outs.append(ctx.const(o))
    finally:
        ctx.active = False
    ctx.graph.set_outputs(outs)
    return tracers, out_tree


def arg_names(fn, nargs) -> list[str]:
    """Parameter names of ``fn`` for readable input names (``x``, ``params.w1``)."""
    import inspect
    try:
        ps = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        ps = []
    return [ps[i] if i < len(ps) else f"arg{i}" for i in range(nargs)]


def leaf_names(fn, args) -> list[str]:
    names = []
    for name, a in zip(arg_names(fn, len(args)), args):
        names.extend(pytree.paths(pytree.flatten(a)[1], name))
    return names


