"""Scheduling for memory: reorder ``graph.nodes`` (any topological order computes the same
values) to lower the peak of live bytes, and so the arena.

As XLA's default memory scheduler does, several heuristics each propose an order and the
one the memory planner packs into the smallest arena wins (the original order is always a
candidate, so the pass never makes a plan worse):

- ``list``: list scheduling -- of the nodes whose operands exist, run the one that frees
  the most bytes net of what it allocates (ties: original order).  A node that reads the
  last use of a big value (a weight gradient consumed by its optimizer update, a saved
  activation consumed by its backward node) runs as soon as it can.
- ``list_free_first``: run any node that frees at least what it allocates as soon as it is
  ready; otherwise keep the original order.
- ``dfs`` / ``dfs_reverse``: depth-first post-order from the step's results (the loss, then
  each optimizer update in order, or in reverse order): each update runs right after the
  gradient it consumes exists, so gradients die young.
- each of the above followed by ``sink``: a node that frees nothing (a broadcast of a
  constant, a transpose of a weight) moves to just before its first reader.

A pure pass: returns a new graph, verified.
"""
from __future__ import annotations

import hashlib
import heapq

from graphc.ir import Graph, GraphcError, identity_ops, verify, view_ops

from .liveness import persistent_kind

__all__ = ["schedule_for_memory", "peak_live_bytes", "HEURISTICS"]

#: ops that allocate nothing (they alias their operand in every backend)
ALIASING = tuple(sorted(view_ops("reshape") | identity_ops()))


def _alloc(graph, n, views, outputs) -> int:
    v = n.output
    if n.op in ("input", "constant") or v in outputs or n.op in views:
        return 0
    return v.nbytes


def _users(n):
    seen, out = set(), []
    for u in n.output.users:
        if u not in seen:
            seen.add(u)
            out.append(u)
    return out


def _operands(n):
    seen, out = set(), []
    for x in n.inputs:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def list_schedule(graph: Graph, free_first=False, views=ALIASING) -> list:
    """Greedy list scheduling by bytes freed minus bytes allocated (see module doc)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    outputs = set(graph.outputs)
    keep = outputs | {b for _, b in graph.updates}
    pers = {n.output for n in graph.nodes if n.op in ("input", "constant")}
    rem = {n.output: len(_users(n)) for n in graph.nodes}
    waiting = {n: len({x.node for x in n.inputs}) for n in graph.nodes}
    alloc = {n: _alloc(graph, n, views, outputs) for n in graph.nodes}

    def freed(n):
        return sum(x.nbytes for x in _operands(n)
                   if rem[x] == 1 and x not in pers and x not in keep)

    def key(n):
        d = freed(n) - alloc[n]
        if free_first:
            return (0 if d >= 0 else 1, order[n])
        return (-d, order[n])

    heap = [(key(n), order[n], n) for n in graph.nodes if waiting[n] == 0]
    heapq.heapify(heap)
    done, out = set(), []
    while heap:
        k, _, n = heapq.heappop(heap)
        if n in done:
            continue
        k2 = key(n)
        if k2 != k:                       # stale: something it reads lost other readers
            heapq.heappush(heap, (k2, order[n], n))
            continue
        done.add(n)
        out.append(n)
        for x in _operands(n):
            rem[x] -= 1
            if rem[x] == 1:               # its last reader may now free it
                for u in _users(x.node):
                    if u not in done and waiting[u] == 0:
                        heapq.heappush(heap, (key(u), order[u], u))
        for u in _users(n):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(heap, (key(u), order[u], u))
    return out


def dfs_schedule(graph: Graph, reverse_updates=False) -> list:
    """Post-order DFS from the loss and the updates (operands needing more memory first)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    cum = {}
    for n in graph.nodes:                 # bytes of the subtree (shared nodes counted again)
        c = 0 if n.op in ("input", "constant") else n.output.nbytes
        for x in n.inputs:
            c += cum[x.node]
        cum[n] = min(c, 1 << 62)
    ups = [b.node for _, b in graph.updates]
    if reverse_updates:
        ups = ups[::-1]
    roots = [v.node for v in graph.outputs] + ups + list(graph.nodes)
    done, out = set(), []
    for r in roots:
        if r in done:
            continue
        stack = [(r, False)]
        while stack:
            n, expanded = stack.pop()
            if n in done:
                continue
            if expanded:
                done.add(n)
                out.append(n)
                continue
            stack.append((n, True))
            ops = [x.node for x in _operands(n) if x.node not in done]
            ops.sort(key=lambda m: (-cum[m], order[m]))
            for m in reversed(ops):       # first in list = visited first
                stack.append((m, False))
    return out


def sink(graph: Graph, nodes: list) -> list:
    """Move each node that frees nothing to just before its first reader."""
    pos = {n: i for i, n in enumerate(nodes)}
    last = {}
    for i, n in enumerate(nodes):
        for x in n.inputs:
            last[x] = i
    outputs = set(graph.outputs) | {b for _, b in graph.updates}
    key = {n: float(i) for i, n in enumerate(nodes)}
    for i in range(len(nodes) - 1, -1, -1):
        n = nodes[i]
        if n.op == "input" or not n.output.users or n.output in outputs:
            continue
        frees = any(last.get(x) == i and persistent_kind(graph, x) is None for x in n.inputs)
        if frees:
            continue
        first = min(key[u] for u in n.output.users)
        if first - 1e-3 > key[n]:
            key[n] = first - 1e-3
    return sorted(nodes, key=lambda n: (key[n], pos[n]))


HEURISTICS = {
    "original": lambda g: list(g.nodes),
    "list": lambda g: list_schedule(g),
    "list_free_first": lambda g: list_schedule(g, free_first=True),
    "dfs": lambda g: dfs_schedule(g),
    "dfs_reverse": lambda g: dfs_schedule(g, reverse_updates=True),
}


def peak_live_bytes(graph: Graph, **plan_options) -> int:
    """The planner's lower bound (peak live arena bytes) of ``graph`` in its schedule."""
    from .memory import plan_memory
    return plan_memory(graph, **plan_options).lower_bound_bytes


def _reordered(graph: Graph, nodes: list) -> Graph:
    g, vmap = graph.clone()
    new_of = {n: vmap[n.output].node for n in graph.nodes}
    g.nodes = [new_of[n] for n in nodes]
    return g


def _bound(graph: Graph, nodes: list, plan_options) -> tuple[int, int]:
    """(lower bound, byte-steps) of ``graph`` run in order ``nodes``: buffers only, no
    placement (the graph's node list is swapped in and restored)."""
    from .liveness import liveness
    from .memory import CONTIGUOUS_VIEWS, assign_buffers, lower_bound
    saved = graph.nodes
    graph.nodes = nodes
    try:
        live = liveness(graph, plan_options.get("fused"))
        bufs, _, _ = assign_buffers(graph, live, plan_options.get("views", CONTIGUOUS_VIEWS),
                                    plan_options.get("inplace", True))
        bound, prof = lower_bound([b for b in bufs if not b.persistent], len(nodes))
    finally:
        graph.nodes = saved
    return bound, sum(prof)


def schedule_for_memory(graph: Graph, heuristics=None, report: dict | None = None,
                        memo=None, **plan_options) -> Graph:
    """A copy of ``graph`` in the candidate order with the lowest peak of live bytes.

    Every candidate is scored by the planner's lower bound (ties: fewest byte-steps, i.e.
    values dying young; then the original order).  Only buffers and their live intervals
    are computed -- no placement: the arena itself is planned once, by the backend, for
    the graph it runs.  The original order is a candidate, so the bound never grows.
    ``report`` (a dict), when given, receives ``{candidate: bound_bytes}`` and
    ``"chosen"``.  ``plan_options`` are the planner's (``views``, ``fused``, ``inplace``).

    ``memo`` (``get(key) -> dict | None``, ``put(key, dict)``): the report of an earlier
    search, kept by :func:`structure_key` -- the graph's structure, shapes and names,
    not its constants' values, which no candidate's order or bound depends on.  On a hit
    only the chosen heuristic runs (the search is half of a compile that finds its code
    in the disk cache).  Whatever a memo holds, the result is a verified topological
    order: a stale entry can cost memory, never a wrong value.
    """
    names = list(heuristics or HEURISTICS)
    if "original" not in names:
        names.insert(0, "original")
    key = structure_key(graph, names, plan_options) if memo is not None else None
    if key is not None:
        hit = _from_memo(graph, names, memo.get(key))
        if hit is not None:
            if report is not None:
                report.update(hit[1])
            return hit[0]
    cands, seen = [], set()
    for name in names:
        base = HEURISTICS[name](graph)
        for cand_name, nodes in ((name, base), (name + "+sink", sink(graph, base))):
            sig = tuple(id(n) for n in nodes)
            if sig in seen:
                continue
            seen.add(sig)
            if len(nodes) != len(graph.nodes):
                raise AssertionError(f"schedule {cand_name} lost nodes")
            bound, steps = _bound(graph, nodes, plan_options)
            cands.append(((bound, steps, name != "original"), cand_name, nodes))
            if report is not None:
                report[cand_name] = bound
    score, chosen, nodes = min(cands, key=lambda c: c[0])
    if report is not None:
        report["chosen"] = chosen
    if key is not None:
        memo.put(key, {**{c[1]: c[0][0] for c in cands}, "chosen": chosen})
    return verify(_reordered(graph, nodes))


def _from_memo(graph: Graph, names: list, entry) -> tuple | None:
    """(graph in the remembered candidate's order, its report), or None when ``entry``
    is not a report of these candidates or its order does not verify."""
    if not isinstance(entry, dict):
        return None
    chosen = entry.get("chosen")
    base, _, sunk = chosen.partition("+") if isinstance(chosen, str) else ("", "", "")
    if base not in names or sunk not in ("", "sink"):
        return None
    nodes = HEURISTICS[base](graph)
    if sunk:
        nodes = sink(graph, nodes)
    if len(nodes) != len(graph.nodes) or len(set(map(id, nodes))) != len(nodes):
        return None
    try:
        return verify(_reordered(graph, nodes)), dict(entry)
    except GraphcError:
        return None


def structure_key(graph: Graph, names=(), plan_options=None) -> str:
    """sha256 of what the search reads of ``graph``: per node (in order) its op, operand
    positions, output name, shape, dtype and role, its attributes (arrays and floats by
    type alone, the rest by value: input kinds, axes, shapes); the inputs, outputs and
    updates; the candidates and planner options.  Two graphs that differ only in
    constant values share it."""
    pos = {n.output: i for i, n in enumerate(graph.nodes)}
    h = hashlib.sha256(b"graphc-schedule/1\0")
    h.update(repr((list(names), sorted((plan_options or {}).items(), key=repr))).encode())
    for n in graph.nodes:
        v = n.output
        h.update(f"{n.op}|{[pos[x] for x in n.inputs]}|{v.name}|{v.type.shape}|"
                 f"{v.type.dtype.str}|{n.role}|".encode())
        for k in sorted(n.attrs):
            a = n.attrs[k]
            h.update(f"{k}={_attr_shape(a)};".encode())
        h.update(b"\n")
    h.update(repr([pos[v] for v in graph.outputs]).encode())
    h.update(repr([(pos[a], pos[b]) for a, b in graph.updates]).encode())
    h.update(repr([pos[v] for v in graph.inputs]).encode())
    return h.hexdigest()


def _attr_shape(a) -> str:
    """An attribute as the search sees it: arrays and scalar constants by type alone."""
    if hasattr(a, "dtype") and hasattr(a, "shape"):
        return f"array<{a.dtype.str}{tuple(a.shape)}>"
    if isinstance(a, (tuple, list)):
        return "(" + ",".join(_attr_shape(x) for x in a) + ")"
    if isinstance(a, float):
        return "float"
    return f"{type(a).__name__}:{a!r}"
