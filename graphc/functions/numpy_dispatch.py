"""numpy's own functions on tracers: ``np.tanh(t)``, ``np.sum(t, axis=1)`` reach the
array functions through ``__array_ufunc__``/``__array_function__`` (:mod:`graphc.tracing`)
and these tables; anything else is a TraceError naming what is supported."""
from __future__ import annotations

import numpy as np

from ..ir import TraceError
from ..source import user_source
from .elementwise import (abs, add, clip, divide, equal, exp, expm1, floor_divide, greater,
                          greater_equal, less, less_equal, log, log1p, logical_and,
                          logical_not, logical_or, maximum, minimum, multiply, negative,
                          not_equal, power, reciprocal, remainder, sign, sqrt, square,
                          subtract, tanh, where)
from .creation import ones_like, zeros_like
from .linalg import dot, matmul
from .reductions import max, mean, min, sum, var
from .shapes import (broadcast_to, concatenate, expand_dims, reshape, squeeze, stack,
                     swapaxes, transpose)


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
