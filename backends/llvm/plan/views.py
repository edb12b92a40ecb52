"""Where a value lives and how it is read: a *storage* (a graph input's array, an output
buffer, a module constant, a large constant held by Python, or a slice of the one arena)
and a *view* of it (offset + strides in elements).  View ops produce no code, only new
views: broadcast = stride 0, transpose = permuted strides, slice = offset + steps,
reshape = new strides when no copy is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Storage:
    kind: str                    # arg | out | ext | arena | global
    dtype: np.dtype
    size: int                    # elements
    name: str = ""
    slot: int = -1               # argv slot (arg/out/ext)
    value: np.ndarray | None = None   # global/ext constants
    offset: int = -1             # arena byte offset

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __repr__(self):
        return f"<{self.kind} {self.name} {self.dtype} x{self.size}>"


def c_strides(shape):
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= d
    return tuple(reversed(st))


@dataclass(frozen=True, eq=False)
class View:
    st: Storage
    offset: int
    shape: tuple
    strides: tuple

    @staticmethod
    def whole(st: Storage, shape):
        return View(st, 0, tuple(shape), c_strides(shape))

    def is_contiguous(self):
        if int(np.prod(self.shape, dtype=np.int64)) == 0:
            return True
        exp = c_strides(self.shape)
        return all(d == 1 or s == e for d, s, e in zip(self.shape, self.strides, exp))

    def same(self, other):
        if self.st is not other.st or self.shape != other.shape:
            return False
        if self.offset != other.offset:
            return False
        return all(d == 1 or a == b for d, a, b in zip(self.shape, self.strides, other.strides))


# ---- view transforms ----------------------------------------------------------------------
def broadcast_view(v: View, shape) -> View:
    lead = len(shape) - len(v.shape)
    strides = [0] * lead + [0 if (v.shape[i] == 1 and shape[lead + i] != 1) else v.strides[i]
                            for i in range(len(v.shape))]
    return View(v.st, v.offset, tuple(shape), tuple(strides))


def transpose_view(v: View, perm) -> View:
    return View(v.st, v.offset, tuple(v.shape[p] for p in perm),
                tuple(v.strides[p] for p in perm))


def slice_view(v: View, starts, stops, steps, shape) -> View:
    off = v.offset + sum(a * s for a, s in zip(starts, v.strides))
    return View(v.st, off, tuple(shape), tuple(s * k for s, k in zip(v.strides, steps)))


def _nocopy_strides(oshape, ostrides, nshape):
    """numpy's attempt_nocopy_reshape: strides for ``nshape`` over the same elements, or None."""
    od = [d for d in oshape if d != 1]
    os_ = [s for d, s in zip(oshape, ostrides) if d != 1]
    nd = list(nshape)
    new = [0] * len(nd)
    oi, oj, ni, nj = 0, 1, 0, 1
    while ni < len(nd) and oi < len(od):
        np_, op_ = nd[ni], od[oi]
        while np_ != op_:
            if np_ < op_:
                if nj >= len(nd):
                    return None
                np_ *= nd[nj]
                nj += 1
            else:
                if oj >= len(od):
                    return None
                op_ *= od[oj]
                oj += 1
        for ok in range(oi, oj - 1):
            if os_[ok] != od[ok + 1] * os_[ok + 1]:
                return None
        new[nj - 1] = os_[oj - 1]
        for nk in range(nj - 1, ni, -1):
            new[nk - 1] = new[nk] * nd[nk]
        ni, nj, oi, oj = nj, nj + 1, oj, oj + 1
    return tuple(new)


def reshape_view(v: View, shape) -> View | None:
    shape = tuple(shape)
    if v.is_contiguous():
        return View(v.st, v.offset, shape, c_strides(shape))
    st = _nocopy_strides(v.shape, v.strides, shape)
    return None if st is None else View(v.st, v.offset, shape, st)
