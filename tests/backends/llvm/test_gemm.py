"""GEMM kernels and the parallel launcher: correctness against numpy for every variant,
dtype and awkward shape; leading dimensions and ranges; vector code on the host; and
bitwise-identical results for any thread count (also through a barrier-separated
two-kernel "step" run on T threads)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

pytest.importorskip("llvmlite")

from llvmlite import ir  # noqa: E402

from graphc.backends.llvm.codegen import gemm as G  # noqa: E402
from graphc.backends.llvm.codegen import gemm_parallel as GP  # noqa: E402
from graphc.backends.llvm.native import jit  # noqa: E402
from graphc.backends.llvm.runtime import gemmcall  # noqa: E402
from graphc.backends.llvm.runtime import parallel as P  # noqa: E402

VARIANTS = [(False, False), (True, False), (False, True), (True, True)]
# (M, N, K): sizes 1, primes, non-multiples of the vector width and of the tile,
# K crossing the K-block size (256), K = 0
SHAPES = [(1, 1, 1), (1, 17, 5), (2, 3, 4), (7, 13, 5), (17, 33, 63), (63, 65, 31),
          (65, 17, 129), (6, 64, 256), (13, 130, 300), (37, 101, 97), (128, 10, 256),
          (5, 3, 0), (12, 16, 1)]


def _operands(rng, m, n, k, dtype, ta, tb):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def _check(c, a, b, ta, tb, extra=None):
    """|c - exact| <= 2·K·u·(|op(A)|·|op(B)|) (+|extra|): the standard dot-product
    error bound, so the tolerance scales with K and the magnitudes."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    a64, b64 = (a64.T if ta else a64), (b64.T if tb else b64)
    exact = a64 @ b64
    bound = np.abs(a64) @ np.abs(b64)
    if extra is not None:
        exact = exact + extra
        bound = bound + np.abs(extra)
    k = a64.shape[1]
    u = np.finfo(c.dtype).eps
    tol = 2 * (k + 2) * u * bound + np.finfo(c.dtype).tiny
    assert c.shape == exact.shape
    err = np.abs(c.astype(np.float64) - exact)
    assert np.all(err <= tol), f"max err {err.max()} vs tol {tol.max()}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta,tb", VARIANTS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_numpy(dtype, ta, tb, m, n, k):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a, b = _operands(rng, m, n, k, dtype, ta, tb)
    c = gemmcall.gemm(a, b, trans_a=ta, trans_b=tb, threads=1)
    assert c.dtype == np.dtype(dtype)
    _check(c, a, b, ta, tb)


# 256-bit tiles on any host (AVX2 instructions run on AVX-512 CPUs too): the code paths of a
# CPU without mask registers -- unmasked whole-panel kernels, packed B panels, edge tiles of
# 1..NV-1 vectors, whole-panel column chunks on 2 threads -- are tested wherever CI runs
AVX2_TILES = [G.GemmSpec("float32", ta, tb, mr, nv, 8, kc, pf, pack, pack_a)
              for ta, tb in VARIANTS for mr, nv, kc, pf, pack, pack_a in
              [(4, 3, 256, 0, 1, 1), (4, 3, 256, 0, 1, 0), (4, 3, 64, 1, 0, 1),
               (6, 2, 128, 1, 1, 0), (5, 2, 128, 1, 1, 1)]
              if pack_a == 0 or ta]         # (pack_a only changes a transposed A's code)


@pytest.mark.parametrize("spec", AVX2_TILES, ids=lambda s: s.name)
def test_256_bit_tiles_match_numpy(spec):
    assert not G.has_mask_registers(spec)
    rng = np.random.default_rng(7)
    # + last panels of whole vectors (unmasked edge and tall tiles: N = 8, 16, 40, 520)
    # and of a partial last vector (only it masked: N = 10, 50)
    for m, n, k in SHAPES + [(70, 50, 300), (40, 48, 20), (50, 8, 20), (37, 16, 33),
                             (21, 40, 9), (9, 520, 40), (26, 10, 130)]:
        a, b = _operands(rng, m, n, k, "float32", spec.trans_a, spec.trans_b)
        outs = []
        for threads in (1, 2):
            c = np.full((m, n), np.nan, np.float32)
            plan = gemmcall.GemmPlan(a, b, c, spec.trans_a, spec.trans_b, threads=threads,
                                     spec=spec)
            for _ in range(2):                      # called more than once
                plan()
                _check(c, a, b, spec.trans_a, spec.trans_b)
            outs.append(c.copy())
        assert np.array_equal(outs[0], outs[1]), (spec.name, m, n, k)


# transposed A packed into tile strips (GemmSpec.pack_a): odd M, M below MR and below
# PREFETCH_MAX_ROWS (not packed), one and several panels, K across KC, and row blocks
# (the buffer holds A_PACK_BYTES: 256 rows of KC 256 floats; with KC 64, 1024 rows)
PACK_A_SHAPES = [(3, 50, 20), (17, 49, 7), (33, 25, 1), (37, 101, 97), (130, 70, 300),
                 (601, 50, 300), (1029, 49, 70), (250, 24, 300), (403, 60, 0)]
PACK_A_SPECS = [G.GemmSpec(dt, True, tb, mr, nv, vw, kc, pf, pack, 1)
                for dt, mr, nv, vw, kc, pf, pack in
                [("float32", 4, 3, 8, 256, 0, 1), ("float32", 5, 2, 8, 64, 1, 0),
                 ("float64", 4, 3, 4, 256, 0, 1), ("float32", 6, 4, 16, 256, 1, 0),
                 ("float32", 8, 3, 16, 128, 1, 1)]
                for tb in (False, True)]


@pytest.mark.parametrize("spec", PACK_A_SPECS, ids=lambda s: f"{s.name}_vw{s.vw}")
def test_packed_transposed_a_matches_numpy_and_the_unpacked_bits(spec):
    """Packing Aᵀ changes where the micro-kernels read A, never a sum: the same bits as
    the unpacked variant, on 1, 2 and 3 threads (vw 16: the AVX-512 code path)."""
    from dataclasses import replace
    rng = np.random.default_rng(11)
    for m, n, k in PACK_A_SHAPES:
        a, b = _operands(rng, m, n, k, spec.dtype, True, spec.trans_b)
        ref = np.full((m, n), np.nan, spec.dtype)
        gemmcall.GemmPlan(a, b, ref, True, spec.trans_b, threads=1,
                          spec=replace(spec, pack_a=0))()
        _check(ref, a, b, True, spec.trans_b)
        for threads in (1, 2, 3):
            c = np.full((m, n), np.nan, spec.dtype)
            gemmcall.GemmPlan(a, b, c, True, spec.trans_b, threads=threads, spec=spec)()
            assert np.array_equal(c, ref), (spec.name, m, n, k, threads)
        c0 = rng.standard_normal((m, n)).astype(spec.dtype)
        c = c0.copy()
        gemmcall.GemmPlan(a, b, c, True, spec.trans_b, accumulate=True, threads=2,
                          spec=spec)()
        _check(c, a, b, True, spec.trans_b, extra=c0.astype(np.float64))


GROUP_SPECS = [G.GemmSpec(dt, ta, False, mr, nv, vw, kc, 0, 1, pa)
               for dt, mr, nv, vw, kc in [("float32", 4, 3, 8, 256), ("float64", 4, 3, 4, 128),
                                          ("float32", 6, 4, 16, 256)]
               for ta, pa in ((False, 0), (True, 0), (True, 1))]


@pytest.mark.parametrize("spec", GROUP_SPECS, ids=lambda s: f"{s.name}_vw{s.vw}")
def test_group_packed_b_matches_the_unpacked_bits(spec):
    """A non-transposed B is packed a group of panels at a time (``gemm_pack.pack_group``:
    4 of AVX2's 24-float panels, 2 of AVX-512's 64) and the panels after the last whole
    group one by one: only where B is read changes, so the bits are the unpacked
    variant's, on 1, 2 and 3 threads (whose column chunks end between groups)."""
    from dataclasses import replace

    from graphc.backends.llvm.codegen.gemm_pack import pack_group
    assert pack_group(spec) > 1
    rng = np.random.default_rng(12)
    span = pack_group(spec) * spec.nr
    for m, n, k in [(37, 2 * span + spec.nr + 7, 300), (64, span, 2 * spec.kc + 1),
                    (17, span + spec.vw, 40), (129, 3 * span - 1, 129)]:
        a, b = _operands(rng, m, n, k, spec.dtype, spec.trans_a, False)
        ref = np.full((m, n), np.nan, spec.dtype)
        gemmcall.GemmPlan(a, b, ref, spec.trans_a, False, threads=1,
                          spec=replace(spec, pack=0))()
        _check(ref, a, b, spec.trans_a, False)
        for threads in (1, 2, 3):
            c = np.full((m, n), np.nan, spec.dtype)
            plan = gemmcall.GemmPlan(a, b, c, spec.trans_a, False, threads=threads, spec=spec)
            for _ in range(2):
                plan()
                assert np.array_equal(c, ref), (spec.name, m, n, k, threads)


def test_packed_transposed_a_partitions_by_rows():
    """Chunks of a packed Aᵀ are row ranges (each packs its rows once and runs every
    panel); without packing, the same product is split by columns."""
    spec = G.GemmSpec("float32", True, False, 4, 3, 8, 256, 0, 1, 1)
    from dataclasses import replace
    assert GP.partition(784, 512, 128, False, spec, 8)[1] is False
    assert GP.partition(784, 512, 128, False, replace(spec, pack_a=0), 8)[1] is True
    assert GP.partition(784, 512, 128, True, spec, 8)[1] is True     # Bᵀ: packed per panel


def test_partition_keeps_enough_accumulators():
    """A 3-vector AVX2 tile is not re-tiled to 2 vectors (8 accumulators) for column
    chunks: the chunks are whole panels instead; AVX-512's 8x3 still becomes 8x2."""
    avx2 = G.GemmSpec("float32", False, False, 4, 3, 8, 256, 0, 1)
    parts, by_cols, units, width, spec = GP.partition(512, 512, 512, False, avx2, 8)
    assert by_cols and spec == avx2 and width == avx2.nr and units == -(-512 // avx2.nr)
    avx512 = G.GemmSpec("float32", False, False, 8, 3, 16, 256, 1, 0)
    assert GP.partition(128, 784, 512, False, avx512, 8)[4].nv == 2


def test_packed_transposed_a_row_chunks_keep_enough_rows():
    """Every row chunk of a packed Aᵀ packs all of B again: the MLP's weight gradients
    (784 and 512 rows) get 2 and 1 chunks per thread of 2, not 4 of 98 and 64 rows;
    tall products still get 4 per thread, one thread one chunk."""
    spec = G.GemmSpec("float32", True, False, 4, 3, 8, 256, 0, 1, 1)
    assert GP.partition(784, 512, 128, False, spec, 8)[:2] == (4, False)
    assert GP.partition(512, 256, 128, False, spec, 8)[:2] == (2, False)
    assert GP.partition(4096, 512, 128, False, spec, 8)[:2] == (8, False)
    assert GP.partition(784, 512, 128, False, spec, 1)[0] == 1
    for threads in (2, 3, 4):
        for m in (24, 100, 383, 384, 785, 5000):
            got = GP.packed_row_parts(m, 4 * threads, threads)
            assert got % threads == 0 and threads <= got <= 4 * threads
            assert got == threads or m // got >= GP.MIN_PACKED_ROWS


def _busiest(units, parts, threads, last=1.0):
    """Work of the busiest of ``threads`` threads taking chunk c when c % threads."""
    load = [0.0] * threads
    for c in range(parts):
        lo, hi = units * c // parts, units * (c + 1) // parts
        load[c % threads] += hi - lo - (1 - last if hi == units else 0)
    return max(load)


def test_whole_panel_chunks_balance_the_threads():
    """22 whole panels (512 columns of 4x3v) in 8 chunks leave one of two threads 12 of
    them; the partition takes 6 chunks (11 each).  For any panel count the chosen split
    never loads the busiest thread more than the most chunks would, and keeps at least
    one chunk per thread."""
    avx2 = G.GemmSpec("float32", False, False, 4, 3, 8, 256, 0, 1)
    parts, by_cols, units, width, _ = GP.partition(512, 512, 512, False, avx2, 8)
    assert (parts, by_cols, units, width) == (6, True, 22, 24)
    assert _busiest(22, 6, 2, 8 / 24) == 11 < _busiest(22, 8, 2, 8 / 24)
    for threads in (2, 3, 4):
        for units in range(1, 60):
            most = min(units, 4 * threads)
            for last in (1.0, 0.5):
                got = GP.balanced_parts(units, most, threads, last)
                assert min(most, threads) <= got <= most
                assert (_busiest(units, got, threads, last)
                        <= _busiest(units, most, threads, last) + 1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta,tb", VARIANTS)
def test_accumulate(dtype, ta, tb):
    rng = np.random.default_rng(1)
    m, n, k = 29, 70, 300
    a, b = _operands(rng, m, n, k, dtype, ta, tb)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    c = c0.copy()
    gemmcall.gemm(a, b, trans_a=ta, trans_b=tb, out=c, accumulate=True, threads=1)
    _check(c, a, b, ta, tb, extra=c0.astype(np.float64))


@pytest.mark.parametrize("ta,tb", VARIANTS)
@pytest.mark.parametrize("m,n,k", [(64, 64, 64), (128, 784, 512), (37, 101, 97),
                                   (200, 33, 1000), (7, 500, 20),
                                   # 22 whole panels in balanced chunks; packed-Aᵀ row chunks
                                   (128, 512, 784), (784, 512, 128)])
def test_thread_count_does_not_change_bits(ta, tb, m, n, k):
    rng = np.random.default_rng(7)
    a, b = _operands(rng, m, n, k, "float32", ta, tb)
    one = gemmcall.gemm(a, b, ta, tb, threads=1)
    for t in (2, 3):
        out = np.empty_like(one)
        plan = gemmcall.GemmPlan(a, b, out, ta, tb, threads=t)
        for _ in range(2):      # a second call must not see the first one's state
            out.fill(np.nan)
            assert np.array_equal(plan(), one)


@pytest.mark.parametrize("ta,tb", VARIANTS)
@pytest.mark.parametrize("m,n,k", [(512, 512, 512), (128, 784, 512), (512, 256, 128),
                                   (784, 512, 128), (37, 101, 97), (64, 64, 64)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_plan_runs_the_steps_split(ta, tb, m, n, k, threads):
    """GemmPlan (benchmarks, the tuner, these tests) cuts a product into the chunks and
    tile a compiled step gives it: what bench/gemm.py measures is what a step runs."""
    import graphc as gc
    from graphc.backends.llvm import lower
    rng = np.random.default_rng(3)
    a, b = _operands(rng, m, n, k, "float32", ta, tb)

    def f(a, b):
        return (a.T if ta else a) @ (b.T if tb else b)
    plan, _ = lower(gc.trace(f, a, b), threads=threads)
    gk = [kk for kk in plan.kernels if getattr(kk, "gemm", None) is not None]
    assert len(gk) == 1
    g, gp = gk[0].gemm, gk[0].gpart
    if g.transposed or (g.trans_a, g.trans_b) != (ta, tb):
        pytest.skip("the layout pass computes this product another way")
    out = np.empty((m, n), np.float32)
    p = gemmcall.GemmPlan(a, b, out, ta, tb, threads=threads)
    assert p.partition == (gp.parts, gp.by_cols, gp.units, gp.width)
    assert p.spec == gp.spec
    p()
    _check(out, a, b, ta, tb)


def _raw_kernel(spec):
    """The range kernel ``spec.name`` alone, callable with explicit strides and range."""
    module = ir.Module(name="raw_" + spec.name)
    G.emit_gemm(module, spec)
    cm = jit.compile_module(module)
    i64 = ctypes.c_int64
    fn = cm.cfunc(spec.name, None, *([ctypes.c_void_p] * 3 + [i64] * 8 + [ctypes.c_int32]))
    return cm, fn


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta,tb", VARIANTS)
def test_leading_dimensions_and_ranges(dtype, ta, tb):
    """Operands embedded in wider arrays (lda/ldb/ldc > logical width); only the
    requested range of C is written, nothing outside it (guard values survive)."""
    rng = np.random.default_rng(3)
    m, n, k = 23, 45, 37
    a, b = _operands(rng, m, n, k, dtype, ta, tb)
    abig = np.full((a.shape[0], a.shape[1] + 5), np.nan, dtype)
    abig[:, :a.shape[1]] = a
    bbig = np.full((b.shape[0], b.shape[1] + 3), np.nan, dtype)
    bbig[:, :b.shape[1]] = b
    guard = -7.0
    cbig = np.full((m + 2, n + 9), guard, dtype)
    spec = G.default_spec(dtype, ta, tb)
    _cm, fn = _raw_kernel(spec)
    i0, i1, j0, j1 = 3, 20, 5, 44
    cview = cbig[1:, :]  # row 0 of cbig stays a guard row
    fn(abig.ctypes.data, bbig.ctypes.data, cview.ctypes.data, k, abig.shape[1],
       bbig.shape[1], cbig.shape[1], i0, i1, j0, j1, 0)
    exact = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    got = cview[i0:i1, j0:j1].astype(np.float64)
    tol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(got, exact[i0:i1, j0:j1], rtol=tol, atol=tol)
    mask = np.ones(cbig.shape, bool)
    mask[1 + i0:1 + i1, j0:j1] = False
    assert np.all(cbig[mask] == guard)


def test_empty_range_and_k0():
    spec = G.default_spec("float32")
    _cm, fn = _raw_kernel(spec)
    a = np.ones((4, 4), np.float32)
    c = np.full((4, 4), 5.0, np.float32)
    fn(a.ctypes.data, a.ctypes.data, c.ctypes.data, 4, 4, 4, 4, 2, 2, 0, 4, 0)
    assert np.all(c == 5.0)
    fn(a.ctypes.data, a.ctypes.data, c.ctypes.data, 0, 4, 4, 4, 0, 4, 0, 4, 0)
    assert np.all(c == 0.0)  # K == 0 with beta 0 writes zeros


def test_bad_inputs_raise():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError):
        gemmcall.gemm(a, np.ones((5, 2), np.float32))
    with pytest.raises(TypeError):
        gemmcall.gemm(a, np.ones((4, 2), np.float64))
    with pytest.raises(TypeError):
        gemmcall.gemm(a.astype(np.int32), np.ones((4, 2), np.int32))


def test_host_assembly_uses_vector_fma():
    t = jit.host_target()
    if t.generic or not (t.has_feature("avx512f") or t.has_feature("avx2")):
        pytest.skip("host lacks avx512f/avx2")
    spec = G.default_spec("float32")
    asm = jit.assembly(gemmcall.build_module(spec))
    reg = "zmm" if t.has_feature("avx512f") else "ymm"
    assert reg in asm
    fmas = [line for line in asm.splitlines() if "vfmadd" in line and reg in line]
    assert len(fmas) >= spec.mr * spec.nv  # the main kernel's MR×NV FMAs, unrolled
    assert "fmaf" not in asm  # no libm calls


def test_generic_target_still_correct(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_LLVM_GENERIC", "1")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(5)
    a, b = _operands(rng, 9, 21, 17, "float32", False, True)
    c = gemmcall.gemm(a, b, trans_b=True, threads=1)
    _check(c, a, b, False, True)


# --------------------------------------------------------------------------- one native step


def _step_module(m, n, k, threads):
    """step(tid, T, argv, barrier): C = A·B ; barrier ; E = Cᵀ·D ; barrier ; F = E·Aᵀ.

    The shape of the full backend: every kernel runs its share of the fixed partition's
    chunks (:func:`..codegen.gemm_parallel.partition`, as many chunks as a step on ``threads``
    threads cuts it into) and dependent kernels meet at the barrier, all inside one
    native call.
    """
    module = ir.Module(name="test_step")
    module.triple = jit.host_target().triple
    barrier = P.emit_barrier(module)
    i64 = ir.IntType(64)

    def par(ta, tb, mm, nn_, kk):
        spec = G.shape_spec(G.default_spec("float32", ta, tb), mm, nn_)
        parts, by_cols, units, width, spec = GP.partition(mm, nn_, kk, tb, spec,
                                                         GP.chunks_for(threads))
        return (GP.emit_gemm_parallel(module, spec),
                [i64(parts), i64(int(by_cols)), i64(units), i64(width)])
    nn, pnn = par(False, False, m, n, k)
    tn, ptn = par(True, False, n, n, m)
    nt, pnt = par(False, True, n, m, n)
    fn = ir.Function(module, P.JOB_TYPE, "step")
    tid, nth, argv, bar = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    v = [b.load(b.gep(argv, [i64(i)], source_etype=i64), typ=i64) for i in range(9)]
    A, B, C, D, E, F = (b.inttoptr(x, ir.PointerType()) for x in v[:6])
    m, n, k = v[6], v[7], v[8]
    zero = ir.IntType(32)(0)
    # C[m,n] = A[m,k]·B[k,n]
    b.call(nn, [tid, nth, A, B, C, m, n, k, k, n, n, zero] + pnn)
    b.call(barrier, [bar, nth])
    # E[n,n] = Cᵀ·D with D[m,n]
    b.call(tn, [tid, nth, C, D, E, n, n, m, n, n, n, zero] + ptn)
    b.call(barrier, [bar, nth])
    # F[n,m] = E[n,n]·Cᵀ  (C is m×n, so op(B) = Cᵀ is n×m)
    b.call(nt, [tid, nth, E, C, F, n, m, n, n, n, m, zero] + pnt)
    b.call(barrier, [bar, nth])
    b.ret_void()
    return module


@pytest.mark.parametrize("m,n,k", [(96, 130, 70), (5, 7, 3), (128, 256, 784)])
def test_step_with_barriers_is_identical_for_1_and_2_threads(m, n, k):
    rng = np.random.default_rng(11)
    A = rng.standard_normal((m, k)).astype(np.float32)
    B = rng.standard_normal((k, n)).astype(np.float32)
    D = rng.standard_normal((m, n)).astype(np.float32)
    results = {}
    for threads in (1, 2, 3):
        cm = jit.compile_module(_step_module(m, n, k, threads))
        addr = cm.get_function_address("step")
        C = np.zeros((m, n), np.float32)
        E = np.zeros((n, n), np.float32)
        F = np.zeros((n, m), np.float32)
        argv = np.array([x.ctypes.data for x in (A, B, C, D, E, F)] + [m, n, k], np.int64)
        launch = P.Launcher(addr, threads).bind(argv.ctypes.data)
        for _ in range(3):  # repeated launches reuse the pool and the barrier
            launch()
        results[threads] = (C.copy(), E.copy(), F.copy())
    for threads in (2, 3):
        for x, y in zip(results[1], results[threads]):
            assert np.array_equal(x, y)
    C, E, F = (x.astype(np.float64) for x in results[1])
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(E, C.T @ D, rtol=1e-4, atol=1e-2 * np.abs(C.T @ D).max())
    np.testing.assert_allclose(F, E @ C.T, rtol=1e-4, atol=1e-3 * np.abs(E @ C.T).max())


def test_barrier_orders_phases():
    """Each of 2000 phases reads a neighbour's value from the previous phase: any
    barrier that let a thread run ahead would leave a count below the phase number."""
    phases = 2000
    module = ir.Module(name="test_barrier")
    module.triple = jit.host_target().triple
    barrier = P.emit_barrier(module)
    fn = ir.Function(module, P.JOB_TYPE, "phases")
    tid, nth, buf, bar = fn.args
    i64 = ir.IntType(64)
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    out = fn.append_basic_block("out")
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    p = b.phi(i64)
    p.add_incoming(i64(1), entry)
    nb = b.srem(b.add(tid, i64(1)), nth)
    prev = b.load(b.gep(buf, [b.add(b.mul(b.sub(p, i64(1)), nth), nb)], source_etype=i64),
                  typ=i64)
    b.store(b.add(prev, i64(1)), b.gep(buf, [b.add(b.mul(p, nth), tid)], source_etype=i64))
    b.call(barrier, [bar, nth])
    pn = b.add(p, i64(1))
    p.add_incoming(pn, loop)
    b.cbranch(b.icmp_signed("<=", pn, i64(phases)), loop, out)
    b.position_at_end(out)
    b.ret_void()
    cm = jit.compile_module(module)
    for threads in (1, 2, 3):
        buf = np.zeros((phases + 1) * threads, np.int64)
        P.Launcher(cm.get_function_address("phases"), threads)(buf.ctypes.data)
        assert np.array_equal(buf[-threads:], np.full(threads, phases))


def test_num_threads_env(monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "3")
    assert P.num_threads() == 3
    assert P.num_threads(1) == 1
    monkeypatch.delenv("GRAPHC_NUM_THREADS")
    assert P.num_threads() >= 1
    with pytest.raises(ValueError):
        P.num_threads(0)


def test_threads_work_after_fork():
    """A forked child has no worker threads: it must build its own pool, not hang."""
    import os
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    rng = np.random.default_rng(2)
    a, b = _operands(rng, 64, 256, 128, "float32", False, False)
    want = gemmcall.gemm(a, b, threads=2)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # child: exit code 0 only if the result is right
        ok = np.array_equal(gemmcall.gemm(a, b, threads=2), want)
        os._exit(0 if ok else 1)
    import signal
    import time
    deadline = time.monotonic() + 60
    while True:  # a hung child (waiting for workers it does not have) fails, not hangs
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("GEMM on 2 threads hung in a forked child")
        time.sleep(0.01)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_workers_do_not_inherit_a_small_thread_stack():
    """The GEMM drivers keep packing buffers on the stack (a packed Aᵀ: 256 KiB), so the
    worker threads get a stack of their own size, whatever ``threading.stack_size`` the
    program set: with 64 KiB inherited, the first packed product on a worker crashed."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import threading
        import numpy as np
        threading.stack_size(64 * 1024)
        from graphc.backends.llvm.runtime import gemmcall
        rng = np.random.default_rng(0)
        a = rng.standard_normal((128, 512)).astype(np.float32)
        b = rng.standard_normal((128, 256)).astype(np.float32)
        for _ in range(20):
            c = gemmcall.gemm(a, b, trans_a=True, threads=2)
        assert np.allclose(c, a.T @ b, rtol=1e-4, atol=1e-3)
        assert threading.stack_size() == 64 * 1024      # the program's setting is back
        print("ok")
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def test_a_caller_thread_with_a_small_stack_runs_packed_products():
    """Thread 0 of every launch is the caller's thread, whose stack the program chose:
    a thread made with ``threading.stack_size(128 KiB)`` (musl's default) calling a
    packed ``tn`` product (256 KiB of packed Aᵀ on the driver's stack) crashed the
    interpreter with SIGSEGV.  The launcher now runs such a caller's share on a thread
    of its own with a big stack; the result is the same bits."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import threading
        import numpy as np
        from dataclasses import replace
        from graphc.backends.llvm.codegen.gemm import default_spec
        from graphc.backends.llvm.runtime import gemmcall
        rng = np.random.default_rng(0)
        a = rng.standard_normal((784, 128)).astype(np.float32)
        b = rng.standard_normal((784, 512)).astype(np.float32)
        spec = replace(default_spec("float32", True, False), pack_a=1, pack=1)
        want = {t: gemmcall.GemmPlan(a, b, np.empty((128, 512), np.float32), True,
                                     threads=t, spec=spec)().copy() for t in (1, 2)}
        got = {}
        def small():
            for t in (1, 2):
                for _ in range(3):
                    got[t] = gemmcall.GemmPlan(a, b, np.empty((128, 512), np.float32),
                                               True, threads=t, spec=spec)().copy()
        threading.stack_size(128 * 1024)
        th = threading.Thread(target=small)
        th.start()
        th.join()
        assert all(np.array_equal(got[t], want[t]) for t in (1, 2)), "bits differ"
        assert np.allclose(want[1], a.T @ b, rtol=1e-4, atol=1e-3)
        print("ok")
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def test_non_2d_and_non_contiguous():
    with pytest.raises(ValueError):
        gemmcall.gemm(np.ones(3, np.float32), np.ones((3, 2), np.float32))
    rng = np.random.default_rng(4)
    a = rng.standard_normal((40, 30)).astype(np.float32)[::2, ::3]  # strided view
    b = rng.standard_normal((10, 7)).astype(np.float32)
    _check(gemmcall.gemm(a, b, threads=1), np.ascontiguousarray(a), b, False, False)
