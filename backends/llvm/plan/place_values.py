"""Step 2 of :class:`~.build.PlanBuilder`: a storage for every value that needs one,
and the view every value is read through.

Inputs, outputs and constants get storages of their own kinds; a value read outside its
kernel, or leaving the step, a storage in the arena; an optimizer update is computed
straight into its target where that is safe.  A view op is a strided view of its
operand's storage (:mod:`.views`), or a copy where strides cannot express it.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import GraphcError, Value
from graphc.passes.fusion import reaches, view_readers

from .assign_kernels import kind_of
from .kernels import LoopKernel, Order, Slot
from .views import (Storage, View, broadcast_view, reshape_view, slice_view,
                    transpose_view)

GLOBAL_CONST_MAX = 1024          # elements; bigger constants are passed as buffers


class ValuePlacement:
    """Step 2 of :class:`~.build.PlanBuilder`, mixed into it: fills ``storages``,
    ``slots``, ``home``, ``value_storage``, ``direct`` and ``refs`` (and adds the copy
    kernels a view needs)."""

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
