"""Small analyses every stage uses: saved activations, topological checks, networkx view."""
from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:      # annotations only: the printer (imported by graph.py) uses this
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


def to_networkx(graph: Graph) -> nx.MultiDiGraph:
    """Nodes keyed by value name (op, role, shape, dtype as attributes); one edge per operand."""
    g = nx.MultiDiGraph(name=graph.name)
    for i, n in enumerate(graph.nodes):
        v = n.output
        g.add_node(v.name, op=n.op, role=n.role, shape=v.shape, dtype=str(v.dtype),
                   order=i, nbytes=v.nbytes)
    for n in graph.nodes:
        for k, x in enumerate(n.inputs):
            g.add_edge(x.name, n.output.name, operand=k, shape=x.shape, dtype=str(x.dtype))
    return g
