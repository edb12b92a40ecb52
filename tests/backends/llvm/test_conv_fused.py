"""Patch matrices that are never stored (``codegen/conv_fused.py``): ``col2im`` of a conv
layer's patch-gradient product, and an ``im2col`` read only by its forward product,
run block by block with the product in one kernel.

Against numpy, bit-identical to the unfused kernels and across 1, 2 and 3 threads, over
stride, padding, dilation, odd sizes, a batch of one, small-K and GEMM products, bias
epilogues, float32 and float64; blocks of one image and of several; the arena shrinks."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends import numpy_backend
from graphc.backends.llvm.codegen import conv_fused
from graphc.backends.llvm.plan.kernels import Col2imGemmKernel, Im2colGemmKernel

CASES = [
    # x shape, w shape, conv2d kwargs
    ((8, 1, 12, 12), (6, 1, 5, 5), {"padding": 2}),          # LeNet-like, K 25 (small K)
    ((5, 6, 9, 7), (16, 6, 3, 3), {}),                        # K 54: the GEMM kernel
    ((3, 5, 9, 7), (40, 5, 3, 3), {"padding": 1}),            # patch gradient K 40: GEMM
    ((2, 3, 8, 8), (4, 3, 3, 3), {"padding": 1, "dilation": 2}),
    ((5, 2, 7, 6), (3, 2, 2, 2), {"stride": 2}),              # col2im scatter: not fused
    ((1, 4, 5, 5), (2, 4, 3, 3), {}),                         # batch of one
]


def _variant(m, tag):
    """Compile-cache keys cover the backend's sources, not its module switches."""
    base = llvm_backend.source_digest()
    m.setattr(llvm_backend, "source_digest", lambda: f"{base}/{tag}")


def _fused(fn):
    return sorted(type(k).__name__ for k in fn.plan.kernels
                  if isinstance(k, (Col2imGemmKernel, Im2colGemmKernel)))


@pytest.mark.parametrize("block_bytes", [1, 1 << 18], ids=["1-image", "blocks"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("xs,ws,kw", CASES, ids=str)
def test_fused_conv_kernels_match_numpy_and_the_unfused_bits(monkeypatch, xs, ws, kw,
                                                             dtype, block_bytes):
    monkeypatch.setattr(conv_fused, "BLOCK_BYTES", block_bytes)
    _variant(monkeypatch, f"blocks{block_bytes}")
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    bias = rng.standard_normal(ws[0]).astype(dtype)

    def loss(x, w, bias):
        return gc.sum(gc.tanh(gc.nn.conv2d(x, w, bias, **kw)))
    graphs = {"forward": gc.trace(lambda x, w, bias: gc.relu(gc.nn.conv2d(x, w, bias, **kw)),
                                  x, w, bias),
              "grads": gc.trace(lambda x, w, bias: gc.grad(loss, argnums=(0, 1, 2))(x, w, bias),
                                x, w, bias)}
    stride1 = kw.get("stride", 1) == 1
    for name, graph in graphs.items():
        want = numpy_backend.run(graph, [x, w, bias])
        results = []
        for t in (1, 2, 3):
            fn = llvm_backend.compile(graph, threads=t)
            fn(x, w, bias)
            got = fn(x, w, bias)
            expect = ["Im2colGemmKernel"] if name == "forward" else \
                (["Col2imGemmKernel"] if stride1 else [])
            assert _fused(fn) == expect, name
            tol = 1e-4 if dtype == np.float32 else 1e-10
            for g, ref in zip(got, want):
                np.testing.assert_allclose(g, ref, rtol=tol, atol=tol * max(1, np.abs(ref).max()))
            results.append(got)
        with monkeypatch.context() as m:
            m.setattr(conv_fused, "ENABLED", False)
            _variant(m, f"unfused{block_bytes}")
            fn0 = llvm_backend.compile(graph, threads=1)
            assert _fused(fn0) == []
            unfused = fn0(x, w, bias)
        for other in results:
            for a, b in zip(other, unfused):
                np.testing.assert_array_equal(a, b)   # blocks, chunks, threads: same bits


def test_inference_forward_never_stores_the_patch_matrix(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    graph = gc.trace(lambda x, w: gc.nn.conv2d(x, w, padding=1), x, w)
    fused = llvm_backend.compile(graph, threads=1)
    with monkeypatch.context() as m:
        m.setattr(conv_fused, "ENABLED", False)
        _variant(m, "unfused-arena")
        unfused = llvm_backend.compile(graph, threads=1)
    patches = 27 * 16 * 16 * 16 * 4
    # the patch matrix's bytes, less one block's slot (at most BLOCK_BYTES)
    assert fused.arena_bytes <= unfused.arena_bytes - patches + conv_fused.BLOCK_BYTES
    assert fused.memory_report().planned_bytes <= 1.05 * fused.memory_report().lower_bound_bytes
