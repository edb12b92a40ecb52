"""Simplify: common-subexpression elimination, algebraic identities, dead code.

Autodiff and the optimizer emit many small redundant nodes (``1 * g``, the same scalar
constant broadcast twice, ``reshape(reshape(x))``).  Removing them here keeps every
later stage -- fusion, the memory plan, code generation -- smaller.  Pure: returns a new
graph and whether anything changed; values' meaning is unchanged, so results are
bit-identical.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Node, Value


def _key(n: Node):
    attrs = []
    for k, v in sorted(n.attrs.items()):
        if isinstance(v, np.ndarray):
            v = (v.dtype.str, v.shape, v.tobytes())
        elif isinstance(v, np.dtype):
            v = v.str
        attrs.append((k, v))
    return (n.op, tuple(x.id for x in n.inputs), tuple(attrs))


def _scalar_const(v: Value):
    """The scalar a value is made of (a constant, possibly broadcast), or None."""
    n = v.node
    if n.op == "broadcast_to":
        n = n.inputs[0].node
    if n.op == "constant" and n.attrs["value"].size == 1:
        return n.attrs["value"].reshape(()).item()
    return None


def _identity(n: Node) -> Value | None:
    """An existing value equal to ``n``'s output, bit for bit, if an identity applies."""
    ins = n.inputs
    if n.op in ("mul",):
        for a, b in ((0, 1), (1, 0)):
            if _scalar_const(ins[a]) == 1:
                return ins[b]
    if n.op == "add":
        for a, b in ((0, 1), (1, 0)):
            c = _scalar_const(ins[a])
            if c == 0 and not (isinstance(c, float) and np.signbit(c)):
                return ins[b]   # x + 0 == x except for x = -0.0; -0 + 0 = +0 is harmless
    if n.op in ("sub",) and _scalar_const(ins[1]) == 0:
        return ins[0]
    if n.op == "div" and _scalar_const(ins[1]) == 1:
        return ins[0]
    if n.op == "neg" and ins[0].node.op == "neg":
        return ins[0].node.inputs[0]
    if n.op in ("reshape", "broadcast_to") and ins[0].shape == n.output.shape:
        return ins[0]
    if n.op == "cast" and ins[0].dtype == n.output.dtype:
        return ins[0]
    if n.op == "transpose" and n.attrs["perm"] == tuple(range(len(n.attrs["perm"]))):
        return ins[0]
    return None


def simplify(graph: Graph) -> tuple[Graph, bool]:
    g, _ = graph.clone()
    changed = False
    seen: dict = {}
    for n in list(g.nodes):
        if n.op == "input":
            continue
        # Fold reshape(reshape(x)) into one reshape of x.
        if n.op == "reshape" and n.inputs[0].node.op == "reshape":
            inner = n.inputs[0]
            src = inner.node.inputs[0]
            n.inputs = [src]
            inner.users.remove(n)
            if n not in src.users:
                src.users.append(n)
            changed = True
        same = _identity(n)
        if same is None:
            key = _key(n)
            prev = seen.get(key)
            if prev is None:
                seen[key] = n.output
                continue
            same = prev
        g.replace_all_uses(n.output, same)
        changed = True
    if g.remove_dead():
        changed = True
    return g, changed
