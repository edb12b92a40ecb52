"""A conv layer's input gradient without its patch-gradient matrix: ``col2im(wᵀ @ g)`` by
blocks of images (the plan's ``Col2imGemmKernel``).

Unfused, the product ``wᵀ @ g`` writes a (C·kh·kw) × (N·OH·OW) matrix -- 3.8 MB at
LeNet's conv2, 75 MB for 64 channels of 3×3 over 32 images of 32×32 -- that ``col2im``
then reads back.  Here a chunk (a fixed range of images) computes the product's columns
of a block of images into its own slot of a scratch buffer (at most
:data:`BLOCK_BYTES`, so it stays in L2) and ``col2im`` sums that block into its pixels
right away.  The product runs on the small-K register tiles or the GEMM kernel exactly
as unfused (every element: fma in k order from zero, column ranges never change a sum)
and ``col2im`` is the same gather: the results are bit-identical to the two kernels
and independent of the block, the chunk and the thread count.

Only the gather form of ``col2im`` (stride 1) is fused: its units are (image, channel)
planes, so a block of images is a range of them.  Each block's pointer into the slot is
shifted back by the block's first column, so the product and ``col2im`` address the
slot with the full matrix's column numbers.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.ir.ops.window import node_geometry as geometry

from ..native import kernellib
from ..plan.kernels import CustomKernel, SmallKKernel
from . import knobs, loops, window
from .lowerings import mem_type

I32, I64 = ir.IntType(32), ir.IntType(64)

#: False: never fuse (for comparisons)
ENABLED = knobs.CONV_FUSED   # the graph key reads it (knobs.key_values)
#: a block's slot holds at most this many bytes of product (one image at least)
BLOCK_BYTES = 256 * 1024


def fusible(col2im_node) -> bool:
    return window.gathers(col2im_node)


def columns_per_image(col2im_node) -> int:
    g = geometry(col2im_node)
    return g.oh * g.ow


def blocking(col2im_node, rows: int, threads: int):
    """(images per block, chunks): blocks from shapes only; one chunk per thread (each
    chunk has a slot of its own)."""
    g = geometry(col2im_node)
    per_image = rows * g.oh * g.ow * np.dtype(col2im_node.output.dtype).itemsize
    block = max(1, min(g.n, BLOCK_BYTES // max(1, per_image)))
    nblocks = -(-g.n // block)
    return block, (max(1, min(threads, nblocks)) if threads > 1 else 1)


def emit_col2im_gemm(cg, b, k, ptrs, tid) -> None:
    """Chunk ``tid`` of ``k``: its images block by block, product then col2im."""
    g, node = k.gemm, k.node
    geo = geometry(node)
    N, C, P = geo.n, geo.c, geo.oh * geo.ow
    parts = k.nchunks
    n_lo = b.sdiv(b.mul(I64(N), tid), I64(parts))
    n_hi = b.sdiv(b.mul(I64(N), b.add(tid, I64(1))), I64(parts))
    rows, width = g.m, k.block * P
    et = mem_type(g.c.st.dtype)
    slot = b.gep(ptrs[g.c.st], [b.mul(tid, I64(rows * width))], source_etype=et)
    fake_col2im = CustomKernel(name=k.name, shape=k.shape, node=node,
                               loads={node.inputs[0]: g.c}, stores=k.stores[:1])

    def block(bb, n0):
        n1 = b.add(n0, I64(k.block))
        n1 = b.select(b.icmp_signed("<", n1, n_hi), n1, n_hi)
        j0, j1 = b.mul(n0, I64(P)), b.mul(n1, I64(P))
        p2 = dict(ptrs)
        p2[g.c.st] = b.gep(slot, [b.neg(j0)], source_etype=et)
        _product(cg, b, k, p2, j0, j1)
        window._col2im_gather(cg, b, fake_col2im, p2, b.mul(n0, I64(C)), b.mul(n1, I64(C)))
    loops.counted_loop(b, n_lo, n_hi, k.block, block, "c2iblk", True, True)


def _product(cg, b, k, ptrs, j0, j1) -> None:
    """Columns [j0, j1) of the product into the (shifted) slot."""
    g = k.gemm
    if k.smallk:
        sk = SmallKKernel(name=k.name, shape=(g.m, g.n), gemm=g, stores=[(g.node.output, g.c)])
        cg.smallk_body(b, sk, ptrs, (I64(0), I64(g.m)), (j0, j1))
        return
    _gemm_call(cg, b, g, ptrs, (I64(0), I64(g.m)), (j0, j1))


# ---- forward: im2col by blocks, the product from the block ----------------------------------------
def im2col_blocking(im2col_node, rows: int, threads: int):
    """(images per block, chunks) of an im2col fused into its product."""
    g = geometry(im2col_node)
    per_image = rows * g.oh * g.ow * np.dtype(im2col_node.output.dtype).itemsize
    block = max(1, min(g.n, BLOCK_BYTES // max(1, per_image)))
    nblocks = -(-g.n // block)
    return block, (max(1, min(threads, nblocks)) if threads > 1 else 1)


def emit_im2col_gemm(cg, b, k, ptrs, tid) -> None:
    """Chunk ``tid`` of ``k`` (an ``Im2colGemmKernel``): its images block by block --
    im2col into the chunk's slot, then the product's columns of the block (and its
    epilogue) from the slot."""
    node, inner = k.node, k.inner
    geo = geometry(node)
    N, P = geo.n, geo.oh * geo.ow
    rows = geo.c * geo.kh * geo.kw
    parts = k.nchunks
    n_lo = b.sdiv(b.mul(I64(N), tid), I64(parts))
    n_hi = b.sdiv(b.mul(I64(N), b.add(tid, I64(1))), I64(parts))
    width = k.block * P
    sv = k.scratch
    et = mem_type(sv.st.dtype)
    slot = b.gep(ptrs[sv.st], [b.mul(tid, I64(rows * width))], source_etype=et)
    fake = CustomKernel(name=k.name, shape=k.shape, node=node, loads=dict(k.loads),
                        stores=[(node.output, sv)])
    g = inner.gemm

    def block(bb, n0):
        n1 = b.add(n0, I64(k.block))
        n1 = b.select(b.icmp_signed("<", n1, n_hi), n1, n_hi)
        j0, j1 = b.mul(n0, I64(P)), b.mul(n1, I64(P))
        p2 = dict(ptrs)
        p2[sv.st] = b.gep(slot, [b.neg(j0)], source_etype=et)
        # patch rows (c, i, j) of the block's images: units r·N + n of im2col
        cg.loop(b, I64(0), I64(rows), lambda r: window._im2col(
            cg, b, fake, p2, b.add(b.mul(r, I64(N)), n0), b.add(b.mul(r, I64(N)), n1)),
            "i2crow", vectorize=False)
        rr = (I64(0), I64(g.m))
        if isinstance(inner, SmallKKernel):
            cg.smallk_body(b, inner, p2, rr, (j0, j1))
            return
        _gemm_call(cg, b, g, p2, (I64(0), I64(g.m)), (j0, j1))
        if inner.nodes:
            cg.loop_body(b, inner, p2, {0: rr, 1: (j0, j1)})
    loops.counted_loop(b, n_lo, n_hi, k.block, block, "i2cblk", True, True)


def _gemm_call(cg, b, g, ptrs, rows, cols) -> None:
    """C[rows, cols] = op(A)·op(B) by the GEMM kernel (views' offsets and strides)."""
    from ..plan.partition import gemm_spec
    gfn = kernellib.gemm_function(cg.m, gemm_spec(g))
    et = mem_type(g.a.st.dtype)
    args = []
    for v in (g.a, g.b, g.c):
        base = cg.global_of(v.st) if v.st.kind == "global" else ptrs[v.st]
        args.append(b.gep(base, [I64(v.offset)], source_etype=et))
    b.call(gfn, args + [I64(g.k), I64(g.lda), I64(g.ldb), I64(g.c.strides[0]), rows[0],
                        rows[1], cols[0], cols[1], I32(0)])
