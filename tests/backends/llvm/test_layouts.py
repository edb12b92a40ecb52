"""Training steps in every weight layout match the numpy oracle (LLVM backend).

A linear layer written as ``x @ W``, ``x @ W.T`` (PyTorch's layout), ``W @ x`` or
``W.T @ x``, and batched ``(B, T, in) @ W.T``: the forward and every backward GEMM
take whatever flags and layout the backend chooses, the parameters stay the user's
arrays in the user's layout, results match the numpy backend after several steps, on
1 and 2 threads (bit-identical to each other).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm.plan import layout as layout_mod
from graphc.backends.llvm.plan.kernels import GemmKernel

SIZES = (13, 37, 9, 5)


def _linear(layout, h, w, b):
    """One layer; activations are (batch, features), or (features, batch) for W @ x."""
    if layout == "x@W":
        return h @ w + b
    if layout == "x@W.T":
        return h @ w.T + b
    if layout == "W@x":
        return w @ h + b[:, None]
    return w.T @ h + b[:, None]          # W.T@x


def _weight_shape(layout, fan_in, fan_out):
    return (fan_in, fan_out) if layout in ("x@W", "W.T@x") else (fan_out, fan_in)


def _model(layout, rng, dt, batched=False):
    params = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        params[f"w{i}"] = (rng.standard_normal(_weight_shape(layout, a, b)) /
                           np.sqrt(a)).astype(dt)
        params[f"b{i}"] = (0.1 * rng.standard_normal(b)).astype(dt)
    feature_major = layout in ("W@x", "W.T@x")

    def loss(p, x, y):
        h = x.T if feature_major else x
        for i in range(len(SIZES) - 1):
            h = _linear(layout, h, p[f"w{i}"], p[f"b{i}"])
            if i < len(SIZES) - 2:
                h = gc.relu(h) if i % 2 == 0 else gc.tanh(h)
        z = h.T if feature_major else h
        if batched:
            z = gc.reshape(z, (-1, SIZES[-1]))
        return gc.nn.cross_entropy(z, y)
    return params, loss


def _batches(rng, dt, batch, steps, batched):
    lead = (batch, 3) if batched else (batch,)
    n = int(np.prod(lead))
    return [(rng.standard_normal(lead + (SIZES[0],)).astype(dt),
             rng.integers(0, SIZES[-1], n)) for _ in range(steps)]


CASES = [("x@W", False), ("x@W.T", False), ("W@x", False), ("W.T@x", False),
         ("x@W.T", True)]


@pytest.fixture(params=["by-cost", "always-transposed"])
def product_layout(request, monkeypatch):
    """The backend's choice of computing products transposed: by its cost model, or
    forced on every eligible product (so both code paths are checked at every size)."""
    if request.param == "always-transposed":
        monkeypatch.setattr(layout_mod, "FORCE", True)
    return request.param


@pytest.mark.parametrize("batch", [6, 33])
@pytest.mark.parametrize("layout,batched", CASES,
                         ids=[f"{lay}{'-batched' if b else ''}" for lay, b in CASES])
def test_every_layout_trains_like_the_oracle(layout, batched, batch, product_layout):
    dt = np.float32
    rng = np.random.default_rng(0)
    params, loss = _model(layout, rng, dt, batched)
    batches = _batches(rng, dt, batch, 4, batched)
    opt = lambda: gc.optim.SGD(0.05, momentum=0.9)   # noqa: E731
    ref = gc.compile_step(loss, copy.deepcopy(params), opt(), batches[0], backend="numpy")
    want = [ref(*b) for b in batches]
    finals = []
    for t in (1, 2):
        mine = copy.deepcopy(params)
        step = gc.compile_step(loss, mine, opt(), batches[0], backend="llvm", threads=t)
        got = [step(*b) for b in batches]
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for k in params:
            assert step.params[k] is mine[k] and mine[k].shape == params[k].shape
            scale = np.max(np.abs(ref.params[k]))
            np.testing.assert_allclose(step.params[k], ref.params[k], rtol=1e-5,
                                       atol=1e-5 * scale, err_msg=f"{k} threads={t}")
        finals.append(step)
    for k in params:
        np.testing.assert_array_equal(finals[0].params[k], finals[1].params[k])


@pytest.mark.parametrize("layout", ["x@W", "x@W.T", "W@x", "W.T@x"])
def test_weight_updates_run_in_their_gradients_gemm(layout):
    """In every layout each weight's gradient is computed in the weight's own layout: the
    update is the epilogue of that GEMM or a loop reading everything in the weight's
    element order -- never a strided (transposed) loop over the weight."""
    rng = np.random.default_rng(1)
    params, loss = _model(layout, rng, np.float32)
    (x, y), = _batches(rng, np.float32, 40, 1, False)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1), (x, y), backend="llvm",
                           threads=1)
    step(x, y)
    plan = step._run.plan
    writers = {}
    for k in plan.kernels:
        for v in k.writes():
            writers.setdefault(v.st.name, []).append(k)
    for i in range(len(SIZES) - 1):
        ks = writers[f"p.w{i}"]
        assert any(isinstance(k, GemmKernel) for k in plan.kernels
                   if any(v.st.name == f"grad_p.w{i}" for v in k.writes()))
        for k in ks:
            if isinstance(k, GemmKernel):
                continue
            (dst,) = [v for _, v in k.stores if v.st.name == f"p.w{i}"]
            for v in k.loads.values():
                assert v.strides in (dst.strides, (0,) * len(dst.strides)), (layout, k.name)


def test_x_at_w_t_at_small_batch_packs_the_activations_not_the_weight():
    """The forward product of ``x @ W.T`` at batch 16 is computed transposed
    (``W·xᵀ``: the 16×K activations are packed instead of the 512×K weight) -- the cost
    model's choice -- and the step still matches the oracle."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((512, 96)) / 10).astype(np.float32)
    x = rng.standard_normal((16, 96)).astype(np.float32)
    y = rng.integers(0, 512, 16)

    def loss(p, x, y):
        return gc.nn.cross_entropy(gc.relu(x @ p["w"].T), y)
    ref = gc.compile_step(loss, {"w": w.copy()}, gc.optim.SGD(0.1), (x, y), backend="numpy")
    step = gc.compile_step(loss, {"w": w.copy()}, gc.optim.SGD(0.1), (x, y), backend="llvm",
                           threads=2)
    for _ in range(3):
        np.testing.assert_allclose(step(x, y), ref(x, y), rtol=1e-5)
    np.testing.assert_allclose(step.params["w"], ref.params["w"], rtol=1e-5, atol=1e-6)
    (fwd,) = [k for k in step._run.plan.kernels if isinstance(k, GemmKernel)
              and k.gemm.node.output.shape == (16, 512) and k.gemm.k == 96]
    assert fwd.gemm.transposed and (fwd.gemm.m, fwd.gemm.n) == (512, 16)
