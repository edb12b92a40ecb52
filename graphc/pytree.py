"""Pytrees: nested dict/list/tuple/None containers of array leaves.

``flatten`` gives the leaves in a deterministic order (dict keys sorted, like JAX) plus a
``TreeDef`` to rebuild the same structure with new leaves; ``paths`` names each leaf
(``params.w1``, ``batch.0``) so graph inputs carry readable names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TreeDef:
    kind: str                 # "leaf", "none", "dict", "list", "tuple"
    keys: tuple = ()          # dict keys, in flattening order
    children: tuple = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __str__(self):
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(self.keys, self.children)) + "}"
        inner = ", ".join(str(c) for c in self.children)
        return f"[{inner}]" if self.kind == "list" else f"({inner})"


def _sorted_keys(d: dict):
    try:
        return sorted(d)
    except TypeError:
        return list(d)


def flatten(tree: Any) -> tuple[list, TreeDef]:
    leaves: list = []

    def go(t):
        if t is None:
            return TreeDef("none")
        if isinstance(t, dict):
            keys = tuple(_sorted_keys(t))
            return TreeDef("dict", keys, tuple(go(t[k]) for k in keys))
        if isinstance(t, (list, tuple)) and not hasattr(t, "_fields"):
            return TreeDef("list" if isinstance(t, list) else "tuple", (),
                           tuple(go(c) for c in t))
        leaves.append(t)
        return TreeDef("leaf")

    return leaves, go(tree)


def unflatten(treedef: TreeDef, leaves) -> Any:
    it = iter(leaves)

    def go(td):
        if td.kind == "leaf":
            return next(it)
        if td.kind == "none":
            return None
        kids = [go(c) for c in td.children]
        if td.kind == "dict":
            return dict(zip(td.keys, kids))
        return kids if td.kind == "list" else tuple(kids)

    out = go(treedef)
    return out


def paths(treedef: TreeDef, prefix: str = "") -> list[str]:
    """A dotted name per leaf, in flattening order."""
    out: list[str] = []

    def go(td, p):
        if td.kind == "leaf":
            out.append(p or "arg")
        elif td.kind == "dict":
            for k, c in zip(td.keys, td.children):
                go(c, f"{p}.{k}" if p else str(k))
        elif td.kind in ("list", "tuple"):
            for i, c in enumerate(td.children):
                go(c, f"{p}.{i}" if p else str(i))

    go(treedef, prefix)
    return out


def tree_map(fn, tree, *rest):
    leaves, td = flatten(tree)
    others = [flatten(r)[0] for r in rest]
    return unflatten(td, [fn(*xs) for xs in zip(leaves, *others)])
