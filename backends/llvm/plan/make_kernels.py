"""Step 3 of :class:`~.build.PlanBuilder`: one kernel per group or singleton, of the
kind that runs it fastest.

A product runs as a GEMM (its operands copied first when they are neither row- nor
column-major, its product stored transposed when that costs less: :mod:`.layout`), as
dot products along K, or with small K inline in its epilogue loop; conv layers' patch
matrices are filled or read block by block inside their product's kernel; everything
else is a loop (with reductions), a copy kernel or a custom kernel.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import GraphcError, Node
from graphc.passes.fusion import view_readers

from . import layout as lay
from .assign_kernels import kind_of
from .kernels import (Col2imGemmKernel, Im2colGemmKernel, Copy, CopyKernel, CustomKernel, DotKernel, Gemm,
                      GemmKernel, Kernel, LoopKernel, Order, Reduction, SmallKKernel)
from .partition import gemm_spec
from .views import View, slice_view, transpose_view

#: GEMMs with an epilogue and K up to this are fused into the epilogue loop
SMALLK_MAX = 32


class KernelMaking:
    """Step 3 of :class:`~.build.PlanBuilder`, mixed into it: fills ``kernels`` and
    ``node_kernel`` (reading steps 1 and 2's tables; a transposed product also changes
    its value's ``home``)."""

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
        va, vb, (ta, lda), (tb, ldb) = self.gemm_operands(m, at)
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
        va, vb, (ta, lda), (tb, ldb) = self.gemm_operands(n, at)
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

    def gemm_operands(self, n: Node, at: int) -> tuple:
        """``(A, B, (trans_a, lda), (trans_b, ldb))`` of matmul ``n``: the views its GEMM
        reads, an operand that is neither row- nor column-major copied first (just
        before the kernel at ``at``)."""
        a, b = n.inputs
        va, vb = self.ref(a), self.ref(b)
        if gemm_operand(va) is None:
            va = self.materialize(va, f"{n.output.name}.a", at)
        if gemm_operand(vb) is None:
            vb = self.materialize(vb, f"{n.output.name}.b", at)
        return va, vb, gemm_operand(va), gemm_operand(vb)

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
