"""The plan's data model: each kind of kernel a declared class, and the plan itself.

A kernel is one loop nest the code generator turns into one function:

* :class:`LoopKernel` -- loads from views, elementwise nodes computed in registers,
  stores to views, reductions accumulated into an output view with stride 0 along the
  reduced axes (a plain copy is a loop kernel with one load and one store);
* :class:`GemmKernel` -- a GEMM, optionally followed by an elementwise epilogue (the
  loop part) on the same tile range;
* :class:`SmallKKernel` -- a GEMM with small K whose product is computed element by
  element inside its epilogue loop (``codegen/smallk.py``), never stored unless read
  elsewhere;
* :class:`DotKernel` -- a long-K product with a narrow output as dot products along K
  (``codegen/dot.py``);
* :class:`CopyKernel` -- ``unslice``/``concatenate``: several copies (phases) in
  sequence, on thread 0;
* :class:`CustomKernel` -- an op whose lowering writes its own loops (take, take_add,
  philox_uniform: ``codegen/custom.py``).

Kernels run in the order of their :class:`Order` key; after the arena stage they carry
``single`` (thread 0 only) and ``barrier`` (synchronise before it).  How a kernel is
cut over threads is a declared partition (:class:`LoopPartition`,
:class:`GemmPartition`), never an optional attribute.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from graphc.ir import Node

from .views import View


class Stage(IntEnum):
    """Coarse place of a kernel in the step (the first key of :class:`Order`)."""
    EARLY = 0      # output copies of arguments that updates overwrite later
    BODY = 1       # the graph's kernels, in node order
    OUTPUTS = 2    # copies of values into the output buffers
    STAGED = 3     # update sources staged through the arena (they may be update targets)
    UPDATES = 4    # copies of new parameter/state values into their arrays


class Slot(IntEnum):
    """Place of a kernel relative to the graph node it belongs to."""
    OPERANDS = 0   # materialised operands of that node's kernel (run just before it)
    KERNEL = 1     # the node's own kernel
    AFTER = 2      # a copy materialising that node's output (a reshape strides cannot say)


class Order(NamedTuple):
    """Execution-order key of a kernel: (stage, node index, slot), all integers,
    compared lexicographically; kernels with equal keys keep their creation order."""
    stage: int
    node: int = 0
    slot: int = Slot.KERNEL

    @classmethod
    def at(cls, node: int, slot: Slot = Slot.KERNEL) -> "Order":
        return cls(Stage.BODY, node, slot)


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
    c: View | None               # None: a small-K product kept in registers
    trans_a: bool
    trans_b: bool
    lda: int
    ldb: int
    m: int
    n: int
    k: int
    #: computes the node's product transposed (``c`` is Cᵀ; the node's value is read
    #: through a transposed view of it, and an epilogue's rows are ``c``'s columns)
    transposed: bool = False


@dataclass(frozen=True)
class LoopPartition:
    """A loop kernel cut into ``nchunks`` ranges of dimension ``dim`` in multiples of
    ``unit`` elements."""
    dim: int
    unit: int
    nchunks: int


@dataclass(frozen=True)
class GemmPartition:
    """The fixed split of a GEMM's C: ``parts`` chunks of ``units`` blocks of ``width``
    columns (``by_cols``) or rows, and the micro-kernel tile ``spec``
    (``codegen.gemm.GemmSpec``)."""
    parts: int
    by_cols: bool
    units: int
    width: int
    spec: object


@dataclass(eq=False, kw_only=True)
class Kernel:
    """What every kernel has; use one of the subclasses."""
    name: str
    shape: tuple
    order: Order = Order(Stage.BODY)
    single: bool = False         # run by thread 0 alone
    barrier: bool = False        # all threads synchronise before it

    @property
    def nchunks(self) -> int:
        """Pieces of the kernel the threads claim (1: not cut)."""
        return 1

    def reads(self) -> list:
        raise NotImplementedError

    def writes(self) -> list:
        raise NotImplementedError

    def graph_nodes(self) -> list:
        """The graph nodes this kernel computes (none for a copy)."""
        return []

    def views(self) -> list:
        """Every view the kernel touches (reads first, then writes)."""
        raise NotImplementedError

    def repoint(self, f) -> None:
        """Replace every view ``v`` of the kernel by ``f(v)`` (``f(None)`` is None)."""
        raise NotImplementedError


@dataclass(eq=False, kw_only=True)
class LoopKernel(Kernel):
    loads: dict = field(default_factory=dict)     # token -> View over shape
    nodes: list = field(default_factory=list)     # elementwise nodes, schedule order
    stores: list = field(default_factory=list)    # (token, View over shape)
    reductions: list = field(default_factory=list)
    part: LoopPartition | None = None

    @classmethod
    def copy(cls, src: View, dst: View, name: str, order: Order) -> "LoopKernel":
        return cls(name=name, shape=dst.shape, order=order, loads={("src",): src},
                   stores=[(("src",), dst)])

    @property
    def nchunks(self) -> int:
        return self.part.nchunks if self.part is not None else 1

    def graph_nodes(self):
        return list(self.nodes) + [r.node for r in self.reductions]

    def views(self):
        out = list(self.loads.values()) + [v for _, v in self.stores]
        for r in self.reductions:
            out.append(r.out)
            if r.acc is not None:
                out.append(r.acc)
        return out

    def reads(self):
        rs = list(self.loads.values())
        return rs + [r.out for r in self.reductions] + [r.acc for r in self.reductions if r.acc]

    def writes(self):
        ws = [v for _, v in self.stores] + [r.out for r in self.reductions]
        return ws + [r.acc for r in self.reductions if r.acc]

    def repoint(self, f):
        self.loads = {t: f(v) for t, v in self.loads.items()}
        self.stores = [(t, f(v)) for t, v in self.stores]
        for r in self.reductions:
            r.out, r.acc = f(r.out), f(r.acc)


@dataclass(eq=False, kw_only=True)
class GemmKernel(LoopKernel):
    """A GEMM; the loop fields are its elementwise epilogue (empty: the product alone).
    Never has reductions."""
    gemm: Gemm
    gpart: GemmPartition | None = None

    @property
    def nchunks(self) -> int:
        return self.gpart.parts if self.gpart is not None else 1

    def graph_nodes(self):
        return [self.gemm.node] + super().graph_nodes()

    def views(self):
        g = self.gemm
        return super().views() + [v for v in (g.a, g.b, g.c) if v is not None]

    def reads(self):
        return super().reads() + [self.gemm.a, self.gemm.b]

    def writes(self):
        return super().writes() + ([self.gemm.c] if self.gemm.c is not None else [])

    def repoint(self, f):
        super().repoint(f)
        g = self.gemm
        g.a, g.b, g.c = f(g.a), f(g.b), f(g.c)


@dataclass(eq=False, kw_only=True)
class SmallKKernel(GemmKernel):
    """A small-K GEMM computed inside its epilogue loop (``gemm.c`` is None unless the
    product is read outside the kernel; then it is also one of the stores)."""


@dataclass(eq=False, kw_only=True)
class DotKernel(GemmKernel):
    """A long-K product with a narrow output, both operands rows along K (``nt``):
    dot products with vector accumulators along K (``codegen/dot.py``); no epilogue.
    ``gpart`` is its fixed split into ranges of tiles (``width`` 1, ``spec`` None)."""


@dataclass(eq=False, kw_only=True)
class Copy:
    src: View
    dst: View


@dataclass(eq=False, kw_only=True)
class CopyKernel(Kernel):
    """``unslice`` / ``concatenate``: copies in sequence (later ones may overwrite parts
    of earlier ones), on thread 0."""
    copies: list = field(default_factory=list)    # [Copy]

    def views(self):
        return [v for c in self.copies for v in (c.src, c.dst)]

    def reads(self):
        return [c.src for c in self.copies]

    def writes(self):
        return [c.dst for c in self.copies]

    def repoint(self, f):
        self.copies = [Copy(src=f(c.src), dst=f(c.dst)) for c in self.copies]


@dataclass(eq=False, kw_only=True)
class CustomKernel(Kernel):
    """An op with a kernel of its own (``codegen/custom.py``: gathers, scatter-adds,
    random numbers): its operands' views as ``loads`` (keyed by operand), its output's
    view as the one store, cut into ``chunks`` fixed pieces (from shapes only).
    ``nodes`` and ``reductions`` stay empty (so cost estimates treat it as a loop)."""
    node: Node
    loads: dict = field(default_factory=dict)
    stores: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    reductions: list = field(default_factory=list)
    chunks: int = 1

    @property
    def nchunks(self) -> int:
        return self.chunks

    def graph_nodes(self):
        return [self.node]

    def views(self):
        return list(self.loads.values()) + [v for _, v in self.stores]

    def reads(self):
        return list(self.loads.values())

    def writes(self):
        return [v for _, v in self.stores]

    def repoint(self, f):
        self.loads = {t: f(v) for t, v in self.loads.items()}
        self.stores = [(t, f(v)) for t, v in self.stores]


@dataclass(eq=False, kw_only=True)
class Col2imGemmKernel(CustomKernel):
    """``col2im(op(A)·op(B))`` by blocks of ``block`` images (``codegen/conv_fused.py``):
    a conv layer's patch-matrix gradient ``wᵀ @ g`` is computed a block of columns at a
    time into ``scratch`` (one slot per chunk: the product's K_patch × block columns, a
    scratch buffer the memory planner places) and summed back into the block's pixels
    right away, so the whole patch-gradient matrix never exists.  ``node`` is the col2im
    node; ``gemm.c`` the scratch view (rows, all N·OH·OW columns; each block's pointer
    is shifted so its columns land in the slot); ``smallk``: the product runs on the
    small-K register tiles, else on the GEMM kernel."""
    gemm: Gemm
    smallk: bool = False
    block: int = 1
    max_chunks: int = 1

    def graph_nodes(self):
        return [self.gemm.node, self.node]

    def views(self):
        return super().views() + [self.gemm.c]

    def writes(self):
        return super().writes() + [self.gemm.c]

    def repoint(self, f):
        super().repoint(f)
        g = self.gemm
        g.a, g.b, g.c = f(g.a), f(g.b), f(g.c)


@dataclass(eq=False, kw_only=True)
class Im2colGemmKernel(CustomKernel):
    """``op(A) · im2col(x)`` (+ its epilogue) by blocks of images
    (``codegen/conv_fused.py``): each block's patch columns are written into a slot of
    ``scratch`` (one per chunk) and the product of the block is computed from there while
    it is in cache; ``inner`` is the product's own kernel (``GemmKernel`` or
    ``SmallKKernel``) reading its B operand from the scratch view.  ``node`` is the
    im2col node, ``loads`` its image; ``stores`` is empty (nothing else reads the patch
    matrix, which is never stored)."""
    inner: GemmKernel
    scratch: View
    block: int = 1
    max_chunks: int = 1

    @property
    def gemm(self):
        return self.inner.gemm

    def graph_nodes(self):
        return [self.node] + self.inner.graph_nodes()

    def views(self):
        return super().views() + [self.scratch] + self.inner.views()

    def reads(self):
        return super().reads() + self.inner.reads()

    def writes(self):
        return super().writes() + [self.scratch] + self.inner.writes()

    def repoint(self, f):
        super().repoint(f)
        self.scratch = f(self.scratch)
        self.inner.repoint(f)


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
