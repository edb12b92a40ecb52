"""Step 1 of :class:`~.build.PlanBuilder`: which nodes are views, which kernel each
other node runs in.

A valid fusion group (``graphc.passes.fusion``) becomes one kernel; the members of a
group this backend cannot run together become kernels of their own.  Two conv-layer
patterns are merged further, so that a patch matrix or its gradient is never stored:
``col2im`` with the product it reads, ``im2col`` with the product reading it.
"""
from __future__ import annotations

from graphc.ir import GraphcError, Node, Value, get_op, view_ops
from graphc.passes.fusion import reaches, view_readers

from ..codegen.lowerings import LOWERINGS

VIEW_OPS = view_ops()            # OpDef.view: no code, only a new view of a buffer
FUSIBLE = ("elementwise", "reduce", "matmul")


def kind_of(n: Node) -> str:
    """The lowering kind of ``n``'s op (elementwise, reduce, matmul, copy, source)."""
    lw = LOWERINGS.get(n.op)
    if lw is None:
        raise GraphcError(f"llvm backend: op '{n.op}' has no lowering")
    return lw.kind


class KernelAssignment:
    """Step 1 of :class:`~.build.PlanBuilder`, mixed into it: reads the graph, fills
    ``kernel_of``, ``ungrouped``, ``fused_products`` and ``fused_patches``."""

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
        for c in self.graph.nodes:
            if c.op != "im2col" or c.output.dtype.kind != "f":
                continue
            from ..codegen import conv_fused    # conv nets only (it loads the window code)
            if not conv_fused.ENABLED:
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
        for c in self.graph.nodes:
            if c.op != "col2im":
                continue
            from ..codegen import conv_fused    # conv nets only
            if not conv_fused.ENABLED:
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
