"""The memory report: the figures of a plan, a text table and a PNG timeline.

``step.memory_report()`` / ``graphc.passes.memreport.memory_report(graph)`` return a
``MemoryReport``.  ``str(report)`` is a table (one row per value); ``report.plot(path)``
draws the arena over time (needs the optional ``plot`` extra: matplotlib).
"""
from __future__ import annotations

from dataclasses import dataclass

from graphc.ir import Graph, GraphcError, saved_activations, saved_bytes

from .memory import lower_bound, plan_memory


def _fmt(n: int) -> str:
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n} B"


@dataclass
class ValueRow:
    """One value in the report: where and when it lives."""
    name: str
    op: str
    role: str
    kind: str           # see MemoryPlan.kinds
    start: int
    end: int
    nbytes: int
    offset: int         # -1 outside the arena
    saved: bool         # a saved activation
    remat: bool         # recomputed in the backward pass


@dataclass
class MemoryReport:
    naive_bytes: int
    planned_bytes: int
    lower_bound_bytes: int
    saved_activation_bytes: int
    persistent_bytes: int
    num_saved: int
    strategy: str
    strategies: dict
    rows: list
    live_profile: list      # live arena bytes at each schedule step
    plan: object
    graph_name: str
    kernel_axis: dict | None = None   # a backend's kernel order (see plot)

    @classmethod
    def build(cls, graph: Graph, plan, fused=None) -> "MemoryReport":
        saved = set(saved_activations(graph))
        rows = []
        for n in graph.nodes:
            v = n.output
            s, e = plan.intervals[v.name]
            rows.append(ValueRow(v.name, n.op, n.role, plan.kinds[v.name], s, e, v.nbytes,
                                 plan.offsets.get(v.name, -1), v in saved,
                                 bool(n.attrs.get("remat"))))
        persistent = sum(r.nbytes for r in rows if r.kind in ("input", "constant", "output"))
        bufs = [b for b in plan.buffers if not b.persistent]
        _, prof = lower_bound(bufs, max([len(graph.nodes)] + [b.end for b in bufs]))
        return cls(plan.naive_bytes, plan.arena_bytes, plan.lower_bound_bytes,
                   saved_bytes(saved), persistent, len(saved), plan.strategy,
                   dict(plan.strategies), rows, prof, plan, graph.name)

    @property
    def intervals(self) -> dict:
        """``name -> (start, end)`` of every value."""
        return {r.name: (r.start, r.end) for r in self.rows}

    def summary(self) -> str:
        ratio = self.planned_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0
        tried = ", ".join(f"{k} {_fmt(v)}" for k, v in self.strategies.items())
        rows = [
            ("naive (every value its own buffer)", self.naive_bytes, ""),
            (f"planned arena (strategy: {self.strategy})", self.planned_bytes,
             f"  = {ratio:.3f} x bound"),
            ("lower bound (peak live bytes)", self.lower_bound_bytes, ""),
            (f"saved activations ({self.num_saved} values)", self.saved_activation_bytes, ""),
            ("persistent (inputs, constants, outputs)", self.persistent_bytes, ""),
        ]
        width = max(len(label) for label, _, _ in rows)
        return "\n".join(
            [f"memory plan of {self.graph_name} ({len(self.rows)} values)"]
            + [f"  {label:<{width}} {b:>12,d} B  {_fmt(b):>11}{extra}" for label, b, extra in rows]
            + [f"  strategies tried: {tried}"])

    def table(self, limit: int | None = None) -> str:
        head = f"{'value':<22} {'op':<13} {'role':<8} {'kind':<8} {'start':>5} {'end':>5} " \
               f"{'bytes':>10} {'offset':>10}  note"
        lines = [head, "-" * len(head)]
        rows = self.rows if limit is None else self.rows[:limit]
        for r in rows:
            note = ("saved" if r.saved else "") + (" remat" if r.remat else "")
            if r.kind in ("view", "inplace", "update"):
                note += f" -> %{self.plan.aliases[r.name]}"
            off = "-" if r.offset < 0 else f"{r.offset:,d}"
            lines.append(f"%{r.name[:21]:<21} {r.op[:13]:<13} {r.role:<8} {r.kind:<8} "
                         f"{r.start:>5} {r.end:>5} {r.nbytes:>10,d} {off:>10}  {note.strip()}")
        if limit is not None and len(self.rows) > limit:
            lines.append(f"... {len(self.rows) - limit} more values")
        return "\n".join(lines)

    def __str__(self):
        return self.summary() + "\n\n" + self.table()

    def plot(self, path, title: str | None = None, dpi: int = 110):
        """Save a PNG timeline of the arena: one bar per buffer over its schedule steps at its
        offset (saved activations orange, remat red), live bytes and the bound on the right."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.patches import Patch, Rectangle
        except ImportError:
            raise GraphcError("MemoryReport.plot needs matplotlib: pip install "
                              "'graphc[plot]' (or pip install matplotlib)") from None
        rows = {r.name: r for r in self.rows}
        colours = {"forward": "#4C72B0", "backward": "#55A868", "update": "#8172B2",
                   "tangent": "#64B5CD", "saved": "#DD8452", "remat": "#C44E52"}
        mib = float(1 << 20)

        def colour(name):
            r = rows.get(name)
            if r is None:                   # a backend's scratch (no graph value)
                return "#999999"
            return colours["remat"] if r.remat else colours["saved"] if r.saved else \
                colours.get(r.role, "#999999")

        bars = []                           # (start, end, offset, nbytes, colour)
        if self.kernel_axis:                # the backend's own kernel order
            for name, off, nbytes, first, last in self.kernel_axis["storages"]:
                bars.append((first, last, off, nbytes, colour(name)))
            steps = len(self.kernel_axis["kernels"])
            xlabel = (f"kernel, in the backend's execution order ({steps} kernels; dotted: "
                      "barriers between levels)")
        else:
            for b in self.plan.buffers:
                if b.persistent:
                    continue
                for name in b.values:       # in-place successors and views share the bytes
                    s, e = self.plan.intervals[name]
                    bars.append((s, e, b.offset, b.nbytes, colour(name)))
            steps = max([e for _, e in self.plan.intervals.values()] + [0]) + 1
            xlabel = "schedule step (node index)"
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6), width_ratios=[4, 1],
                                      sharey=True)
        for s, e, off, nbytes, c in bars:
            ax.add_patch(Rectangle((s, off / mib), e - s + 1, max(nbytes, 1) / mib,
                                   facecolor=c, edgecolor="black", linewidth=0.3, alpha=0.85))
        if self.kernel_axis:
            for i, (_, barrier) in enumerate(self.kernel_axis["kernels"]):
                if barrier:
                    ax.axvline(i, color="grey", lw=0.6, ls=":")
        ax.set_xlim(0, steps + 1)
        ax.set_ylim(0, max(self.planned_bytes, 1) / mib * 1.03)
        ax.axhline(self.planned_bytes / mib, color="black", lw=1, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("arena offset (MiB)")
        ax.legend(handles=[Patch(color=colours[k], label=k) for k in
                           ("forward", "saved", "backward", "update", "remat")],
                  loc="upper left", fontsize=8)
        ax.set_title(title or f"{self.graph_name}: arena {_fmt(self.planned_bytes)} "
                     f"(bound {_fmt(self.lower_bound_bytes)}, naive {_fmt(self.naive_bytes)}, "
                     f"saved {_fmt(self.saved_activation_bytes)})", fontsize=10)
        prof = [p / mib for p in self.live_profile]
        if self.kernel_axis:                # live bytes per kernel, from the same bars
            live = [0] * (steps + 1)
            for s, e, _, nbytes, _ in bars:
                for t in range(s, e + 1):
                    live[t] += nbytes
            prof = [p / mib for p in live]
        ax2.fill_between(range(len(prof)), prof, step="post", color="#999999", alpha=0.6)
        ax2.axhline(self.lower_bound_bytes / mib, color="red", lw=1, ls=":", label="bound")
        ax2.axhline(self.planned_bytes / mib, color="black", lw=1, ls="--", label="arena")
        ax2.set_xlabel("step")
        ax2.set_title("live bytes", fontsize=10)
        ax2.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        return path


def memory_report(graph: Graph, plan: MemoryPlan | None = None, **options):
    """``MemoryReport`` for ``graph``: plan it (``plan_memory`` options) unless ``plan`` is given.

    Options that are not planner options (e.g. backend options passed through
    ``step.memory_report()``) are ignored.
    """
    known = {k: options[k] for k in ("strategy", "views", "fused", "inplace", "alignment",
                                     "exec_positions", "concurrent", "updates_in_place",
                                     "scratch", "end_step") if k in options}
    if plan is None:
        plan = plan_memory(graph, **known)
    return MemoryReport.build(graph, plan, known.get("fused"))
