"""Graphviz DOT text for a graph (no Graphviz needed to write it).

Forward nodes white, backward nodes blue, tangent nodes green, optimizer updates orange;
parameters are boxes, data inputs ellipses, graph outputs double octagons; saved
activations get a red border and red edges; edges are labelled ``f32[128,512]``.
Nodes that carry a ``group`` attribute (set by fusion) are drawn inside a cluster.
"""
from __future__ import annotations

from .analysis import saved_activations
from .graph import Graph

FILL = {"forward": "white", "backward": "lightblue", "tangent": "palegreen", "update": "orange"}
INPUT_STYLE = {"param": ("box", "gold"), "data": ("ellipse", "lightgrey"),
               "state": ("box", "khaki"), "tangent": ("ellipse", "palegreen"),
               "cotangent": ("ellipse", "lightblue")}


def _q(s) -> str:
    """A quoted DOT string; real newlines in labels become DOT's ``\\n`` line breaks."""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + s + '"'


def to_dot(graph: Graph, show_constants=True) -> str:
    saved = set(saved_activations(graph))
    outputs = set(graph.outputs) | {b for _, b in graph.updates}
    lines = [f"digraph {_q(graph.name)} {{", "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10, style=filled];',
             '  edge [fontname="Helvetica", fontsize=8];']
    clusters: dict[str, list[str]] = {}
    hidden = set()
    for n in graph.nodes:
        v = n.output
        if n.op == "constant" and not show_constants:
            hidden.add(v)
            continue
        attrs = {"label": f"{n.op}\n%{v.name}", "fillcolor": FILL.get(n.role, "white")}
        if n.op == "input":
            kind = n.attrs["kind"]
            shape, fill = INPUT_STYLE[kind]
            attrs.update(shape=shape, fillcolor=fill, label=f"{kind}\n%{v.name}\n{v.type}")
        elif n.op == "constant":
            attrs.update(shape="plaintext", style="", label=f"const %{v.name}")
        if v in saved:
            attrs.update(color="red", penwidth="2.5",
                         label=attrs["label"] + "\n(saved activation)")
        if v in outputs:
            attrs.update(shape="doubleoctagon")
        line = f"  {_q(v.name)} [" + ", ".join(f"{k}={_q(a)}" for k, a in attrs.items()) + "];"
        group = n.attrs.get("group")
        if group is not None:
            clusters.setdefault(str(group), []).append(line)
        else:
            lines.append(line)
    for name, members in clusters.items():
        lines.append(f"  subgraph {_q('cluster_' + name)} {{")
        lines.append(f'    label={_q("fused " + name)}; style=dashed; color=purple;')
        lines.extend("  " + m for m in members)
        lines.append("  }")
    for n in graph.nodes:
        for x in n.inputs:
            if x in hidden or n.output in hidden:
                continue
            style = ', color="red"' if x in saved and n.role == "backward" else ""
            lines.append(f"  {_q(x.name)} -> {_q(n.output.name)} "
                         f"[label={_q(str(x.type))}{style}];")
    for a, b in graph.updates:   # the in-place write of a new parameter / optimizer state
        if a not in hidden and b not in hidden:
            lines.append(f"  {_q(b.name)} -> {_q(a.name)} [label=\"writes in place\", "
                         "style=dashed, color=darkorange, constraint=false];")
    lines.append("}")
    return "\n".join(lines)
