"""Small-K products fused with their epilogue in register tiles (``smallk.py``): the
weight gradient of a small batch and the optimizer update computed on the tile.

Bit-identical to the element-wise form and to the GEMM + epilogue path, for sizes 1,
primes and non-multiples of the vector width and the tile, float32 and float64, any
thread count; the numpy backend agrees within rounding."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends import numpy_backend
from graphc.backends.llvm.plan import make_kernels
from graphc.backends.llvm.codegen import smallk
from graphc.backends.llvm.plan import partition
from graphc.backends.llvm.plan.kernels import GemmKernel, SmallKKernel

# (M, N, K) of op(A)·B with op(A) = xᵀ (x is K×M): M, N around the tile and vector sizes
SHAPES = [(1, 1, 1), (1, 17, 3), (5, 1, 16), (7, 13, 5), (17, 33, 16), (70, 45, 16),
          (4, 64, 32), (13, 130, 7), (33, 65, 2), (128, 10, 16), (9, 200, 31)]


def _arrays(rng, m, n, k, dtype):
    x = rng.standard_normal((k, m)).astype(dtype)
    g = rng.standard_normal((k, n)).astype(dtype)
    w = rng.standard_normal((m, n)).astype(dtype)
    return x, g, w


def _tiled(graph, threads):
    """Number of kernels the register-tile path emits for ``graph``."""
    p, _ = llvm_backend.lower(graph, threads=threads)
    return sum(isinstance(k, SmallKKernel) and smallk.eligible(k) for k in p.kernels)


def _gemm_tile_rows(monkeypatch, graph):
    """Rows of the micro-kernel tile the GEMM path would give ``graph``'s product here."""
    with monkeypatch.context() as m:
        m.setattr(make_kernels, "SMALLK_MAX", 0)
        m.setattr(make_kernels, "FEW_ROWS_MAX_K", 0)
        p, _ = llvm_backend.lower(graph, threads=1)
    (gemm,) = [k.gemm for k in p.kernels if isinstance(k, GemmKernel)]
    return partition.gemm_spec(gemm).mr


def _variant(m, tag):
    """Compile-cache keys cover the backend's sources, not its module switches: give a
    switched variant keys of its own."""
    base = llvm_backend.source_digest()
    m.setattr(llvm_backend, "source_digest", lambda: f"{base}/{tag}")


def _forms(monkeypatch, graph, args, threads=(1, 2, 3, 5)):
    """Results of the tiled form on each thread count, the element-wise form and the
    GEMM + epilogue form (one thread)."""
    tiled = {t: llvm_backend.compile(graph, threads=t)(*[a.copy() for a in args])
             for t in threads}
    with monkeypatch.context() as m:
        m.setattr(smallk, "ENABLED", False)
        _variant(m, "elementwise")
        assert _tiled(graph, 1) == 0
        elementwise = llvm_backend.compile(graph, threads=1)(*[a.copy() for a in args])
    with monkeypatch.context() as m:
        m.setattr(make_kernels, "SMALLK_MAX", 0)
        m.setattr(make_kernels, "FEW_ROWS_MAX_K", 0)
        _variant(m, "gemm")
        gemm = llvm_backend.compile(graph, threads=1)(*[a.copy() for a in args])
    return tiled, elementwise, gemm


def _same(results, ref):
    assert len(results) == len(ref)
    for a, b in zip(results, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_sgd_update_bit_identical(monkeypatch, dtype, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    x, g, w = _arrays(rng, m, n, k, dtype)
    graph = gc.trace(lambda x, g, w: w - 0.01 * (x.T @ g), x, g, w)
    assert _tiled(graph, 1) == 1
    tiled, elementwise, gemm = _forms(monkeypatch, graph, (x, g, w))
    for res in tiled.values():
        _same(res, elementwise)
        _same(res, gemm)
    ref = numpy_backend.run(graph, [x, g, w])[0]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(tiled[1][0], ref, rtol=tol, atol=tol * (1 + k))


def test_epilogue_ops_and_stored_product(monkeypatch):
    """Several stores (the product read elsewhere too), a bool mask, compares, where,
    division, sqrt, maximum and broadcast operands, all on the tile."""
    rng = np.random.default_rng(3)
    m, n, k = 37, 50, 11
    x, g, w = _arrays(rng, m, n, k, np.float32)
    v = np.abs(rng.standard_normal((m, n))).astype(np.float32)
    mask = rng.standard_normal((m, n)) > 0
    bias = rng.standard_normal(n).astype(np.float32)
    col = rng.standard_normal((m, 1)).astype(np.float32)

    def f(x, g, w, v, mask, bias, col):
        p = x.T @ g
        u = gc.where(mask, p * 0.5, -p) + bias
        s = gc.sqrt(v + 1.0) + col
        out = gc.maximum(w - u / s, -w)
        return out, (u > 0.1), p.sum(axis=0)
    args = (x, g, w, v, mask, bias, col)
    graph = gc.trace(f, *args)
    assert _tiled(graph, 1) == 1
    tiled, elementwise, gemm = _forms(monkeypatch, graph, args)
    for res in tiled.values():
        _same(res, elementwise)
        _same(res, gemm)
    ref = numpy_backend.run(graph, list(args))
    np.testing.assert_allclose(tiled[1][0], ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tiled[1][1][np.abs(ref[0]) > 1e-3],
                                  ref[1][np.abs(ref[0]) > 1e-3])


@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_training_step_bit_identical(monkeypatch, opt):
    """A small MLP step at batch 16 (weight gradients tiled, updates in place)."""
    rng = np.random.default_rng(11)
    params = {"w0": rng.standard_normal((45, 37)).astype(np.float32) * 0.2,
              "b0": np.zeros(37, np.float32),
              "w1": rng.standard_normal((37, 10)).astype(np.float32) * 0.2}
    x = rng.standard_normal((16, 45)).astype(np.float32)
    y = rng.integers(0, 10, 16)

    def loss(p, x, y):
        return gc.nn.cross_entropy(gc.relu(x @ p["w0"] + p["b0"]) @ p["w1"], y)
    optim = gc.optim.SGD(0.05, momentum=0.9) if opt == "momentum" else gc.optim.Adam(1e-2)
    step = gc.compile_step(loss, params, optim, (x, y), backend="numpy")
    assert _tiled(step.graph, 1) >= 1
    args = (*step._p_leaves, x, y, *step.opt_state.values())

    def run(fn):
        arrs = [np.array(a) for a in args]
        losses = [fn(*arrs)[0] for _ in range(3)]
        return losses + arrs
    tiled = {t: run(llvm_backend.compile(step.graph, threads=t)) for t in (1, 2, 3)}
    with monkeypatch.context() as m:
        m.setattr(smallk, "ENABLED", False)
        _variant(m, "elementwise")
        elementwise = run(llvm_backend.compile(step.graph, threads=1))
    for res in tiled.values():
        _same(res, elementwise)


def test_epilogue_without_vector_form_falls_back(monkeypatch):
    """An epilogue op with no vector form here (tanh) keeps the element-wise loop."""
    rng = np.random.default_rng(4)
    x, g, w = _arrays(rng, 20, 30, 8, np.float32)
    graph = gc.trace(lambda x, g, w: w - gc.tanh(x.T @ g), x, g, w)
    p, _ = llvm_backend.lower(graph, threads=1)
    ks = [k for k in p.kernels if isinstance(k, SmallKKernel)]
    assert ks and not any(smallk.eligible(k) for k in ks)
    tiled, elementwise, gemm = _forms(monkeypatch, graph, (x, g, w), threads=(1, 2))
    for res in tiled.values():
        _same(res, elementwise)
        _same(res, gemm)


@pytest.mark.parametrize("tile", [(1, 1), (3, 2), (8, 2)])
@pytest.mark.parametrize("reverse", [False, True])
def test_tile_shape_and_order_do_not_change_bits(monkeypatch, tile, reverse):
    rng = np.random.default_rng(9)
    x, g, w = _arrays(rng, 29, 70, 16, np.float32)
    graph = gc.trace(lambda x, g, w: w - 0.01 * (x.T @ g), x, g, w)
    ref = llvm_backend.compile(graph, threads=1)(x, g, w)
    monkeypatch.setattr(smallk, "TILE", tile)
    monkeypatch.setattr(smallk, "REVERSE", reverse)
    _variant(monkeypatch, f"{tile}/{reverse}")
    for t in (1, 2):
        _same(llvm_backend.compile(graph, threads=t)(x, g, w), ref)


@pytest.mark.parametrize("trans_a", [True, False], ids=["xT@g", "x@g"])
@pytest.mark.parametrize("m,n,k", [(150, 640, 16), (7, 13, 5), (33, 65, 2)])
def test_standalone_small_k_product(monkeypatch, trans_a, m, n, k):
    """A product with small K and no epilogue (a conv layer's patch-matrix gradient
    ``wᵀ @ g``) runs on the register tiles too: the same bits as the GEMM kernel."""
    rng = np.random.default_rng(m + n + k)
    x = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    g = rng.standard_normal((k, n)).astype(np.float32)
    graph = gc.trace((lambda x, g: x.T @ g) if trans_a else (lambda x, g: x @ g), x, g)
    assert _tiled(graph, 1) == 1
    tiled, elementwise, gemm = _forms(monkeypatch, graph, (x, g), threads=(1, 2, 3))
    for res in tiled.values():
        _same(res, elementwise)
        _same(res, gemm)
    ref = numpy_backend.run(graph, [x, g])[0]
    np.testing.assert_allclose(tiled[1][0], ref, rtol=1e-5, atol=1e-5 * (1 + k))


@pytest.mark.parametrize("m,k", [(16, 150), (10, 40), (4, 256)])
def test_few_rows_product_on_register_tiles(monkeypatch, m, k):
    """A product of few rows and many columns with its epilogue (a conv layer's forward
    ``w @ cols + b``): the register tiles leave no one-row edge; the same bits as the
    GEMM kernel on any thread count."""
    rng = np.random.default_rng(m + k)
    w = rng.standard_normal((m, k)).astype(np.float32)
    cols = rng.standard_normal((k, 700)).astype(np.float32)
    b = rng.standard_normal((m, 1)).astype(np.float32)
    graph = gc.trace(lambda w, cols, b: gc.relu(w @ cols + b), w, cols, b)
    # the register tiles take the product when they leave fewer one-row edges than the
    # host's micro-kernel tile (6 rows on AVX2, 8 on AVX-512 for these shapes)
    mr = _gemm_tile_rows(monkeypatch, graph)
    assert _tiled(graph, 1) == (1 if m % 4 < m % mr else 0)
    tiled, elementwise, gemm = _forms(monkeypatch, graph, (w, cols, b), threads=(1, 2, 3))
    for res in tiled.values():
        _same(res, elementwise)
        _same(res, gemm)
    ref = numpy_backend.run(graph, [w, cols, b])[0]
    np.testing.assert_allclose(tiled[1][0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("masks_free", [False, True], ids=["unmasked-whole-panels", "all-masked"])
@pytest.mark.parametrize("m,n,k", [(29, 70, 16), (64, 48, 16), (7, 13, 5)])
def test_whole_panel_form_does_not_change_bits(monkeypatch, masks_free, m, n, k):
    """Both forms of a tile on any host: whole panels unmasked with masked edges (what a
    CPU without mask registers gets) and every panel masked (AVX-512's); the same bits."""
    rng = np.random.default_rng(m + n + k)
    x, g, w = _arrays(rng, m, n, k, np.float32)
    graph = gc.trace(lambda x, g, w: w - 0.01 * (x.T @ g), x, g, w)
    with monkeypatch.context() as mp:
        mp.setattr(smallk, "ENABLED", False)
        _variant(mp, "elementwise")
        ref = llvm_backend.compile(graph, threads=1)(x, g, w)
    monkeypatch.setattr(smallk, "MASKS_FREE", masks_free)
    _variant(monkeypatch, f"masks_free={masks_free}")
    assert _tiled(graph, 1) == 1
    for t in (1, 2):
        _same(llvm_backend.compile(graph, threads=t)(x, g, w), ref)
