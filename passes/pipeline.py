"""The compiler pipeline as an object: an ordered list of named passes.

A :class:`Pass` is a function ``run(graph, ctx) -> graph`` (or ``(graph, changed)``)
with a name; the :class:`Pipeline` runs them in order and after each one

* verifies the graph (``graphc.ir.verify``; on by default),
* records the time it took and whether it changed the graph (:class:`PassRecord`),
* keeps the graph as a *stage* when asked (``keep=True``, or for ``--after NAME``),
* dumps the IR when ``GRAPHC_DUMP_IR`` names the pass (``all`` for every pass; to stderr,
  or to files in ``GRAPHC_DUMP_DIR``).

A failing pass raises :class:`PassError`, naming the pass and the passes that ran before
it.  Pipelines are values: ``insert_after``, ``insert_before``, ``without`` and ``replace``
return new ones, so a user edits the default instead of rebuilding it::

    p = gc.passes.step_pipeline("llvm").insert_after("simplify", Pass("mine", my_fn))
    step = gc.compile_step(loss, params, opt, batch, passes=p)

``ctx`` (:class:`PassContext`) carries what a pass needs besides the graph (the
optimizer, the memory budget, ...) in ``ctx.options`` and collects what passes report in
``ctx.reports``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from graphc.ir import Graph, GraphcError, fingerprint, verify


class PassError(GraphcError):
    """A pass failed, or left a graph the verifier rejects."""


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable
    doc: str = ""

    @staticmethod
    def wrap(fn: Callable, name: str | None = None) -> "Pass":
        """A user's ``fn(graph) -> graph`` (or ``fn(graph, ctx)``) as a pass."""
        import inspect
        if isinstance(fn, Pass):
            return fn
        try:
            n_params = len(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            n_params = 2
        run = fn if n_params >= 2 else (lambda g, ctx, f=fn: f(g))
        doc = (fn.__doc__ or "").strip().splitlines()
        return Pass(name or getattr(fn, "__name__", "pass"), run, doc[0] if doc else "")


@dataclass
class PassContext:
    options: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)


class PassRecord:
    """One pass's run: name, seconds, whether it changed the graph, nodes after it.

    A pass that does not say whether it changed the graph is judged by the fingerprints
    of its input and output (``graphc.ir.fingerprint``), compared only when ``changed``
    is first read: a compile never asks, and fingerprinting after every pass was ~25 %
    of the step pipeline's time (passes are pure: neither graph changes later)."""

    __slots__ = ("name", "seconds", "_changed", "nodes", "_graphs")

    def __init__(self, name: str, seconds: float, changed, nodes: int, graphs=None):
        self.name, self.seconds, self.nodes = name, seconds, nodes
        self._changed = None if changed is None else bool(changed)
        self._graphs = graphs          # (input, output) while ``changed`` is unknown

    @property
    def changed(self) -> bool:
        if self._changed is None:
            before, after = self._graphs
            self._changed = before is not after and fingerprint(before) != fingerprint(after)
            self._graphs = None
        return self._changed

    def __repr__(self) -> str:
        return (f"PassRecord(name={self.name!r}, seconds={self.seconds!r}, "
                f"changed={self.changed!r}, nodes={self.nodes!r})")

    def __eq__(self, other) -> bool:
        return isinstance(other, PassRecord) and (self.name, self.seconds, self.changed,
                                                  self.nodes) == (other.name, other.seconds,
                                                                  other.changed, other.nodes)


@dataclass
class PipelineResult:
    graph: Graph
    stages: dict                  # pass name -> graph after it (those kept)
    records: list                 # PassRecord per pass, in order
    ctx: PassContext

    def timings(self) -> str:
        return "\n".join(f"{r.name:<14} {r.seconds * 1e3:8.2f} ms  "
                         f"{'changed' if r.changed else 'unchanged':<9} {r.nodes} nodes"
                         for r in self.records)


class Pipeline:
    """An ordered list of uniquely named passes (see the module docstring)."""

    def __init__(self, passes=(), verify: bool = True):
        self.passes = tuple(Pass.wrap(p) for p in passes)
        names = [p.name for p in self.passes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PassError(f"pipeline: pass names must be unique; repeated: {dup}")
        self.verify = verify

    def __repr__(self):
        return f"Pipeline({' -> '.join(self.names())})"

    def __iter__(self):
        return iter(self.passes)

    def __len__(self):
        return len(self.passes)

    def names(self) -> list[str]:
        return [p.name for p in self.passes]

    def index(self, name: str) -> int:
        for i, p in enumerate(self.passes):
            if p.name == name:
                return i
        raise PassError(f"pipeline has no pass {name!r}; passes are "
                        f"{', '.join(self.names()) or '(none)'}")

    # ---- editing (each returns a new pipeline) ---------------------------------------------
    def insert_after(self, name: str, *new) -> "Pipeline":
        i = self.index(name) + 1
        return Pipeline(self.passes[:i] + tuple(Pass.wrap(p) for p in new) + self.passes[i:],
                        self.verify)

    def insert_before(self, name: str, *new) -> "Pipeline":
        i = self.index(name)
        return Pipeline(self.passes[:i] + tuple(Pass.wrap(p) for p in new) + self.passes[i:],
                        self.verify)

    def append(self, *new) -> "Pipeline":
        return Pipeline(self.passes + tuple(Pass.wrap(p) for p in new), self.verify)

    def without(self, *names: str) -> "Pipeline":
        for n in names:
            self.index(n)
        return Pipeline([p for p in self.passes if p.name not in names], self.verify)

    def replace(self, name: str, new) -> "Pipeline":
        i = self.index(name)
        return Pipeline(self.passes[:i] + (Pass.wrap(new, name),) + self.passes[i + 1:],
                        self.verify)

    def until(self, name: str) -> "Pipeline":
        """The passes up to and including ``name``."""
        return Pipeline(self.passes[:self.index(name) + 1], self.verify)

    # ---- running -------------------------------------------------------------------------------
    def run(self, graph: Graph, ctx: PassContext | None = None, keep=False,
            stages: dict | None = None) -> PipelineResult:
        """Run every pass on ``graph``.  ``keep``: keep every stage (True), the named ones
        (a collection of names) or none (False); ``stages``: stages already recorded
        (e.g. ``forward``), copied into the result first."""
        ctx = ctx if ctx is not None else PassContext()
        kept = dict(stages or {})
        records: list[PassRecord] = []
        dump = _dump_names()
        for p in self.passes:
            t0 = time.perf_counter()
            try:
                out = p.run(graph, ctx)
            except GraphcError as e:
                raise type(e)(f"{e}\n  (in pass '{p.name}'{_after(records)})") from e
            except Exception as e:
                raise PassError(f"pass '{p.name}' failed{_after(records)}: "
                                f"{type(e).__name__}: {e}") from e
            new, changed = out if isinstance(out, tuple) else (out, None)
            if not isinstance(new, Graph):
                raise PassError(f"pass '{p.name}' returned {type(new).__name__}, not a Graph")
            if self.verify:
                try:
                    verify(new)
                except GraphcError as e:
                    raise PassError(f"the graph after pass '{p.name}' is invalid"
                                    f"{_after(records)}: {e}") from e
            records.append(PassRecord(p.name, time.perf_counter() - t0, changed,
                                      len(new.nodes), None if changed is not None else
                                      (graph, new)))
            graph = new
            if keep is True or (keep and p.name in keep):
                kept[p.name] = graph
            if dump and (p.name in dump or "all" in dump):
                _dump(p.name, graph)
        return PipelineResult(graph, kept, records, ctx)


def _after(records) -> str:
    if not records:
        return " (the first pass)"
    return " (after " + ", ".join(r.name for r in records) + ")"


def _dump_names() -> set:
    raw = os.environ.get("GRAPHC_DUMP_IR", "")
    return {n.strip() for n in raw.split(",") if n.strip()}


def _dump(name: str, graph: Graph) -> None:
    text = f"; IR after pass {name}\n{graph}\n"
    out_dir = os.environ.get("GRAPHC_DUMP_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{graph.name}.{name}.ir")
        with open(path, "w") as f:
            f.write(text)
    else:
        sys.stderr.write(text)
