"""The arena as the LLVM backend really uses it: which kernel, in execution order, first
writes and last touches each arena storage -- the x-axis of ``graphc memplan --plot``.

The memory plan itself is made over kernel *levels* (kernels of one level run at the same
time on different cores), a handful of steps; drawn over those the whole step is five
columns.  Kernel order (the order of ``plan.kernels``, levels one after another) shows
each buffer's life as the backend runs it, one column per kernel.
"""
from __future__ import annotations


def kernel_timeline(plan) -> dict:
    """``{"kernels": [(name, barrier)], "storages": [(name, offset, nbytes, first, last)]}``
    for every arena storage some kernel reads or writes."""
    seen: dict = {}
    for i, k in enumerate(plan.kernels):
        for view, writes in [(v, True) for v in k.writes()] + [(v, False) for v in k.reads()]:
            st = view.st
            if st.kind != "arena":
                continue
            rec = seen.get(id(st))
            if rec is None:
                seen[id(st)] = rec = [st, i if writes else None, i]
            if writes and rec[1] is None:
                rec[1] = i
            rec[2] = max(rec[2], i)
    rows = []
    for st, first, last in seen.values():
        first = last if first is None else first
        rows.append((st.name, int(st.offset), int(st.nbytes), int(first), int(last)))
    return {"kernels": [(k.name, bool(k.barrier)) for k in plan.kernels],
            "storages": sorted(rows, key=lambda r: (r[3], r[1]))}
