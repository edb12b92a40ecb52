"""Layout of a product: compute ``C`` or ``Cᵀ = op(B)ᵀ·op(A)ᵀ``, from the kernels' costs.

The GEMM micro-kernel (``codegen/gemm.py``) reads op(B) by contiguous rows and
broadcasts single elements of op(A), so op(A) may have either layout but a transposed
B (``trans_b``: B stored N×K, as in ``x @ W.T`` with PyTorch's ``W`` (out, in)) is
*packed* -- transposed panel by panel into a stack buffer -- on every call.  Computing
the transposed product instead swaps the operands' roles: ``Cᵀ = B·Aᵀ`` packs ``A``
(M×K) rather than ``B`` (N×K), and a ``tt`` product becomes ``nn`` (nothing packed).
At batch 16 packing a 512×784 weight cost more than a third of that layer's forward
GEMM; packing the 16×784 activations instead costs almost nothing.

The price of the swap: the product is stored N×M, so whoever reads it as C (the
epilogue, later kernels) reads it with strides (1, M), element by element; and the
micro-kernel's tile now runs over N rows and M columns, whose edges waste different
amounts.  :func:`transposed_cost` and :func:`direct_cost` estimate both in one unit
(one vector FMA) from the tile the partition would choose and from per-element
constants of packing and of strided reads, :data:`COSTS` -- defaults measured on AMD
Zen 4 and Intel Emerald Rapids, replaced by the kernel tuner's measurements of the
host (``native/tuning.py``) when it has run.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..codegen.gemm import panel_vectors
from .kernels import Gemm


@dataclass(frozen=True)
class LayoutCosts:
    """Per-element costs, in vector FMAs (one micro-kernel multiply-add of VW lanes)."""
    #: packing one element of a transposed B (load, register transpose, store)
    pack: float = 0.45
    #: reading one element of a product stored transposed (a strided load), when the
    #: product fits :attr:`near_bytes` (L1: every strided load hits)
    strided_read: float = 1.5
    #: the same for a larger product (each strided load touches another cache line).
    #: Zen 5 (2026-12-02): the MLP's batch-128 forwards of ``x @ W.T`` (128x512 and
    #: 128x256 products) ran 3-7 % faster direct (W packed) than transposed with 8x32
    #: tiles -- ~4 units per element more than the GEMMs' own costs differ
    strided_read_far: float = 4.0
    near_bytes: int = 32 * 1024
    #: a leftover row (the one-row edge kernel) relative to a row of a full tile
    #: (a panel at most one vector wide measured as fast per vector as a full one:
    #: Zen 4, 512x784x16 at 106 GFLOP/s against 107 for 16x784x512 nn)
    edge_row: float = 3.0


COSTS = LayoutCosts()
#: None: choose by cost; True/False: always/never compute eligible products transposed
#: (for tests and measurements; the graph key covers it and :data:`COSTS`)
FORCE: bool | None = None


def choose_transposed(g: Gemm, gt: Gemm, spec, spec_t, readers: int,
                      costs: LayoutCosts = COSTS) -> bool:
    """Whether to compute ``gt`` (the transposed product) rather than ``g``."""
    if FORCE is not None:
        return FORCE
    return transposed_cost(g, spec_t, readers, costs) < direct_cost(g, spec, costs)


def _mac_cost(m: int, n: int, k: int, spec, costs: LayoutCosts) -> float:
    rows = m - m % spec.mr + costs.edge_row * (m % spec.mr)
    return rows * panel_vectors(n, spec) * max(k, 1)


def direct_cost(g: Gemm, spec, costs: LayoutCosts = COSTS) -> float:
    """Estimated cost of computing ``C`` as ``g`` says (tile ``spec``)."""
    pack = g.n * g.k if g.trans_b else 0
    return _mac_cost(g.m, g.n, g.k, spec, costs) + costs.pack * pack


def transposed_cost(g: Gemm, spec_t, readers: int, costs: LayoutCosts = COSTS) -> float:
    """Estimated cost of computing ``Cᵀ`` (tile ``spec_t``) and of ``readers`` strided
    reads of every element of it."""
    pack = g.m * g.k if not g.trans_a else 0     # op(Aᵀ) as the new B: packed if A is not
    near = g.m * g.n * g.a.st.dtype.itemsize <= costs.near_bytes
    strided = costs.strided_read if near else costs.strided_read_far
    return (_mac_cost(g.n, g.m, g.k, spec_t, costs) + costs.pack * pack
            + strided * readers * g.m * g.n)
