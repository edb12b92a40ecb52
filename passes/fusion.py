"""Loop fusion: mark nodes that one loop nest computes together.

A *group* is a set of nodes a backend runs as one kernel (one loop nest) at the
position of the group's last node:

* chains of elementwise ops of one shape (``add -> relu``, the SGD/Adam update);
* an elementwise producer feeding a reduction of that shape (``mul -> sum``): the
  reduction accumulates while the chain is computed, the product never stored;
* an *epilogue* after a 2-d matmul: elementwise ops of the product's shape (bias add,
  activation, or the optimizer update of a weight gradient) run on each thread's tile of
  the product right after the GEMM computed it, while it is in cache.

Members carry ``attrs["group"] = "g<k>"``; the printer shows it and the DOT writer
draws a cluster.  The graph stays ordinary IR (``graphc.ir.verify`` passes): fusion only
annotates.  ``fused_values`` lists the values that never need a buffer (read only inside
their group) -- the memory planner skips them.

Legality: a group runs where its last member is, so every member's readers outside the
group must come after that point, and no member may read another member through a view
(a broadcast or transpose reads other elements than the one being computed) or read a
reduction of the same group (not complete until the loop ends), and a matmul never reads
a member of its own group (the GEMM needs its operands stored; only epilogues fuse).
"""
from __future__ import annotations

from graphc.ir import Graph, Node, Value, get_op, view_ops

from .duplicate import duplicate_cheap_producers

#: ops that only re-index a buffer (no loop of their own in a backend): ``OpDef.view``
VIEW_OPS = view_ops()


def _kind(n: Node) -> str:
    return get_op(n.op).kind


def _is_view_op(n: Node) -> bool:
    return n.op in VIEW_OPS


def view_readers(v: Value, is_view=_is_view_op) -> list[Node]:
    """Every node that reads ``v``, looking through chains of views (``is_view`` says
    which nodes only re-index; backends pass their own notion)."""
    out, stack, seen = [], [v], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        for u in x.users:
            if is_view(u):
                stack.append(u.output)
            else:
                out.append(u)
    return out


def reaches(v: Value, targets, is_view=_is_view_op) -> bool:
    """Whether ``v`` or a view of it (through view chains) is in ``targets``."""
    stack, seen = [v], set()
    while stack:
        x = stack.pop()
        if x in targets:
            return True
        if x in seen:
            continue
        seen.add(x)
        stack.extend(u.output for u in x.users if is_view(u))
    return False


def _effective_users(v: Value, pos: dict, end: int):
    """(node, position) of every reader of ``v``, looking through view ops."""
    return [(u, pos[u]) for u in view_readers(v)]


def _view_base(v: Value) -> Value:
    while v.node.op in VIEW_OPS:
        v = v.node.inputs[0]
    return v


class _Group:
    def __init__(self, gid, shape):
        self.gid, self.shape = gid, shape
        self.members: list[Node] = []
        self.matmul: Node | None = None

    def __repr__(self):
        return f"<group {self.gid} {[n.output.name for n in self.members]}>"


def fuse(graph: Graph, epilogue: bool = True, reductions: bool = True,
         duplicate: bool = True) -> Graph:
    """A copy of ``graph`` whose fusable nodes carry ``attrs['group']``; with
    ``duplicate``, cheap producers read by several loops are first copied into each
    (``passes/duplicate.py``)."""
    g, _ = graph.clone()
    g.remove_dead()     # a dead node has no readers to store for: never group or run it
    if duplicate:
        duplicate_cheap_producers(g)
    for n in g.nodes:
        if "group" in n.attrs:
            n.attrs = {k: v for k, v in n.attrs.items() if k != "group"}
    pos = {n: i for i, n in enumerate(g.nodes)}
    end = len(g.nodes)
    group_of: dict[Node, _Group] = {}
    counter = [0]

    def new_group(shape):
        counter[0] += 1
        return _Group(counter[0], shape)

    def legal(members: list[Node], at: int) -> bool:
        mset = set(members)
        for m in members:
            v = m.output
            for u, p in _effective_users(v, pos, end):
                if u not in mset and p < at:
                    return False
            for x in m.inputs:
                xn = x.node
                if xn in mset:
                    # a reduction is not complete inside its loop; a matmul reads whole
                    # rows/columns of its operands, so they must be stored before it runs
                    if _kind(xn) == "reduce" or m.op == "matmul":
                        return False
                    if x.shape != m.output.shape and _kind(m) != "reduce":
                        return False
                else:
                    if _view_base(x).node in mset:
                        return False
        return sum(1 for m in members if m.op == "matmul") <= 1

    for n in g.nodes:
        kind = _kind(n)
        if kind == "elementwise":
            shape = n.output.shape
            cands: list[_Group] = []
            for x in n.inputs:
                xn = x.node
                grp = group_of.get(xn)
                if grp is not None and _kind(xn) == "elementwise" and x.shape == shape \
                        and grp.shape == shape and grp not in cands:
                    cands.append(grp)
                elif (epilogue and grp is None and xn.op == "matmul" and x.ndim == 2
                      and x.shape == shape):
                    mg = new_group(shape)
                    mg.members, mg.matmul = [xn], xn
                    cands.append(mg)
            cands.sort(key=lambda gr: -max(pos[m] for m in gr.members))
            chosen: list[_Group] = []
            # all candidates at once, else the most recent one that is legal
            union = [m for gr in cands for m in gr.members] + [n]
            if cands and sum(gr.matmul is not None for gr in cands) <= 1 \
                    and legal(union, pos[n]):
                chosen = cands
            else:
                for gr in cands:
                    if legal(gr.members + [n], pos[n]):
                        chosen = [gr]
                        break
            if chosen:
                tgt = chosen[0]
                for gr in chosen[1:]:
                    tgt.members.extend(gr.members)
                    tgt.matmul = tgt.matmul or gr.matmul
                    for m in gr.members:
                        group_of[m] = tgt
                for m in tgt.members:
                    group_of[m] = tgt
                tgt.members.append(n)
                group_of[n] = tgt
            else:
                gr = new_group(shape)
                gr.members = [n]
                group_of[n] = gr
        elif kind == "reduce" and reductions:
            x = n.inputs[0]
            grp = group_of.get(x.node)
            if (grp is not None and grp.matmul is None and _kind(x.node) == "elementwise"
                    and x.shape == grp.shape and legal(grp.members + [n], pos[n])):
                grp.members.append(n)
                group_of[n] = grp

    # number the groups with >= 2 members in schedule order
    seen, k = {}, 0
    for n in g.nodes:
        grp = group_of.get(n)
        if grp is None or len(grp.members) < 2:
            continue
        if grp not in seen:
            seen[grp] = f"g{k}"
            k += 1
        n.attrs = {**n.attrs, "group": seen[grp]}
    return g


def groups(graph: Graph) -> dict[str, list[Node]]:
    """group id -> member nodes in schedule order."""
    out: dict[str, list[Node]] = {}
    for n in graph.nodes:
        gid = n.attrs.get("group")
        if gid is not None:
            out.setdefault(gid, []).append(n)
    return out


def fused_values(graph: Graph) -> set[Value]:
    """Values read only inside their own group (never stored; no buffer needed)."""
    pos = {n: i for i, n in enumerate(graph.nodes)}
    ext = set(graph.outputs) | {b for _, b in graph.updates} | {a for a, _ in graph.updates}
    out = set()
    for gid, members in groups(graph).items():
        mset = set(members)
        for m in members:
            v = m.output
            if m.op == "matmul" or get_op(m.op).kind == "reduce" or reaches(v, ext):
                continue
            if all(u in mset for u, _ in _effective_users(v, pos, len(graph.nodes))):
                out.add(v)
    return out
