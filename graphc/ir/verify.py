"""The IR verifier: run after every pass (torch.fx's lint, tinygrad's verifiers)."""
from __future__ import annotations

from .errors import VerifyError
from .graph import Graph
from .registry import get_op


def verify(graph: Graph) -> Graph:
    """Check SSA, schedule order, shapes/dtypes against the op rules and use lists."""
    defined, names = set(), set()
    for i, n in enumerate(graph.nodes):
        v = n.output
        where = f"node {i} ({n.op} -> %{v.name if v else '?'})"
        if v is None or v.node is not n:
            raise VerifyError(f"{where}: output is not linked back to its node")
        if v in defined or v.name in names:
            raise VerifyError(f"{where}: value defined twice (SSA)")
        for x in n.inputs:
            if x not in defined:
                raise VerifyError(f"{where}: operand %{x.name} is used before its definition "
                                  "or is not in this graph")
            if n not in x.users:
                raise VerifyError(f"{where}: missing from the users of %{x.name}")
        if n.op == "input":
            if v not in graph.inputs:
                raise VerifyError(f"{where}: input node not listed in graph.inputs")
        else:
            op = get_op(n.op)
            try:
                t = op.infer(n.attrs, *[x.type for x in n.inputs])
            except Exception as e:
                raise VerifyError(f"{where}: shape rule fails: {e}") from None
            if t != v.type:
                raise VerifyError(f"{where}: recorded type {v.type} but the rule gives {t}")
        for u in v.users:
            if v not in u.inputs:
                raise VerifyError(f"{where}: stale user {u.op}")
        defined.add(v)
        names.add(v.name)
    for v in graph.outputs + [x for pair in graph.updates for x in pair]:
        if v not in defined:
            raise VerifyError(f"output or update %{v.name} is not defined in the graph")
    for a, b in graph.updates:
        if a not in graph.inputs or a.type != b.type:
            raise VerifyError(f"update %{a.name} <- %{b.name}: not an input of the same type")
    return graph
