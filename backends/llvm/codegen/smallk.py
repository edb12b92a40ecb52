"""Small-K products fused with their epilogue, computed in register tiles.

A weight gradient at small batch is ``op(A)·B`` with K = the batch (≤ ``plan.make_kernels.SMALLK_MAX``)
feeding the optimizer update (``w - lr*g``, momentum, ...).  Its product is never
stored: each MR×(NV·VW) tile of it is accumulated in vector registers (K steps, each one
row of B as NV vector loads and one broadcast element of op(A) per tile row), and the
epilogue runs on the tile right away -- its operands loaded, its results stored, as
vectors.  Per k that is MR+NV loads for MR·NV fused multiply-adds, where the
element-by-element form (``Codegen.smallk_body``'s loop) needs one B load per
multiply-add and is load-port bound.

Every element of the product is still ``fma(a[k], b[k], acc)`` for k = 0, 1, ... K-1
from ``acc = 0`` (the GEMM micro-kernel's arithmetic), and the epilogue is the same
per-element IR on vectors, so results are bit-identical to the element-wise form and
independent of the tile, the chunk and the thread count.  Columns are masked at the
edge of a panel (free with AVX-512 mask registers; without them whole panels get an
unmasked copy of the tile), leftover rows use a one-row tile.

:func:`emit` returns False (the caller then emits the element-wise form) when the
kernel has an operand it cannot load as a vector (a column stride other than 0 or 1)
or an epilogue op without a vector form here.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from . import gemm as gemm_mod
from . import loops
from ..plan.kernels import GemmKernel
from .lowerings import LOWERINGS, is_float, mem_type, reg_type

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()

#: (rows, vectors) of the register tile; None: 4 rows x the host GEMM tile's vectors
#: (4x4 on AVX-512: 16 accumulators, 8 loads per 16 FMAs; 6x4 and 8x2 measured no
#: faster, the tile is bound by the weights streaming through the update)
TILE: tuple | None = None
#: False: always use the element-wise form (for comparisons)
ENABLED = True
#: tiles from the last rows up (see :func:`emit`)
REVERSE = True
#: None: mask every panel where masks are free (AVX-512), else only edge panels; True /
#: False force either form (tests run both on any host)
MASKS_FREE: bool | None = None

#: bytes of op(B) (K rows x a block of columns) a column block may span: every row strip
#: of the kernel reads the block's K rows of B, which should stay in L1 (32 KiB: the
#: smallest L1d of the x86-64 CPUs with AVX2; a batch-16 weight gradient of 512 columns,
#: 32 KiB of B, stays one block).  0: no blocking.
BLOCK_BYTES = 32 * 1024


def block_cols(k: int, n: int, itemsize: int, nr: int):
    """Columns per block (a multiple of ``nr``), or None when all ``n`` fit."""
    if not BLOCK_BYTES or k * n * itemsize <= BLOCK_BYTES:
        return None
    return max(nr, BLOCK_BYTES // (max(k, 1) * itemsize) // nr * nr)


def _vectorizable(n) -> bool:
    """Whether the op's lowering says it is valid on vectors (``Lowering.vector``)."""
    return LOWERINGS[n.op].vector_ok(n)


def _col_ok(v, n_cols) -> bool:
    return len(v.strides) == 2 and (v.strides[1] in (0, 1) or n_cols == 1)


def eligible(k) -> bool:
    if not ENABLED or not isinstance(k, GemmKernel) or len(k.shape) != 2 or k.reductions:
        return False
    g = k.gemm
    if g.a.st.dtype.name not in ("float32", "float64") or len(g.a.strides) != 2:
        return False
    n = g.n
    if len(g.b.strides) != 2 or not (g.b.strides[1] == 1 or n == 1):
        return False
    views = list(k.loads.values()) + [v for _, v in k.stores]
    if not all(_col_ok(v, n) for v in views):
        return False
    return all(_vectorizable(m) for m in k.nodes)


def tile_shape(dtype, m, n):
    """(mr, nv, vw) for a product of m×n: the host's tile, trimmed to small shapes."""
    spec = gemm_mod.default_spec(dtype)
    mr, nv = TILE or (min(4, spec.mr), spec.nv)
    vw = spec.vw
    return max(1, min(mr, m)), max(1, min(nv, -(-n // vw))), vw


class _Vec:
    """Masked vector loads/stores of any element type, splats, vector intrinsics."""

    def __init__(self, module, vw):
        self.m, self.vw = module, vw
        self.mt = ir.VectorType(I1, vw)

    @staticmethod
    def _sfx(t):
        if isinstance(t, ir.FloatType):
            return "f32"
        if isinstance(t, ir.DoubleType):
            return "f64"
        return f"i{t.width}"

    def _fn(self, name, fnty):
        fn = self.m.globals.get(name)
        if fn is None:
            fn = ir.Function(self.m, fnty, name)
        return fn

    def vt(self, t):
        return ir.VectorType(t, self.vw)

    def mload(self, b, t, ptr, mask, align):
        vt = self.vt(t)
        if mask is None:                 # a whole panel (see _Tiles.row_tiles)
            ld = b.load(ptr, typ=vt)
            ld.align = align
            return ld
        fn = self._fn(f"llvm.masked.load.v{self.vw}{self._sfx(t)}.p0",
                      ir.FunctionType(vt, [PTR, I32, self.mt, vt]))
        return b.call(fn, [ptr, I32(align), mask, ir.Constant(vt, None)])

    def mstore(self, b, val, ptr, mask, align):
        vt = val.type
        if mask is None:
            st = b.store(val, ptr)
            st.align = align
            return
        fn = self._fn(f"llvm.masked.store.v{self.vw}{self._sfx(vt.element)}.p0",
                      ir.FunctionType(ir.VoidType(), [vt, PTR, I32, self.mt]))
        b.call(fn, [val, ptr, I32(align), mask])

    def splat(self, b, x):
        vt = self.vt(x.type)
        v = b.insert_element(ir.Constant(vt, ir.Undefined), x, I32(0))
        return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, self.vw), [0] * self.vw))

    def intrinsic(self, b, name, *args):
        vt = args[0].type
        fn = self._fn(f"llvm.{name}.v{self.vw}{self._sfx(vt.element)}",
                      ir.FunctionType(vt, [vt] * len(args)))
        return b.call(fn, list(args))


def emit(cg, b, k, ptrs, rows, cols) -> bool:
    """Emit kernel ``k``'s rows × cols block (i64 ranges) in register tiles; False if
    the kernel is not :func:`eligible` (nothing emitted then)."""
    if not eligible(k):
        return False
    _Tiles(cg, b, k, ptrs, cols).emit_rows(*rows)
    return True


class _Tiles:
    """The register tiles of one small-K kernel, emitted at builder ``b``."""

    def __init__(self, cg, b, k, ptrs, cols):
        self.cg, self.b, self.k, self.ptrs = cg, b, k, ptrs
        g = self.g = k.gemm
        self.mm = g.node.output
        self.dtype = g.a.st.dtype
        self.mr, nv, vw = tile_shape(self.dtype, g.m, g.n)
        gp = k.gpart
        if gp is not None and gp.parts > 1 and gp.by_cols:
            # column chunks: no wider than the widest chunk (else masked-off vectors
            # would be computed in every tile)
            nv = max(1, min(nv, -(-(-(-gp.units // gp.parts) * gp.width) // vw)))
        self.nv, self.vw, self.nr = nv, vw, nv * vw
        self.vec = _Vec(cg.m, vw)
        self.em = gemm_mod.Emitter(cg.m, gemm_mod.default_spec(self.dtype))
        assert self.em.s.vw == vw
        self.masks_free = (gemm_mod.has_mask_registers(self.em.s) if MASKS_FREE is None
                           else MASKS_FREE)
        self.ft = reg_type(self.dtype)
        self.fvt = self.vec.vt(self.ft)
        self.zero = ir.Constant(self.fvt, 0.0)
        self.j0, self.j1 = cols

    def base(self, v):
        return self.cg.global_of(v.st) if v.st.kind == "global" else self.ptrs[v.st]

    def addr(self, v, i, j):
        """Pointer to element (i, j) of a 2-d view (i, j: i64 values)."""
        b = self.b
        si, sj = v.strides
        off = I64(v.offset)
        if si:
            off = b.add(off, i if si == 1 else b.mul(i, I64(si)))
        if sj and j is not None:
            off = b.add(off, j if sj == 1 else b.mul(j, I64(sj)))
        return b.gep(self.base(v), [off], source_etype=mem_type(v.st.dtype), inbounds=True)

    def scalar_load(self, v, i, j):
        ld = self.b.load(self.addr(v, i, j), typ=mem_type(v.st.dtype))
        ld.align = v.st.dtype.itemsize
        return ld

    def vload(self, v, i, j, mask):
        """<vw x reg type> of view v at row i, columns j..j+vw (lanes off the mask: 0)."""
        b, vec, dt = self.b, self.vec, v.st.dtype
        if v.strides[1] == 0:
            x = self.scalar_load(v, i, None)
            if dt == np.bool_:
                x = b.icmp_unsigned("!=", x, I8(0))
            return vec.splat(b, x)
        x = vec.mload(b, mem_type(dt), self.addr(v, i, j), mask, dt.itemsize)
        if dt == np.bool_:
            x = b.icmp_unsigned("!=", x, ir.Constant(vec.vt(I8), 0))
        return x

    def vstore(self, v, i, j, mask, x):
        dt = v.st.dtype
        if dt == np.bool_:
            x = self.b.zext(x, self.vec.vt(I8))
        self.vec.mstore(self.b, x, self.addr(v, i, j), mask, dt.itemsize)

    def node(self, n, args):
        lw = LOWERINGS[n.op]
        if lw.intrinsic is not None and is_float(n.output.dtype):
            return self.vec.intrinsic(self.b, lw.intrinsic, *args)
        return lw.emit(self.b, n, *args)

    def lane_masks(self, nrem):
        b, vw, out = self.b, self.vw, []
        for v in range(self.nv):
            rem = b.sub(nrem, I64(v * vw)) if v else nrem
            rem = b.select(b.icmp_signed("<", rem, I64(0)), I64(0), rem)
            rem = b.select(b.icmp_signed(">", rem, I64(vw)), I64(vw), rem)
            bits = b.sub(b.shl(I64(1), rem), I64(1))
            out.append(b.bitcast(b.trunc(bits, ir.IntType(vw)), self.vec.mt))
        return out

    def kloop(self, rowi, j, masks, accs):
        """The K loop (not unrolled: the A elements stay inside it, not hoisted out of
        the column loop into spilled registers); returns the final accumulators."""
        b, g, nv, vw = self.b, self.g, self.nv, self.vw
        pre = b.block
        body = b.append_basic_block("sk.k")
        done = b.append_basic_block("sk.kdone")
        b.branch(body)
        b.position_at_end(body)
        kk = b.phi(I64, "k")
        kk.add_incoming(I64(0), pre)
        phis = [[b.phi(self.fvt) for _ in range(nv)] for _ in rowi]
        for r, row in enumerate(phis):
            for v, ph in enumerate(row):
                ph.add_incoming(accs[r][v], pre)
        bv = [self.vec.mload(b, self.ft, self.addr(g.b, kk, b.add(j, I64(v * vw)) if v else j),
                             masks[v], self.dtype.itemsize) for v in range(nv)]
        new = []
        for r in range(len(rowi)):
            av = self.vec.splat(b, self.scalar_load(g.a, rowi[r], kk))
            new.append([b.call(self.em.fma, [av, bv[v], phis[r][v]]) for v in range(nv)])
        k1 = b.add(kk, I64(1))
        kk.add_incoming(k1, body)
        for r, row in enumerate(phis):
            for v, ph in enumerate(row):
                ph.add_incoming(new[r][v], body)
        loops.mark_no_unroll(self.cg.m,
                                b.cbranch(b.icmp_signed("<", k1, I64(g.k)), body, done),
                                f"{b.function.name}.sk{len(b.function.blocks)}", True)
        b.position_at_end(done)
        return new

    def tile(self, i, nrows, j, nrem):
        """One tile at (i, j); ``nrem`` None: a whole panel, nothing masked."""
        b, k, nv, vw = self.b, self.k, self.nv, self.vw
        masks = self.lane_masks(nrem) if nrem is not None else [None] * nv
        rowi = [i] + [b.add(i, I64(r)) for r in range(1, nrows)]
        accs = [[self.zero] * nv for _ in range(nrows)]
        if self.g.k > 0:
            accs = self.kloop(rowi, j, masks, accs)
        for r in range(nrows):
            for v in range(nv):
                jv = b.add(j, I64(v * vw)) if v else j
                env = {self.mm: accs[r][v]}
                for tok, view in k.loads.items():
                    env[tok] = self.vload(view, rowi[r], jv, masks[v])
                for n in k.nodes:
                    env[n.output] = self.node(n, [env[x] for x in n.inputs])
                for tok, view in k.stores:
                    self.vstore(view, rowi[r], jv, masks[v], env[tok])

    def row_tiles(self, nrows):
        b = self.b

        def over_rows(bb, i):
            def panel(bb, j):
                nrem = b.sub(self.j1, j)
                nrem = b.select(b.icmp_signed("<", nrem, I64(self.nr)), nrem, I64(self.nr))
                if self.masks_free:
                    self.tile(i, nrows, j, nrem)
                    return
                # AVX2: masked loads are vmaskmovps and the masks do not stay in
                # registers (as in the GEMM micro-kernel): whole panels unmasked
                with b.if_else(b.icmp_signed("==", nrem, I64(self.nr))) as (whole, edge):
                    with whole:
                        self.tile(i, nrows, j, None)
                    with edge:
                        self.tile(i, nrows, j, nrem)
            loops.counted_loop(b, self.j0, self.j1, self.nr, panel, f"sk{nrows}j",
                                  True, True)
        return over_rows

    def emit_rows(self, i0, i1):
        """Rows i0:i1 of the kernel's columns; in column blocks of :func:`block_cols`
        when op(B)'s K rows across them would not stay in L1 (every row strip reads
        the whole block)."""
        ncb = block_cols(self.g.k, self.g.n, self.dtype.itemsize, self.nr)
        if ncb is None:
            return self._emit_rows(i0, i1)
        b, j0, j1 = self.b, self.j0, self.j1

        def block(bb, jb):
            end = b.add(jb, I64(ncb))
            self.j0, self.j1 = jb, b.select(b.icmp_signed("<", end, j1), end, j1)
            self._emit_rows(i0, i1)
        loops.counted_loop(b, j0, j1, ncb, block, "skb", True, True)
        self.j0, self.j1 = j0, j1

    def _emit_rows(self, i0, i1):
        b, mr = self.b, self.mr
        ifull = b.add(i0, b.mul(b.sdiv(b.sub(i1, i0), I64(mr)), I64(mr)))
        if REVERSE:
            # last rows first: the first rows, written last, are still in L2 when the
            # next step's forward product, which walks the weights from row 0, starts
            # (MLP step at batch 16: ~2% faster)
            if mr > 1:
                loops.counted_loop(b, ifull, i1, 1, self.row_tiles(1), "skr", True, True)
            nstrips = b.sdiv(b.sub(ifull, i0), I64(mr))
            loops.counted_loop(
                b, I64(0), nstrips, 1,
                lambda bb, t: self.row_tiles(mr)(
                    bb, b.sub(ifull, b.mul(b.add(t, I64(1)), I64(mr)))),
                "skt", True, True)
        else:
            loops.counted_loop(b, i0, ifull, mr, self.row_tiles(mr), "skt", True, True)
            if mr > 1:
                loops.counted_loop(b, ifull, i1, 1, self.row_tiles(1), "skr", True, True)
