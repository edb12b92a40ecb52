"""A graph's identity for compile caches: everything that decides the code a backend
makes of it -- nodes in order, their ops, operands, attributes (constant arrays by their
bytes), value names and types, inputs, outputs and in-place updates -- and nothing that
does not (source lines).  Two graphs with the same fingerprint compile to the same code,
so a backend can find its cached build before lowering anything.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .graph import Graph


def _attr(h, v) -> None:
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        h.update(f"<{a.dtype.str}{a.shape}>".encode())
        h.update(a.tobytes())
    elif isinstance(v, (tuple, list)):
        h.update(b"(" if isinstance(v, tuple) else b"[")
        for x in v:
            _attr(h, x)
            h.update(b",")
        h.update(b")")
    elif isinstance(v, np.dtype):
        h.update(f"dtype:{v.str}".encode())
    else:
        h.update(f"{type(v).__name__}:{v!r}".encode())


def fingerprint(graph: Graph) -> str:
    """sha256 (hex) of the graph's structure, types, attributes and constants."""
    h = hashlib.sha256()
    h.update(f"graph {graph.name}\n".encode())
    for n in graph.nodes:
        v = n.output
        h.update(f"{v.name}:{v.type}={n.op}/{n.role}(".encode())
        h.update(",".join(x.name for x in n.inputs).encode())
        h.update(b"){")
        for k in sorted(n.attrs):
            h.update(k.encode() + b"=")
            _attr(h, n.attrs[k])
            h.update(b";")
        h.update(b"}\n")
    h.update(("in " + ",".join(v.name for v in graph.inputs)).encode())
    h.update(("\nout " + ",".join(v.name for v in graph.outputs)).encode())
    h.update(("\nupd " + ",".join(f"{a.name}<-{b.name}" for a, b in graph.updates)).encode())
    return h.hexdigest()
