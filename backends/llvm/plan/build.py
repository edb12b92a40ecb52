"""From a (fused) graph to a plan: kernels over strided views of storages, in order.

Every value lives in a *storage* and is read through a *view* (:mod:`.views`).  View
ops (reshape, transpose, broadcast_to, slice, an ungrouped stop_gradient) produce no
code, only new views (a transpose feeding a matmul becomes a GEMM transpose flag).
Kernels (:mod:`.kernels`) follow the fusion groups (``graphc.passes.fusion``) and run at
the position of their last member.

:class:`PlanBuilder` does it in named steps: :meth:`~PlanBuilder.assign_kernels` (which
nodes are views, which valid group each node's kernel is), :meth:`~PlanBuilder.place_values`
(a storage for every value that needs one; optimizer updates stored in place where
safe), :meth:`~PlanBuilder.make_kernels`, :meth:`~PlanBuilder.copy_results` (copies
into the outputs and the updated arrays that were not written in place) and
:meth:`~PlanBuilder.finish` (partitions, then :mod:`.arena`: dependency levels, the
arena laid out by the memory planner, synchronisation points).  The graph is only read:
what the builder decides lives in its own tables.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import GraphcError, Node, Value, get_op, view_ops
from graphc.passes.fusion import reaches, view_readers

from ..codegen.lowerings import LOWERINGS
from .arena import (check_barriers, check_layout, naive_layout, place_barriers, schedule,
                    shared_layout)
from . import layout as lay
from .kernels import (Col2imGemmKernel, Im2colGemmKernel, Copy, CopyKernel, CustomKernel, DotKernel, Gemm,
                      GemmKernel, Kernel, LoopKernel, Order, Plan, Reduction, SmallKKernel,
                      Slot, Stage)
from .partition import finish as finish_kernel
from .partition import gemm_spec
from .views import (Storage, View, broadcast_view, reshape_view, slice_view,
                    transpose_view)

VIEW_OPS = view_ops()            # OpDef.view: no code, only a new view of a buffer
GLOBAL_CONST_MAX = 1024          # elements; bigger constants are passed as buffers
#: GEMMs with an epilogue and K up to this are fused into the epilogue loop
SMALLK_MAX = 32
FUSIBLE = ("elementwise", "reduce", "matmul")


def kind_of(n: Node) -> str:
    """The lowering kind of ``n``'s op (elementwise, reduce, matmul, copy, source)."""
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
    return PlanBuilder(graph, threads, memplan).build()


class PlanBuilder:
    """One graph's plan, built once by :meth:`build` (see the module docstring)."""

    def __init__(self, graph, threads: int, memplan: str):
        if memplan not in ("shared", "naive"):
            raise GraphcError(f"llvm backend: plan must be 'shared' or 'naive', "
                              f"got {memplan!r}")
        self.graph, self.threads, self.memplan = graph, threads, memplan
        self.pos = {n: i for i, n in enumerate(graph.nodes)}
        self.update_src: dict[Value, list[Value]] = {}
        for a, b in graph.updates:
            self.update_src.setdefault(b, []).append(a)
        #: values read after the step (outputs, update sources)
        self.leaving = set(graph.outputs) | set(self.update_src)
        self.ungrouped: set[Node] = set()            # members of groups found invalid
        self.kernel_of: dict[Node, list[Node]] = {}  # node -> members of its kernel
        self.storages: list[Storage] = []
        self.slots: list[Storage] = []
        self.home: dict[Value, View] = {}            # values with a buffer of their own
        self.value_storage: dict[str, Storage] = {}  # arena storages of values, by name
        self.direct: dict[Value, Value] = {}         # update source -> target, in place
        self.refs: dict[Value, View] = {}
        self.kernels: list[Kernel] = []
        self.node_kernel: dict[Node, Kernel] = {}
        self.out_st: list[Storage] = []
        #: products computed block by block inside their col2im's kernel (never stored)
        self.fused_products: set[Value] = set()
        #: patch matrices written block by block inside their product's kernel
        self.fused_patches: set[Value] = set()

    def build(self) -> Plan:
        self.assign_kernels()
        self.place_values()
        self.make_kernels()
        self.copy_results()
        return self.finish()

    # ---- step 1: views and kernels' members ------------------------------------------
    def is_view(self, n: Node) -> bool:
        return n.op in VIEW_OPS or (get_op(n.op).identity and (
            "group" not in n.attrs or n in self.ungrouped))

    def assign_kernels(self) -> None:
        """Valid fusion groups become kernels (the members of an invalid one run
        separately); every other node that is not a view or a source its own kernel."""
        groups: dict[str, list[Node]] = {}
        for n in self.graph.nodes:
            gid = n.attrs.get("group")
            if gid is not None and kind_of(n) in FUSIBLE:
                groups.setdefault(gid, []).append(n)
        for members in groups.values():
            if self.valid_group(members):
                for m in members:
                    self.kernel_of[m] = members
            else:
                self.ungrouped.update(members)
        for n in self.graph.nodes:
            if n not in self.kernel_of and not self.is_view(n) and kind_of(n) != "source":
                self.kernel_of[n] = [n]
        self.fuse_patch_gradients()
        self.fuse_patch_products()

    def fuse_patch_products(self) -> None:
        """An ``im2col`` read only as the B operand of a 2-d product (a conv layer's
        forward ``w @ cols`` when no weight gradient keeps the patch matrix: inference)
        runs inside that product's kernel, block by block
        (:class:`~.kernels.Im2colGemmKernel`): the patch matrix is never stored."""
        from ..codegen import conv_fused
        for c in self.graph.nodes:
            if c.op != "im2col" or not conv_fused.ENABLED or c.output.dtype.kind != "f":
                continue
            d = c.output
            mms = [u for u in d.users if u.op == "matmul" and u.inputs[1] is d
                   and u.inputs[0] is not d and u.output.ndim == 2 and u.inputs[0].ndim == 2]
            if len(mms) != 1 or mms[0] not in self.kernel_of or c not in self.kernel_of:
                continue
            m = mms[0]
            members = self.kernel_of[m]
            if self.kernel_of[c] != [c] or any(x.op in ("im2col", "col2im") for x in members):
                continue
            # only a patch matrix nothing else reads: when a weight gradient needs it
            # stored anyway, writing it from the slot as well measured slower (LeNet)
            if reaches(d, self.leaving, self.is_view) or \
                    any(u is not m for u in view_readers(d, self.is_view)):
                continue
            new = [c] + members
            for x in new:
                self.kernel_of[x] = new
            self.fused_patches.add(d)

    def fuse_patch_gradients(self) -> None:
        """A ``col2im`` whose operand is a product read by nothing else (a conv layer's
        patch-matrix gradient ``wᵀ @ g``) runs with that product in one kernel, block
        by block (:class:`~.kernels.Col2imGemmKernel`)."""
        from ..codegen import conv_fused
        for c in self.graph.nodes:
            if c.op != "col2im" or not conv_fused.ENABLED:
                continue
            d = c.inputs[0]
            m = d.node
            if (m.op != "matmul" or self.kernel_of.get(m) != [m] or d.ndim != 2
                    or d.dtype.kind != "f" or m.inputs[0].ndim != 2 or m.inputs[1].ndim != 2
                    or reaches(d, self.leaving, self.is_view)
                    or list(view_readers(d, self.is_view)) != [c]
                    or not conv_fused.fusible(c)):
                continue
            self.kernel_of[m] = self.kernel_of[c] = [m, c]
            self.fused_products.add(d)

    def valid_group(self, members) -> bool:
        """Backend-side check of a fusion group (fallback: run the members separately)."""
        mset = set(members)
        last = max(self.pos[m] for m in members)
        ew = [m for m in members if kind_of(m) == "elementwise"]
        mms = [m for m in members if m.op == "matmul"]
        reds = [m for m in members if kind_of(m) == "reduce"]
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
                    if kind_of(x.node) == "reduce":
                        return False
                elif self.base(x).node in mset:
                    return False
            for u in view_readers(m.output, self.is_view):
                if u not in mset and self.pos[u] < last:
                    return False
        return True

    def base(self, v: Value) -> Value:
        """The value ``v`` is a view of (``v`` itself if it is not a view)."""
        while self.is_view(v.node):
            v = v.node.inputs[0]
        return v

    def kpos(self, n: Node) -> int:
        """Node index the kernel of ``n`` runs at (its last member's)."""
        return max(self.pos[m] for m in self.kernel_of[n])

    # ---- step 2: storages --------------------------------------------------------------
    def new_storage(self, kind, dtype, size, name, value=None) -> Storage:
        s = Storage(kind, np.dtype(dtype), int(size), name, value=value)
        if kind in ("arg", "out", "ext"):
            s.slot = len(self.slots)
            self.slots.append(s)
        self.storages.append(s)
        return s

    def arena_view(self, v: Value, name: str, shape=None) -> View:
        """A fresh arena storage for ``v``'s elements, viewed whole (as ``shape``)."""
        st = self.new_storage("arena", v.dtype, v.size, name)
        return View.whole(st, v.shape if shape is None else shape)

    def needs_store(self, v: Value) -> bool:
        """Whether ``v`` needs a buffer: read outside its kernel, or leaving the graph."""
        n = v.node
        if v in self.fused_products:
            return False
        if v in self.fused_patches:
            return False
        # a reduction accumulates into its buffer, so it always has one
        if n.op == "matmul" or kind_of(n) in ("reduce", "custom") or \
                reaches(v, self.leaving, self.is_view):
            return True
        ks = self.kernel_of[n]
        return any(u not in ks for u in view_readers(v, self.is_view))

    def needs_store_outside(self, v: Value, group) -> bool:
        return reaches(v, self.leaving, self.is_view) or any(
            u not in group for u in view_readers(v, self.is_view))

    def place_values(self) -> None:
        """Storages of the inputs, outputs, updates written in place, constants and
        every value that needs a buffer (``home``)."""
        g = self.graph
        for v in g.inputs:
            self.home[v] = View.whole(self.new_storage("arg", v.dtype, v.size, v.name),
                                      v.shape)
        self.out_st = [self.new_storage("out", v.dtype, v.size, f"out{j}")
                       for j, v in enumerate(g.outputs)]
        self.direct = self.direct_updates()
        for b, a in self.direct.items():
            self.home[b] = self.home[a]
        used_out = set()
        for j, v in enumerate(g.outputs):
            if v in self.home or v in used_out or v.node not in self.kernel_of:
                continue
            self.home[v] = View.whole(self.out_st[j], v.shape)
            used_out.add(v)
        for n in g.nodes:
            v = n.output
            if n.op == "constant":
                val = np.ascontiguousarray(n.attrs["value"])
                kind = "global" if val.size <= GLOBAL_CONST_MAX else "ext"
                self.home[v] = View.whole(
                    self.new_storage(kind, v.dtype, val.size, v.name, value=val), v.shape)
            elif n in self.kernel_of and v not in self.home and self.needs_store(v):
                self.home[v] = self.arena_view(v, v.name)
                self.value_storage[v.name] = self.home[v].st

    def direct_updates(self) -> dict:
        """Updates stored in place by the kernel computing them: safe when every other
        reader of the target ran in an earlier kernel or reads it element-for-element
        in the storing kernel.  The source is an elementwise node (an update fused into
        its kernel) or a product whose output is the whole target (a gradient graph's
        weight gradient written straight into its buffer, data parallel: no copy).
        Returns {source: target}."""
        g, direct = self.graph, {}
        for a, b in g.updates:
            bn = b.node
            if (bn not in self.kernel_of or kind_of(bn) not in ("elementwise", "matmul")
                    or len(self.update_src[b]) != 1 or b.shape != a.shape
                    or a in self.update_src or b in g.inputs):
                continue
            ks = self.kernel_of[bn]
            if any(m.op == "matmul" for m in ks) and bn.output.shape != a.shape:
                continue
            if self.readers_done_before(a, ks, self.kpos(bn)):
                direct[b] = a
        return direct

    def readers_done_before(self, a: Value, ks, kp: int) -> bool:
        """Every reader of ``a`` runs in a kernel before position ``kp``, or is an
        elementwise member of ``ks`` (the kernel at ``kp``)."""
        for u in a.users:
            if self.is_view(u):
                if any(self.kpos(w) >= kp for w in view_readers(u.output, self.is_view)):
                    return False
                continue
            if u in ks:
                if kind_of(u) != "elementwise":
                    return False
            elif self.kpos(u) >= kp:
                return False
        return True

    # ---- views, and copies where a view cannot be expressed ------------------------------
    def add_copy(self, src: View, dst: View, name: str, order: Order) -> LoopKernel:
        k = LoopKernel.copy(src, dst, name, order)
        self.kernels.append(k)
        return k

    def ref(self, v: Value) -> View:
        """The view ``v`` is read through (made on first use)."""
        r = self.refs.get(v)
        if r is None:
            r = self.refs[v] = self.home[v] if v in self.home else self.view_of(v)
        return r

    def view_of(self, v: Value) -> View:
        n = v.node
        if n.op == "stop_gradient":
            return self.ref(n.inputs[0])
        if n.op == "broadcast_to":
            return broadcast_view(self.ref(n.inputs[0]), v.shape)
        if n.op == "transpose":
            return transpose_view(self.ref(n.inputs[0]), n.attrs["perm"])
        if n.op == "slice":
            return slice_view(self.ref(n.inputs[0]), n.attrs["starts"], n.attrs["stops"],
                              n.attrs["steps"], v.shape)
        if n.op == "reshape":
            src = self.ref(n.inputs[0])
            r = reshape_view(src, v.shape)
            if r is None:   # not expressible with strides: materialise the source first
                tmp = self.arena_view(v, v.name + ".copy", n.inputs[0].shape)
                self.add_copy(src, tmp, f"copy_{v.name}", Order.at(self.pos[n], Slot.AFTER))
                r = View.whole(tmp.st, v.shape)
            return r
        raise GraphcError(f"llvm backend: value %{v.name} ({n.op}) has no buffer")

    def materialize(self, src: View, name: str, at: int) -> View:
        """A contiguous copy of ``src``, made just before the kernel at ``at``."""
        st = self.new_storage("arena", src.st.dtype,
                              int(np.prod(src.shape, dtype=np.int64)), name)
        dst = View.whole(st, src.shape)
        self.add_copy(src, dst, f"copy_{name}", Order.at(at, Slot.OPERANDS))
        return dst

    # ---- step 3: kernels -------------------------------------------------------------------
    def make_kernels(self) -> None:
        """One kernel per group or singleton, in node order."""
        done = set()
        for n in self.graph.nodes:
            if n not in self.kernel_of or n in done:
                continue
            members = self.kernel_of[n]
            done.update(members)
            k = self.kernel_for(members, self.kpos(n))
            self.kernels.append(k)
            for m in members:
                self.node_kernel[m] = k

    def kernel_for(self, members, at: int) -> Kernel:
        if len(members) == 2 and members[0].output in self.fused_products:
            return self.col2im_gemm_kernel(*members, at)
        if members[0].output in self.fused_patches:
            return self.im2col_gemm_kernel(members[0], members[1:], at)
        if len(members) == 1 and members[0].op == "matmul":
            n = members[0]
            if self.small_k(n):
                return self.loop_kernel(members, at)
            gemm = self.dot_gemm(n)
            if gemm is not None:
                return DotKernel(name=f"matmul_{n.output.name}", shape=n.output.shape,
                                 order=Order.at(at), gemm=gemm)
            gemm = self.gemm_of(n, at)
            return GemmKernel(name=f"matmul_{n.output.name}", shape=n.output.shape,
                              order=Order.at(at), gemm=gemm)
        if len(members) == 1 and kind_of(members[0]) == "copy":
            return self.copy_op_kernel(members[0], at)
        if len(members) == 1 and kind_of(members[0]) == "custom":
            n = members[0]
            loads = {}
            for x in n.inputs:
                loads.setdefault(x, self.ref(x))
            return CustomKernel(name=f"{n.op}_{n.output.name}", shape=n.output.shape,
                                order=Order.at(at), node=n, loads=loads,
                                stores=[(n.output, self.ref(n.output))])
        return self.loop_kernel(members, at)

    def small_k(self, n: Node) -> bool:
        """A product on its own with K <= SMALLK_MAX runs as a small-K kernel too (register
        tiles inline, no micro-kernel call per tile): the input gradient of a conv layer
        with 16 output channels (K 16, 150 x 6400 at LeNet's conv2) was ~12 % faster so
        on Zen 3; the same bits (fma in k order from zero either way).  Only operands the
        GEMM reads as they are, B not transposed (nothing copied, nothing packed)."""
        a, b = n.inputs
        if a.shape[-1] > SMALLK_MAX or n.output.ndim != 2 or n.output.dtype.kind != "f":
            return False
        ga, gb = gemm_operand(self.ref(a)), gemm_operand(self.ref(b))
        return (ga is not None and gb is not None and not gb[0]
                and self.ref(n.output).strides[-1] == 1)

    def col2im_gemm_kernel(self, m: Node, c: Node, at: int) -> Col2imGemmKernel:
        """col2im ``c`` of product ``m`` by blocks of images; the product's slot per chunk
        is a scratch storage of the arena."""
        from ..codegen import conv_fused
        a, b = m.inputs
        va, vb = self.ref(a), self.ref(b)
        if gemm_operand(va) is None:
            va = self.materialize(va, f"{m.output.name}.a", at)
        if gemm_operand(vb) is None:
            vb = self.materialize(vb, f"{m.output.name}.b", at)
        ta, lda = gemm_operand(va)
        tb, ldb = gemm_operand(vb)
        rows, cols, k = a.shape[-2], b.shape[-1], a.shape[-1]
        block, parts = conv_fused.blocking(c, rows, self.threads)
        width = block * conv_fused.columns_per_image(c)
        st = self.new_storage("arena", m.output.dtype, parts * rows * width,
                              m.output.name + ".blocks")
        scratch = View(st, 0, (rows, cols), (width, 1))
        gemm = Gemm(m, va, vb, scratch, ta, tb, lda, ldb, rows, cols, k)
        smallk = k <= SMALLK_MAX and not tb
        loads = {a: va}
        loads.setdefault(b, vb)
        return Col2imGemmKernel(name=f"col2im_{c.output.name}", shape=c.output.shape,
                                order=Order.at(at), node=c, loads=loads,
                                stores=[(c.output, self.ref(c.output))], gemm=gemm,
                                smallk=smallk, block=block, max_chunks=parts)

    def im2col_gemm_kernel(self, c: Node, rest, at: int) -> Im2colGemmKernel:
        """The product kernel of ``rest`` reading its patch-matrix operand from a scratch
        slot per chunk that im2col ``c`` fills block by block."""
        from ..codegen import conv_fused
        d = c.output
        rows = d.shape[0]
        block, parts = conv_fused.im2col_blocking(c, rows, self.threads)
        width = block * conv_fused.columns_per_image(c)
        st = self.new_storage("arena", d.dtype, parts * rows * width, d.name + ".blocks")
        scratch = View(st, 0, d.shape, (width, 1))
        old = self.refs.get(d)
        self.refs[d] = scratch
        inner = self.kernel_for(rest, at)
        if old is None:
            del self.refs[d]
        else:
            self.refs[d] = old
        if isinstance(inner, GemmKernel) and not isinstance(inner, DotKernel) and \
                inner.gemm.b is scratch and not inner.gemm.transposed:
            return Im2colGemmKernel(name=f"im2col_{inner.name}", shape=d.shape,
                                    order=Order.at(at), node=c,
                                    loads={c.inputs[0]: self.ref(c.inputs[0])},
                                    inner=inner, scratch=scratch,
                                    block=block, max_chunks=parts)
        raise GraphcError(f"llvm backend: im2col %{d.name} cannot be fused with its product")

    def dot_gemm(self, n: Node) -> Gemm | None:
        """The GEMM of matmul ``n`` if it runs as dot products along K (``codegen/dot.py``:
        a 2-d product of rows along K, A (M, K) and B stored (N, K), K long and M or N
        narrower than a vector -- a conv layer's weight gradient), else None."""
        a, b = n.inputs
        if n.output.ndim != 2 or a.ndim != 2 or b.ndim != 2 or n.output.dtype.kind != "f":
            return None
        from ..codegen import dot
        m, nn, k = a.shape[0], b.shape[1], a.shape[1]
        if not dot.eligible(m, nn, k, n.output.dtype):
            return None
        va, vb, vc = self.ref(a), self.ref(b), self.ref(n.output)
        if va.strides[1] != 1 or vb.strides[0] != 1 or len(vc.shape) != 2:
            return None
        return Gemm(n, va, vb, vc, False, True, va.strides[0], vb.strides[1], m, nn, k)

    def gemm_of(self, n: Node, at: int, members=()) -> Gemm:
        """The GEMM of matmul ``n``: operands that are neither row- nor column-major are
        copied first; the product is computed transposed when that costs less
        (:mod:`.layout`)."""
        a, b = n.inputs
        va, vb = self.ref(a), self.ref(b)
        if gemm_operand(va) is None:
            va = self.materialize(va, f"{n.output.name}.a", at)
        if gemm_operand(vb) is None:
            vb = self.materialize(vb, f"{n.output.name}.b", at)
        ta, lda = gemm_operand(va)
        tb, ldb = gemm_operand(vb)
        m, nn, k = a.shape[-2], b.shape[-1], a.shape[-1]
        if tb and n.output not in self.refs and self.may_transpose(n):
            g = Gemm(n, va, vb, None, ta, tb, lda, ldb, m, nn, k)
            readers = len([u for u in view_readers(n.output, self.is_view)
                           if u not in members]) + (1 if len(members) > 1 else 0)
            gt = self.transposed_gemm(g, self.home[n.output])
            if lay.choose_transposed(g, gt, gemm_spec(g), gemm_spec(gt), readers):
                self.refs[n.output] = self.home[n.output] = transpose_view(gt.c, (1, 0))
                return gt
        out = self.ref(n.output)
        return Gemm(n, va, vb, out, ta, tb, lda, ldb, m, nn, k)

    def may_transpose(self, n: Node) -> bool:
        """Whether matmul ``n``'s product may be stored transposed: a 2-d product with a
        transposed B (the only case where the swap saves packing) in an arena buffer of
        its own (outputs and arguments keep the caller's layout)."""
        v = n.output
        if v.ndim != 2 or min(v.shape) < 2 or v.dtype.kind != "f":
            return False
        home = self.home.get(v)
        return (home is not None and self.value_storage.get(v.name) is home.st
                and home.is_contiguous())

    def transposed_gemm(self, g: Gemm, home: View) -> Gemm:
        """``Cᵀ = op(B)ᵀ·op(A)ᵀ`` into ``home``'s storage, stored row-major (N×M)."""
        c = View(home.st, home.offset, (g.n, g.m), (g.m, 1))
        at, bt = transpose_view(g.b, (1, 0)), transpose_view(g.a, (1, 0))
        ta, lda = gemm_operand(at)
        tb, ldb = gemm_operand(bt)
        return Gemm(g.node, at, bt, c, ta, tb, lda, ldb, g.n, g.m, g.k, transposed=True)

    def loop_kernel(self, members, at: int) -> LoopKernel:
        """A loop over the group's elementwise shape; with a matmul member, the GEMM and
        this loop as its epilogue.  Small K (weight gradients at small batch): the
        product is computed element by element inside the epilogue loop (K fused
        multiply-adds in k order, as the GEMM kernel does: identical bits), never stored
        unless read elsewhere."""
        mm = next((m for m in members if m.op == "matmul"), None)
        ew = [m for m in members if kind_of(m) == "elementwise"]
        reds = [m for m in members if kind_of(m) == "reduce"]
        shape = ew[0].output.shape if ew else reds[0].inputs[0].shape if reds else \
            mm.output.shape
        gemm, smallk = None, False
        if mm is not None:
            gemm = self.gemm_of(mm, at, members)
            smallk = ((gemm.k <= SMALLK_MAX or few_rows(gemm)) and not gemm.trans_b and not gemm.transposed and gemm.c.shape == shape
                      and gemm.c.st.dtype.kind == "f")
            if smallk and not self.needs_store_outside(mm.output, set(members)):
                gemm.c = None
        produced = {m.output for m in members}
        loads = {}
        for m in ew + reds:
            for x in m.inputs:
                if x in produced and (x.node is not mm or smallk):
                    continue
                if x not in loads:
                    loads[x] = self.ref(x)
        stores = [(mm.output, gemm.c)] if smallk and gemm.c is not None else []
        stores += [(m.output, self.home[m.output]) for m in ew if self.needs_store(m.output)]
        fields = dict(name=members[-1].op + "_" + members[-1].output.name, shape=shape,
                      order=Order.at(at), loads=loads, nodes=ew, stores=stores,
                      reductions=[self.reduction(r) for r in reds])
        if gemm is None:
            return LoopKernel(**fields)
        return (SmallKKernel if smallk else GemmKernel)(gemm=gemm, **fields)

    def reduction(self, r: Node) -> Reduction:
        x = r.inputs[0]
        out_view = reduce_view(self.home[r.output], r, x.shape)
        acc = None
        if r.op == "sum" and x.dtype == np.float32:
            st = self.new_storage("arena", np.float64, r.output.size, r.output.name + ".acc")
            acc = reduce_view(View.whole(st, r.output.shape), r, x.shape)
        return Reduction(r, x, out_view, acc)

    def copy_op_kernel(self, n: Node, at: int) -> CopyKernel:
        """unslice / concatenate: a kernel of several copies."""
        out = self.ref(n.output)
        copies = []
        if n.op == "unslice":
            zero = self.new_storage("global", n.output.dtype, 1, "zero",
                                    value=np.zeros(1, n.output.dtype))
            copies.append(Copy(src=View(zero, 0, out.shape, (0,) * len(out.shape)), dst=out))
            dst = slice_view(out, n.attrs["starts"], n.attrs["stops"], n.attrs["steps"],
                             n.inputs[0].shape)
            copies.append(Copy(src=self.ref(n.inputs[0]), dst=dst))
        else:
            ax, off = n.attrs["axis"], 0
            for x in n.inputs:
                starts = [0] * len(out.shape)
                stops = list(out.shape)
                starts[ax], stops[ax] = off, off + x.shape[ax]
                dst = slice_view(out, starts, stops, [1] * len(out.shape), x.shape)
                copies.append(Copy(src=self.ref(x), dst=dst))
                off += x.shape[ax]
        return CopyKernel(name=f"{n.op}_{n.output.name}", shape=n.output.shape,
                          order=Order.at(at), copies=copies)

    # ---- step 4: results that were not computed in place -----------------------------------
    def copy_results(self) -> None:
        """Copies into the output buffers, then of update sources into their targets
        (staged through the arena when the source is an argument: it may be another
        update's target)."""
        g, home = self.graph, self.home
        update_targets = {a for a, _ in g.updates}
        for j, v in enumerate(g.outputs):
            if home.get(v) is not None and home[v].st is self.out_st[j]:
                continue
            src = self.ref(v)
            early = src.st.kind == "arg" and any(src.st is home[a].st for a in update_targets)
            self.add_copy(src, View.whole(self.out_st[j], v.shape), f"output{j}",
                          Order(Stage.EARLY if early else Stage.OUTPUTS))
        staged = []
        for a, b in g.updates:
            if b in self.direct:
                continue
            src = self.ref(b)
            if src.st is home[a].st and src.same(home[a]):
                continue
            if src.st.kind == "arg":
                tmp = self.arena_view(b, b.name + ".stage")
                self.add_copy(src, tmp, f"stage_{a.name}", Order(Stage.STAGED))
                src = tmp
            staged.append((src, a))
        for src, a in staged:
            self.add_copy(src, home[a], f"update_{a.name}", Order(Stage.UPDATES))

    # ---- step 5: partitions, levels, arena, barriers ---------------------------------------
    def finish(self) -> Plan:
        threads, kernels = self.threads, sorted(self.kernels, key=lambda k: k.order)
        for k in kernels:
            finish_kernel(k, threads)
        if threads > 1 and all(k.single for k in kernels):
            threads = 1     # nothing to share: no thread pool, no barriers
            for k in kernels:
                finish_kernel(k, threads)
        kernels, phase = schedule(kernels, threads)
        # The steps the arena is planned over: kernels of one dependency level may run at
        # the same time on different threads; one thread runs them one after the other.
        steps = phase if threads > 1 else list(range(len(kernels)))
        values = set(self.value_storage.values())
        scratch = [st for st in self.storages if st.kind == "arena" and st not in values]
        if self.memplan == "naive":
            mplan, arena = None, naive_layout(self.storages)
        else:
            mplan = shared_layout(self.graph, kernels, steps, self.node_kernel,
                                  self.value_storage, scratch, self.direct)
            arena = mplan.arena_bytes
        place_barriers(kernels)
        check_barriers(kernels)
        check_layout(kernels, steps)
        g = self.graph
        return Plan(g, kernels, self.storages, self.slots, len(g.inputs), self.out_st, arena,
                    threads, updates_direct=[(a.name, b.name) for b, a in self.direct.items()],
                    memory_plan=mplan)


#: few_rows: at most this K (the B panel of one register tile stays in L1) and at least
#: this many columns (enough panels that the row edge matters)
FEW_ROWS_MAX_K = 256
FEW_ROWS_MIN_N = 512


def few_rows(g: Gemm) -> bool:
    """A product with few rows where the micro-kernel's tile leaves more rows to its slow
    one-row edge kernel than the small-K register tiles (4 rows) do: those tiles run it
    whole.  LeNet's conv2 forward, 16 x 150 x 6400 on AVX2 (6-row tiles: 2 tiles + 4
    single rows): 1.5x faster on Zen 3; the same bits (fma in k order from zero)."""
    from ..codegen.smallk import tile_shape
    mr = gemm_spec(g).mr
    tile_rows = tile_shape(g.a.st.dtype, g.m, g.n)[0]
    return (g.k <= FEW_ROWS_MAX_K and g.n >= FEW_ROWS_MIN_N and g.m < 4 * mr
            and g.m % tile_rows < g.m % mr)


def reduce_view(out: View, r: Node, in_shape) -> View:
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


def gemm_operand(v: View):
    """(trans, ld) if the last two axes are row- or column-major, else None."""
    m, k = v.shape[-2], v.shape[-1]
    sm, sk = v.strides[-2], v.strides[-1]
    if sk == 1 or k == 1:
        return False, (sm if m > 1 else max(k, 1))
    if sm == 1 or m == 1:
        return True, (sk if k > 1 else max(m, 1))
    return None
