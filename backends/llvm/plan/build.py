"""From a (fused) graph to a plan: kernels over strided views of storages, in order.

Every value lives in a *storage* and is read through a *view* (:mod:`.views`).  View
ops (reshape, transpose, broadcast_to, slice, an ungrouped stop_gradient) produce no
code, only new views (a transpose feeding a matmul becomes a GEMM transpose flag).
Kernels (:mod:`.kernels`) follow the fusion groups (``graphc.passes.fusion``) and run at
the position of their last member.

:class:`PlanBuilder` does it in named steps, one module each:
:meth:`~PlanBuilder.assign_kernels` (:mod:`.assign_kernels`: which nodes are views,
which valid group each node's kernel is), :meth:`~PlanBuilder.place_values`
(:mod:`.place_values`: a storage for every value that needs one; optimizer updates
stored in place where safe), :meth:`~PlanBuilder.make_kernels` (:mod:`.make_kernels`),
then, here, :meth:`~PlanBuilder.copy_results` (copies into the outputs and the updated
arrays that were not written in place) and :meth:`~PlanBuilder.finish` (partitions,
then :mod:`.arena`: dependency levels, the arena laid out by the memory planner,
synchronisation points).  The graph is only read: what the builder decides lives in its
own tables.
"""
from __future__ import annotations

from graphc.ir import GraphcError, Node, Value

from .arena import (check_barriers, check_layout, naive_layout, place_barriers, schedule,
                    shared_layout)
from .assign_kernels import KernelAssignment
from .kernels import Kernel, Order, Plan, Stage
from .make_kernels import KernelMaking
from .partition import finish as finish_kernel
from .place_values import ValuePlacement
from .views import Storage, View


def build_plan(graph, threads: int = 1, memplan: str = "shared") -> Plan:
    """Kernels, storages and the arena of ``graph`` (already fused).

    ``memplan="shared"`` (default): the arena is laid out by the memory planner
    (``graphc.passes.memory.plan_memory``) over this backend's kernel levels;
    ``"naive"``: every stored value and every scratch buffer its own bytes (for tests).
    """
    return PlanBuilder(graph, threads, memplan).build()


class PlanBuilder(KernelAssignment, ValuePlacement, KernelMaking):
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
