"""Named pipeline stages for ``--after PASS`` (``graphc dot`` / ``graphc ir``).

The stages are the traced ``forward`` graph and the graph after every pass of the step
pipeline (``graphc.passes.standard``; the user's ``--pass`` ones included), exactly as
``gc.compile_step`` runs it: there is no second list of passes here.
"""
from __future__ import annotations

from ..ir import Graph, GraphcError


def available(stages: dict) -> list[str]:
    """The stages ``--after`` accepts: ``forward`` and every pass of the pipeline."""
    return list(stages)


def select(stages: dict, graph: str | None, after: str | None) -> tuple[str, Graph]:
    """The graph to show: ``--after`` a stage, else forward / backward / step."""
    if after is not None:
        names = available(stages)
        if after not in names:
            raise UsageError(f"unknown stage {after!r} for --after; stages are "
                             f"{', '.join(names)}")
        if graph not in (None, "step") and after not in ("forward", "autodiff"):
            raise UsageError(f"--after {after} shows the step graph; drop --graph {graph}")
        return after, stages[after]
    graph = graph or "step"
    if graph == "forward":
        return "forward", stages["forward"]
    if graph == "backward":
        return "autodiff", stages["autodiff"]
    return list(stages)[-1], list(stages.values())[-1]


class UsageError(GraphcError, ValueError):
    """A bad combination of command-line arguments (exit status 2)."""
