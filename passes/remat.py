"""Rematerialization: recompute some forward values in the backward pass instead of
keeping them alive (saving them) from the forward pass.

Which values to save is a minimum cut over the forward part of the joint forward/backward
graph (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"; PyTorch's min-cut
partitioner), solved with networkx's max-flow/min-cut:

- every non-persistent forward value ``v`` is split into ``v_in -> v_out`` with capacity
  ``nbytes(v)``: cutting it means *saving* ``v``;
- ``u_out -> v_in`` (infinite) for each forward operand ``u`` of ``v``: a recomputed
  value needs its operands, saved or recomputed themselves;
- ``v_out -> sink`` (infinite) when a backward (or update) node reads ``v``;
- ``source -> v_in`` with capacity ``lam * flops(v) + eps``: cutting it means
  *recomputing* ``v`` (``eps`` breaks ties towards not recomputing); ops in ``banned``
  (matmuls, by default, without a budget) get an infinite edge: never recomputed.
  Inputs and constants are persistent: always available, free, left out of the network.

The cut's source side is computed only in the forward pass; values whose ``v_in`` falls on
the sink side are recomputed.  ``lam = 0`` minimises saved bytes; with a ``budget`` (bytes
of saved activations), a greedy search from that cut saves more values while the budget
holds, each time the one removing the most recomputed FLOPs per extra byte, ties going to
the one leaving the smallest activation peak (``_greedy``) -- but only values sparing at
least :data:`MIN_FLOPS_PER_BYTE` per byte: cheap elementwise values are recomputed.  Bytes are buffers: a view
(reshape, transpose, broadcast, window) owns none and is never saved -- its base is
(``graphc.ir.saved_bytes``), so a value and its views count once.

Rewriting: each recomputed value gets a copy (same op and attrs, role ``backward``,
``attrs["remat"] = True``, name ``<name>.remat``) placed right before its first backward
reader; backward readers are pointed at the copy.  The forward original stays (the forward
pass needs it) but now dies in the forward pass.  Same ops on the same operands: the step's
results are bit-identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from graphc.ir import (Graph, GraphcError, Value, get_op, identity_ops, saved_activations,
                       saved_bytes, verify, view_ops)

__all__ = ["remat", "RematReport", "graph_flops", "node_flops", "plan_remat"]

SOURCE, SINK = "__source__", "__sink__"


def node_flops(n) -> int:
    """Registry FLOP estimate of one node (0 for ops without one)."""
    f = get_op(n.op).flops
    if f is None or n.op in ("input", "constant"):
        return 0
    return int(f(n.attrs, n.output.type, *[x.type for x in n.inputs]))


def graph_flops(graph: Graph) -> int:
    return sum(node_flops(n) for n in graph.nodes)


@dataclass
class RematReport:
    """What remat chose: saved bytes before/after, recomputed values and their FLOPs."""
    budget: int | None
    saved_bytes_before: int
    saved_bytes_after: int
    recomputed: list = field(default_factory=list)     # names of recomputed values
    saved: list = field(default_factory=list)          # names of saved activations after
    flops_before: int = 0
    extra_flops: int = 0
    lam: float = 0.0
    cuts: int = 0

    @property
    def extra_flops_ratio(self) -> float:
        return self.extra_flops / self.flops_before if self.flops_before else 0.0

    @property
    def met(self) -> bool:
        return self.budget is None or self.saved_bytes_after <= self.budget

    def __str__(self):
        b = "no budget" if self.budget is None else f"budget {self.budget:,d} B"
        return (f"remat ({b}): saved activations {self.saved_bytes_before:,d} B -> "
                f"{self.saved_bytes_after:,d} B; {len(self.recomputed)} values recomputed, "
                f"+{self.extra_flops:,d} FLOPs ({100 * self.extra_flops_ratio:.1f}% of "
                f"{self.flops_before:,d}); {self.cuts} min-cuts")


def _forward_values(graph: Graph):
    fwd = [n.output for n in graph.nodes
           if n.role == "forward" and n.op not in ("input", "constant")]
    fset = set(fwd)
    needed = [v for v in fwd if any(u.role != "forward" for u in v.users)]
    return fwd, fset, needed


def _cut(graph, fwd, fset, needed, lam, banned, keep):
    """One min-cut; returns (saved values, recomputed values)."""
    import networkx as nx     # here: only a memory budget pays its import (~0.1 s)
    G = nx.DiGraph()
    G.add_node(SOURCE)
    G.add_node(SINK)
    views = view_ops() | identity_ops()
    for v in fwd:
        n = v.node
        if n.op in views and v not in keep:
            G.add_edge((v, 0), (v, 1))      # a view owns no bytes: keep its base instead
        else:
            G.add_edge((v, 0), (v, 1), capacity=float(v.nbytes))
        if n.op in banned or v in keep:
            G.add_edge(SOURCE, (v, 0))                    # no capacity: infinite
        else:
            G.add_edge(SOURCE, (v, 0), capacity=lam * node_flops(n) + 1e-3)
        for x in n.inputs:
            if x in fset:
                G.add_edge((x, 1), (v, 0))
    for v in needed:
        G.add_edge((v, 1), SINK)
    _, (S, T) = nx.minimum_cut(G, SOURCE, SINK)
    saved = [v for v in needed if (v, 0) in S] + \
        [v for v in fwd if v not in needed and (v, 0) in S and (v, 1) in T]
    # recomputed: values reached from the backward readers through unsaved forward values
    rec, stack = set(), [v for v in needed if (v, 0) in T]
    while stack:
        v = stack.pop()
        if v in rec:
            continue
        rec.add(v)
        for x in v.node.inputs:
            if x in fset and (x, 0) in T:
                stack.append(x)
    saved_set = set()
    for v in needed:
        if v not in rec:
            saved_set.add(v)
    for v in rec:
        for x in v.node.inputs:
            if x in fset and x not in rec:
                saved_set.add(x)
    return saved_set, rec


def _closure(needed, fwd_ops, S):
    """Given forward values ``S`` kept, the values to recompute and those to save."""
    rec, stack = set(), [v for v in needed if v not in S]
    while stack:
        v = stack.pop()
        if v in rec:
            continue
        rec.add(v)
        stack.extend(x for x in fwd_ops[v] if x not in S and x not in rec)
    saved = {v for v in needed if v not in rec}
    saved.update(x for v in rec for x in fwd_ops[v] if x not in rec)
    return saved, rec


def _largest_segment(rec, fwd_ops) -> int:
    """Bytes of the largest connected group of recomputed values.  Remat's copies are
    made just before their first backward reader, so a group is recomputed at once and
    lives until its last reader: the activation peak is about the saved bytes plus the
    largest group (one long recomputed chain is as bad as saving it)."""
    parent = {v: v for v in rec}

    def root(v):
        while parent[v] is not v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for v in rec:
        for x in fwd_ops[v]:
            if x in parent:
                parent[root(x)] = root(v)
    size: dict = {}
    for v in rec:
        size[root(v)] = size.get(root(v), 0) + saved_bytes([v])
    return max(size.values(), default=0)


def _greedy(needed, fwd_ops, S, budget):
    """From a cut that fits ``budget``, keep (save) more values while it still fits, each
    time the one saving the most recomputed FLOPs per extra byte (at least
    MIN_FLOPS_PER_BYTE: never a cheap elementwise value); among equal ones, the
    one that leaves the smallest activation peak (saved bytes + the largest recomputed
    group, :func:`_largest_segment`), then the latest.  On a chain of equal layers this
    is Chen et al.'s segments: save every k-th layer, recompute the rest from it, one
    segment at a time.  Candidates are visited in graph order (not set order), so the
    choice is the same in every process."""
    def cost(vals):
        return sum(_FLOPS[v] for v in vals)

    pos = {v: i for i, v in enumerate(fwd_ops)}
    saved, rec = _closure(needed, fwd_ops, S)
    B, F = saved_bytes(saved), cost(rec)
    while rec:
        best = None
        for c in sorted(rec, key=pos.__getitem__):
            s2, r2 = _closure(needed, fwd_ops, S | {c})
            B2, F2 = saved_bytes(s2), cost(r2)
            if B2 <= budget and F2 < F and F - F2 >= MIN_FLOPS_PER_BYTE * (B2 - B):
                score = float(f"{(F - F2) / max(B2 - B, 1):.9g}")
                key = (score, -(B2 + _largest_segment(r2, fwd_ops)), pos[c])
                if best is None or key > best[0]:
                    best = (key, c, s2, r2, B2, F2)
        if best is None:
            break
        _, c, saved, rec, B, F = best
        S = S | {c}
    return saved, rec


_FLOPS: dict = {}
#: The FLOPs of recomputation a byte saved must spare for the greedy search to save it.
#: Below this a value is a cheap elementwise chain (tanh-GELU's tanh: 1.25 FLOPs per
#: byte), which costs a pass over memory to save and one to read back -- recomputing it,
#: fused into its backward reader, is about as fast on any CPU -- so it is recomputed
#: even when the budget has room, which keeps the arena well under the budget rather
#: than at it (the transformer step at budget 0.5: saved 18.4 -> 10.8 MB, arena 0.595 ->
#: 0.532 of the unbudgeted one, +0.5 % FLOPs).  Products (tens of FLOPs per byte) and
#: attention are still saved while the budget holds.
MIN_FLOPS_PER_BYTE = 4.0


def plan_remat(graph: Graph, budget: int | None = None, banned=None):
    """Choose (saved, recomputed, lam, cuts) for ``graph``; see the module docstring."""
    fwd, fset, needed = _forward_values(graph)
    keep = set(graph.outputs) | {b for _, b in graph.updates}
    auto_banned = {"matmul"} if banned is None else set(banned)
    s_auto, r_auto = _cut(graph, fwd, fset, needed, 1e-6, auto_banned, keep)
    if budget is None:
        return s_auto, r_auto, 1e-6, 1
    banned = set() if banned is None else set(banned)

    nbytes = saved_bytes

    if nbytes(needed) <= budget:                       # everything fits: recompute nothing
        return set(needed), set(), math.inf, 1
    _FLOPS.clear()
    _FLOPS.update({v: node_flops(v.node) for v in fwd})
    cands = []
    if nbytes(s_auto) <= budget:
        cands.append((s_auto, r_auto, 1e-6))
    s0, r0 = _cut(graph, fwd, fset, needed, 0.0, banned, keep)
    if nbytes(s0) > budget:
        raise GraphcError(f"remat: cannot fit the saved activations in {budget:,d} bytes; the "
                          f"least they can take by recomputation is {nbytes(s0):,d} bytes")
    fwd_ops = {v: [x for x in v.node.inputs if x in fset] for v in fwd}
    S = set(s0) | {v for v in fwd if v.node.op in banned or v in keep}
    s1, r1 = _greedy(needed, fwd_ops, S, budget)
    cands.append((s1, r1, 0.0))
    s, r, lam = min(cands, key=lambda c: sum(_FLOPS[v] for v in c[1]))
    return s, r, lam, 2


def remat(graph: Graph, memory_budget: int | float | None = None, banned=None,
          report: list | None = None) -> Graph:
    """A copy of ``graph`` that recomputes some forward values in the backward pass.

    ``memory_budget``: bytes the saved activations may take (a float in (0, 1] is a
    fraction of their current bytes, like PyTorch's activation memory budget); None
    (``remat="auto"``) recomputes only what lowers saved bytes without recomputing a
    matmul.  ``banned``: ops never recomputed.  ``report``: a list that receives the
    ``RematReport``.
    """
    before = saved_bytes(saved_activations(graph))
    budget = memory_budget
    if isinstance(budget, float) and 0 < budget <= 1:
        budget = int(budget * before)
    if budget is not None and budget < 0:
        raise GraphcError(f"remat: memory_budget must be >= 0, got {memory_budget}")
    flops0 = graph_flops(graph)
    saved, rec, lam, cuts = plan_remat(graph, budget, banned)
    g, vmap = graph.clone()
    rec_new = {vmap[v] for v in rec}
    copies: dict[Value, Value] = {}
    order = list(g.nodes)
    new_nodes = []
    created = []

    def emit(v):
        stack = [(v, False)]
        while stack:
            x, ready = stack.pop()
            if x in copies:
                continue
            if ready:
                n = x.node
                c = g.add(n.op, [copies.get(y, y) for y in n.inputs], n.attrs, "backward",
                          n.source, name=f"{x.name}.remat")
                c.node.attrs["remat"] = True
                copies[x] = c
                new_nodes.append(c.node)
                created.append(c.node)
                continue
            stack.append((x, True))
            for y in reversed(x.node.inputs):
                if y in rec_new and y not in copies:
                    stack.append((y, False))

    for n in order:
        if n.role != "forward" and any(x in rec_new for x in n.inputs):
            for x in n.inputs:
                if x in rec_new:
                    emit(x)
            old = list(n.inputs)
            n.inputs = [copies.get(x, x) for x in n.inputs]
            for x in old:
                if x in copies and n in x.users:
                    x.users.remove(n)
                    if n not in copies[x].users:
                        copies[x].users.append(n)
        new_nodes.append(n)
    g.nodes = new_nodes
    verify(g)
    extra = sum(node_flops(n) for n in created)
    after = saved_activations(g)
    rep = RematReport(budget, before, saved_bytes(after),
                      [v.name for v in rec], [v.name for v in after], flops0, extra, lam, cuts)
    if report is not None:
        report.append(rep)
    return g
