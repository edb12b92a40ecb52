"""Where a plan's buffers go and where its kernels must meet: the kernels reordered into
dependency levels (``schedule``), the arena laid out by the memory planner over those
levels (``shared_layout``; ``check_layout`` verifies that kernels of one level never
share bytes) or naively, and synchronisation points only where one kernel reads or
overwrites what an earlier one on another thread wrote or read (``place_barriers``;
``check_barriers`` verifies it).
"""
from __future__ import annotations

from graphc.ir import GraphcError

from .views import Storage, View

ALIGN = 64


def schedule(kernels, threads: int = 2):
    """Reorder kernels into *phases*: dependent kernels on different threads one barrier
    apart, independent ones sharing a phase.  Returns (kernels in phase order, phase of
    each); one thread runs them in that order too.

    A kernel's phase is one more than the latest phase it depends on (the same, if both
    run on thread 0 only): as soon as possible, which keeps phases few and wide.  Except
    for *floating* kernels -- backward or update work that reads forward values only
    (remat's recomputations, masks and transposes made from saved values): as soon as
    possible would run them in the forward pass and hold their outputs across the whole
    step (undoing remat), so they go as late as their readers allow.
    Dependencies are on storages (read-after-write, write-after-read/write), before
    the arena is laid out.
    """
    acc = []
    for k in kernels:
        r, w = k.reads(), k.writes()
        acc.append(({v.st for v in r if v.st.kind != "global"},
                    {v.st for v in w if v.st.kind != "global"}))

    def gap(i, j):
        return 0 if (kernels[i].single and kernels[j].single) else 1

    n = len(kernels)
    deps = [[j for j in range(i) if (acc[j][1] & (acc[i][0] | acc[i][1])) or
             (acc[j][0] & acc[i][1])] for i in range(n)]
    phase = []
    for i in range(n):
        phase.append(max((phase[j] + gap(j, i) for j in deps[i]), default=0))
    floating = _floating(kernels, acc, deps)
    if any(floating):
        later = [[] for _ in kernels]
        for i, ds in enumerate(deps):
            for j in ds:
                later[j].append(i)
        for i in reversed(range(n)):
            if floating[i] and later[i]:
                phase[i] = max(phase[i], min(phase[r] - gap(i, r) for r in later[i]))
    order = sorted(range(n), key=lambda i: (phase[i], i))
    return [kernels[i] for i in order], [phase[i] for i in order]


def _floating(kernels, acc, deps):
    """Per kernel: does it compute backward/update values from forward values only?"""
    roles = [{nd.role for nd in k.graph_nodes()} for k in kernels]
    floating = []
    for i, k in enumerate(kernels):
        ok = bool(roles[i]) and "forward" not in roles[i]
        for j in deps[i]:
            if not ok:
                break
            if acc[j][1] & acc[i][0]:           # j produces something i reads
                ok = floating[j] or roles[j] == {"forward"}
        floating.append(ok)
    return floating


def naive_layout(storages) -> int:
    """Every arena storage its own aligned bytes (``plan="naive"``)."""
    top = 0
    for st in storages:
        if st.kind == "arena":
            st.offset = top
            top += (max(st.nbytes, 1) + ALIGN - 1) // ALIGN * ALIGN
    return top


#: ops this backend runs as views (no code): the planner aliases them to their operand
PLANNER_VIEWS = ("reshape", "transpose", "broadcast_to", "slice", "stop_gradient")


def _touch_phases(kernels, phase, users=None):
    """storage -> (first, last) phase of the kernels touching it (and, into ``users``,
    storage -> {phase: kernels touching it then})."""
    span = {}
    for k, ph in zip(kernels, phase):
        for v in k.views():
            f, l_ = span.get(v.st, (ph, ph))
            span[v.st] = (min(f, ph), max(l_, ph))
            if users is not None:
                users.setdefault(v.st, {}).setdefault(ph, set()).add(id(k))
    return span


def shared_layout(graph, kernels, phase, node_kernel, value_storage, scratch,
                  direct):
    """Lay the arena out with the memory planner over this backend's execution.

    The planner gets plain data: each node's step (its kernel's dependency level, kernels
    of one level may run concurrently; with one thread, its kernel's index; a view runs
    nowhere: at its operands' step), the
    values this backend keeps in registers (fused), the updates it writes in place and
    its scratch buffers (float64 accumulators, materialised operands) with their levels.
    Values the plan puts in one buffer share one ``Storage`` (one pointer per kernel, so
    in-place kernels keep their ``noalias`` arguments); every view is re-pointed to it.
    """
    from graphc.passes.memory import plan_memory
    scratch_all, value_all = scratch, value_storage
    kphase = dict(zip(map(id, kernels), phase))
    span = _touch_phases(kernels, phase)
    # a storage no kernel touches (a small-K product computed inside its epilogue loop)
    # needs no bytes: its value is a register value too
    value_storage = {name: st for name, st in value_storage.items() if st in span}
    scratch = [st for st in scratch if st in span]
    positions, fused = {}, set()
    outputs = set(graph.outputs)
    for n in graph.nodes:
        k = node_kernel.get(n)
        if k is not None:
            p = kphase[id(k)]
            if n.output.name not in value_storage and n.output not in direct \
                    and n.output not in outputs:
                fused.add(n.output)
        else:
            p = max((positions[x.name] for x in n.inputs), default=0)
        positions[n.output.name] = p
    names = {}
    for st in scratch:
        name = f"{st.name}#scratch"
        while name in names or name in positions:
            name += "'"
        names[name] = st
    scr = {name: (st.nbytes, *span.get(st, (0, 0))) for name, st in names.items()}
    # products computed transposed (plan/layout.py) are not in their readers' order
    reordered = {k.gemm.node.output.name for k in kernels
                 if getattr(k, "gemm", None) is not None and k.gemm.transposed}
    mplan = plan_memory(graph, views=PLANNER_VIEWS, fused=fused, exec_positions=positions,
                        updates_in_place={b.name: a.name for b, a in direct.items()},
                        scratch=scr, end_step=max(phase, default=0) + 1,
                        reordered=reordered)
    # one Storage per (plan buffer, dtype)
    buf_id = {name: b.id for b in mplan.buffers if not b.persistent for name in b.values}
    canon: dict[Storage, Storage] = {}
    first: dict = {}
    for name, st in list(value_storage.items()) + list(names.items()):
        off = mplan.offsets.get(name)
        if off is None:
            raise GraphcError(f"internal: the memory plan gives %{name} "
                              f"({mplan.kinds.get(name)}) no arena offset")
        key = (buf_id[name], st.dtype)
        c = first.setdefault(key, st)
        c.offset = off
        c.size = max(c.size, st.size)
        canon[st] = c
    for st in scratch + list(value_storage.values()):
        if canon[st] is not st:
            st.offset = -2          # merged into canon[st]
    for st in scratch_all + list(value_all.values()):
        if st.offset == -1:
            st.offset = 0           # untouched: no bytes
    _repoint(kernels, canon)
    return mplan


def _repoint(kernels, canon):
    """Re-point every view of every kernel at its canonical storage."""
    def f(v):
        if v is None:
            return None
        c = canon.get(v.st)
        return v if c is None or c is v.st else View(c, v.offset, v.shape, v.strides)
    for k in kernels:
        k.repoint(f)


def check_layout(kernels, phase):
    """Safety net for the arena layout: two arena storages sharing bytes are touched in
    disjoint ranges of levels (kernels of one level may run concurrently), or meet at one
    level in one kernel only (in place, element for element); else raise."""
    users: dict = {}
    span = _touch_phases(kernels, phase, users)
    # a zero-size storage (a value of shape (0, 4)) holds no bytes: it overlaps nothing
    sts = sorted((st for st in span if st.kind == "arena" and st.nbytes > 0),
                 key=lambda s: s.offset)
    for i, a in enumerate(sts):
        a_end = a.offset + a.nbytes
        for b in sts[i + 1:]:
            if b.offset >= a_end:
                break
            (fa, la), (fb, lb) = span[a], span[b]
            lo, hi = max(fa, fb), min(la, lb)
            # one shared level is safe only when both are touched there, by one kernel
            ua, ub = users[a].get(lo), users[b].get(lo)
            if lo > hi or (lo == hi and ua and ub and len(ua | ub) == 1):
                continue
            raise GraphcError(f"internal: arena storages {a.name} (levels {fa}-{la}) and "
                                  f"{b.name} (levels {fb}-{lb}) share bytes at "
                                  f"{max(a.offset, b.offset)} while both in use")


# ---- barriers --------------------------------------------------------------------------------
def _region(v: View):
    st = v.st
    if st.kind == "arena":
        return ("arena", st.offset, st.offset + st.nbytes)
    if st.kind == "global":
        return None
    return (st.slot, 0, st.nbytes)


def _overlap(r, regions):
    return any(r[0] == q[0] and r[1] < q[2] and q[1] < r[2] for q in regions)


def place_barriers(kernels):
    """Barrier before a kernel that reads what another thread may have pending writes to,
    or writes what another thread may still read or write (since the last barrier).
    Kernels run by thread 0 alone need none between themselves."""
    pend_r, pend_w = [], []     # (region, single)
    for k in kernels:
        rr = [r for r in map(_region, k.reads()) if r]
        ww = [r for r in map(_region, k.writes()) if r]

        def clash(mine, pend):
            return any(_overlap(r, [q for q, single in pend if not (single and k.single)])
                       for r in mine)
        if clash(rr, pend_w) or clash(ww, pend_w) or clash(ww, pend_r):
            k.barrier = True
            pend_r, pend_w = [], []
        pend_r += [(r, k.single) for r in rr]
        pend_w += [(r, k.single) for r in ww]


def check_barriers(kernels):
    """Safety net: any two kernels touching overlapping bytes (one writing) on possibly
    different threads have a barrier between them; else raise (a planner bug)."""
    regs = []
    for k in kernels:
        r, w = k.reads(), k.writes()
        regs.append(([x for x in map(_region, r) if x], [x for x in map(_region, w) if x]))
    last_barrier = [0] * len(kernels)
    cur = 0
    for i, k in enumerate(kernels):
        if k.barrier:
            cur = i
        last_barrier[i] = cur
    for j, kj in enumerate(kernels):
        rj, wj = regs[j]
        for i in range(last_barrier[j] if kj.barrier else last_barrier[j], j):
            if kernels[i].single and kj.single:
                continue
            if i < last_barrier[j]:
                continue
            ri, wi = regs[i]
            if (any(_overlap(a, wi) for a in rj + wj) or any(_overlap(a, ri) for a in wj)):
                raise GraphcError(f"internal: kernels {kernels[i].name} and {kj.name} "
                                  "race (no barrier between them)")
