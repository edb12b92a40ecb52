"""Indexing: ``t[...]`` with integers, slices, ``None`` and ``Ellipsis`` (a ``slice``
and a ``reshape``), and gathers at integer arrays (``gc.take``, ``t[idx]``), whose
indices are checked before any kernel reads them."""
from __future__ import annotations

import builtins

import numpy as np

from ..ir import DTypeError, ShapeError, TraceError
from ..ir import dtypes as dt
from ..source import user_source
from ..symbolic import SymbolicArray as Tracer, deepest_context
from .shapes import reshape


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
