"""The live arrays of a compiled step (``step.params``, ``step.opt_state``) as containers
whose assignment copies into the arrays the native code reads and writes.

A compiled step holds the addresses of its parameter and state arrays; rebinding an entry
of a plain dict (``step.params["w"] = new``) would be silently ignored -- the step would go
on updating the old array.  Here ``step.params["w"] = new`` copies ``new`` into the live
array (same shape; a dtype that casts within its kind, float64 -> float32), a sub-tree
assignment copies leaf by leaf, and anything that would change the structure (a new key,
``del``, ``pop``, ``append``) raises an ``ArgumentError`` saying what to do instead.
"""
from __future__ import annotations

import numpy as np

from .ir import ArgumentError


def _fail(where, what):
    raise ArgumentError(f"{where}: {what}; the compiled step reads and writes these arrays "
                        f"in place: assign an array of the same shape to an existing entry "
                        f"(copied in) or write into it ({where}[...] = array)")


def copy_into(where: str, live, new) -> None:
    """Copy ``new`` (an array or a tree like ``live``) into ``live`` in place, checked."""
    if isinstance(live, (LiveDict, LiveList)):
        keys = list(live.keys()) if isinstance(live, LiveDict) else list(range(len(live)))
        if isinstance(live, LiveDict):
            if not isinstance(new, dict) or set(new) != set(keys):
                _fail(where, f"expected a dict with keys {sorted(map(str, keys))}, got "
                      + (f"keys {sorted(map(str, new))}" if isinstance(new, dict)
                         else type(new).__name__))
        elif not isinstance(new, (list, tuple)) or len(new) != len(keys):
            _fail(where, f"expected a list of {len(keys)} entries, got "
                  f"{type(new).__name__}")
        for k in keys:                         # check everything before writing anything
            check_leaf(f"{where}[{k!r}]", live.raw(k), new[k], dry=True)
        for k in keys:
            copy_into(f"{where}[{k!r}]", live.raw(k), new[k])
        return
    check_leaf(where, live, new, dry=False)


def check_leaf(where, live, new, dry):
    if isinstance(live, (LiveDict, LiveList)):
        if dry:
            return
        copy_into(where, live, new)
        return
    try:
        arr = np.asarray(new)
    except Exception:       # noqa: BLE001 -- anything numpy cannot read is refused
        arr = None
    if arr is None or arr.dtype == object:
        _fail(where, f"cannot copy a {type(new).__name__} into a {live.dtype} array")
    if arr.shape != live.shape:
        _fail(where, f"shape {arr.shape} does not match the live array's {live.shape}")
    if not np.can_cast(arr.dtype, live.dtype, "same_kind"):
        _fail(where, f"dtype {arr.dtype} cannot be copied into the live {live.dtype} array")
    if not dry:
        live[...] = arr


class LiveDict(dict):
    """A dict of live arrays (or sub-trees); ``d[k] = v`` copies into ``d[k]``."""

    def __init__(self, items, where):
        super().__init__(items)
        self._where = where

    def raw(self, k):
        return dict.__getitem__(self, k)

    def __setitem__(self, k, v):
        if k not in self:
            _fail(self._where, f"there is no entry {k!r} (entries: "
                  f"{', '.join(map(repr, self.keys()))})")
        copy_into(f"{self._where}[{k!r}]", self.raw(k), v)

    def update(self, *args, **kw):
        new = dict(*args, **kw)
        for k in new:
            if k not in self:
                self[k] = new[k]            # raises, naming the key
        for k, v in new.items():
            check_leaf(f"{self._where}[{k!r}]", self.raw(k), v, dry=True)
        for k, v in new.items():
            self[k] = v

    def _refuse(self, *a, **k):
        _fail(self._where, "entries cannot be added or removed")

    __delitem__ = pop = popitem = clear = setdefault = __ior__ = _refuse

    def __reduce__(self):                  # pickle/copy as a plain dict
        return (dict, (dict(self),))


class LiveList(list):
    """A list of live arrays (or sub-trees); ``l[i] = v`` copies into ``l[i]``."""

    def __init__(self, items, where):
        super().__init__(items)
        self._where = where

    def raw(self, i):
        return list.__getitem__(self, i)

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            _fail(self._where, "slice assignment is not supported")
        if not -len(self) <= i < len(self):
            _fail(self._where, f"index {i} is out of range for {len(self)} entries")
        copy_into(f"{self._where}[{i}]", self.raw(i), v)

    def _refuse(self, *a, **k):
        _fail(self._where, "entries cannot be added or removed")

    __delitem__ = append = extend = insert = pop = remove = clear = sort = reverse = \
        __iadd__ = __imul__ = _refuse

    def __reduce__(self):
        return (list, (list(self),))


def live_tree(tree, where: str):
    """``tree`` (nested dicts/lists of arrays) with its dicts and lists made live."""
    if isinstance(tree, dict):
        return LiveDict({k: live_tree(v, f"{where}[{k!r}]") for k, v in tree.items()}, where)
    if isinstance(tree, list):
        return LiveList([live_tree(v, f"{where}[{i}]") for i, v in enumerate(tree)], where)
    if isinstance(tree, tuple) and not hasattr(tree, "_fields"):
        return tuple(live_tree(v, f"{where}[{i}]") for i, v in enumerate(tree))
    return tree
