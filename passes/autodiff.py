"""Reverse-mode AD as a graph pass: append the backward nodes and edges.

Walks the forward nodes in reverse schedule order, asks each op's VJP rule (IR ops) for
its operands' cotangents and sums cotangents where a value fans out.  No runtime tape:
the result is one graph whose backward nodes read the forward values they need (the
saved activations, see ``graphc.ir.saved_activations``).  Because the appended nodes
are ordinary IR, the result can be differentiated again.
"""
from __future__ import annotations

from graphc.ir import Emitter, Graph, GraphcError, Value, get_op
from graphc.ir import dtypes as dt


def _relevant(graph: Graph, loss: Value, wrt: list[Value]) -> set[Value]:
    """Float values on some path from a ``wrt`` value to ``loss``: the only ones needing cotangents."""
    fwd = set(wrt)
    for n in graph.nodes:
        if n.output not in fwd and any(x in fwd for x in n.inputs) \
                and get_op(n.op).vjp is not None:
            fwd.add(n.output)
    back, stack = set(), [loss]
    while stack:
        v = stack.pop()
        if v in back or v not in fwd:
            continue
        back.add(v)
        stack.extend(v.node.inputs)
    return {v for v in back if dt.is_float(v.dtype)}


def backward(graph: Graph, loss: Value, wrt: list[Value], seed: Value | None = None,
             role: str = "backward") -> tuple[Graph, list[Value], dict]:
    """Append d(loss)/d(wrt) to a copy of ``graph``.

    ``seed`` is the cotangent of ``loss`` (a value of the same type in ``graph``); by
    default 1, which needs a scalar loss.  Returns (new graph, gradient values in the new
    graph, old->new value map).  Outputs are unchanged: the caller decides what to return.
    """
    g, vmap = graph.clone()
    loss, wrt = vmap[loss], [vmap[w] for w in wrt]
    E = Emitter(g, role)
    if seed is None:
        if loss.shape != () or not dt.is_float(loss.dtype):
            raise GraphcError(f"grad needs a scalar float loss, got %{loss.name}: {loss.type}; "
                              "reduce it first (e.g. gc.mean or gc.sum) or use a vjp with a "
                              "cotangent")
        seed = E.const(1.0, loss.dtype)
    else:
        seed = vmap[seed]
    relevant = _relevant(g, loss, wrt)
    cts: dict[Value, Value] = {loss: seed} if loss in relevant else {}
    forward_nodes = list(g.nodes)
    for node in reversed(forward_nodes):
        gout = cts.get(node.output)
        if gout is None or node.op in ("input", "constant"):
            continue
        rule = get_op(node.op).vjp
        if rule is None:
            continue
        E.source = node.source
        for x, ct in zip(node.inputs, rule(E, node, gout)):
            if ct is None or x not in relevant:
                continue
            cts[x] = ct if x not in cts else E.add(cts[x], ct)
    E.source = None
    grads = [cts[w] if w in cts else E.zeros_like(w) for w in wrt]
    for w, gv in zip(wrt, grads):   # name gradients after their parameter: %grad_w1
        if gv.node.role == role and gv.name.isdigit():
            g.rename(gv, f"grad_{w.name}")
    return g, grads, vmap
