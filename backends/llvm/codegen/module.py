"""LLVM IR for a Plan: one internal function per kernel and one entry function.

Entry: ``void graphc_main(i64 tid, i64 nthreads, ptr argv, ptr barrier_state)`` (the
launcher's job signature, ``native_pool.JOB_TYPE``) where
``argv`` is an i64 array of buffer addresses (graph inputs, outputs, large constants,
the arena, a profile buffer, the segment counters).  With one thread it calls the
kernels in order.  With T threads every thread runs it and claims *chunks* (fixed
pieces of kernels) of one *segment* (the kernels between two synchronisation points
of the plan) at a time; see ``Codegen.dynamic_phases``.

Kernels take one ``noalias`` pointer per buffer they touch, and their innermost loop is
a plain counted loop over constant strides, so LLVM's loop vectorizer widens it to
<16 x float> on AVX-512 hosts (the test suite checks the assembly).
"""
from __future__ import annotations

import hashlib

import numpy as np
from llvmlite import ir

from . import gemm as gemm_mod  # noqa: F401
from ..native import kernellib
from . import dot, knobs, smallk
from ..runtime import native_pool
from .dynamic import DynamicSchedule
from .loops import SHORT_ROW, emit_loop
from .lowerings import LOWERINGS, is_float, mem_type, reduce_identity, reg_type
from ..plan.kernels import (Col2imGemmKernel, Im2colGemmKernel, CopyKernel, CustomKernel, DotKernel,
                            GemmKernel, LoopKernel, Plan, SmallKKernel)
from ..plan.signature import aliasing, kernel_storages
from ..plan.views import View

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()
ENTRY = "graphc_main"
#: the name every kernel module has, and the placeholder of a kernel's own name in the
#: text that identifies its code (:meth:`Codegen.build`)
KERNEL_MODULE, KERNEL_NAME = "graphc_kernel", "graphc_kernel"
SMALLK_INTERLEAVE = 4


def _const_init(st):
    t = mem_type(st.dtype)
    vals = np.asarray(st.value).reshape(-1)
    if st.dtype == np.bool_:
        items = [int(x) for x in vals.astype(np.int8)]
    elif is_float(st.dtype):
        items = [float(x) for x in vals]
    else:
        items = [int(x) for x in vals]
    return ir.Constant(ir.ArrayType(t, len(items)), items)


class Codegen(DynamicSchedule):
    def __init__(self, plan: Plan, target_triple: str = "", profile: bool = False):
        self.plan = plan
        self.profile = profile
        self.T = plan.threads
        self.m = ir.Module(name=f"graphc_{plan.graph.name}")
        self.m.triple = target_triple
        self.entry_module = self.m
        self.globals = {}
        self._ids = 0
        self._loop_md = {}
        self._interleave = 0

    # ---- small helpers ---------------------------------------------------------------------
    def global_of(self, st):
        g = self.globals.get(st)
        if g is None:
            self._ids += 1
            init = _const_init(st)
            g = ir.GlobalVariable(self.m, init.type, f"const{self._ids}")
            g.initializer = init
            g.global_constant = True
            g.linkage = "internal"
            g.align = 64
            self.globals[st] = g
        return g

    def loop_md(self, vectorize, masked=False, reorder=False):
        """Loop metadata: never unrolled; not vectorized, vectorized (interleaved when the
        codegen is asked to), or ``masked`` -- vectorized with the tail folded into masked
        vector operations, for short rows (5..28 elements would otherwise never reach a
        16-lane vector body and run scalar).  ``reorder``: vectorization forced on, which
        lets LLVM reassociate a floating-point sum carried by the loop (a row sum along
        the innermost axis: softmax, layer norm) into vector partial sums -- without it
        such a loop stays scalar.  The order is then fixed by the loop alone (its trip
        count is a whole row: a partition never cuts a reduced axis), so results stay
        the same for any thread count."""
        key = (bool(vectorize), self._interleave, bool(masked), bool(reorder))
        md = self._loop_md.get(key)
        if md is None:
            def prop(name, val):
                return self.m.add_metadata([ir.MetaDataString(self.m, name), val])
            props = [self.m.add_metadata([ir.MetaDataString(self.m, "llvm.loop.unroll.disable")])]
            if masked:
                props += [prop("llvm.loop.vectorize.enable", ir.IntType(1)(1)),
                          prop("llvm.loop.vectorize.predicate.enable", ir.IntType(1)(1))]
            elif reorder:
                props.append(prop("llvm.loop.vectorize.enable", ir.IntType(1)(1)))
            elif not vectorize:
                props.append(prop("llvm.loop.vectorize.enable", ir.IntType(1)(0)))
            elif self._interleave:
                props.append(prop("llvm.loop.interleave.count", ir.IntType(32)(self._interleave)))
            md = props
            self._loop_md[key] = md
        self._ids += 1
        loop_id = self.m.add_metadata([ir.MetaDataString(self.m, f"graphc.loop.{self._ids}")])
        loop_id.operands = (loop_id, *md)
        return loop_id

    def loop(self, b, lo, hi, body, name="i", vectorize=True, masked=False, reorder=False):
        """``for i in [lo, hi): body(i)`` (an i64 phi); see :meth:`loop_md`.  A loop of at
        most ``SHORT_ROW`` known trips is never forced to vectorize: it cannot pay, and
        LLVM warns on stderr when a forced vectorization fails."""
        trips = _known_trips(lo, hi)
        if trips is not None and trips <= SHORT_ROW:
            vectorize = masked = reorder = False
        if trips is not None and trips < 8 and reorder and not masked:
            # a reassociated sum needs a whole vector body: fewer trips than the
            # narrowest vector (8 lanes) run scalar anyway, and LLVM then warned
            # (float64 dot products over 5 elements in attention rows, seed 242026)
            reorder = False
        br = emit_loop(b, lo, hi, 1, body, name, nsw=True)
        br.set_metadata("llvm.loop", self.loop_md(vectorize, masked, reorder))

    def nest(self, b, shape, ranges, body, reorder=False):
        """Loops over ``shape`` (dims in ``ranges`` over [lo, hi)); only the innermost
        loop may vectorize, and only when it is long enough to pay (``reorder``: forced,
        for a float sum along it -- :meth:`loop_md`)."""
        idx = []

        def rec(d):
            if d == len(shape):
                body(list(idx))
                return
            lo, hi = ranges.get(d, (I64(0), I64(shape[d])))

            def inner(i):
                idx.append(i)
                rec(d + 1)
                idx.pop()
            vec = d == len(shape) - 1 and (d in ranges or shape[d] >= 8)
            self.loop(b, lo, hi, inner, f"d{d}", vectorize=vec,
                      reorder=vec and reorder and d not in ranges and shape[d] >= 8)
        rec(0)

    def lin(self, b, v: View, idx):
        acc = I64(v.offset)
        for i, s in zip(idx, v.strides):
            if s == 0:
                continue
            term = i if s == 1 else b.mul(i, I64(s), flags=["nsw"])
            acc = b.add(acc, term, flags=["nsw"])
        return acc

    def addr(self, b, ptrs, v: View, idx):
        base = self.global_of(v.st) if v.st.kind == "global" else ptrs[v.st]
        return b.gep(base, [self.lin(b, v, idx)], source_etype=mem_type(v.st.dtype),
                     inbounds=True)

    def load(self, b, ptrs, v: View, idx):
        t = mem_type(v.st.dtype)
        ld = b.load(self.addr(b, ptrs, v, idx), typ=t)
        ld.align = v.st.dtype.itemsize
        if v.st.dtype == np.bool_:
            return b.icmp_unsigned("!=", ld, I8(0))
        return ld

    def store(self, b, ptrs, v: View, idx, val):
        if v.st.dtype == np.bool_:
            val = b.zext(val, I8)
        st = b.store(val, self.addr(b, ptrs, v, idx))
        st.align = v.st.dtype.itemsize

    def part_range(self, b, tid, extent, unit, T):
        n = -(-extent // unit)
        lo = b.mul(b.sdiv(b.mul(I64(n), tid), I64(T)), I64(unit))
        hi = b.mul(b.sdiv(b.mul(I64(n), b.add(tid, I64(1))), I64(T)), I64(unit))

        def cl(x):
            return b.select(b.icmp_signed("<", x, I64(extent)), x, I64(extent))
        return cl(lo), cl(hi)

    # ---- kernels ------------------------------------------------------------------------
    def kernel(self, k, idx_no):
        sts = kernel_storages(k)
        fn = ir.Function(self.m, _kernel_type(sts), f"k{idx_no}_{_clean(k.name)}")
        if self.m is self.entry_module:
            fn.linkage = "internal"     # else exported to the entry's module (same engine)
        else:
            # named after its code (Codegen.build): every definition of it is the same
            fn.linkage = "weak_odr"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")
        tid = fn.args[0]
        ptrs = {}
        for st, a, shared in zip(sts, fn.args[1:], aliasing(sts)):
            # arena storages of different dtypes may share bytes in one kernel (a cast
            # computed in place): those pointers may alias
            if not shared:
                a.add_attribute("noalias")
            ptrs[st] = a
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ret = fn.append_basic_block("ret")
        if k.single:
            go = fn.append_basic_block("go")
            b.cbranch(b.icmp_signed("==", tid, I64(0)), go, ret)
            b.position_at_end(go)
        if isinstance(k, CopyKernel):
            for c in k.copies:
                self.nest(b, c.dst.shape, {},
                          lambda idx, s=c.src, d=c.dst: self.store(b, ptrs, d, idx,
                                                                   self.load(b, ptrs, s, idx)))
        elif isinstance(k, (Col2imGemmKernel, Im2colGemmKernel)):
            from . import conv_fused        # with the window code: conv nets only
            (conv_fused.emit_col2im_gemm if isinstance(k, Col2imGemmKernel)
             else conv_fused.emit_im2col_gemm)(self, b, k, ptrs, tid)
        elif isinstance(k, CustomKernel):
            LOWERINGS[k.node.op].emit(self, b, k, ptrs, tid)
        elif isinstance(k, DotKernel):
            dot.emit(self, b, k, ptrs, tid)
        elif isinstance(k, GemmKernel):
            self.gemm_body(b, k, ptrs, tid, ret)
        else:
            ranges = {}
            if k.part is not None:
                d = k.part.dim
                ranges[d] = self.part_range(b, tid, k.shape[d], k.part.unit, k.nchunks)
            self.loop_body(b, k, ptrs, ranges)
        b.branch(ret)
        b.position_at_end(ret)
        b.ret_void()
        return fn, sts

    def loop_body(self, b, k, ptrs, ranges, produce=None):
        # Each reduction is cleared (and, for float64 accumulators, written back) over its
        # own output space: reductions of one kernel may reduce different axes, so one
        # shared "kept" shape would leave parts of an output uncleared.
        for r in k.reductions:
            ident = reduce_identity(r.node.op, r.node.output.dtype)
            dv = r.acc or r.out
            self.nest(b, _kept_shape(k.shape, r), ranges,
                      lambda idx, dv=dv, ident=ident: self.store(
                          b, ptrs, dv, idx, ir.Constant(reg_type(dv.st.dtype), ident)))

        def body(idx):
            env = {}
            for tok, v in k.loads.items():
                env[tok] = self.load(b, ptrs, v, idx)
            if produce is not None:
                produce(idx, env)
            for n in k.nodes:
                env[n.output] = LOWERINGS[n.op].emit(b, n, *[env[x] for x in n.inputs])
            for tok, v in k.stores:
                self.store(b, ptrs, v, idx, env[tok])
            for r in k.reductions:
                dv = r.acc or r.out
                x = env[r.src]
                if r.acc is not None:
                    x = b.fpext(x, reg_type(dv.st.dtype))
                old = self.load(b, ptrs, dv, idx)
                new = LOWERINGS[r.node.op].emit(b, dv.st.dtype, old, x)
                self.store(b, ptrs, dv, idx, new)
        self.nest(b, k.shape, ranges, body, reorder=_row_sum(k))

        for r in k.reductions:
            if r.acc is None:
                continue

            def fin(idx, r=r):
                val = self.load(b, ptrs, r.acc, idx)
                self.store(b, ptrs, r.out, idx, b.fptrunc(val, reg_type(r.out.st.dtype)))
            self.nest(b, _kept_shape(k.shape, r), ranges, fin)

    def gemm_body(self, b, k, ptrs, tid, ret):
        g = k.gemm
        M, N, K = g.m, g.n, g.k
        dtype = g.a.st.dtype
        if M == 0 or N == 0:
            return
        gp = k.gpart            # tid is the chunk index < gp.parts
        parts, by_cols, units, width, spec = gp.parts, gp.by_cols, gp.units, gp.width, gp.spec
        gfn = kernellib.gemm_function(self.m, spec)   # compiled once, see kernellib.py
        dim = N if by_cols else M

        def cl(x):
            return b.select(b.icmp_signed("<", x, I64(dim)), x, I64(dim))
        lo = cl(b.mul(b.sdiv(b.mul(I64(units), tid), I64(parts)), I64(width)))
        hi = cl(b.mul(b.sdiv(b.mul(I64(units), b.add(tid, I64(1))), I64(parts)), I64(width)))
        if by_cols:
            i0, i1, j0, j1 = I64(0), I64(M), lo, hi
        else:
            i0, i1, j0, j1 = lo, hi, I64(0), I64(N)
        et = mem_type(dtype)
        if isinstance(k, SmallKKernel):
            self.smallk_body(b, k, ptrs, (i0, i1), (j0, j1))
            return
        batch = g.c.shape[:-2]

        def call(bidx, r0=i0, r1=i1):
            offs = []
            for v in (g.a, g.b, g.c):
                nb = len(v.shape) - 2
                sub = View(v.st, v.offset, v.shape[:nb], v.strides[:nb])
                base = self.global_of(v.st) if v.st.kind == "global" else ptrs[v.st]
                offs.append(b.gep(base, [self.lin(b, sub, bidx[len(bidx) - nb:])],
                                  source_etype=et, inbounds=True))
            b.call(gfn, offs + [I64(K), I64(g.lda), I64(g.ldb), I64(N), r0, r1, j0, j1,
                                I32(0)])
        if not k.nodes:
            self.nest(b, batch, {}, call)
            return
        # GEMM + epilogue by blocks of rows, so that the epilogue reads its block of the
        # product from L2 (~96 KB) instead of memory
        # (only when op(B)'s K x cols stays in L2: each row block re-reads it, and a
        # B that is packed -- transposed, or any with the tuner's ``pack`` -- is re-packed
        # per call, so per row block: Zen 3, the MLP's 784x128x512 weight gradient with its
        # SGD update ran 8-9 % faster in one call than in 48-row blocks)
        cols = N if by_cols is False else min(N, -(-units // parts) * width)
        rb = max(spec.mr, (96 * 1024 // max(1, cols * dtype.itemsize)) // spec.mr * spec.mr)
        def epilogue(rows, cols):     # over the node's value: C's coordinates
            self.loop_body(b, k, ptrs, {0: cols, 1: rows} if g.transposed else
                           {0: rows, 1: cols})
        if rb >= M or K * cols * dtype.itemsize > 256 * 1024 or g.trans_b or spec.pack:
            call([])
            epilogue((i0, i1), (j0, j1))
            return

        def block(r0):
            r1 = b.add(r0, I64(rb))
            r1 = b.select(b.icmp_signed("<", r1, i1), r1, i1)
            call([], r0, r1)
            epilogue((r0, r1), (j0, j1))
        nblk = b.sdiv(b.add(b.sub(i1, i0), I64(rb - 1)), I64(rb))
        self.loop(b, I64(0), nblk, lambda bi: block(b.add(i0, b.mul(bi, I64(rb)))),
                  "rblk", vectorize=False)

    def smallk_body(self, b, k, ptrs, rows, cols):
        """C = op(A)·B with small K fused into the epilogue loop: per element, K
        ``llvm.fma`` in k order from 0 (the GEMM kernel's exact arithmetic); the
        innermost (column) loop vectorizes, A's K values are loop-invariant in it.
        Eligible kernels are computed in register tiles instead (:mod:`.smallk`)."""
        if smallk.emit(self, b, k, ptrs, rows, cols):
            return
        g = k.gemm
        t = reg_type(g.a.st.dtype)
        fma = self.m.globals.get(f"llvm.fma.{'f32' if t == ir.FloatType() else 'f64'}") or \
            ir.Function(self.m, ir.FunctionType(t, [t, t, t]),
                        f"llvm.fma.{'f32' if t == ir.FloatType() else 'f64'}")
        mm = g.node.output

        def produce(idx, env):
            i, j = idx
            acc = ir.Constant(t, 0.0)
            for kk in range(g.k):
                av = self.load(b, ptrs, g.a, [i, I64(kk)])
                bv = self.load(b, ptrs, g.b, [I64(kk), j])
                acc = b.call(fma, [av, bv, acc])
            env[mm] = acc
        self._interleave = SMALLK_INTERLEAVE    # independent FMA chains per iteration
        self.loop_body(b, k, ptrs, {0: rows, 1: cols}, produce)
        self._interleave = 0

    # ---- entry --------------------------------------------------------------------------
    def build(self, parts: int = 1, cold: bool = False, names: dict | None = None,
              reuse=frozenset()):
        """The module (``parts`` = 1, no cold kernels), or a list of modules: the first
        holds the entry function, each of the others one hot kernel.  JIT compiles the
        entry's without optimisation and the kernels in ``parts`` concurrent bundles
        (:func:`.native.parts.bundles`).

        Kernels whose IR is the same (a transformer's layers: the same shapes, the
        buffers being arguments) are one module and one function, called by every
        kernel of the plan that has that code (:data:`KERNEL_NAME`: its text with its
        own name left out is the key); ``self.texts`` holds the modules' IR text.

        ``cold``: the kernels whose run time cannot matter (:func:`is_cold`: a few
        hundred elements of loop work -- loss terms, bias updates) go beside the entry
        into the unoptimised module, and a list is returned even for ``parts`` = 1.  O3
        spends ~10 ms on each such kernel (LeNet step: 17 of 48 kernels), the
        unoptimised part ~1 ms; the code computes the same values (no fast-math flags,
        explicit ``llvm.fma``; row sums, which O3 may reassociate, are never cold).

        ``names``: {kernel index: symbol} for hot kernels named by their signature
        (:mod:`..plan.signature`, the backend's per-kernel cache keys before any IR)
        instead of their text; those in ``reuse`` are linked from that cache's objects,
        so their IR is not built, only declared.  ``self.named`` maps each module built
        for a named kernel to its symbol."""
        plan = self.plan
        cold_of = [cold and is_cold(k) for k in plan.kernels]
        split = self.splits(parts, cold)
        entry = self.m
        mods, by_text, self.texts = [entry], {}, {}
        entry_state = ({}, {})
        entry_ids = self._ids
        kfns, names, self.named = [], names or {}, {}
        for i, (k, c) in enumerate(zip(plan.kernels, cold_of)):
            if not split or c:
                self.m, self._ids = entry, entry_ids
                self.globals, self._loop_md = entry_state
                kfns.append(self.kernel(k, i))
                entry_ids = self._ids
                continue
            name = names.get(i)
            if name is not None and (name in reuse or name in self.named.values()):
                sts = kernel_storages(k)    # linked from the cache, or built already
                kfns.append((self._declare(entry, name, sts), sts))
                continue
            self.m, fn, sts = self.kernel_module(k, i, entry.triple)
            if name is not None:
                fn._name = name
                mods.append(self.m)
                self.named[self.m] = name
                kfns.append((self._declare(entry, name, sts), sts))
                continue
            same = code_text(self.m, fn)
            name = by_text.get(same)
            if name is None:
                # the function is named after its code: the same symbol for the same
                # code in every graph (the per-kernel object cache, jit.find_kernels)
                name = by_text[same] = "gk_" + hashlib.sha256(same.encode()).hexdigest()[:32]
                fn._name = name
                mods.append(self.m)
                self.texts[self.m] = same.replace('@"' + KERNEL_NAME + '"', f'@"{name}"')
            kfns.append((self._declare(entry, name, sts), sts))
        self.m, self._ids = entry, entry_ids
        self.globals, self._loop_md = entry_state
        self._build_entry(kfns)
        return mods if split else entry

    def kernel_module(self, k, idx_no, triple=""):
        """(module, function, storages): kernel ``k`` alone in a module of its own."""
        self.m = ir.Module(name=KERNEL_MODULE)
        self.m.triple = triple
        self.globals, self._loop_md, self._ids = {}, {}, 0   # names local to it
        fn, sts = self.kernel(k, idx_no)
        return self.m, fn, sts

    def hot(self, cold: bool) -> list:
        """Indices of the kernels :meth:`build` puts in modules of their own when it
        splits (all, or with ``cold`` those that are not :func:`is_cold`)."""
        return [i for i, k in enumerate(self.plan.kernels) if not (cold and is_cold(k))]

    def splits(self, parts: int, cold: bool) -> bool:
        """Whether :meth:`build` returns a list of modules (kernels in their own)."""
        hot = len(self.hot(cold))
        return parts > 1 or (0 < hot < len(self.plan.kernels))

    @staticmethod
    def _declare(entry, name, sts):
        """The entry module's declaration of kernel function ``name`` over ``sts``."""
        decl = entry.globals.get(name)
        if decl is None:
            decl = ir.Function(entry, _kernel_type(sts), name)
            decl.attributes.add("nounwind")
        return decl

    def _build_entry(self, kfns):
        plan = self.plan
        fn = ir.Function(self.m, native_pool.JOB_TYPE, ENTRY)
        fn.attributes.add("nounwind")
        tid, nth, argv, bar = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        slotp = []
        for s in range(len(plan.slots) + 1):
            v = b.load(b.gep(argv, [I64(s)], source_etype=I64), typ=I64)
            v.align = 8
            slotp.append(b.inttoptr(v, PTR))
        arena = slotp[-1]

        def ptr_of(st):
            if st.kind == "arena":
                return b.gep(arena, [I64(st.offset)], source_etype=I8, inbounds=True)
            return slotp[st.slot]

        prof = None
        if self.profile:   # thread 0 stores the cycle counter after every kernel
            cyc = ir.Function(self.m, ir.FunctionType(I64, []), "llvm.readcyclecounter")
            pslot = b.load(b.gep(argv, [I64(len(plan.slots) + 1)], source_etype=I64), typ=I64)
            prof = b.inttoptr(pslot, PTR)
            is0 = b.icmp_signed("==", tid, I64(0))

            def stamp(i):
                t = b.call(cyc, [])
                old = b.load(b.gep(prof, [I64(i)], source_etype=I64), typ=I64)
                b.store(b.select(is0, t, old), b.gep(prof, [I64(i)], source_etype=I64))
            stamp(0)

        def run(i, part):
            kf, sts = kfns[i]
            b.call(kf, [part] + [ptr_of(st) for st in sts])
            if prof is not None:
                stamp(i + 1)

        if self.T == 1:
            for i in range(len(plan.kernels)):
                run(i, tid)
        else:
            self.dynamic_phases(b, fn, tid, nth, argv, run)
        b.ret_void()


#: loop kernels over at most this many elements are cold (:func:`is_cold`)
COLD_ELEMENTS = knobs.COLD_ELEMENTS


def is_cold(k) -> bool:
    """Whether ``k`` is cheap enough to run unoptimised: a plain loop kernel (no GEMM,
    window or copy kernel) over at most :data:`COLD_ELEMENTS` elements -- unoptimised it
    takes a few microseconds at most, against a step of milliseconds -- and whose values
    do not depend on the optimiser (not a row sum, which O3 reassociates into vector
    partial sums: :func:`_row_sum`)."""
    return (isinstance(k, LoopKernel) and not isinstance(k, GemmKernel)
            and int(np.prod(k.shape, dtype=np.int64)) <= COLD_ELEMENTS
            and not _row_sum(k))


def code_text(module, fn) -> str:
    """A kernel module's text with its function's own name left out: the same for the
    same code in any graph (:data:`KERNEL_NAME` in its place)."""
    return str(module).replace(f'@"{fn.name}"', '@"' + KERNEL_NAME + '"')


def _kernel_type(sts) -> ir.FunctionType:
    """A kernel function's type: ``void (i64 chunk, ptr per storage)``."""
    return ir.FunctionType(VOID, [I64] + [PTR] * len(sts))


def _known_trips(lo, hi):
    """The trip count of ``[lo, hi)`` when both bounds are constants, else None."""
    if isinstance(lo, ir.Constant) and isinstance(hi, ir.Constant):
        return max(0, int(hi.constant) - int(lo.constant))
    return None


def _clean(name):
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:40]


#: ops lowered to a libm call (no vector form) in float64 -- ``pow`` in every dtype
LIBM_F64 = frozenset({"exp", "log", "log1p", "tanh", "erf", "sigmoid"})


def libm_call(n) -> bool:
    """Whether node ``n``'s lowering calls libm (a loop with it cannot vectorize)."""
    return n.op == "pow" or (n.op in LIBM_F64 and n.output.dtype == np.float64)


def _row_sum(k) -> bool:
    """Whether a float sum of loop kernel ``k`` reduces its innermost axis (a row sum:
    vectorized only with reassociation, :meth:`Codegen.loop_md`) in a loop that can
    vectorize (no libm call: forcing it would only make LLVM warn)."""
    return bool(k.shape) and any(
        r.node.op == "sum" and is_float(r.node.output.dtype) and r.out.strides[-1] == 0
        for r in k.reductions) and not any(libm_call(n) for n in k.nodes)


def _kept_shape(shape, r) -> tuple:
    """The iteration space of reduction ``r``'s output: 1 along the axes it reduces."""
    return tuple(1 if s == 0 else e for e, s in zip(shape, r.out.strides))
