"""Named pipeline stages for ``--after PASS`` (``graphc dot`` / ``graphc ir``).

The stages ``gc.compile_step`` records (``forward``, ``autodiff``, ``optimizer``,
``simplify``, ... in pipeline order, see graphc/step.py) are available automatically.
A pass that is not (yet) part of compile_step can still be shown by registering it
here: ``register("fusion", fn)`` with ``fn(graph) -> graph`` applied to the step graph
of the last recorded stage -- one line per pass, no CLI change.
"""
from __future__ import annotations

from ..ir import Graph, GraphcError

_EXTRA: dict = {}          # name -> fn(Graph) -> Graph (or (Graph, changed))


def register(name: str, fn):
    """Make ``--after name`` show ``fn(step_graph)``."""
    _EXTRA[name] = fn


def _result(out) -> Graph:
    return out[0] if isinstance(out, tuple) else out


def _register_known_passes():
    """Passes that exist in this checkout but that compile_step does not record."""
    import importlib
    for mod, fn_name, name in (("graphc.passes.fusion", "fuse", "fusion"),
                               ("graphc.passes.schedule", "schedule_for_memory", "schedule"),
                               ("graphc.passes.remat", "remat", "remat")):
        try:
            fn = getattr(importlib.import_module(mod), fn_name)
        except (ImportError, AttributeError):
            continue
        _EXTRA.setdefault(name, fn)


def available(stages: dict) -> list[str]:
    _register_known_passes()
    return list(stages) + [n for n in _EXTRA if n not in stages]


def select(stages: dict, graph: str | None, after: str | None) -> tuple[str, Graph]:
    """The graph to show: ``--after`` a stage, else forward / backward / step."""
    if after is not None:
        names = available(stages)
        if after not in names:
            raise UsageError(f"unknown stage {after!r} for --after; stages are "
                             f"{', '.join(names)}")
        if graph not in (None, "step") and after not in ("forward", "autodiff"):
            raise UsageError(f"--after {after} shows the step graph; drop --graph {graph}")
        if after in stages:
            return after, stages[after]
        return after, _result(_EXTRA[after](list(stages.values())[-1]))
    graph = graph or "step"
    if graph == "forward":
        return "forward", stages["forward"]
    if graph == "backward":
        return "autodiff", stages["autodiff"]
    return list(stages)[-1], list(stages.values())[-1]


class UsageError(GraphcError, ValueError):
    """A bad combination of command-line arguments (exit status 2)."""
