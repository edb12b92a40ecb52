"""``graphc memplan MODEL``: the memory planner's report for the compiled training step."""
from __future__ import annotations

import sys

from ..ir import GraphcError
from ..train import compile_step
from .common import prepared_from_args

FIELDS = ("naive_bytes", "planned_bytes", "lower_bound_bytes", "saved_activation_bytes")


def _mb(n) -> str:
    return f"{n / 2**20:.3f} MiB ({n:,} bytes)"


def format_report(report) -> str:
    text = str(report)
    if text and not text.startswith("<"):
        return text
    lines = [f"{f.replace('_', ' ')}: {_mb(getattr(report, f))}" for f in FIELDS
             if hasattr(report, f)]
    return "\n".join(lines)


def run(args) -> int:
    p = prepared_from_args(args)
    step, backend = compile_step(p, args.backend, args.threads,
                                 notice=lambda s: print(s, file=sys.stderr))
    try:
        report = step.memory_report()
    except (ImportError, AttributeError, NotImplementedError) as e:
        print(f"graphc memplan: the memory planner is not available in this build ({e})",
              file=sys.stderr)
        return 1
    print(format_report(report))
    print(f"(model {p.spec.name}, batch {p.config.batch_size}, {p.config.optimizer}, "
          f"backend {backend})")
    if args.plot:
        plot = getattr(report, "plot", None)
        if plot is None:
            try:
                from ..passes import memory
                plot = lambda path: memory.plot_timeline(report, path)  # noqa: E731
            except (ImportError, AttributeError):
                raise GraphcError("this build's memory planner has no timeline plot") from None
        plot(args.plot)
        print(f"timeline written to {args.plot}")
    if args.figure:
        from ..passes.memfigure import plot_training_memory
        from ..passes.memreport import memory_report
        from .graph_cmds import group_names
        rep = memory_report(step.graph)        # the planner's plan over the step's schedule
        plot_training_memory(step.graph, rep, args.figure, group_names(p.model.module),
                             f"{p.spec.name} training step (batch {p.config.batch_size}, "
                             f"{p.config.optimizer}): graph, saved activations and arena")
        print(f"memory figure written to {args.figure}")
    return 0
