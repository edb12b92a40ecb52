"""Long-K products with a narrow output as dot products along K (``codegen/dot.py``): a
conv layer's weight gradient ``g @ colsᵀ``.

Against numpy (float32 and float64) over sizes around the register tile and the vector
width, K with and without a remainder vector and across K blocks, a product read
transposed (computed as b @ aᵀ); bit-identical on 1, 2, 3 and 5 threads; LeNet's conv1 weight
gradient takes this path in a training step and matches the numpy backend."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends import numpy_backend
from graphc.backends.llvm.codegen import dot
from graphc.backends.llvm.plan.kernels import DotKernel

# (M, N, K): one side narrower than a vector (or both), K around vectors and KBLOCK
SHAPES = [(1, 1, 1), (3, 2, 17), (6, 25, 2500), (25, 6, 1031), (1, 40, 64), (15, 7, 33),
          (7, 15, 16), (2, 130, 5), (9, 9, 2049)]


def _variant(m, tag):
    """Compile-cache keys cover the backend's sources, not its module switches."""
    base = llvm_backend.source_digest()
    m.setattr(llvm_backend, "source_digest", lambda: f"{base}/{tag}")


def _dots(graph, threads=1):
    p, _ = llvm_backend.lower(graph, threads=threads)
    return sum(isinstance(k, DotKernel) for k in p.kernels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("m,n,k", SHAPES, ids=str)
def test_dot_products_match_numpy_on_any_thread_count(monkeypatch, m, n, k, dtype):
    monkeypatch.setattr(dot, "MIN_K", 1)
    monkeypatch.setattr(dot, "KBLOCK", 64)      # several K blocks at small K
    _variant(monkeypatch, "dot-small")
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype)
    graph = gc.trace(lambda a, b: (a @ b.T, gc.transpose(a @ b.T) * 2.0), a, b)
    if min(m, n) >= dot.vector_width(dtype):
        pytest.skip("not narrow on this CPU")
    assert _dots(graph) == 2 or k == 1      # (1x1 operands are not 'transposed')
    want = numpy_backend.run(graph, [a, b])
    results = []
    for t in (1, 2, 3, 5):
        fn = llvm_backend.compile(graph, threads=t)
        fn(a, b)
        got = fn(a, b)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.sqrt(k))
        results.append(got)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            np.testing.assert_array_equal(x, y)    # thread count never changes a bit


def test_wide_outputs_and_short_k_stay_on_the_gemm_kernel():
    rng = np.random.default_rng(0)
    vw = dot.vector_width(np.float32)
    for m, n, k in ((vw, vw, 4096), (6, 25, 100)):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((n, k)).astype(np.float32)
        assert _dots(gc.trace(lambda a, b: a @ b.T, a, b)) == 0


def test_lenet_conv1_weight_gradient_runs_as_dot_products():
    """conv 6@5x5 pad 2 over 64 images of 28x28: dW = g (6 x 50176) @ colsᵀ (K 50176)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    w = (rng.standard_normal((6, 1, 5, 5)) * 0.2).astype(np.float32)
    b = np.zeros(6, np.float32)

    def loss(w, b, x):
        return gc.sum(gc.relu(gc.nn.conv2d(x, w, b, padding=2)) ** 2)
    graph = gc.trace(lambda w, b, x: gc.grad(loss, argnums=(0, 1))(w, b, x), w, b, x)
    assert _dots(graph) == 1 and _dots(graph, threads=2) == 1
    want = numpy_backend.run(graph, [w, b, x])
    outs = []
    for t in (1, 2, 3):
        got = llvm_backend.compile(graph, threads=t)(w, b, x)
        for g, ref in zip(got, want):
            np.testing.assert_allclose(g, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())
        outs.append(got)
    for other in outs[1:]:
        for p, q in zip(outs[0], other):
            np.testing.assert_array_equal(p, q)


def test_tiles_fit_the_registers():
    for regs in (16, 32):
        for np_, nq in ((25, 6), (1, 1), (100, 3), (8, 8), (2, 15)):
            p, q = dot.tile(np_, nq, regs)
            assert 1 <= p <= np_ and 1 <= q <= nq and p * q + p + q <= regs - 2
