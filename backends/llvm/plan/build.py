"""From a (fused) graph to a list of kernels over strided views of buffers.

Every value lives in a *storage* and is read through a *view* (:mod:`.views`).  View
ops (reshape, transpose, broadcast_to, slice, an ungrouped stop_gradient) produce no
code, only new views (a transpose feeding a matmul becomes a GEMM transpose flag).

A *kernel* is one loop nest: loads from views, elementwise nodes computed in registers,
stores to views, reductions accumulated into an output view with stride 0 along the
reduced axes; or a GEMM, optionally followed by an elementwise epilogue on the same
tile range.  Kernels follow the fusion groups (``graphc.passes.fusion``) and run at
the position of their last member.  Then: direct in-place stores of optimizer updates
where safe, copies for the rest; then :mod:`.arena` orders the kernels into
dependency levels, lays the arena out with the memory planner over those levels and
places the synchronisation points (``Kernel.barrier``).

Threads: a multi-thread kernel is cut into ``nchunks`` fixed pieces (a range of one
loop dimension, or a column/row block of a GEMM's product); what a piece computes and
the order of every reduction depend only on the shapes, so results are bit-identical
for any thread count.  Kernels small enough to run on thread 0 alone are ``single``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphc.ir import GraphcError, Node, Value
from graphc.passes.fusion import reaches, view_readers

from .arena import (_barriers, _naive_layout, _schedule, _shared_layout, check_barriers,
                    check_layout)
from ..codegen.lowerings import LOWERINGS
from .views import (Storage, View, broadcast_view, reshape_view, slice_view,
                    transpose_view)

VIEW_OPS = frozenset({"reshape", "transpose", "broadcast_to", "slice"})
GLOBAL_CONST_MAX = 1024          # elements; bigger constants are passed as buffers
SINGLE_THREAD_ELEMS = 1 << 14    # smaller loop kernels run on thread 0 only
#: a multi-thread kernel is cut into up to this many chunks per thread, claimed
#: dynamically: a thread slowed down (shared core) ends up doing fewer of them
CHUNKS_PER_THREAD = 4
#: GEMMs with an epilogue and K up to this are fused into the epilogue loop
SMALLK_MAX = 32


# ---- kernels ----------------------------------------------------------------------------------
@dataclass(eq=False)
class Reduction:
    node: Node
    src: object                  # token of the reduced operand
    out: View                    # over the iteration space; stride 0 on reduced axes
    acc: View | None = None      # float64 scratch (float32 sums), same mapping as out


@dataclass(eq=False)
class Gemm:
    node: Node
    a: View
    b: View
    c: View
    trans_a: bool
    trans_b: bool
    lda: int
    ldb: int
    m: int
    n: int
    k: int


@dataclass(eq=False)
class Kernel:
    name: str
    shape: tuple
    loads: dict = field(default_factory=dict)     # token -> View over shape
    nodes: list = field(default_factory=list)     # elementwise nodes, schedule order
    stores: list = field(default_factory=list)    # (token, View over shape)
    reductions: list = field(default_factory=list)
    gemm: Gemm | None = None
    pos: float = 0.0
    single: bool = False
    barrier: bool = False

    def views(self):
        out = list(self.loads.values()) + [v for _, v in self.stores]
        for r in self.reductions:
            out.append(r.out)
            if r.acc is not None:
                out.append(r.acc)
        if self.gemm is not None:
            out += [v for v in (self.gemm.a, self.gemm.b, self.gemm.c) if v is not None]
        return out

    def reads(self):
        rs = list(self.loads.values())
        rs += [r.out for r in self.reductions] + [r.acc for r in self.reductions if r.acc]
        if self.gemm is not None:
            rs += [self.gemm.a, self.gemm.b]
        return rs

    def writes(self):
        ws = [v for _, v in self.stores] + [r.out for r in self.reductions]
        ws += [r.acc for r in self.reductions if r.acc]
        if self.gemm is not None and self.gemm.c is not None:
            ws.append(self.gemm.c)
        return ws


@dataclass
class Plan:
    graph: object
    kernels: list
    storages: list
    slots: list                  # argv slots: storages of kind arg/out/ext (slot order)
    n_inputs: int
    outputs: list                # output Storage per graph output
    arena_bytes: int
    threads: int
    updates_direct: list = field(default_factory=list)
    #: the ``graphc.passes.memory.MemoryPlan`` the arena follows (None with plan="naive")
    memory_plan: object = None


# ---- planning -----------------------------------------------------------------------------------
def _kind(n: Node) -> str:
    lw = LOWERINGS.get(n.op)
    if lw is None:
        raise GraphcError(f"llvm backend: op '{n.op}' has no lowering")
    return lw.kind




def build_plan(graph, threads: int = 1, memplan: str = "shared") -> Plan:
    """Kernels, storages and the arena of ``graph`` (already fused).

    ``memplan="shared"`` (default): the arena is laid out by the memory planner
    (``graphc.passes.memory.plan_memory``) over this backend's kernel levels;
    ``"naive"``: every stored value and every scratch buffer its own bytes (for tests).
    """
    if memplan not in ("shared", "naive"):
        raise GraphcError(f"llvm backend: plan must be 'shared' or 'naive', got {memplan!r}")
    nodes = graph.nodes
    pos = {n: i for i, n in enumerate(nodes)}
    END = len(nodes) + 1
    outputs_set = set(graph.outputs)
    update_src = {}
    for a, b in graph.updates:
        update_src.setdefault(b, []).append(a)

    # ---- which nodes are views, which belong to which kernel ----------------------------------
    groups: dict[str, list[Node]] = {}
    for n in nodes:
        gid = n.attrs.get("group")
        if gid is not None and _kind(n) in ("elementwise", "reduce", "matmul"):
            groups.setdefault(gid, []).append(n)

    def is_view(n: Node) -> bool:
        return n.op in VIEW_OPS or (n.op == "stop_gradient" and "group" not in n.attrs)

    kernel_of: dict[Node, list[Node]] = {}
    for members in groups.values():
        if _valid_group(members, pos, is_view, END, graph):
            for m in members:
                kernel_of[m] = members
        else:
            for m in members:
                m.attrs = {k: v for k, v in m.attrs.items() if k != "group"}
    # re-evaluate view status for stop_gradients dropped from invalid groups
    for n in nodes:
        if n not in kernel_of and not is_view(n) and _kind(n) not in ("source",):
            kernel_of[n] = [n]

    def kpos(n):
        return max(pos[m] for m in kernel_of[n])

    # ---- storages ------------------------------------------------------------------------------
    storages: list[Storage] = []
    slots: list[Storage] = []

    def new_storage(kind, dtype, size, name, value=None):
        s = Storage(kind, np.dtype(dtype), int(size), name, value=value)
        if kind in ("arg", "out", "ext"):
            s.slot = len(slots)
            slots.append(s)
        storages.append(s)
        return s

    home: dict[Value, View] = {}
    value_storage: dict[str, Storage] = {}     # arena storages of graph values, by name
    for v in graph.inputs:
        home[v] = View.whole(new_storage("arg", v.dtype, v.size, v.name), v.shape)
    out_st = [new_storage("out", v.dtype, v.size, f"out{j}") for j, v in enumerate(graph.outputs)]

    # values needing a buffer (read outside their kernel, or leaving the graph)
    leaving = outputs_set | set(update_src)

    def needs_store(v: Value) -> bool:
        n = v.node
        # a reduction accumulates into its buffer, so it always has one
        if n.op == "matmul" or _kind(n) == "reduce" or reaches(v, leaving, is_view):
            return True
        ks = kernel_of[n]
        return any(u not in ks for u in view_readers(v, is_view))

    def needs_store_outside(v: Value, group) -> bool:
        return reaches(v, leaving, is_view) or any(
            u not in group for u in view_readers(v, is_view))

    # direct in-place stores of updates: safe when every other reader of the target ran in
    # an earlier kernel or reads it element-for-element in the storing kernel
    direct = {}
    for a, b in graph.updates:
        bn = b.node
        if (bn not in kernel_of or _kind(bn) != "elementwise" or len(update_src[b]) != 1
                or b.shape != a.shape or a in update_src or b in graph.inputs):
            continue
        ks = kernel_of[bn]
        if any(m.op == "matmul" for m in ks) and bn.output.shape != a.shape:
            continue
        kp = kpos(bn)
        ok = True
        for u in a.users:
            if is_view(u):
                if any(kpos(w) >= kp for w in view_readers(u.output, is_view)):
                    ok = False
                continue
            if u in ks:
                if _kind(u) != "elementwise":
                    ok = False
            elif kpos(u) >= kp:
                ok = False
        if a in update_src:   # the old value is itself copied somewhere at the end
            ok = False
        if ok:
            direct[b] = a
    for b, a in direct.items():
        home[b] = home[a]

    used_out = set()
    for j, v in enumerate(graph.outputs):
        if v in home or v in used_out or v.node not in kernel_of:
            continue
        home[v] = View.whole(out_st[j], v.shape)
        used_out.add(v)

    for n in nodes:
        v = n.output
        if n.op == "constant":
            val = np.ascontiguousarray(n.attrs["value"])
            kind = "global" if val.size <= GLOBAL_CONST_MAX else "ext"
            home[v] = View.whole(new_storage(kind, v.dtype, val.size, v.name, value=val),
                                 v.shape)
        elif n in kernel_of and v not in home and needs_store(v):
            home[v] = View.whole(new_storage("arena", v.dtype, v.size, v.name), v.shape)
            value_storage[v.name] = home[v].st

    # ---- views (lazily, with materialising copies where a reshape needs one) -----------------
    kernels: list[Kernel] = []
    refs: dict[Value, View] = {}

    def copy_kernel(src: View, dst: View, name, at) -> Kernel:
        k = Kernel(name, dst.shape, pos=at)
        k.loads[("src",)] = src
        k.stores.append((("src",), dst))
        kernels.append(k)
        return k

    def ref(v: Value) -> View:
        r = refs.get(v)
        if r is not None:
            return r
        n = v.node
        if v in home:
            r = home[v]
        elif n.op == "stop_gradient":
            r = ref(n.inputs[0])
        elif n.op == "broadcast_to":
            r = broadcast_view(ref(n.inputs[0]), v.shape)
        elif n.op == "transpose":
            r = transpose_view(ref(n.inputs[0]), n.attrs["perm"])
        elif n.op == "slice":
            r = slice_view(ref(n.inputs[0]), n.attrs["starts"], n.attrs["stops"],
                           n.attrs["steps"], v.shape)
        elif n.op == "reshape":
            src = ref(n.inputs[0])
            r = reshape_view(src, v.shape)
            if r is None:   # not expressible with strides: materialise the source first
                st = new_storage("arena", v.dtype, v.size, v.name + ".copy")
                tmp = View.whole(st, n.inputs[0].shape)
                copy_kernel(src, tmp, f"copy_{v.name}", pos[n] + 0.5)
                r = View.whole(st, v.shape)
        else:
            raise GraphcError(f"llvm backend: value %{v.name} ({n.op}) has no buffer")
        refs[v] = r
        return r

    def materialize(src: View, name, at) -> View:
        st = new_storage("arena", src.st.dtype, int(np.prod(src.shape, dtype=np.int64)), name)
        dst = View.whole(st, src.shape)
        copy_kernel(src, dst, f"copy_{name}", at - 0.25)
        return dst

    # ---- kernels from groups / singletons -------------------------------------------------------
    done = set()
    node_kernel: dict[Node, Kernel] = {}
    for n in nodes:
        if n not in kernel_of or n in done:
            continue
        members = kernel_of[n]
        done.update(members)
        k = _make_kernel(members, kpos(n), ref, home, needs_store, new_storage,
                         materialize, needs_store_outside)
        kernels.append(k)
        for m in members:
            node_kernel[m] = k

    # ---- outputs and non-direct updates ---------------------------------------------------------
    out_views = [View.whole(out_st[j], v.shape) for j, v in enumerate(graph.outputs)]
    update_targets = {a for a, _ in graph.updates}
    for j, v in enumerate(graph.outputs):
        if home.get(v) is not None and home[v].st is out_st[j]:
            continue
        src = ref(v)
        early = src.st.kind == "arg" and any(src.st is home[a].st for a in update_targets)
        copy_kernel(src, out_views[j], f"output{j}", -1 if early else END + 1)
    staged = []
    for a, b in graph.updates:
        if b in direct:
            continue
        src = ref(b)
        if src.st is home[a].st and src.same(home[a]):
            continue
        if src.st.kind == "arg":   # may be another update's target: stage through the arena
            st = new_storage("arena", b.dtype, b.size, b.name + ".stage")
            tmp = View.whole(st, b.shape)
            copy_kernel(src, tmp, f"stage_{a.name}", END + 2)
            src = tmp
        staged.append((src, a))
    for src, a in staged:
        copy_kernel(src, home[a], f"update_{a.name}", END + 3)

    kernels.sort(key=lambda k: k.pos)
    for k in kernels:
        _finish_kernel(k, threads)
    if threads > 1 and all(k.single for k in kernels):
        threads = 1     # nothing to share: no thread pool, no barriers
        for k in kernels:
            _finish_kernel(k, threads)
    kernels, phase = _schedule(kernels)
    # The steps the arena is planned over: kernels of one dependency level may run at the
    # same time on different threads; one thread runs them one after the other.
    steps = phase if threads > 1 else list(range(len(kernels)))
    scratch = [st for st in storages if st.kind == "arena" and st not in
               set(value_storage.values())]
    if memplan == "naive":
        mplan, arena = None, _naive_layout(storages)
    else:
        mplan = _shared_layout(graph, kernels, steps, node_kernel, value_storage,
                               scratch, direct)
        arena = mplan.arena_bytes
    _barriers(kernels)
    check_barriers(kernels)
    check_layout(kernels, steps)
    return Plan(graph, kernels, storages, slots, len(graph.inputs), out_st, arena, threads,
                updates_direct=[(a.name, b.name) for b, a in direct.items()],
                memory_plan=mplan)


def _valid_group(members, pos, is_view, END, graph) -> bool:
    """Backend-side check of a fusion group (fallback: run the members separately)."""
    mset = set(members)
    last = max(pos[m] for m in members)
    ew = [m for m in members if _kind(m) == "elementwise"]
    mms = [m for m in members if m.op == "matmul"]
    reds = [m for m in members if _kind(m) == "reduce"]
    if not ew:
        return False
    shape = ew[0].output.shape
    if any(m.output.shape != shape for m in ew):
        return False
    if len(mms) > 1 or (mms and (reds or mms[0].output.ndim != 2
                                 or mms[0].output.shape != shape)):
        return False
    if any(r.inputs[0].shape != shape for r in reds):
        return False
    for m in members:
        for x in m.inputs:
            if x.node in mset:
                if _kind(x.node) == "reduce":
                    return False
            else:
                b = x
                while is_view(b.node):
                    b = b.node.inputs[0]
                if b.node in mset:
                    return False
        for u in view_readers(m.output, is_view):
            if u not in mset and pos[u] < last:
                return False
    return True


def _make_kernel(members, at, ref, home, needs_store, new_storage, materialize,
                 needs_store_outside) -> Kernel:
    mset = set(members)
    mm = next((m for m in members if m.op == "matmul"), None)
    ew = [m for m in members if _kind(m) == "elementwise"]
    reds = [m for m in members if _kind(m) == "reduce"]
    name = members[-1].op + "_" + members[-1].output.name
    if len(members) == 1 and members[0].op == "matmul":
        return _gemm_kernel(members[0], ref, at, materialize)
    if len(members) == 1 and _kind(members[0]) == "copy":
        return _copy_op_kernel(members[0], ref, at, new_storage)
    shape = ew[0].output.shape if ew else reds[0].inputs[0].shape
    k = Kernel(name, shape, pos=at)
    if mm is not None:
        k.gemm = _gemm_kernel(mm, ref, at, materialize).gemm
        g = k.gemm
        # Small K (weight gradients at small batch): the product is computed element by
        # element inside the epilogue loop (K fused multiply-adds in k order, as the
        # GEMM kernel does: identical bits), never stored unless read elsewhere.
        k.smallk = (g.k <= SMALLK_MAX and not g.trans_b and g.c.shape == shape
                    and g.c.st.dtype.kind == "f")
        if k.smallk and not needs_store_outside(mm.output, mset):
            g.c = None
    produced = {m.output for m in members}
    for m in ew + reds:
        for x in m.inputs:
            if x in produced and (x.node is not mm or getattr(k, "smallk", False)):
                continue
            if x not in k.loads:
                k.loads[x] = ref(x)
    if getattr(k, "smallk", False) and k.gemm.c is not None:
        k.stores.append((mm.output, k.gemm.c))
    k.nodes = ew
    for m in ew:
        v = m.output
        if needs_store(v):
            k.stores.append((v, home[v]))
    for r in reds:
        x = r.inputs[0]
        out_view = _reduce_view(home[r.output], r, x.shape)
        acc = None
        if r.op == "sum" and x.dtype == np.float32:
            st = new_storage("arena", np.float64, r.output.size, r.output.name + ".acc")
            acc = _reduce_view(View.whole(st, r.output.shape), r, x.shape)
        k.reductions.append(Reduction(r, x, out_view, acc))
    return k


def _reduce_view(out: View, r: Node, in_shape) -> View:
    """The output view indexed by the *input's* coordinates (stride 0 on reduced axes)."""
    axes, keep = r.attrs["axes"], r.attrs["keepdims"]
    strides, j = [], 0
    for d in range(len(in_shape)):
        if d in axes:
            strides.append(0)
            if keep:
                j += 1
        else:
            strides.append(out.strides[j])
            j += 1
    return View(out.st, out.offset, tuple(in_shape), tuple(strides))


def _gemm_operand(v: View):
    """(trans, ld) if the last two axes are row- or column-major, else None."""
    m, k = v.shape[-2], v.shape[-1]
    sm, sk = v.strides[-2], v.strides[-1]
    if sk == 1 or k == 1:
        return False, (sm if m > 1 else max(k, 1))
    if sm == 1 or m == 1:
        return True, (sk if k > 1 else max(m, 1))
    return None


def _gemm_kernel(n: Node, ref, at, materialize) -> Kernel:
    a, b = n.inputs
    out = ref(n.output)
    va, vb = ref(a), ref(b)
    if _gemm_operand(va) is None:
        va = materialize(va, f"{n.output.name}.a", at)
    if _gemm_operand(vb) is None:
        vb = materialize(vb, f"{n.output.name}.b", at)
    ta, lda = _gemm_operand(va)
    tb, ldb = _gemm_operand(vb)
    M, K = a.shape[-2], a.shape[-1]
    N = b.shape[-1]
    k = Kernel(f"matmul_{n.output.name}", out.shape, pos=at)
    k.gemm = Gemm(n, va, vb, out, ta, tb, lda, ldb, M, N, K)
    return k


def _copy_op_kernel(n: Node, ref, at, new_storage) -> Kernel:
    """unslice / concatenate: a kernel of several phases (each a copy)."""
    out = ref(n.output)
    k = Kernel(f"{n.op}_{n.output.name}", n.output.shape, pos=at)
    phases = []
    if n.op == "unslice":
        zero = new_storage("global", n.output.dtype, 1, "zero",
                           value=np.zeros(1, n.output.dtype))
        phases.append((View(zero, 0, out.shape, (0,) * len(out.shape)), out))
        dst = slice_view(out, n.attrs["starts"], n.attrs["stops"], n.attrs["steps"],
                         n.inputs[0].shape)
        phases.append((ref(n.inputs[0]), dst))
    else:
        ax, off = n.attrs["axis"], 0
        for x in n.inputs:
            starts = [0] * len(out.shape)
            stops = list(out.shape)
            starts[ax], stops[ax] = off, off + x.shape[ax]
            dst = slice_view(out, starts, stops, [1] * len(out.shape), x.shape)
            phases.append((ref(x), dst))
            off += x.shape[ax]
    k.phases = phases
    return k


# ---- per-kernel finishing: dimension merging, thread partition -----------------------------------
def _merge_dims(shape, views):
    """Drop size-1 dims and merge adjacent dims every view walks contiguously."""
    keep = [d for d in range(len(shape)) if shape[d] != 1]
    shp = [shape[d] for d in keep]
    sts = [[v.strides[d] for d in keep] for v in views]
    i = len(shp) - 2
    while i >= 0:
        if all(s[i] == s[i + 1] * shp[i + 1] for s in sts):
            shp[i] = shp[i] * shp[i + 1]
            del shp[i + 1]
            for s in sts:
                s[i] = s[i + 1]
                del s[i + 1]
        i -= 1
    return tuple(shp), [tuple(s) for s in sts]


def _finish_kernel(k: Kernel, threads: int):
    """Merge dims (non-GEMM kernels), choose the partitioned dim, decide single-thread."""
    k.nchunks = 1
    if hasattr(k, "phases"):
        new = []
        for src, dst in k.phases:
            shp, (ss, ds) = _merge_dims(dst.shape, [src, dst])
            new.append((View(src.st, src.offset, shp, ss), View(dst.st, dst.offset, shp, ds)))
        k.phases = new
        k.single = True
        k.part_dim = None
        return
    if k.gemm is not None:
        k.part_dim = None
        k.gpart = gemm_partition(k.gemm, threads * CHUNKS_PER_THREAD if threads > 1 else 1)
        k.nchunks = k.gpart[0]
        k.single = threads > 1 and k.nchunks == 1
        return
    views = k.views()
    shp, sts = _merge_dims(k.shape, views)
    it = iter(sts)
    k.shape = shp

    def rebuild(v):
        return View(v.st, v.offset, shp, next(it))
    k.loads = {t: rebuild(v) for t, v in k.loads.items()}
    k.stores = [(t, rebuild(v)) for t, v in k.stores]
    for r in k.reductions:
        r.out = rebuild(r.out)
        if r.acc is not None:
            r.acc = rebuild(r.acc)
    reduced = set()
    for r in k.reductions:
        reduced |= {d for d in range(len(shp)) if r.out.strides[d] == 0}
    cands = [d for d in range(len(shp)) if d not in reduced]
    size = int(np.prod(shp, dtype=np.int64))
    k.part_dim, k.nchunks, k.part_unit = None, 1, 1
    if threads > 1 and size >= SINGLE_THREAD_ELEMS and cands:
        big = [d for d in cands if shp[d] >= 2 * threads]
        if big:
            d = k.part_dim = big[0]
            k.part_unit = 16 if d == len(shp) - 1 and shp[d] >= 32 * threads else 1
            k.nchunks = max(1, min(threads * CHUNKS_PER_THREAD, -(-shp[d] // k.part_unit)))
    k.single = threads > 1 and k.nchunks == 1


def gemm_spec(g: Gemm):
    """The micro-kernel tile for this GEMM: the host default (6x64 on AVX-512), or 8 rows
    when that leaves fewer rows to the slow one-row edge kernel (batch 16: 2 full 8-row
    tiles instead of 2x6 + 4 single rows, 1.5x faster measured) -- 8x48 (24 accumulators,
    11 loads per 24 FMAs; MLP step forwards 5-7% faster than 8x32 at batch 16 and 128),
    or 8x32 with a transposed B (its panels are packed per call: narrower panels
    measured faster there)."""
    from ..codegen import gemm as gemm_mod
    spec = gemm_mod.default_spec(g.a.st.dtype, g.trans_a, g.trans_b)
    if spec.nv != 4:
        return spec
    alt = gemm_mod.GemmSpec(spec.dtype, spec.trans_a, spec.trans_b, 8,
                            2 if g.trans_b else 3, spec.vw, spec.kc)

    def cost(mr):       # rows at full speed, leftover rows at ~1/3 speed
        return g.m - g.m % mr + 3 * (g.m % mr)
    return alt if cost(8) < cost(spec.mr) else spec


def gemm_partition(g: Gemm, chunks: int):
    """(parts, by_cols, units, width, spec): the fixed split of a GEMM's C over threads --
    vector-width column blocks when there are enough (always for trans_b, whose B
    panels are packed per column block), else MR-row blocks; small products stay on
    one thread."""
    from ..codegen import gemm as gemm_mod
    spec = gemm_spec(g)
    M, N, K = g.m, g.n, g.k
    work = M * N * max(K, 1)
    parts = min(chunks, max(1, work // (gemm_mod.MIN_WORK_PER_THREAD // CHUNKS_PER_THREAD)))

    def split(spec, parts):
        cunits, runits = -(-N // spec.vw), -(-M // spec.mr)
        by_cols = cunits >= parts * spec.nv or (g.trans_b and runits < parts)
        units = cunits if by_cols else runits
        return max(1, min(parts, units)), by_cols, units, (spec.vw if by_cols else spec.mr)
    parts_, by_cols, units, width = split(spec, parts)
    if by_cols and parts_ > 1 and spec.nv == 3 and (-(-units // parts_)) % 3:
        # column chunks that are not whole 3-vector panels would run masked-off
        # vectors in every tile: use 2-vector tiles then (8x32)
        spec = gemm_mod.GemmSpec(spec.dtype, spec.trans_a, spec.trans_b, spec.mr, 2,
                                 spec.vw, spec.kc)
        parts_, by_cols, units, width = split(spec, parts)
    return parts_, by_cols, units, width, spec
