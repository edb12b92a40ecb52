"""Copy one graph's nodes into another, binding its inputs to given values."""
from __future__ import annotations

from .graph import Graph, Value


def inline(dst: Graph, src: Graph, bindings: list[Value], role: str = "forward",
           source: str | None = None) -> list[Value]:
    """Append ``src``'s nodes to ``dst`` with ``src.inputs`` bound to ``bindings``.

    Returns the values in ``dst`` that correspond to ``src.outputs``.  Inlined nodes take
    ``role`` (they are forward computation of the graph they land in).
    """
    env = dict(zip(src.inputs, bindings))
    for n in src.nodes:
        if n.op == "input":
            continue
        env[n.output] = dst.add(n.op, [env[x] for x in n.inputs], n.attrs, role,
                                n.source or source)
    return [env[o] for o in src.outputs]
