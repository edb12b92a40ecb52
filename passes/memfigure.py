"""One picture of training memory: the step graph and its arena on one time axis.

Left, the graph: one box per layer and role (forward, backward, update; grouping from
``graphc.ir.layers``), each spanning the schedule steps its nodes run at, so forward
boxes come first going down and backward boxes below them in reverse layer order.
Every saved activation is a red arrow from the forward box that makes it to the backward
box that last reads it, labelled with its name, bytes and arena offset.  Right, the arena:
one bar per buffer at its byte offset over its live interval, on the *same* time axis,
saved activations in red -- and a dashed line joins each saved activation's arrow to its
bar.  What reverse-mode AD keeps alive, where it lives and for how long, in one figure.

Needs matplotlib (the ``plot`` extra).  Input: a graph and a ``MemoryReport`` of a plan
made over that graph's schedule (``graphc.passes.memory.memory_report(graph)``).
"""
from __future__ import annotations

from graphc.ir import GraphcError, saved_activations
from graphc.ir.dot import fmt_bytes
from graphc.ir.layers import layer_of

COLUMNS = {"forward": 0, "backward": 1, "tangent": 1, "update": 2}
FILL = {"forward": "#dfe7f2", "backward": "#d5ecd9", "tangent": "#d5ecd9",
        "update": "#ead9f0"}
BAR = {"forward": "#4C72B0", "backward": "#55A868", "tangent": "#55A868",
       "update": "#8172B2"}
SAVED = "#d62728"


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GraphcError("the memory figure needs matplotlib: pip install 'graphc[plot]' "
                          "(or pip install matplotlib)") from None
    return plt


def boxes(graph, report) -> list[dict]:
    """(layer, role) boxes with their step span, op count and bytes."""
    layers = layer_of(graph)
    rows = {r.name: r for r in report.rows}
    spans: dict = {}
    for n in graph.nodes:
        if n.op in ("input", "constant") or n.role not in COLUMNS:
            continue
        r = rows.get(n.output.name)
        if r is None:
            continue
        key = (layers.group.get(n), n.role)
        b = spans.setdefault(key, {"layer": key[0], "role": n.role, "start": r.start,
                                   "end": r.start, "ops": 0, "bytes": 0})
        b["start"], b["end"] = min(b["start"], r.start), max(b["end"], r.start)
        b["ops"] += 1
        b["bytes"] += n.output.nbytes
    return list(spans.values())


def plot_training_memory(graph, report, path, group_names=None, title=None, dpi=110):
    plt = _pyplot()
    from matplotlib.patches import ConnectionPatch, FancyBboxPatch, Patch, Rectangle
    names = group_names or {}
    rows = {r.name: r for r in report.rows}
    saved = [v for v in saved_activations(graph) if v.name in rows]
    layers = layer_of(graph)
    steps = max([r.end for r in report.rows] + [1]) + 1
    kib = 1024.0
    fig, (ag, am) = plt.subplots(1, 2, figsize=(15, 10), width_ratios=[1.25, 1], sharey=True)
    fig.subplots_adjust(wspace=0.04, left=0.05, right=0.98, top=0.88, bottom=0.03)
    # ---- the graph --------------------------------------------------------------------------
    order = {k: i for i, k in enumerate(layers.order)}
    by_col: dict = {}
    for b in boxes(graph, report):
        by_col.setdefault(COLUMNS[b["role"]], []).append(b)
    steps_of: dict = {}
    for n in graph.nodes:
        r = rows.get(n.output.name)
        if r is not None and n.op not in ("input", "constant") and n.role in COLUMNS:
            steps_of.setdefault((layers.group.get(n), n.role), []).append(r.start)
    for col, bs in by_col.items():      # one lane per layer inside each column
        bs.sort(key=lambda b: order.get(b["layer"], len(order)))
        width = 0.9 / len(bs)
        for lane, b in enumerate(bs):
            x0 = col + 0.05 + lane * width
            y0, h = b["start"] - 0.5, b["end"] - b["start"] + 1
            ag.add_patch(FancyBboxPatch((x0, y0), width * 0.92, h,
                                        boxstyle="round,pad=0,rounding_size=0.02",
                                        facecolor=FILL[b["role"]], edgecolor="grey", lw=0.6))
            for t in steps_of.get((b["layer"], b["role"]), []):    # one tick per node
                ag.plot([x0, x0 + width * 0.92], [t, t], color=BAR[b["role"]], lw=0.5,
                        alpha=0.6)
            ag.text(x0 + width * 0.46, y0 - 0.8, f"{names.get(b['layer'], b['layer'])}\n"
                    f"{b['ops']} ops", ha="center", va="bottom", fontsize=6, rotation=0)
    last_label = -10.0
    for v in sorted(saved, key=lambda v: rows[v.name].start):
        r = rows[v.name]
        readers = [rows[u.output.name].start for u in v.users
                   if u.role in ("backward", "tangent") and u.output.name in rows]
        if not readers:
            continue
        y1 = max(readers)
        x_from, x_to = COLUMNS["forward"] + 0.95, COLUMNS["backward"] + 0.05
        ag.annotate("", xy=(x_to, y1), xytext=(x_from, r.start),
                    arrowprops=dict(arrowstyle="->", color=SAVED, lw=1.2,
                                    connectionstyle="arc3,rad=-0.2"))
        ly = max(r.start, last_label + steps / 40)          # keep labels apart
        last_label = ly
        off = f"@{r.offset:,}" if r.offset >= 0 else "(in place)"
        ag.text(x_from - 0.02, ly, f"%{v.name} {fmt_bytes(v.nbytes)} {off}", color=SAVED,
                fontsize=6.5, va="center", ha="right",
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5))
        if r.offset >= 0:
            am.add_artist(ConnectionPatch(xyA=(x_from, r.start), coordsA=ag.transData,
                                          xyB=(r.offset / kib, r.start), coordsB=am.transData,
                                          color=SAVED, lw=0.6, ls="--", alpha=0.7))
    ag.set_xlim(0, 3)
    ag.set_xticks([0.4, 1.4, 2.4], ["forward", "backward", "update"])
    ag.xaxis.tick_top()
    ag.set_ylim(steps, -1)
    ag.set_ylabel("schedule step (time runs down)")
    ag.spines[["right", "bottom"]].set_visible(False)
    ag.set_title("the step graph, one lane per layer (ticks: nodes)\nred: saved "
                 "activations, forward -> last backward reader", fontsize=10)
    # ---- the arena --------------------------------------------------------------------------
    saved_names = {v.name for v in saved}
    for buf in report.plan.buffers:
        if buf.persistent:
            continue
        for name in buf.values:
            r = rows.get(name)
            s, e = report.plan.intervals[name]
            is_saved = name in saved_names
            colour = SAVED if is_saved else BAR.get(r.role if r else "", "#999999")
            am.add_patch(Rectangle((buf.offset / kib, s - 0.5), max(buf.nbytes, 1) / kib,
                                   e - s + 1, facecolor=colour, alpha=0.8 if is_saved else 0.45,
                                   edgecolor="black", lw=0.25))
            if is_saved:
                am.text((buf.offset + buf.nbytes / 2) / kib, (s + e) / 2, f"%{name}",
                        rotation=90, ha="center", va="center", fontsize=6.5, color="white")
    am.axvline(report.planned_bytes / kib, color="black", lw=1, ls="--")
    am.set_xlim(0, report.planned_bytes / kib * 1.02)
    am.set_xlabel("arena offset (KiB)")
    am.xaxis.set_label_position("top")
    am.xaxis.tick_top()
    am.tick_params(labelleft=False)
    am.set_title(f"the arena: {fmt_bytes(report.planned_bytes)} (bound "
                 f"{fmt_bytes(report.lower_bound_bytes)})\nsaved activations "
                 f"{fmt_bytes(report.saved_activation_bytes)} in {len(saved)} values",
                 fontsize=10)
    am.legend(handles=[Patch(color=SAVED, label="saved activation"),
                       Patch(color=BAR["forward"], alpha=0.45, label="forward temporary"),
                       Patch(color=BAR["backward"], alpha=0.45, label="backward temporary"),
                       Patch(color=BAR["update"], alpha=0.45, label="update temporary")],
              loc="lower right", fontsize=8)
    fig.suptitle(title or f"{graph.name}: forward, backward and the arena on one time axis",
                 fontsize=12, y=0.985)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
