"""Graphviz DOT text for a graph (no Graphviz needed to write it).

Forward nodes white, backward nodes blue, tangent nodes green, optimizer updates orange;
parameters are boxes, data inputs ellipses, graph outputs double octagons; saved
activations get a red border and red edges; edges are labelled ``f32[128,512]``.  Each
node's label gives its op, value, type, bytes and -- when ``offsets`` (value name ->
arena byte offset, from a memory plan) is given -- where it lives in the arena.

Three levels of detail (``detail=``):

* ``"full"``: every node; nodes that carry a fusion ``group`` attribute in a cluster;
* ``"clusters"``: every node, inside one cluster per layer and role
  (``graphc.ir.layers``: ``params.0 · forward``, ``params.0 · backward``, ...);
* ``"summary"``: one box per layer and role (its ops, output, bytes), the edges between
  them (saved activations in red), the parameters, data and optimizer state -- a training
  step that fits on a screen.

``roles`` draws only nodes of those roles (``{"backward"}``: the backward pass alone),
with the values they read from outside drawn as small boundary nodes (saved activations
red) so you see what the backward pass keeps alive.
"""
from __future__ import annotations

from .analysis import saved_activations
from .graph import Graph

FILL = {"forward": "white", "backward": "lightblue", "tangent": "palegreen", "update": "orange"}
INPUT_STYLE = {"param": ("box", "gold"), "data": ("ellipse", "lightgrey"),
               "state": ("box", "khaki"), "tangent": ("ellipse", "palegreen"),
               "cotangent": ("ellipse", "lightblue")}
DETAILS = ("full", "clusters", "summary")


def _q(s) -> str:
    """A quoted DOT string; real newlines in labels become DOT's ``\\n`` line breaks."""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + s + '"'


def fmt_bytes(n: int) -> str:
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def _attrs(d: dict) -> str:
    return ", ".join(f"{k}={_q(a)}" for k, a in d.items())


def _header(graph, title):
    lines = [f"digraph {_q(graph.name)} {{", "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10, style=filled];',
             '  edge [fontname="Helvetica", fontsize=8];']
    if title:
        lines.append(f"  labelloc=t; fontname=\"Helvetica\"; label={_q(title)};")
    return lines


def _node_attrs(n, saved, outputs, offsets):
    v = n.output
    where = ""
    if offsets is not None and v.name in offsets:
        where = f"\n@ {offsets[v.name]:,}"
    attrs = {"label": f"{n.op}\n%{v.name}\n{v.type} · {fmt_bytes(v.nbytes)}{where}",
             "fillcolor": FILL.get(n.role, "white")}
    if n.op == "input":
        kind = n.attrs["kind"]
        shape, fill = INPUT_STYLE[kind]
        attrs.update(shape=shape, fillcolor=fill,
                     label=f"{kind}\n%{v.name}\n{v.type}")
    elif n.op == "constant":
        attrs.update(shape="plaintext", style="", label=f"const %{v.name}")
    if v in saved:
        attrs.update(color="red", penwidth="2.5",
                     label=attrs["label"] + "\n(saved activation)")
    if v in outputs:
        attrs.update(shape="doubleoctagon")
    return attrs


def to_dot(graph: Graph, show_constants=True, detail: str = "full", roles=None,
           offsets: dict | None = None, group_names: dict | None = None,
           title: str | None = None) -> str:
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
    if detail == "summary":
        return _summary(graph, offsets, group_names, title, roles)
    saved = set(saved_activations(graph))
    outputs = set(graph.outputs) | {b for _, b in graph.updates}
    lines = _header(graph, title)
    layers = None
    if detail == "clusters":
        lines.append("  newrank=true;")
        from .layers import layer_of
        layers = layer_of(graph)
    drawn = [n for n in graph.nodes if roles is None or n.role in roles and n.op != "input"]
    shown = {n.output for n in drawn}
    hidden = set()
    clusters: dict = {}
    for n in drawn:
        v = n.output
        if n.op == "constant" and not show_constants:
            hidden.add(v)
            continue
        line = f"  {_q(v.name)} [{_attrs(_node_attrs(n, saved, outputs, offsets))}];"
        key = None
        if layers is not None:
            reader = v.users[0] if n.op == "constant" and v.users else n
            key = (layers.group.get(n), reader.role)
        elif n.attrs.get("group") is not None:
            key = ("fused", str(n.attrs["group"]))
        if key is not None:
            clusters.setdefault(key, []).append(line)
        else:
            lines.append(line)
    boundary = []
    if roles is not None:              # what the drawn nodes read from outside
        for n in drawn:
            for x in n.inputs:
                if x in shown or x in boundary or x.node.op == "constant":
                    continue
                boundary.append(x)
        for x in boundary:
            a = _node_attrs(x.node, saved, set(), offsets)
            a.update(fontsize="9")
            if x in saved:
                a.update(label=f"saved %{x.name} ({x.node.op})\n{x.type} · {fmt_bytes(x.nbytes)}"
                         + (f"\n@ {offsets[x.name]:,}" if offsets and x.name in offsets
                            else "") + "\n(saved activation)", fillcolor="mistyrose",
                         shape="box", style="filled")
            elif x.node.op != "input":
                a.update(label=f"%{x.name} ({x.node.role})\n{x.type}", style="dashed",
                         shape="box")
            lines.append(f"  {_q(x.name)} [{_attrs(a)}];")
        shown |= set(boundary)
    for (grp, sub), members in clusters.items():
        name = f"cluster_{grp}_{sub}"
        if grp == "fused":
            name = f"cluster_{sub}"
            label, style = f"fused {sub}", "style=dashed; color=purple;"
        else:
            label = f"{(group_names or {}).get(grp, grp)} · {sub}"
            style = f'style="rounded,filled"; color=grey60; fillcolor={_q(_tint(sub))};'
        lines.append(f"  subgraph {_q(name)} {{")
        lines.append(f"    label={_q(label)}; {style}")
        lines.extend("  " + m for m in members)
        lines.append("  }")
    for n in drawn:
        for x in n.inputs:
            if x in hidden or n.output in hidden or x not in shown:
                continue
            style = ', color="red"' if x in saved and n.role == "backward" else ""
            lines.append(f"  {_q(x.name)} -> {_q(n.output.name)} "
                         f"[label={_q(str(x.type))}{style}];")
    for a, b in graph.updates:   # the in-place write of a new parameter / optimizer state
        if a in shown and b in shown and a not in hidden and b not in hidden:
            lines.append(f"  {_q(b.name)} -> {_q(a.name)} [label=\"writes in place\", "
                         "style=dashed, color=darkorange, constraint=false];")
    lines.append("}")
    return "\n".join(lines)


def _tint(role: str) -> str:
    return {"forward": "grey97", "backward": "aliceblue", "update": "papayawhip",
            "tangent": "honeydew"}.get(role, "grey97")


def _summary(graph: Graph, offsets, group_names, title, roles) -> str:
    """One box per (layer, role); see the module docstring."""
    from .layers import layer_of
    layers = layer_of(graph)
    saved = set(saved_activations(graph))
    names = group_names or {}

    def box(n):
        if n.op == "input":
            kind = n.attrs["kind"]
            if kind == "param":
                return ("param", layers.group[n])
            return ("input", "state" if kind == "state" else "data")
        role = n.role
        if n.op == "constant" and n.output.users:
            role = n.output.users[0].role
        return (role, layers.group.get(n))

    members: dict = {}
    for n in graph.nodes:
        b = box(n)
        if roles is not None and b[0] not in roles and b[0] != "param":
            if not any(box(u)[0] in roles for u in n.output.users):
                continue
        members.setdefault(b, []).append(n)
    lines = _header(graph, title)
    ids = {b: f"g{i}" for i, b in enumerate(members)}
    outputs = set(graph.outputs)
    for b, ns in members.items():
        kind, key = b
        label_key = names.get(key, key)
        if kind == "param":
            rows = [f"{n.output.name.rpartition('.')[2]} {n.output.type}" for n in ns]
            a = {"shape": "box", "fillcolor": "gold",
                 "label": f"params {label_key}\n" + "\n".join(rows)}
        elif kind == "input":
            rows = [f"%{n.output.name} {n.output.type}" for n in ns[:6]]
            more = f"\n(+{len(ns) - 6} more)" if len(ns) > 6 else ""
            a = {"shape": "box" if key == "state" else "ellipse",
                 "fillcolor": "khaki" if key == "state" else "lightgrey",
                 "label": (f"optimizer state ({len(ns)} arrays, "
                           f"{fmt_bytes(sum(n.output.nbytes for n in ns))})"
                           if key == "state" else "data\n" + "\n".join(rows) + more)}
        else:
            ops = [n.op for n in ns if n.op != "constant"]
            counts: dict = {}
            for o in ops:
                counts[o] = counts.get(o, 0) + 1
            top = ", ".join(f"{o}×{c}" if c > 1 else o for o, c in
                            sorted(counts.items(), key=lambda kv: -kv[1])[:5])
            nbytes = sum(n.output.nbytes for n in ns if n.op not in ("constant",))
            keep = [n.output for n in ns if n.output in saved]
            lab = f"{label_key} · {kind}\n{len(ops)} ops: {top}\n{fmt_bytes(nbytes)} of values"
            if keep:
                lab += f"\nsaves {len(keep)}: {fmt_bytes(sum(v.nbytes for v in keep))}"
                if offsets:
                    offs = sorted(offsets[v.name] for v in keep if v.name in offsets)
                    if offs:
                        lab += f" @ {', '.join(f'{o:,}' for o in offs[:3])}"
            if kind == "update":
                n_written = sum(1 for x, y in graph.updates if y in {n.output for n in ns})
                lab += f"\nwrites {n_written} arrays in place"
            a = {"shape": "box", "style": "rounded,filled", "fillcolor": FILL.get(kind, "white"),
                 "label": lab}
            if any(n.output in outputs for n in ns):
                a["peripheries"] = "2"
            if keep:
                a.update(color="red", penwidth="2")
        lines.append(f"  {ids[b]} [{_attrs(a)}];")
    edges: dict = {}
    where = {n.output: box(n) for b, ns in members.items() for n in ns}
    for b, ns in members.items():
        for n in ns:
            for x in n.inputs:
                src = where.get(x)
                if src is None or src == b:
                    continue
                e = edges.setdefault((src, b), {"values": [], "saved": False})
                if x not in e["values"]:
                    e["values"].append(x)
                if x in saved and b[0] == "backward":
                    e["saved"] = True
    # One row per layer (params | forward | backward | update), rows in forward order:
    # forward edges run down the rows, gradients flow back up beside them.
    for key in layers.order + ["inputs"]:
        row = [ids[b] for b in members if b[1] == key or (key == "optimizer" and b ==
                                                           ("input", "state"))]
        if key == "inputs":
            row = [ids[b] for b in members if b == ("input", "data")]
        if len(row) > 1:
            lines.append("  { rank=same; " + "; ".join(row) + "; }")
            col = {"param": 0, "input": 0, "forward": 1, "backward": 2, "tangent": 2,
                   "update": 3}
            row = sorted(row, key=lambda i: col.get(next(b for b in members
                                                         if ids[b] == i)[0], 4))
            lines.append("  " + " -> ".join(row) + " [style=invis];")
    fwd_rows = [b for b in members if b[0] == "forward"]
    opt_row = [b for b in members if b[1] == "optimizer" or b == ("input", "state")]
    if fwd_rows and opt_row:            # the optimizer's own row goes last
        lines.append(f"  {ids[fwd_rows[-1]]} -> {ids[opt_row[0]]} [style=invis];")
    order = {k: i for i, k in enumerate(layers.order)}
    for (src, dst), e in edges.items():
        vals = e["values"]
        lab = ", ".join(str(v.type) for v in vals[:2]) + (f" +{len(vals) - 2}"
                                                        if len(vals) > 2 else "")
        style = {"label": lab}
        if e["saved"]:
            style.update(color="red", penwidth="1.8", fontcolor="red")
        down = order.get(src[1], -1) < order.get(dst[1], len(order)) or src[1] == dst[1]
        if not (src[0] in ("forward", "input", "param") and dst[0] == "forward" and down):
            style["constraint"] = "false"
        if dst[0] == "update" and src[0] in ("input", "param"):
            style.update(color="grey55", fontcolor="grey40")
        lines.append(f"  {ids[src]} -> {ids[dst]} [{_attrs(style)}];")
    lines.append("}")
    return "\n".join(lines)
