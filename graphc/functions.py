"""The numpy-style array functions (``gc.exp``, ``gc.sum``, ``gc.matmul`` ...).

On Tracers they record IR nodes, inserting the explicit ``cast`` and ``broadcast_to``
nodes that numpy's promotion and broadcasting imply (IR elementwise ops take operands of
one shape and dtype).  On plain arrays they simply call numpy, so the same model code
runs eagerly.  ``dispatch_ufunc``/``dispatch_function`` route numpy's own functions
(``np.tanh(t)``, ``np.sum(t, axis=1)``) here.
"""
from __future__ import annotations

import builtins

import numpy as np

from .ir import DTypeError, ShapeError, TraceError
from .ir import dtypes as dt
from .ir.limits import refuse_too_big
from .ir.ops.checks import check_range
from .ir.ops.shape import broadcast_shapes
from .source import describe, user_source
from .symbolic import SymbolicArray as Tracer, deepest_context

# ---- operand preparation ---------------------------------------------------------------------


def _is_weak(x):
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def result_dtype(*xs, floating=False):
    """numpy promotion, with Python scalars weak (they take the array's dtype)."""
    strong = [x.dtype if isinstance(x, Tracer) else np.asarray(x).dtype
              for x in xs if not _is_weak(x)]
    strong = [dt.float32 if d == np.float16 else d for d in strong]
    res = np.result_type(*strong) if strong else np.dtype(np.float32)
    weak_float = any(isinstance(x, float) for x in xs if _is_weak(x))
    if (floating or weak_float) and res.kind != "f":
        res = dt.float32
    if res.kind == "b" and any(isinstance(x, int) and not isinstance(x, bool)
                               for x in xs if _is_weak(x)):
        res = dt.int64
    if res.kind in "iu" and res not in dt.INTS:
        res = dt.int64
    return dt.as_dtype(res)


def _prep(ctx, xs, dtype=None, floating=False, shape=None, op=None):
    """Lift operands into ``ctx``'s graph with a common dtype and broadcast shape."""
    try:
        dtype = dtype or result_dtype(*xs, floating=floating)
    except DTypeError as e:
        raise DTypeError(f"{op or 'operands'}: {e} (at {user_source()})") from None
    vals = []
    for x in xs:
        v = ctx.lift(x, dtype if not isinstance(x, Tracer) else None)
        if v.dtype != dtype:
            v = ctx.emit("cast", v, dtype=dtype).value
        vals.append(v)
    if shape is None:
        try:
            shape = broadcast_shapes(*[v.shape for v in vals])
        except ShapeError as e:
            what = f"{op}: " if op else ""
            raise ShapeError(f"{what}{e} (in op '{op or 'broadcast'}' with operands "
                             + ", ".join(str(v.type) for v in vals)
                             + f"\n  at {describe(user_source())})") from None
    return [v if v.shape == shape else ctx.emit("broadcast_to", v, shape=shape).value
            for v in vals]


def _elementwise(op, *xs, dtype=None, floating=False):
    ctx = deepest_context(*xs)
    if ctx is None:
        return _eager(op, xs, dtype, floating)
    return ctx.emit(op, *_prep(ctx, xs, dtype, floating, op=op))


def _eager(op, xs, dtype, floating):
    """``op`` on arrays, outside any trace: the numpy backend's own implementation of the
    op (the oracle's table, not a copy of it), on operands promoted and broadcast as the
    tracer would, so eager and traced results agree."""
    from .backends.numpy_backend import IMPLS     # imports only numpy and graphc.ir
    dtype = dtype or result_dtype(*xs, floating=floating)
    arrays = np.broadcast_arrays(*[np.asarray(x, dtype=dtype) for x in xs])
    out = IMPLS[op]({}, *arrays)
    return out[()] if isinstance(out, np.ndarray) and out.ndim == 0 else out


def apply(op, x, **attrs):
    """One IR op ``op`` on one operand: recorded when ``x`` is traced, else computed by
    the numpy backend's implementation, with ``attrs`` normalised by the op's own check
    and the operand validated by its shape rule (the same errors as when tracing)."""
    if isinstance(x, Tracer):
        return x.ctx.emit(op, x.value, **attrs)
    from .backends.numpy_backend import IMPLS     # imports only numpy and graphc.ir
    from .ir import GraphcError, TensorType, get_op
    x = np.asarray(x)
    opdef = get_op(op)
    try:
        t = TensorType(x.shape, x.dtype)
        attrs = opdef.check_attrs(attrs, [t])
        opdef.infer(attrs, t)
    except GraphcError as e:
        raise type(e)(f"{e} (in op '{op}' at {user_source()})") from None
    return IMPLS[op](attrs, x)


def _wrap(v, ctx):
    return ctx.wrap(v)


# ---- elementwise -------------------------------------------------------------------------------
def add(x, y): return _elementwise("add", x, y)
def subtract(x, y): return _elementwise("sub", x, y)
def multiply(x, y): return _elementwise("mul", x, y)
def divide(x, y): return _elementwise("div", x, y, floating=True)
def maximum(x, y): return _elementwise("maximum", x, y)
def minimum(x, y): return _elementwise("minimum", x, y)
def less(x, y): return _elementwise("lt", x, y)
def less_equal(x, y): return _elementwise("le", x, y)
def greater(x, y): return _elementwise("gt", x, y)
def greater_equal(x, y): return _elementwise("ge", x, y)
def equal(x, y): return _elementwise("eq", x, y)
def not_equal(x, y): return _elementwise("ne", x, y)
def logical_and(x, y): return _elementwise("logical_and", x, y, dtype=dt.bool_)
def logical_or(x, y): return _elementwise("logical_or", x, y, dtype=dt.bool_)
def logical_not(x): return _elementwise("logical_not", x, dtype=dt.bool_)


def floor_divide(x, y): return _elementwise("floor_divide", x, y)
def remainder(x, y): return _elementwise("remainder", x, y)


mod = remainder


def power(x, y):
    if isinstance(x, Tracer) and _is_weak(y) and not isinstance(y, bool):
        if y == 1:
            return x
        if y == 2:
            return multiply(x, x)
    return _elementwise("pow", x, y, floating=True)


def negative(x): return _elementwise("neg", x)
def abs(x): return _elementwise("abs", x)
def sign(x): return _elementwise("sign", x)
def exp(x): return _elementwise("exp", x, floating=True)
def log(x): return _elementwise("log", x, floating=True)
def tanh(x): return _elementwise("tanh", x, floating=True)
def erf(x): return _elementwise("erf", x, floating=True)
def sqrt(x): return _elementwise("sqrt", x, floating=True)
def square(x): return multiply(x, x)
def log1p(x): return _elementwise("log1p", x, floating=True)
def expm1(x): return subtract(exp(x), 1.0)
def reciprocal(x): return divide(1.0, x)


def sigmoid(x): return _elementwise("sigmoid", x, floating=True)


def relu(x):
    return _elementwise("relu", x)


def stop_gradient(x):
    return _elementwise("stop_gradient", x)


def clip(x, lo=None, hi=None):
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x


def where(cond, x, y):
    ctx = deepest_context(cond, x, y)
    if ctx is None:
        return np.where(cond, x, y)
    c = cond if isinstance(cond, Tracer) and cond.dtype == dt.bool_ else not_equal(cond, 0)
    try:
        shape = broadcast_shapes(c.shape, np.shape(x), np.shape(y))
    except ShapeError as e:
        raise ShapeError(f"where: {e} (in op 'where'\n  at {describe(user_source())})") from None
    (cv,) = _prep(ctx, [c], dtype=dt.bool_, shape=shape)
    xv, yv = _prep(ctx, [x, y], shape=shape)
    return ctx.emit("where", cv, xv, yv)


def cast(x, dtype):
    try:
        dtype = dt.as_dtype(dtype)
    except DTypeError as e:
        raise DTypeError(f"cast: {e} (at {user_source()})") from None
    if not isinstance(x, Tracer):
        return np.asarray(x).astype(dtype)
    return x if x.dtype == dtype else x.ctx.emit("cast", x.value, dtype=dtype)


astype = cast


def zeros_like(x, dtype=None):
    if not isinstance(x, Tracer):
        return np.zeros_like(x, dtype=dtype)
    return full(x.shape, 0, dtype or x.dtype, like=x)


def ones_like(x, dtype=None):
    if not isinstance(x, Tracer):
        return np.ones_like(x, dtype=dtype)
    return full(x.shape, 1, dtype or x.dtype, like=x)


def _count(shape) -> int:
    """Elements of ``shape`` as a Python int (no int64 overflow for absurd shapes)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def full(shape, value, dtype=dt.float32, like=None):
    if not isinstance(like, Tracer):
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        refuse_too_big(np.dtype(dt.as_dtype(dtype)).itemsize * _count(shape),
                       f"full{shape}", describe(user_source()))
        return np.full(shape, value, dtype=dtype)
    c = like.ctx.const(value, dt.as_dtype(dtype))
    return like.ctx.emit("broadcast_to", c, shape=tuple(shape)) if tuple(shape) else like.ctx.wrap(c)


# ---- reductions ---------------------------------------------------------------------------------
def _reduce(op, np_fn, x, axis, keepdims):
    if not isinstance(x, Tracer):
        return np_fn(x, axis=axis, keepdims=keepdims)
    v = x.value
    if v.dtype == dt.bool_:
        v = x.ctx.emit("cast", v, dtype=dt.int64).value
    return x.ctx.emit(op, v, axes=axis, keepdims=keepdims)


def sum(x, axis=None, keepdims=False, dtype=None):
    out = _reduce("sum", np.sum, x, axis, keepdims)
    return cast(out, dtype) if dtype is not None else out


def max(x, axis=None, keepdims=False):
    return _reduce("max", np.max, x, axis, keepdims)


amax = max


def min(x, axis=None, keepdims=False):
    if not isinstance(x, Tracer):
        return np.min(x, axis=axis, keepdims=keepdims)
    return negative(max(negative(x), axis, keepdims))


amin = min


def mean(x, axis=None, keepdims=False, dtype=None):
    if not isinstance(x, Tracer):
        return np.mean(x, axis=axis, keepdims=keepdims, dtype=dtype)
    axes = range(x.ndim) if axis is None else \
        [a % builtins.max(x.ndim, 1) for a in ((axis,) if isinstance(axis, int) else axis)]
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if x.ndim else 1
    if n == 0:
        raise ShapeError(f"mean over an empty axis (axis {axis} of shape {x.shape}) is "
                         f"undefined (numpy gives nan) (at {describe(user_source())})")
    s = sum(x, axis, keepdims)
    if not isinstance(s, Tracer):
        return s
    s = cast(s, dtype) if dtype is not None else s
    if s.dtype.kind != "f":
        s = cast(s, dt.float32)
    return multiply(s, 1.0 / n) if n != 1 else s


def var(x, axis=None, keepdims=False):
    d = subtract(x, mean(x, axis, keepdims=True))
    return mean(multiply(d, d), axis, keepdims)


def logsumexp(x, axis=None, keepdims=False):
    m = stop_gradient(max(x, axis, keepdims=True))
    out = add(log(sum(exp(subtract(x, m)), axis, keepdims=True)), m)
    if not keepdims:
        out = squeeze(out, axis if axis is not None else tuple(range(np.ndim(x))))
    return out


# ---- shapes ------------------------------------------------------------------------------------------
def _resolve_shape(shape, size):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: more than one -1 in {shape} (at {user_source()})")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ShapeError(f"reshape: cannot reshape {size} elements to {shape} "
                             f"(at {user_source()})")
        shape = tuple(size // known if d == -1 else d for d in shape)
    return shape


def reshape(x, shape):
    if not isinstance(x, Tracer):
        return np.reshape(x, shape)
    shape = _resolve_shape(shape, x.size)
    return x if shape == x.shape else x.ctx.emit("reshape", x.value, shape=shape)


def transpose(x, axes=None):
    if not isinstance(x, Tracer):
        return np.transpose(x, axes)
    if x.ndim < 2 and axes is None:
        return x
    return x.ctx.emit("transpose", x.value, perm=axes)


def swapaxes(x, a, b):
    perm = list(range(np.ndim(x)))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, tuple(perm))


def broadcast_to(x, shape):
    ctx = deepest_context(x)
    if ctx is None:
        return np.broadcast_to(x, shape)
    v = ctx.lift(x)
    return ctx.emit("broadcast_to", v, shape=tuple(shape)) if v.shape != tuple(shape) \
        else ctx.wrap(v)


def expand_dims(x, axis):
    shape = list(np.shape(x))
    axes = (axis,) if isinstance(axis, int) else axis
    for a in sorted(a % (len(shape) + len(axes)) for a in axes):
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def squeeze(x, axis=None):
    shape = np.shape(x)
    if axis is None:
        axes = {i for i, d in enumerate(shape) if d == 1}
    else:
        axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
        if any(shape[a] != 1 for a in axes):
            raise ShapeError(f"squeeze: axis {axis} of shape {shape} is not 1 (at {user_source()})")
    return reshape(x, tuple(d for i, d in enumerate(shape) if i not in axes))


def concatenate(xs, axis=0):
    xs = list(xs)
    ctx = deepest_context(*xs)
    if ctx is None:
        return np.concatenate(xs, axis=axis)
    dtype = result_dtype(*xs)
    vals = [ctx.lift(x, dtype if not isinstance(x, Tracer) else None) for x in xs]
    vals = [v if v.dtype == dtype else ctx.emit("cast", v, dtype=dtype).value for v in vals]
    return ctx.emit("concatenate", *vals, axis=axis)


def stack(xs, axis=0):
    return concatenate([expand_dims(x, axis) for x in xs], axis=axis)


def getitem(x, idx):
    """Basic indexing: ints, slices (positive steps), None and Ellipsis."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    arrays = [k for k, i in enumerate(idx) if _is_index_array(i)]
    if len(arrays) == 1 and all(isinstance(i, slice) and i == slice(None)
                                for i in idx[:arrays[0]]) and \
            all(isinstance(i, slice) and i == slice(None) for i in idx[arrays[0] + 1:]):
        return take(x, idx[arrays[0]], axis=arrays[0])
    for i in idx:
        if isinstance(i, (Tracer, list, np.ndarray)) or (isinstance(i, slice) and any(
                isinstance(s, Tracer) for s in (i.start, i.stop, i.step))):
            raise TraceError(f"this advanced index is not supported by the tracer (at "
                             f"{user_source()}); one integer array, after full slices "
                             "only (t[idx], t[:, idx]), is a gather (gc.take)")

    def _int(i):
        return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))
    for i in idx:
        ok = (i is None or i is Ellipsis or _int(i) or (isinstance(i, slice) and all(
            s is None or _int(s) for s in (i.start, i.stop, i.step))))
        if not ok:
            raise TraceError(f"only integers, slices (of integers), None and Ellipsis are "
                             f"valid indices, got {i!r} (at {user_source()})")
    if builtins.sum(i is Ellipsis for i in idx) > 1:
        raise ShapeError(f"an index can only have a single ellipsis ('...') "
                         f"(at {user_source()})")
    n_real = len([i for i in idx if i is not None and i is not Ellipsis])
    if n_real > x.ndim:
        raise ShapeError(f"too many indices ({n_real}) for a {x.ndim}-d array of shape "
                         f"{x.shape} (at {user_source()})")
    if Ellipsis in idx:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (x.ndim - n_real) + idx[k + 1:]
    else:
        idx = idx + (slice(None),) * (x.ndim - n_real)
    starts, stops, steps, out_shape, axis = [], [], [], [], 0
    for i in idx:
        if i is None:
            out_shape.append(1)
            continue
        d = x.shape[axis]
        if isinstance(i, slice):
            a, b, s = i.indices(d)
            if s <= 0:
                raise TraceError(f"slices with negative steps are not supported "
                                 f"(at {user_source()})")
            b = builtins.max(a, b)
            starts.append(a), stops.append(b), steps.append(s)
            out_shape.append(len(range(a, b, s)))
        else:
            k = int(i)
            if not -d <= k < d:
                raise ShapeError(f"index {k} is out of bounds for axis {axis} of size {d} "
                                 f"(at {user_source()})")
            k %= d
            starts.append(k), stops.append(k + 1), steps.append(1)
        axis += 1
    v = x.value
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, x.shape, (1,) * x.ndim):
        v = x.ctx.emit("slice", v, starts=starts, stops=stops, steps=steps).value
    return reshape(x.ctx.wrap(v), tuple(out_shape))


# ---- gathers -----------------------------------------------------------------------------
def _is_index_array(i):
    if isinstance(i, Tracer):
        return i.dtype.kind in "iu"
    if isinstance(i, (list, np.ndarray)):
        a = np.asarray(i)
        return a.dtype.kind in "iu" and a.ndim >= 0 and not isinstance(i, bool)
    return False


def _eager_index_check(idx, limit, op):
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= limit):
        bad = int(np.flatnonzero((idx < 0) | (idx >= limit))[0])
        pos = tuple(int(i) for i in np.unravel_index(bad, idx.shape))
        raise ShapeError(f"{op}: index {idx.reshape(-1)[bad]} at position {pos} is out of "
                         f"range [0, {limit}) (at {user_source()})")


def take(a, indices, axis=0):
    """``a`` gathered along ``axis`` at integer ``indices`` (any integer dtype): the shape is
    ``a.shape[:axis] + indices.shape + a.shape[axis+1:]``.  Indices must lie in
    ``[0, a.shape[axis])`` (no negative wrap-around, as torch's embedding); others raise
    a GraphcError naming the value and its position, never read out of bounds.  The
    backward pass scatter-adds (``take_add``)."""
    ctx = deepest_context(a, indices)
    if ctx is None:
        a, idx = np.asarray(a), np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise DTypeError(f"take: indices must be integers, got {idx.dtype} "
                             f"(at {user_source()})")
        ax = int(axis) % builtins.max(a.ndim, 1)
        _eager_index_check(idx, a.shape[ax], "take")
        return np.take(a, idx, axis=ax)
    if not isinstance(indices, Tracer):
        arr = np.asarray(indices)
        if arr.dtype.kind not in "iu":
            raise DTypeError(f"take: indices must be integers, got {arr.dtype} "
                             f"(at {user_source()})")
        nd = np.ndim(a)
        if nd and -nd <= int(axis) < nd:
            _eager_index_check(arr, np.shape(a)[int(axis) % nd], "take")
        if arr.dtype not in dt.INTS:
            arr = arr.astype(np.int64)
        indices = arr
    av = ctx.lift(a)
    iv = ctx.lift(indices)
    if av.ndim and -av.ndim <= int(axis) < av.ndim and iv.node.op != "constant":
        # values unknown while tracing: every backend checks them before the run
        # (graphc.backends.guard) -- a bad index never reaches a kernel
        iv = ctx.emit("check_index", iv, limit=int(av.shape[int(axis)]), what="take").value
    return ctx.emit("take", av, iv, axis=int(axis))


# ---- linear algebra -------------------------------------------------------------------------
def matmul(a, b):
    ctx = deepest_context(a, b)
    if ctx is None:
        return np.matmul(a, b)
    dtype = result_dtype(a, b, floating=True)
    av, bv = (ctx.lift(x, dtype if not isinstance(x, Tracer) else None) for x in (a, b))
    av, bv = (v if v.dtype == dtype else ctx.emit("cast", v, dtype=dtype).value
              for v in (av, bv))
    if av.ndim == 0 or bv.ndim == 0:
        raise ShapeError(f"matmul: operands must not be scalars, got shapes {av.shape} and "
                         f"{bv.shape} (at {user_source()}); use * for scaling")
    a1, b1 = av.ndim == 1, bv.ndim == 1
    if a1:
        av = ctx.emit("reshape", av, shape=(1,) + av.shape).value
    if b1:
        bv = ctx.emit("reshape", bv, shape=bv.shape + (1,)).value
    if av.shape[-1] != bv.shape[-2]:
        ctx.emit("matmul", av, bv)  # raises the ShapeError with op, shapes and source
    if bv.ndim == 2 and av.ndim > 2:
        # (..., M, K) @ (K, N): one GEMM over all rows (as torch does), not a batch of
        # GEMMs against a broadcast weight -- whose gradient would then be a batch of
        # products summed afterwards
        lead = av.shape[:-1]
        flat = ctx.emit("reshape", av, shape=(int(np.prod(lead, dtype=np.int64)),
                                                av.shape[-1])).value
        out = reshape(ctx.emit("matmul", flat, bv), lead + bv.shape[-1:])
        return reshape(out, out.shape[:-1]) if b1 else out
    try:
        batch = broadcast_shapes(av.shape[:-2], bv.shape[:-2])
    except ShapeError as e:
        raise ShapeError(f"matmul: {e} (at {user_source()})") from None
    if av.shape[:-2] != batch:
        av = ctx.emit("broadcast_to", av, shape=batch + av.shape[-2:]).value
    if bv.shape[:-2] != batch:
        bv = ctx.emit("broadcast_to", bv, shape=batch + bv.shape[-2:]).value
    out = ctx.emit("matmul", av, bv)
    if a1 or b1:
        shape = out.shape
        shape = shape[:-2] + ((shape[-2],) if not a1 else ()) + ((shape[-1],) if not b1 else ())
        out = reshape(out, shape)
    return out


def dot(a, b):
    if np.ndim(a) > 2 or np.ndim(b) > 2:
        raise TraceError("gc.dot supports 1-d and 2-d operands; use gc.matmul for batches")
    return matmul(a, b)


def one_hot(labels, num_classes, dtype=dt.float32, what="one_hot"):
    """``labels[..., None] == arange(num_classes)`` as ``dtype`` (how cross_entropy gathers).

    A label outside ``[0, num_classes)`` raises RangeError (naming ``what``, the value and
    its position) -- eagerly here, or for traced labels before the compiled graph runs
    (a ``check_index`` node) -- instead of giving a row of zeros."""
    # the result and the arange of classes, checked before either is allocated
    lshape = tuple(labels.shape if isinstance(labels, Tracer) else np.shape(labels))
    need = _count(lshape) * int(num_classes) * np.dtype(dt.as_dtype(dtype)).itemsize \
        + 16 * int(num_classes)
    refuse_too_big(need, f"{what} of labels {lshape} over "
                   f"{int(num_classes)} classes", describe(user_source()))
    if not isinstance(labels, Tracer):
        labels = np.asarray(labels)
        check_range(labels, int(num_classes), what, user_source())
        return (labels[..., None] == np.arange(num_classes)).astype(dtype)
    labels = labels.ctx.emit("check_index", labels.value, limit=int(num_classes), what=what)
    classes = np.arange(num_classes, dtype=labels.dtype)
    return cast(equal(expand_dims(labels, -1), classes), dtype)


# ---- numpy's own functions on tracers -------------------------------------------------------------
UFUNCS = {
    np.add: add, np.subtract: subtract, np.multiply: multiply, np.true_divide: divide,
    np.divide: divide, np.power: power, np.floor_divide: floor_divide,
    np.remainder: remainder, np.negative: negative, np.positive: lambda x: x,
    np.exp: exp, np.log: log, np.tanh: tanh, np.sqrt: sqrt, np.absolute: abs, np.sign: sign,
    np.maximum: maximum, np.minimum: minimum, np.less: less, np.less_equal: less_equal,
    np.greater: greater, np.greater_equal: greater_equal, np.equal: equal,
    np.not_equal: not_equal, np.logical_and: logical_and, np.logical_or: logical_or,
    np.logical_not: logical_not, np.square: square, np.log1p: log1p, np.expm1: expm1,
    np.reciprocal: reciprocal, np.matmul: matmul,
}

FUNCTIONS = {
    np.sum: sum, np.mean: mean, np.max: max, np.amax: max, np.min: min, np.amin: min,
    np.var: var, np.reshape: reshape, np.transpose: transpose, np.swapaxes: swapaxes,
    np.broadcast_to: broadcast_to, np.expand_dims: expand_dims, np.squeeze: squeeze,
    np.concatenate: concatenate, np.stack: stack, np.where: where, np.clip: clip,
    np.dot: dot, np.matmul: matmul, np.zeros_like: zeros_like, np.ones_like: ones_like,
    np.shape: lambda x: x.shape, np.ndim: lambda x: x.ndim, np.size: lambda x: x.size,
}


def dispatch_ufunc(ufunc, method, inputs, kwargs):
    fn = UFUNCS.get(ufunc)
    if method != "__call__" or fn is None:
        what = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        raise TraceError(f"{what} is not supported on traced arrays (at {user_source()}); "
                         "supported ufuncs: " + ", ".join(sorted(u.__name__ for u in UFUNCS)))
    if kwargs.get("out") is not None:
        raise TraceError(f"np.{ufunc.__name__}(..., out=...) cannot be traced: graphs have "
                         f"no in-place writes (at {user_source()})")
    extra = sorted(k for k, v in kwargs.items() if k != "out")
    if extra:
        raise TraceError(f"np.{ufunc.__name__}(..., {'=..., '.join(extra)}=...) is not "
                         f"supported on traced arrays (at {user_source()}); use gc.where or "
                         "gc.cast explicitly")
    return fn(*inputs)


def dispatch_function(func, args, kwargs):
    fn = FUNCTIONS.get(func)
    if fn is None:
        mod = getattr(func, "__module__", "") or ""
        sub = mod.split(".")[1:] if mod.startswith("numpy.") else []
        sub = [m for m in sub if not m.startswith("_")]        # numpy._core.* -> np.
        name = ".".join(["np", *sub, func.__name__])
        raise TraceError(f"{name} is not supported on traced arrays "
                         f"(at {user_source()}); supported: "
                         + ", ".join(sorted(f.__name__ for f in FUNCTIONS)))
    import inspect
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        raise TraceError(f"np.{func.__name__} on traced arrays: {e} "
                         f"(at {user_source()})") from None
    except ValueError:        # no signature (builtins): let the call itself complain
        pass
    return fn(*args, **kwargs)
