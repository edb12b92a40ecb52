"""LLVM kernels of the attention ops (``graphc.ir.ops.attention``): ``sdpa`` and its VJP
``sdpa_grad``, one loop nest per (batch, head), the scores never stored beyond a tile.

Both are ``custom`` entries of the lowering table (``KERNELS``: emit, chunks), so
their kernel is the plan's ``CustomKernel`` reading q, k, v (and g) through their views
-- the heads of a fused qkv product are strided views, never copied.  A chunk is a
fixed range of the first batch dim, so results do not depend on the thread count.

The kernels: ``attention_tiles.py`` when every operand and the output walk their rows
contiguously (:func:`tiled`), else the row kernels of ``attention_rows.py``.
"""
from __future__ import annotations

import numpy as np

from .attention_rows import sdpa_grad_rows, sdpa_rows, units
from .attention_tiles import sdpa_grad_tiles, sdpa_tiles
from .custom import CHUNKS_PER_THREAD, SINGLE_ELEMS


def _chunks(k, threads):
    batch = units(k.node)
    q, kk = k.node.inputs[:2]
    work = int(np.prod(batch, dtype=np.int64)) * q.shape[-2] * kk.shape[-2] * q.shape[-1]
    if threads <= 1 or not batch or batch[0] < 2 or work < SINGLE_ELEMS:
        return 1
    return max(1, min(threads * CHUNKS_PER_THREAD, batch[0]))


def tiled(k) -> bool:
    """The GEMM-tile path: every operand and the output walk their rows contiguously."""
    return all(v.strides and v.strides[-1] == 1
               for v in list(k.loads.values()) + [k.stores[0][1]])


def _sdpa(cg, b, k, ptrs, chunk):
    return (sdpa_tiles if tiled(k) else sdpa_rows)(cg, b, k, ptrs, chunk)


def _sdpa_grad(cg, b, k, ptrs, chunk):
    return (sdpa_grad_tiles if tiled(k) else sdpa_grad_rows)(cg, b, k, ptrs, chunk)


KERNELS = {
    "sdpa": (_sdpa, _chunks),
    "sdpa_grad": (_sdpa_grad, _chunks),
}
