"""Duplicate cheap elementwise producers into each of their readers' loops.

Fusion gives every node one group, so a value read by two kernels is stored by the first
and loaded by the second: a buffer as large as the tensor, and a trip through memory, for
an ``add`` or a ``mul``.  XLA's answer is to duplicate the producer into each consumer
fusion; this pass does it on the graph before fusion groups it.  A copy is the same op
on the same operands (``name.dupK``, same role), placed just before the reader it
serves, so results are bit-identical.

Only where it cannot cost memory or much arithmetic:

* the op is in :data:`CHEAP` (one or two instructions per element; no transcendental);
* every reader is an elementwise op of the same shape or a reduction of it, with the
  producer's role (a forward value read by the backward is remat's business), and reads
  it directly (not through a view);
* the operands whose lifetime the copy would extend (not persistent, not read at the
  reader or later anyway) take no more bytes than the value itself, whose lifetime the
  copy shortens;
* at most :data:`MAX_READERS` readers, and the pass adds at most as many nodes as the
  graph had.
"""
from __future__ import annotations

from graphc.ir import Graph, get_op

#: elementwise ops cheap enough to compute again in every loop that reads them
CHEAP = frozenset({"abs", "add", "sub", "mul", "neg", "maximum", "minimum", "relu", "sign",
                   "where", "cast", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
                   "logical_or", "logical_not"})
MAX_READERS = 4


def _fusable_reader(r, v, role) -> bool:
    kind = get_op(r.op).kind
    if r.role != role:
        return False
    if kind == "elementwise":
        return r.output.shape == v.shape
    return kind == "reduce"


def duplicate_cheap_producers(graph: Graph) -> int:
    """Duplicate in place (``graph`` is the fusion pass's own copy); returns the number
    of nodes added."""
    ext = set(graph.outputs) | {b for _, b in graph.updates} | {a for a, _ in graph.updates}
    budget = len(graph.nodes)
    added = 0
    for n in reversed(list(graph.nodes)):
        v = n.output
        if n.op not in CHEAP or v in ext:
            continue
        readers = list(v.users)
        if not 2 <= len(readers) <= MAX_READERS:
            continue
        if not all(_fusable_reader(r, v, n.role) for r in readers):
            continue
        pos = {m: i for i, m in enumerate(graph.nodes)}
        readers.sort(key=pos.__getitem__)

        def alive_at(x, p):
            return x.node.op in ("input", "constant") or any(pos[u] >= p for u in x.users)

        for k, r in enumerate(readers[1:], 1):
            # operands the copy would keep alive longer: no more bytes than the value
            # itself, whose own lifetime the copy shortens
            grow = sum(x.nbytes for x in set(n.inputs) if not alive_at(x, pos[r]))
            if added >= budget or grow > v.nbytes:
                break
            c = graph.add(n.op, n.inputs, n.attrs, n.role, n.source,
                          name=f"{v.name}.dup{k}", before=r)
            r.inputs = [c if x is v else x for x in r.inputs]
            v.users.remove(r)
            c.users.append(r)
            added += 1
            pos = {m: i for i, m in enumerate(graph.nodes)}
    return added
