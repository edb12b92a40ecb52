"""Reproducers of wrong results the differential fuzzer (tests/fuzz) and users found on the
LLVM backend, each called several times: the bugs showed on the second call."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_fused_reductions_over_different_axes_are_both_cleared(dtype):
    # sum over all axes and sum over axis 1 in one fused kernel: the second's output was
    # cleared only at row 0 and accumulated across calls
    rng = np.random.default_rng(0)
    w = rng.normal(size=(11, 8)).astype(dtype)
    f = lambda E: gc.sum(E / gc.sum(E * E, axis=-1, keepdims=True) * w)  # noqa: E731
    got = gc.jit(gc.value_and_grad(f))
    ref = gc.jit(gc.value_and_grad(f), backend="numpy")
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for _ in range(4):
        E = rng.normal(size=(11, 8)).astype(dtype)
        (v, g), (vr, gr) = got(E), ref(E)
        np.testing.assert_allclose(v, vr, rtol=tol, atol=tol)
        np.testing.assert_allclose(g, gr, rtol=tol * 10, atol=tol * 10)


def test_grad_of_a_loss_whose_value_is_dead():
    # gc.grad drops the loss value: its (fused) reduction had no buffer -> KeyError
    E = np.random.default_rng(1).normal(size=(11, 8))
    f = gc.jit(gc.grad(lambda E: gc.sum(E * 2.0)))
    for _ in range(3):
        np.testing.assert_array_equal(f(E), np.full((11, 8), 2.0))


@pytest.mark.parametrize("fuse", [True, False])
def test_dead_concatenate_and_dead_reduction_are_not_lowered(fuse):
    x = np.arange(6.0).reshape(2, 3)

    def f(x):
        gc.concatenate([x, x], axis=0)      # dead
        gc.max(x * 3.0, axis=0)              # dead
        return gc.tanh(x)
    j = gc.jit(f, fuse=fuse)
    for _ in range(3):
        np.testing.assert_allclose(j(x), np.tanh(x), rtol=1e-12)
