"""Forward-mode AD as a graph pass: append tangent nodes (JVP rules) and tangent inputs.

For each forward node in schedule order whose operands carry tangents, the op's JVP rule
(IR ops) emits the output tangent right after.  Zero tangents are never materialised
unless an output needs one.  Forward-over-reverse (jvp of a gradient graph) gives
Hessian-vector products.
"""
from __future__ import annotations

from graphc.ir import Emitter, Graph, Value, get_op
from graphc.ir import dtypes as dt


def forward(graph: Graph, wrt: list[Value], names: list[str] | None = None
            ) -> tuple[Graph, list[Value], list[Value], dict]:
    """Add a tangent input per ``wrt`` value and tangent nodes up to every output.

    Returns (new graph, tangent input values, output tangents, old->new value map).
    """
    g, vmap = graph.clone()
    wrt = [vmap[w] for w in wrt]
    E = Emitter(g, "tangent")
    tans: dict[Value, Value] = {}
    t_inputs = []
    for i, w in enumerate(wrt):
        t = g.add_input(w.shape, w.dtype, (names[i] if names else f"t_{w.name}"), "tangent")
        t_inputs.append(t)
        if dt.is_float(w.dtype):
            tans[w] = t
    for node in list(g.nodes):
        if node.op in ("input", "constant"):
            continue
        ts = [tans.get(x) for x in node.inputs]
        if all(t is None for t in ts):
            continue
        rule = get_op(node.op).jvp
        if rule is None or not dt.is_float(node.output.dtype):
            continue
        E.source = node.source
        t = rule(E, node, ts)
        if t is not None:
            tans[node.output] = t
    E.source = None
    outs = [tans[o] if o in tans else E.zeros_like(o) for o in g.outputs]
    return g, t_inputs, outs, vmap
