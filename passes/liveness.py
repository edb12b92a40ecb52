"""Liveness over the schedule: when each value is born and when it is last read.

``graph.nodes`` is the schedule.  Node ``i`` defines its output at step ``i``; a value is
live over the closed interval ``[start, end]`` from its definition to the step of its last
reader.  Step ``len(graph.nodes)`` (``Liveness.end_step``) is a virtual step after the last
node, where the graph's outputs are read and the optimizer's non-in-place updates are
copied into their targets -- values read there live to the end.

Persistent values live outside the arena, for the whole step: graph inputs (parameters,
optimizer state, the batch), constants (literals in the compiled module) and graph outputs
(the caller's result buffers).  Saved activations are forward values some backward node
reads (``graphc.ir.saved_activations``): they are what reverse-mode AD keeps alive from the
forward pass into the backward pass.

Fused values (``fused_values``) are computed in registers inside a fusion group and have
no buffer.  A fusion group runs as one kernel at the position of its last member
(``exec_positions``): its stored members are defined there and its operands read there;
an operand of a fused value stays live until the last reader of that fused value.

This is an analysis: it never changes the graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from graphc.ir import Graph, Value, identity_ops, saved_activations, view_ops

PERSISTENT_KINDS = ("input", "constant", "output")


#: ops whose output reads its operand's buffer (views and identities: OpDef.view, .identity)
VIEW_OPS = tuple(sorted(view_ops() | identity_ops()))


def fused_values(graph: Graph) -> set[Value]:
    """Values consumed only inside their own fusion group: they need no buffer.

    The fusion pass (``passes/fusion.py``) marks nodes with ``attrs["group"]`` and is the
    authority on which members it stores (``graphc.passes.fusion.fused_values``: not
    matmuls or reductions, not values read outside the group, even through a view); this
    default asks it.  Without the fusion module, a value whose producer and every reader
    carry the same group (no matmul/reduction, no output or update) is fused.  Without group
    marks this is the empty set.  The planner takes any ``fused=`` set or callable instead.
    """
    if not any("group" in n.attrs for n in graph.nodes):
        return set()
    try:
        from .fusion import fused_values as from_fusion
    except ImportError:
        from_fusion = None
    if from_fusion is not None:
        return set(from_fusion(graph))
    from graphc.ir import get_op
    out = set()
    keep = set(graph.outputs) | {b for _, b in graph.updates}
    for n in graph.nodes:
        grp = n.attrs.get("group")
        if grp is None or n.op in ("input", "constant", "matmul") \
                or get_op(n.op).kind == "reduce":
            continue
        v = n.output
        if v in keep or not v.users:
            continue
        if all(u.attrs.get("group") == grp for u in v.users):
            out.add(v)
    return out


def exec_positions(graph: Graph) -> dict:
    """Schedule step at which each node runs.  A fusion group runs as one kernel at the
    position of its last member, so every member is computed (and reads) there; a node
    reading a value of a group that has not run yet (a view looked through by the fusion
    pass) runs when it can, i.e. there too.  Sorting nodes by (position, index) is a
    topological order: how ``numpy_backend.run_planned`` executes a fused graph."""
    last = {}
    for i, n in enumerate(graph.nodes):
        g = n.attrs.get("group")
        if g is not None:
            last[g] = i
    pos = {}
    for i, n in enumerate(graph.nodes):
        g = n.attrs.get("group")
        p = last[g] if g is not None else i
        for x in n.inputs:
            if pos[x.node] > p:
                p = pos[x.node]
        pos[n] = p
    return pos


def _check_positions(graph: Graph, positions) -> dict:
    """``node -> step`` from a backend's ``value name -> step`` map (checked)."""
    pos = {}
    for n in graph.nodes:
        p = positions.get(n.output.name)
        if p is None or int(p) != p or p < 0:
            raise ValueError(f"positions: no valid step for value %{n.output.name} ({n.op}): "
                             f"{p!r}")
        p = int(p)
        for x in n.inputs:
            if pos[x.node] > p:
                raise ValueError(f"positions: %{n.output.name} ({n.op}) at step {p} reads "
                                 f"%{x.name}, defined later at step {pos[x.node]}")
        pos[n] = p
    return pos


def persistent_kind(graph: Graph, v: Value, outputs: set | None = None) -> str | None:
    """``"input"``, ``"constant"``, ``"output"`` or None (a value the arena holds)."""
    if v.node.op == "input":
        return "input"
    if v.node.op == "constant":
        return "constant"
    if v in (outputs if outputs is not None else set(graph.outputs)):
        return "output"
    return None


@dataclass
class Liveness:
    """Per-value live intervals over ``graph.nodes`` (indices; ``end_step`` = after the last node).

    ``start[v]``/``end[v]``: definition step and last-read step (inclusive) of each value;
    ``persistent[v]``: "input", "constant" or "output" for values outside the arena;
    ``saved``: the saved activations in schedule order; ``fused``: values with no buffer;
    ``update_of[b] = a`` for each update ``a <- b``.
    """
    graph: Graph
    start: dict
    end: dict
    persistent: dict
    saved: list
    fused: set
    update_of: dict
    end_step: int
    index: dict = field(repr=False)   # node -> schedule position
    nbytes: dict = field(repr=False, default_factory=dict)   # value -> bytes (cached)

    @property
    def saved_bytes(self) -> int:
        return sum(v.nbytes for v in self.saved)

    def interval(self, v: Value) -> tuple[int, int]:
        return self.start[v], self.end[v]

    def intervals(self) -> list[tuple[str, int, int, int]]:
        """``(name, start, end, nbytes)`` of every value, in schedule order."""
        return [(n.output.name, self.start[n.output], self.end[n.output], n.output.nbytes)
                for n in self.graph.nodes]

    def live_bytes(self, include_persistent=False) -> list[int]:
        """Bytes of values live at each step ``0..end_step`` (fused values excluded)."""
        diff = [0] * (self.end_step + 2)
        for n in self.graph.nodes:
            v = n.output
            if v in self.fused or (v in self.persistent and not include_persistent):
                continue
            diff[self.start[v]] += v.nbytes
            diff[self.end[v] + 1] -= v.nbytes
        out, acc = [], 0
        for d in diff[:-1]:
            acc += d
            out.append(acc)
        return out


def liveness(graph: Graph, fused=None, positions=None, end_step=None) -> Liveness:
    """Live intervals of every value of ``graph`` in its current schedule.

    ``fused``: a set of values, or a callable ``graph -> set``, that need no buffer
    (default: ``fused_values``).  ``positions``: ``value name -> step`` at which a backend
    executes each node (default ``exec_positions``: schedule index, a fusion group at its
    last member).  Steps are small non-negative integers, non-decreasing along every edge
    (a backend's kernel levels, say); ``end_step`` -- where outputs and copied updates are
    read -- is then one past the largest, or ``end_step`` if that is later (a backend that
    runs copies after its last kernel of a node).
    """
    nodes = graph.nodes
    if positions is not None:
        pos = _check_positions(graph, positions)
        end_step = max(max(pos.values(), default=-1) + 1, int(end_step or 0))
    else:
        pos = exec_positions(graph)
        end_step = len(nodes)
    index = {n: i for i, n in enumerate(nodes)}
    if fused is None:
        fused = fused_values(graph)
    elif callable(fused):
        fused = fused(graph)
    fused = set(fused)
    outputs = set(graph.outputs)
    keep = outputs | {b for _, b in graph.updates}
    for n in nodes:                    # a view of a register value is a register value
        if n.op in VIEW_OPS and n.inputs and n.inputs[0] in fused and n.output not in keep \
                and "group" not in n.attrs:       # (a group member is its kernel's work)
            fused.add(n.output)
    update_of = {}
    for a, b in graph.updates:
        update_of.setdefault(b, a)
    start, end, persistent = {}, {}, {}
    for i, n in enumerate(nodes):
        v = n.output
        start[v] = pos[n]
        end[v] = pos[n]
        k = persistent_kind(graph, v, outputs)
        if k:
            persistent[v] = k
    for v in outputs:
        end[v] = end_step
    for v in update_of:
        end[v] = end_step
    # Walk backwards: a node's readers are all later, so their (effective) read time is final.
    for i in range(len(nodes) - 1, -1, -1):
        n = nodes[i]
        t = end[n.output] if n.output in fused else pos[n]
        if positions is not None and n.op in VIEW_OPS and n.output in outputs:
            t = end_step       # a backend copies an output view out at the end
        for x in n.inputs:
            if t > end[x]:
                end[x] = t
    # Inputs and constants exist for the whole step; their ``end`` is their last read (what
    # decides whether an update may overwrite an input in place).
    nbytes = {n.output: math.prod(n.output.type.shape) * n.output.type.dtype.itemsize
              for n in nodes}
    return Liveness(graph, start, end, persistent, saved_activations(graph), fused, update_of,
                    end_step, index, nbytes)
