"""``graphc dot`` and ``graphc ir``: the IR of a model's training step at any stage."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from ..ir import GraphcError, format_graph, to_dot
from .common import pipeline_from_args, stages_from_args
from .stages import available, select

GRAPHVIZ_HINT = ("rendering {fmt} needs Graphviz's 'dot' program, which is not installed: "
                 "apt-get install -y graphviz (Debian/Ubuntu), dnf install graphviz (Fedora), "
                 "brew install graphviz (macOS); or write DOT text with --format dot")


def render(dot_text: str, fmt: str) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise GraphcError(GRAPHVIZ_HINT.format(fmt=fmt.upper()))
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True)
    if proc.returncode != 0:            # dot's spline router fails on some row layouts
        proc = subprocess.run([exe, f"-T{fmt}", "-Gsplines=line"], input=dot_text.encode(),
                              capture_output=True)
    if proc.returncode != 0:
        raise GraphcError(f"Graphviz dot failed: {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout


def list_passes(args) -> int:
    from ..passes.standard import describe
    print(describe(pipeline_from_args(args)))
    return 0


def group_names(module) -> dict:
    """``{"params.0": "0: Linear 64→256"}`` for the top-level layers of a module."""
    from ..nn import Linear
    out = {}
    for name, m in module.named_children():
        what = type(m).__name__
        if isinstance(m, Linear):
            what += f" {m.in_features}→{m.out_features}"
        out[f"params.{name}"] = f"{name}: {what}"
    if not out and isinstance(module, Linear):
        out["params"] = f"Linear {module.in_features}→{module.out_features}"
    return out


def arena_offsets(graph) -> dict:
    """Value name -> arena byte offset in the memory planner's plan of ``graph``."""
    try:
        from ..passes.memory import plan_memory
        return dict(plan_memory(graph).offsets)
    except Exception:                   # noqa: BLE001  (a picture without offsets is fine)
        return {}


def dot_text(args) -> tuple[str, object, str]:
    """(DOT text, graph, stage) for ``graphc dot`` arguments."""
    stages, p = stages_from_args(args)
    stage, graph = select(stages, args.graph, args.after)
    roles = {"backward"} if args.graph == "backward" and args.after is None else None
    detail = args.detail or ("summary" if stage == list(stages)[-1] and args.after is None
                             else "full")
    title = (f"{p.spec.name}: {'backward pass' if roles else stage} graph "
             f"({len(graph.nodes)} nodes; {detail}; @ = arena offset in bytes)")
    text = to_dot(graph, show_constants=not args.hide_constants, detail=detail, roles=roles,
                  offsets=arena_offsets(graph), group_names=group_names(p.model.module),
                  title=title)
    return text, graph, stage


def run_dot(args) -> int:
    if args.list_passes:
        return list_passes(args)
    fmt = args.format
    if fmt is None:
        ext = os.path.splitext(args.output or "")[1].lower().lstrip(".")
        fmt = ext if ext in ("svg", "png") else "dot"
    text, graph, stage = dot_text(args)
    data = text.encode() if fmt == "dot" else render(text, fmt)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data if fmt != "dot" else data + b"\n")
        print(f"wrote {args.output} ({fmt}, graph {graph.name} after {stage}: "
              f"{len(graph.nodes)} nodes)", file=sys.stderr)
    elif fmt == "dot":
        print(text)
    else:
        sys.stdout.buffer.write(data)
    return 0


def run_ir(args) -> int:
    if args.list_passes:
        return list_passes(args)
    stages, _ = stages_from_args(args)
    if args.list_stages:
        print("\n".join(available(stages)))
        return 0
    stage, graph = select(stages, args.graph, args.after)
    print(f"; stage: {stage}")
    print(format_graph(graph, show_source=not args.no_source))
    return 0
