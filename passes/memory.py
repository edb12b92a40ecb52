"""The memory planner: every intermediate of a step laid into one arena.

``plan_memory(graph)`` returns a ``MemoryPlan`` -- the contract with the backends (the LLVM
backend allocates ``arena_bytes`` once and runs every step in it; ``numpy_backend.run_planned``
executes a plan in arena views so plans are testable without LLVM).  Three steps:

1. **Buffers.**  Walking the schedule, each non-persistent value either gets a buffer of its
   own or joins an existing one:
   - *view*: the output of an op in ``views`` (default ``reshape`` and ``stop_gradient``:
     same bytes in the same order) aliases its operand's buffer; the buffer then lives until
     the view's last reader.  No code runs for a view.
   - *update*: the new value ``b`` of an optimizer update ``a <- b`` is written straight into
     the parameter/state input ``a`` when nothing reads ``a`` after ``b`` is computed
     (or ``b``'s elementwise node is that last read); otherwise ``b`` stays in the arena and
     the backend copies it into ``a`` after the last node (``update_copies``).
   - *in place*: an elementwise node's output takes the buffer of an operand that dies at
     that node and has the same byte size (and is read contiguously).
   - *fused*: values consumed only inside their fusion group get no buffer (see
     ``liveness.fused_values``).
2. **Offsets.**  Each arena buffer gets a byte offset (multiple of ``alignment``) such that
   buffers live at the same time never overlap: several greedy strategies run and the
   smallest arena wins (``STRATEGIES``).
3. **Figures.**  ``naive_bytes`` (every value its own aligned buffer), ``lower_bound_bytes``
   (the largest sum of live buffer bytes at any step: no layout of these buffers can use
   less), ``arena_bytes`` (what the plan uses).

A pass: pure function of the graph; it never imports a backend.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from graphc.ir import Graph, get_op, identity_ops, view_ops

from .liveness import Liveness, fused_values, liveness

__all__ = ["MemoryPlan", "Buffer", "plan_memory",
           "check_plan", "CONTIGUOUS_VIEWS", "STRIDED_VIEWS", "STRATEGIES", "fused_values"]

ALIGNMENT = 64
# Ops whose output is its operand's bytes in the same order: any backend can alias them.
CONTIGUOUS_VIEWS = tuple(sorted(view_ops("reshape") | identity_ops()))
# Ops a backend reading strided memory (numpy) may alias too; pass ``views=`` to use them.
STRIDED_VIEWS = tuple(sorted(view_ops("permute", "broadcast")))


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-int(n) // alignment) * alignment


@dataclass
class Buffer:
    """Bytes shared by one or more values (owner first) over ``[start, end]``.

    ``offset`` is the byte offset in the arena, or -1 for a persistent buffer (``home``
    names the input or constant whose memory it is: views of inputs, in-place updates).
    """
    id: int
    nbytes: int
    size: int
    start: int
    end: int
    values: list = field(default_factory=list)
    offset: int = -1
    home: str | None = None

    @property
    def persistent(self) -> bool:
        return self.home is not None


@dataclass
class MemoryPlan:
    """Where every value of a graph lives; what a backend needs to run the graph in one arena.

    - ``arena_bytes``: size of the one arena (a multiple of ``alignment``); allocate it
      ``alignment``-aligned.
    - ``offsets[name]``: byte offset in the arena of every value stored there (owners, views
      and in-place outputs; an alias has its base's offset).
    - ``kinds[name]``: ``"input"``, ``"constant"``, ``"output"`` (persistent, outside the
      arena), ``"arena"`` (owns a buffer), ``"view"`` (no code: the bytes of
      ``aliases[name]``), ``"inplace"`` (computed into the buffer of ``aliases[name]``,
      an operand read elementwise at this node for the last time), ``"update"`` (computed
      straight into the input ``aliases[name]``'s own memory), ``"fused"`` (no buffer) and
      ``"scratch"`` (a backend's workspace, ``plan_memory(scratch=...)``: not a value).
    - ``aliases[name]``: the value whose bytes a view/inplace/update value reuses.
    - ``homes[name]``: for values computed into an *input's* memory (``update`` values, and
      ``inplace`` temporaries of an update written into the input it replaces once that
      input has been read for the last time): the input's name.  They have no offset.
    - ``update_copies``: ``(input, value)`` pairs to copy after the last node, in order
      (updates that could not be written in place); read all before writing any.
    - ``intervals[name]``: ``(start, end)`` schedule steps of every value.
    - ``schedule``: value names in the order the plan assumes (``graph.nodes``).
    """
    alignment: int
    arena_bytes: int
    offsets: dict
    kinds: dict
    aliases: dict
    intervals: dict
    buffers: list
    update_copies: list
    schedule: list
    strategy: str
    strategies: dict
    naive_bytes: int
    lower_bound_bytes: int
    views: tuple
    plan_seconds: float = 0.0
    homes: dict = field(default_factory=dict)

    def buffer_of(self, name: str) -> Buffer | None:
        for b in self.buffers:
            if name in b.values:
                return b
        return None

    def to_dict(self) -> dict:
        """A JSON-friendly form (for tools and the CLI)."""
        return {"alignment": self.alignment, "arena_bytes": self.arena_bytes,
                "strategy": self.strategy, "offsets": dict(self.offsets),
                "kinds": dict(self.kinds), "aliases": dict(self.aliases),
                "intervals": {k: list(v) for k, v in self.intervals.items()},
                "update_copies": [list(p) for p in self.update_copies],
                "naive_bytes": self.naive_bytes, "lower_bound_bytes": self.lower_bound_bytes}

    def __str__(self):
        return (f"MemoryPlan(arena {self.arena_bytes} B by {self.strategy}, "
                f"{sum(1 for b in self.buffers if not b.persistent)} buffers for "
                f"{len(self.offsets)} values; naive {self.naive_bytes} B, "
                f"bound {self.lower_bound_bytes} B)")


# ---- 1. buffers -------------------------------------------------------------------------------
def assign_buffers(graph: Graph, live: Liveness, views=CONTIGUOUS_VIEWS, inplace=True,
                   alignment=ALIGNMENT, concurrent=False, updates_in_place=None,
                   reordered=()):
    """Group values into buffers (views, in-place, updates); returns (buffers, kinds, aliases).

    ``concurrent``: nodes at the same step that are not in one fusion group may run at the
    same time (a backend's dependency level), so in place is allowed only inside a group.
    ``updates_in_place``: ``{value: input}`` names of the updates the backend computes into
    their input; when given, exactly these are ``update`` and nothing else is computed
    into an input's memory.
    """
    views = set(views)
    buf_of, contig = {}, {}
    kinds, aliases = {}, {}
    buffers: list[Buffer] = []
    update_targets: dict = {}
    for a, b in graph.updates:
        update_targets.setdefault(a, []).append(b)
    sources = {}
    for a, b in graph.updates:
        sources.setdefault(b, []).append(a)
    outputs = set(graph.outputs)
    nb = live.nbytes
    # Inputs an update overwrites: once read for the last time, their memory is free until
    # the new value lands there, so elementwise temporaries of the update may use it.
    reusable = {a for a, bs in update_targets.items() if len(bs) == 1
                and a.node.op == "input" and a not in outputs and a not in sources}
    if updates_in_place is not None:
        reusable = set()

    # A value's bytes are read until its last reader *or the last reader of a view of it*
    # (views join the buffer later in the walk, but decisions before them must know).
    vend = dict(live.end)
    for n in reversed(graph.nodes):
        w = n.output
        if n.op in views and n.inputs and w not in live.persistent and w not in live.fused \
                and "group" not in n.attrs:
            x = n.inputs[0]
            if vend[w] > vend[x]:
                vend[x] = vend[w]

    def new(v, home=None):
        B = Buffer(len(buffers), nb[v], align(nb[v], alignment), live.start[v],
                   vend[v], [v.name], -1, home)
        buffers.append(B)
        buf_of[v] = B
        roots[B.id] = {root[v]}
        return B

    def join(B, v, kind, base):
        roots[B.id].add(root[v])
        B.values.append(v.name)
        B.end = max(B.end, vend[v])
        buf_of[v] = B
        kinds[v.name] = kind
        aliases[v.name] = base.name

    reusable_names = {a.name for a in reusable}
    # Nodes that run at the same step (a fusion group and the views deferred with it), in
    # execution order; and the value whose bytes each view reads (its root).
    at_step: dict = {}
    for n in sorted(graph.nodes, key=lambda n: live.start[n.output]):
        at_step.setdefault(live.start[n.output], []).append(n)
    root = {}
    for n in graph.nodes:
        w = n.output
        if n.op in views and n.inputs and w not in live.persistent and w not in live.fused \
                and n.inputs[0] not in live.fused and "group" not in n.attrs:
            root[w] = root[n.inputs[0]]
        else:
            root[w] = w
    roots: dict = {}                   # buffer id -> root values stored in it

    def safe_in(n, B, v):
        """``n`` may write ``v`` into ``B``: it is elementwise, reads ``B`` at the index it
        writes, and of the nodes running at the same step (its fusion group), none after it
        reads ``B`` and every member before it reads ``B`` elementwise at that index."""
        if get_op(n.op).kind != "elementwise":
            return False
        rB = roots[B.id]
        g = n.attrs.get("group")
        after = False
        for m in at_step[live.start[n.output]]:
            if m is n:
                after = True
            hits = [y for y in m.inputs if root[y] in rB]
            if not hits:
                continue
            if after and m is not n:
                return False           # it would read what n overwrote
            if concurrent and m is not n and (g is None or m.attrs.get("group") != g):
                return False           # another kernel of this step: may run meanwhile
            if m is n or (g is not None and m.attrs.get("group") == g):
                if get_op(m.op).kind != "elementwise" or \
                        any(not contig[y] or nb[y] != nb[v] for y in hits):
                    return False
        return True

    for n in graph.nodes:              # inputs and constants exist from the start
        v = n.output
        if live.persistent.get(v) in ("input", "constant"):
            B = new(v, home=v.name)
            B.start, B.end = 0, (vend[v] if v.users else -1)       # end: last read
    # in execution order: a fusion group's members run at its last member's step
    for n in sorted(graph.nodes, key=lambda n: live.start[n.output]):
        v = n.output
        i = live.start[v]
        contig[v] = v.name not in reordered
        pk = live.persistent.get(v)
        if pk:
            kinds[v.name] = pk
            continue
        if v in live.fused:
            kinds[v.name] = "fused"
            continue
        if n.op in views and n.inputs and n.inputs[0] in buf_of and "group" not in n.attrs:
            x = n.inputs[0]
            contig[v] = contig[x] and n.op in CONTIGUOUS_VIEWS
            join(buf_of[x], v, "view", x)
            continue
        elementwise = get_op(n.op).kind == "elementwise"
        a = live.update_of.get(v)
        if updates_in_place is not None:
            if v.name in updates_in_place:
                a = next(x for x in sources[v] if x.name == updates_in_place[v.name])
                join(buf_of[a], v, "update", a)
                continue
            a = None
        if a is not None and len(sources[v]) == 1 and len(update_targets[a]) == 1 \
                and a.node.op == "input" and a not in outputs and a not in sources \
                and v not in outputs:
            A = buf_of[a]
            if A.end < i or (A.end == i and safe_in(n, A, v)):
                join(A, v, "update", a)
                continue
        if inplace and elementwise:
            # operands in a reusable input's memory first: that frees an arena buffer
            cands = sorted(n.inputs, key=lambda x: not (x in buf_of and buf_of[x].persistent))
            for x in cands:
                B = buf_of.get(x)
                if B is not None and B.persistent and B.home not in reusable_names:
                    continue
                if (B is not None and B.end == i and contig[x]
                        and nb[x] == nb[v] == B.nbytes and safe_in(n, B, v)):
                    join(B, v, "inplace", x)
                    break
            else:
                new(v)
                kinds[v.name] = "arena"
            continue
        new(v)
        kinds[v.name] = "arena"
    return buffers, kinds, aliases


# ---- 2. offsets -------------------------------------------------------------------------------
def _place(bufs: list[Buffer], order: list[int]) -> tuple[list[int], int]:
    """Best-fit placement of ``bufs`` in ``order``: each buffer goes to the smallest gap
    between already-placed buffers whose lifetimes overlap its own, else on top of them.

    Placed buffers are kept sorted by offset (numpy arrays), so the conflicting ones come
    out in offset order and each placement is a few vectorised passes.
    """
    n = len(bufs)
    S = np.empty(n, np.int64)
    E = np.empty(n, np.int64)
    O = np.empty(n, np.int64)
    T = np.empty(n, np.int64)          # offset + size
    offsets = [0] * n
    arena = 0
    k = 0
    for j in order:
        b = bufs[j]
        s, e, sz = b.start, b.end, b.size
        off = 0
        if k:
            idx = ((S[:k] <= e) & (E[:k] >= s)).nonzero()[0]
            if idx.size:
                o = O[idx]
                cm = np.maximum.accumulate(T[idx])
                gap = o[1:] - cm[:-1]
                if o[0] >= sz:
                    best_gap, off = int(o[0]), 0
                else:
                    best_gap, off = None, int(cm[-1])
                ok = (gap >= sz).nonzero()[0]
                if ok.size:
                    m = ok[np.argmin(gap[ok])]
                    if best_gap is None or gap[m] < best_gap:
                        off = int(cm[m])
        pos = int(np.searchsorted(O[:k], off, "right"))
        if pos < k:
            S[pos + 1:k + 1] = S[pos:k]
            E[pos + 1:k + 1] = E[pos:k]
            O[pos + 1:k + 1] = O[pos:k]
            T[pos + 1:k + 1] = T[pos:k]
        S[pos], E[pos], O[pos], T[pos] = s, e, off, off + sz
        k += 1
        offsets[j] = off
        arena = max(arena, off + sz)
    return offsets, arena


def _by_size(bufs):
    """TFLite's greedy-by-size: biggest first (ties: earliest, longest)."""
    return sorted(range(len(bufs)), key=lambda j: (-bufs[j].size, bufs[j].start, -bufs[j].end))


def _by_first_def(bufs):
    """Linear scan: in order of definition."""
    return sorted(range(len(bufs)), key=lambda j: (bufs[j].start, -bufs[j].size))


def _by_area(bufs):
    """Largest size x lifetime first (long-lived big buffers pinned low)."""
    return sorted(range(len(bufs)), key=lambda j: (-bufs[j].size * (bufs[j].end - bufs[j].start
                                                                    + 1), bufs[j].start))


STRATEGIES = {"size": _by_size, "first_def": _by_first_def, "area": _by_area}


def lower_bound(bufs: list[Buffer], steps: int) -> tuple[int, list[int]]:
    """Max over steps of the summed bytes of live arena buffers, and the per-step profile."""
    diff = np.zeros(steps + 2, np.int64)
    for b in bufs:
        diff[b.start] += b.nbytes
        diff[b.end + 1] -= b.nbytes
    prof = np.cumsum(diff)[:steps + 1]
    return (int(prof.max()) if prof.size else 0), prof.tolist()


# ---- the pass ---------------------------------------------------------------------------------
def plan_memory(graph: Graph, strategy: str = "best", views=CONTIGUOUS_VIEWS, fused=None,
                inplace: bool = True, alignment: int = ALIGNMENT, exec_positions=None,
                concurrent=None, updates_in_place=None, scratch=None,
                end_step=None, reordered=()) -> MemoryPlan:
    """Plan one arena for ``graph`` in its current schedule.

    ``strategy``: a name in ``STRATEGIES`` or ``"best"`` (try all, keep the smallest arena);
    ``views``: ops whose output aliases its operand (``CONTIGUOUS_VIEWS``; add
    ``STRIDED_VIEWS`` only for a backend that reads strided operands);
    ``fused``: values with no buffer (set or ``graph -> set``; default ``fused_values``);
    ``inplace``: allow elementwise outputs to take a dying operand's buffer.

    What a backend executes, as plain data (none of it names a backend):
    ``exec_positions``: ``value name -> step`` at which the backend runs each node (e.g.
    its kernel's dependency level; default: schedule index, a fusion group at its last
    member) and ``end_step``: the step at which outputs are copied out and updates that
    are not in place are copied (default: one past the last position); ``concurrent`` (default: True when ``exec_positions`` is given): nodes of
    different fusion groups at one step may run at the same time, so they never share
    bytes; ``updates_in_place``: ``{value: input}`` updates the backend writes into their
    input (default: the planner decides); ``scratch``: ``{name: (nbytes, start, end)}``
    workspace the backend needs over steps ``[start, end]`` (kind ``"scratch"``: an
    offset and an interval, no graph value); ``reordered``: names of values the backend
    stores in another element order than row-major (a product kept transposed): their
    element ``i`` is not at byte ``i``, so nothing is computed into them in place.
    """
    t0 = time.perf_counter()
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    if concurrent is None:
        concurrent = exec_positions is not None
    live = liveness(graph, fused, exec_positions, end_step)
    buffers, kinds, aliases = assign_buffers(graph, live, views, inplace, alignment,
                                             concurrent, updates_in_place, set(reordered))
    extra = {}
    for name, (nbytes, s, e) in (scratch or {}).items():
        if name in kinds:
            raise ValueError(f"scratch {name!r} has the name of a value")
        if not 0 <= s <= e:
            raise ValueError(f"scratch {name!r}: bad interval [{s}, {e}]")
        buffers.append(Buffer(len(buffers), int(nbytes), align(max(int(nbytes), 1), alignment),
                              int(s), int(e), [name]))
        kinds[name] = "scratch"
        extra[name] = (int(s), int(e))
    arena_bufs = [b for b in buffers if not b.persistent]
    names = list(STRATEGIES) if strategy == "best" else [strategy]
    if any(s not in STRATEGIES for s in names):
        raise ValueError(f"unknown strategy {strategy!r}; choose 'best' or one of "
                         f"{sorted(STRATEGIES)}")
    tried, best = {}, None
    for s in names:
        offs, arena = _place(arena_bufs, STRATEGIES[s](arena_bufs))
        tried[s] = arena
        if best is None or arena < best[2]:
            best = (s, offs, arena)
    chosen, offs, arena = best
    for b, o in zip(arena_bufs, offs):
        b.offset = o
    offsets = {name: b.offset for b in arena_bufs for name in b.values}
    bound, _ = lower_bound(arena_bufs, max([live.end_step] + [e for _, e in extra.values()]))
    naive = sum(align(live.nbytes[n.output], alignment) for n in graph.nodes
                if n.output not in live.persistent)
    naive += sum(b.size for b in arena_bufs if kinds[b.values[0]] == "scratch")
    copies = [(a.name, b.name) for a, b in graph.updates if kinds.get(b.name) != "update"
              or aliases.get(b.name) != a.name]
    intervals = {n.output.name: (live.start[n.output], live.end[n.output]) for n in graph.nodes}
    intervals.update(extra)
    homes = {name: b.home for b in buffers if b.persistent for name in b.values[1:]
             if kinds[name] in ("inplace", "update")}
    return MemoryPlan(alignment, arena, offsets, kinds, aliases, intervals, buffers, copies,
                      [n.output.name for n in graph.nodes], chosen, tried, naive, bound,
                      tuple(views), time.perf_counter() - t0, homes)


def check_plan(graph: Graph, plan: MemoryPlan) -> None:
    """Raise AssertionError unless buffers live at the same step occupy disjoint, aligned
    bytes inside the arena (a sweep over start times; used by tests and as a debug aid)."""
    bufs = sorted((b for b in plan.buffers if not b.persistent), key=lambda b: b.start)
    active: list[Buffer] = []
    for b in bufs:
        assert b.offset % plan.alignment == 0, f"buffer {b.values} misaligned at {b.offset}"
        assert 0 <= b.offset and b.offset + b.nbytes <= plan.arena_bytes, \
            f"buffer {b.values} [{b.offset}, +{b.nbytes}) outside the arena {plan.arena_bytes}"
        active = [a for a in active if a.end >= b.start]
        for a in active:
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, \
                (f"buffers {a.values} [{a.start},{a.end}] and {b.values} [{b.start},{b.end}] "
                 f"overlap in bytes ({a.offset}+{a.size} vs {b.offset}+{b.size})")
        active.append(b)
