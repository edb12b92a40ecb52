"""Checks that run before a compiled graph touches anything: the label ranges that
``check_index`` nodes record (``graphc.ir.ops.checks``).

``split_checks(graph)`` returns the graph without its check nodes (each replaced by its
operand, so backends compile plain code) and a guard ``guard(args)`` that raises
``RangeError`` before the native call when a label is out of range -- so a bad batch
never reaches a kernel, and parameters and optimizer state are untouched.

Labels that are graph inputs (the usual case: the batch's label array) cost one min and
one max over that array.  Labels computed in the graph (``y - 1``) are computed again by
the numpy interpreter from the inputs they depend on -- only those nodes -- and checked.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import Graph
from graphc.ir.ops.checks import check_range


def split_checks(graph: Graph, evaluate):
    """``(graph without check nodes, guard or None)``; ``graph`` itself is not changed.
    ``evaluate(graph, args) -> outputs`` runs the small graph of computed labels (the
    numpy interpreter, passed in by the backend so this module imports no backend)."""
    checks = [n for n in graph.nodes if n.op == "check_index"]
    if not checks:
        return graph, None
    index = {v: i for i, v in enumerate(graph.inputs)}
    direct = [(index[n.inputs[0]], n) for n in checks if n.inputs[0] in index]
    computed = [n for n in checks if n.inputs[0] not in index]
    sub = None
    if computed:
        sub, vmap = graph.clone()
        sub.updates = []
        sub.set_outputs([vmap[n.inputs[0]] for n in computed])
        sub.remove_dead()
        sub.name = f"{graph.name}_label_check"
    stripped, vmap = graph.clone()
    for n in checks:
        stripped.replace_all_uses(vmap[n.output], vmap[n.inputs[0]])
    stripped.remove_dead()
    specs = [(i, graph.inputs[i].shape, n.attrs["limit"], n.attrs["what"], n.source)
             for i, n in direct]
    late = [(n.attrs["limit"], n.attrs["what"], n.source) for n in computed]

    def guard(args):
        if len(args) != len(graph.inputs):
            return                  # the backend's own argument checks say what is wrong
        for i, shape, limit, what, source in specs:
            a = args[i]
            if not isinstance(a, (np.ndarray, np.generic, int)):
                continue
            a = np.asarray(a)
            if a.shape == shape and a.dtype.kind in "iu":
                check_range(a, limit, what, source)
        if sub is not None:
            from graphc.ir import ArgumentError
            try:
                values = evaluate(sub, list(args))
            except ArgumentError:
                return              # bad arguments: the backend's checks say which
            for v, (limit, what, source) in zip(values, late):
                check_range(v, limit, what, source)
    return stripped, guard
