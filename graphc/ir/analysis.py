"""Small analyses every stage uses: saved activations, topological checks, networkx view."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:      # annotations only: the printer (imported by graph.py) uses this
    import networkx as nx

    from .graph import Graph, Value


def saved_activations(graph: Graph) -> list[Value]:
    """Forward values (not inputs or constants) that a backward node reads.

    These are what reverse-mode AD forces the step to keep alive from the forward pass
    to the backward pass -- the memory the planner and remat work on.
    """
    out = []
    for n in graph.nodes:
        if n.role != "forward" or n.op in ("input", "constant"):
            continue
        if any(u.role == "backward" for u in n.output.users):
            out.append(n.output)
    return out


def storage_base(v: Value) -> Value:
    """The value whose buffer ``v`` lives in: through view ops (reshape, permute,
    broadcast, window) and identity ops (``stop_gradient``) to the value that owns
    bytes.  A saved view keeps its base's bytes alive, and no more."""
    from .registry import identity_ops, view_ops
    through = view_ops() | identity_ops()
    while v.node.op in through and v.node.inputs:
        v = v.node.inputs[0]
    return v


def saved_bytes(values) -> int:
    """Bytes that keeping ``values`` alive costs: each distinct buffer once (views count
    as their base), persistent inputs and constants nothing."""
    bases = {storage_base(v) for v in values}
    return sum(b.nbytes for b in bases if b.node.op not in ("input", "constant"))


def to_networkx(graph: Graph) -> nx.MultiDiGraph:
    """Nodes keyed by value name (op, role, shape, dtype as attributes); one edge per operand.
    (networkx is imported here: ~0.1 s that ``import graphc`` need not pay.)"""
    import networkx as nx
    g = nx.MultiDiGraph(name=graph.name)
    for i, n in enumerate(graph.nodes):
        v = n.output
        g.add_node(v.name, op=n.op, role=n.role, shape=v.shape, dtype=str(v.dtype),
                   order=i, nbytes=v.nbytes)
    for n in graph.nodes:
        for k, x in enumerate(n.inputs):
            g.add_edge(x.name, n.output.name, operand=k, shape=x.shape, dtype=str(x.dtype))
    return g
