"""Simplify: common-subexpression elimination, algebraic identities, dead code.

A sum of unslices that tile one axis (the VJP of slicing a fused projection into parts)
becomes one ``concatenate`` of the parts: no zero-filled buffers, no adds.

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


def _add_leaves(n: Node, root: Node) -> list[Value]:
    """The operands of a tree of same-shape ``add`` nodes under ``n`` (inner adds only
    when nothing else reads them)."""
    out = []
    for x in n.inputs:
        m = x.node
        if (m.op == "add" and x.shape == root.output.shape and x.dtype == root.output.dtype
                and len(x.users) == 1 and all(y.shape == x.shape for y in m.inputs)):
            out += _add_leaves(m, root)
        else:
            out.append(x)
    return out


def _concat_of_unslices(n: Node):
    """``(axis, operands)`` when ``n`` is a sum of unslices (zeros with the operand written
    at a slice: what the VJP of slicing produces) that tile the result along one axis --
    the q, k, v cotangents of a fused qkv projection -- so one ``concatenate`` of the
    operands is the same value: each element is one operand's plus zeros (bit for bit,
    but for the sign of a zero); else None."""
    if n.op != "add" or any(x.shape != n.output.shape or x.dtype != n.output.dtype
                            for x in n.inputs):
        return None
    leaves = _add_leaves(n, n)
    if len(leaves) < 2 or any(x.node.op != "unslice" for x in leaves):
        return None
    shape, axis, spans = n.output.shape, None, []
    for x in leaves:
        a = x.node.attrs
        if any(s != 1 for s in a["steps"]):
            return None
        partial = [i for i, (lo, hi, d) in enumerate(zip(a["starts"], a["stops"], shape))
                   if (lo, hi) != (0, d)]
        if len(partial) != 1 or (axis is not None and partial[0] != axis):
            return None
        axis = partial[0]
        spans.append((a["starts"][axis], a["stops"][axis], x.node.inputs[0]))
    spans.sort(key=lambda t: t[0])
    pos = 0
    for lo, hi, _ in spans:
        if lo != pos:
            return None   # a gap or an overlap
        pos = hi
    if pos != shape[axis]:
        return None
    return axis, [v for lo, hi, v in spans if hi > lo]


def _flat_source(parts, shape, axis):
    """The 1-d value whose consecutive slices ``parts`` are (each possibly reshaped), when
    joining them along ``axis`` of ``shape`` is joining their bytes (every axis before
    ``axis`` of size 1) and the slices cover it in order; else None.  sdpa's gradient
    is one flat buffer of dq, dk, dv: their concatenation is that buffer, reshaped."""
    if any(d != 1 for d in shape[:axis]):
        return None
    src, pos = None, 0
    for x in parts:
        while x.node.op == "reshape":
            x = x.node.inputs[0]
        n = x.node
        if n.op != "slice" or len(n.inputs[0].shape) != 1 or n.attrs["steps"] != (1,):
            return None
        if src is None:
            src = n.inputs[0]
        if n.inputs[0] is not src or n.attrs["starts"][0] != pos:
            return None
        pos = n.attrs["stops"][0]
    return src if src is not None and pos == src.shape[0] else None


def _joined(g: Graph, n: Node, parts, axis):
    """A value equal to ``concatenate(parts, axis)`` (read by ``n``'s users)."""
    if len(parts) == 1:
        return parts[0]
    src = _flat_source(parts, n.output.shape, axis)
    if src is not None and src.shape == n.output.shape:
        return src
    if src is not None:
        return g.add("reshape", [src], {"shape": n.output.shape}, role=n.role,
                     source=n.source, before=n)
    return g.add("concatenate", parts, {"axis": axis}, role=n.role, source=n.source,
                 before=n)


def simplify(graph: Graph) -> tuple[Graph, bool]:
    g, _ = graph.clone()
    changed = False
    seen: dict = {}
    for n in list(g.nodes):
        if n.op == "input":
            continue
        # Fold reshape(reshape(x)) into one reshape of x -- but for x a transpose: there
        # the inner reshape is a copy the outer one views (see _share_reshapes).
        if (n.op == "reshape" and n.inputs[0].node.op == "reshape"
                and n.inputs[0].node.inputs[0].node.op != "transpose"):
            inner = n.inputs[0]
            src = inner.node.inputs[0]
            n.inputs = [src]
            inner.users.remove(n)
            if n not in src.users:
                src.users.append(n)
            changed = True
        same = _identity(n)
        cat = _concat_of_unslices(n) if same is None else None
        if cat is not None:
            same = _joined(g, n, cat[1], cat[0])
        elif (same is None and n.op == "concatenate"
              and _flat_source(n.inputs, n.output.shape, n.attrs["axis"]) is not None):
            same = _joined(g, n, n.inputs, n.attrs["axis"])
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
    if _share_reshapes(g):
        changed = True
    return g, changed


def _share_reshapes(g: Graph) -> bool:
    """Point every reshape of a transpose but the first at the first: a reshape of a
    permuted view is a copy in the LLVM backend, and sibling reshapes of one transpose
    (the qkv gradient, read as (B, T, 3D) and as (B*T, 3D)) were two copies; a reshape of
    the first one's contiguous result is a view."""
    changed = False
    for n in g.nodes:
        if n.op != "transpose":
            continue
        rs = [u for u in g.nodes if u.op == "reshape" and n.output in u.inputs] \
            if sum(u.op == "reshape" for u in n.output.users) > 1 else []
        for r in rs[1:]:
            r.inputs = [rs[0].output]
            n.output.users.remove(r)
            rs[0].output.users.append(r)
            changed = True
    return changed
