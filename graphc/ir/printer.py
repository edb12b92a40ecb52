"""Text form of the IR: one line per node, e.g. ``%7 = matmul %3, %w1 : f32[128,512]``.

Backward (and tangent/update) nodes are tagged, saved activations are starred, and the
user's source line is shown as a comment -- deterministic, so tests can golden it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import dtypes as dt
from .analysis import saved_activations
if TYPE_CHECKING:      # annotations only: graph.py prints through this module
    from .graph import Graph, Node


def format_attr(v) -> str:
    if isinstance(v, np.ndarray):
        if v.size <= 4:
            return np.array2string(v, separator=",").replace("\n", "")
        return f"<{dt.type_str(v.shape, v.dtype)}>"
    if isinstance(v, np.dtype):
        return dt.short(v)
    if isinstance(v, tuple):
        return "(" + ",".join(format_attr(x) for x in v) + ")"
    return repr(v) if isinstance(v, str) else str(v)


def format_node(n: Node, saved=frozenset(), show_source=True) -> str:
    v = n.output
    star = "*" if v in saved else ""
    args = ", ".join(f"%{x.name}" for x in n.inputs)
    attrs = {k: a for k, a in n.attrs.items() if not (n.op == "input" and k == "name")}
    if n.op == "constant":
        text = f"%{v.name}{star} = constant {format_attr(attrs['value'])}"
    else:
        attr_s = ", ".join(f"{k}={format_attr(a)}" for k, a in attrs.items())
        text = f"%{v.name}{star} = {n.op}" + (f" {args}" if args else "")
        if attr_s:
            text += f" {{{attr_s}}}"
    text += f" : {v.type}"
    notes = [] if n.role == "forward" else [n.role]
    if show_source and n.source:
        notes.append(n.source)
    if notes:
        text = f"{text:<60} # " + "  ".join(notes)
    return text


def format_graph(graph: Graph, show_source=True) -> str:
    """The whole graph; ``*`` marks saved activations (forward values read by backward)."""
    saved = frozenset(saved_activations(graph))
    sig = ", ".join(f"%{v.name}: {v.type} {v.node.attrs['kind']}" for v in graph.inputs)
    lines = [f"graph {graph.name}({sig}) {{"]
    role = "forward"
    for n in graph.nodes:
        if n.op == "input":
            continue
        if n.role != role:
            lines.append(f"  ; ---- {n.role} ----")
            role = n.role
        lines.append("  " + format_node(n, saved, show_source))
    lines.append("  return " + ", ".join(f"%{v.name}" for v in graph.outputs))
    for a, b in graph.updates:
        lines.append(f"  update %{a.name} <- %{b.name}")
    lines.append("}")
    if saved:
        lines.append(f"# * = saved activation ({len(saved)} value{'s' if len(saved) != 1 else ''}, "
                     f"{sum(v.nbytes for v in saved)} bytes)")
    return "\n".join(lines)
