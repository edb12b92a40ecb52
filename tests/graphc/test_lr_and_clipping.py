"""The learning rate is a runtime input of the compiled step (schedules change it with no
recompile), and global-norm gradient clipping is part of the step graph -- on every
backend, checked against numpy arithmetic."""
import math

import numpy as np
import pytest

import graphc as gc
from graphc.schedules import constant, cosine, make_schedule, step_decay, warmup
from graphc.step import compile_count

BACKENDS = ["numpy", "llvm"]


def problem(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(6, 3)).astype(dtype), "b": np.zeros(3, dtype)}
    x = rng.normal(size=(8, 6)).astype(dtype)
    y = rng.integers(0, 3, 8)

    def loss(p, x, y):
        return gc.nn.cross_entropy(x @ p["w"] + p["b"], y)
    return loss, params, x, y


def grads_at(loss, params, x, y):
    _, g = gc.value_and_grad(loss)(params, x, y)
    return {k: np.asarray(v, np.float64) for k, v in g.items()}


def test_schedule_formulas():
    assert constant(0.1)(10 ** 6) == 0.1
    s = step_decay(1.0, 10, 0.5)
    assert [s(t) for t in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    c = cosine(1.0, 100, 0.1)
    assert c(0) == 1.0 and c(100) == pytest.approx(0.1) and c(500) == pytest.approx(0.1)
    assert c(50) == pytest.approx(0.55)
    w = warmup(c, 10)
    assert [w(t) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert w(10) == 1.0 and w(60) == pytest.approx(c(50))
    m = make_schedule("cosine", 0.2, 110, warmup_steps=10)
    assert m.to_dict() == {"kind": "warmup", "warmup_steps": 10,
                           "inner": {"kind": "cosine", "lr": 0.2, "total_steps": 100,
                                     "min_lr": 0.0}}
    with pytest.raises(gc.GraphcError):
        cosine(0.1, 0)
    with pytest.raises(gc.GraphcError):
        make_schedule("step", 0.1, 100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_changing_lr_does_not_recompile_and_is_used(backend):
    loss, params, x, y = problem()
    step = gc.compile_step(loss, {k: v.copy() for k, v in params.items()}, gc.optim.SGD(0.1),
                           (x, y), backend=backend)
    n = compile_count()
    assert step.lr == pytest.approx(0.1)
    for lr in (0.1, 0.5, 0.01, 0.3):
        before = {k: v.astype(np.float64) for k, v in step.params.items()}
        g = grads_at(loss, step.params, x, y)
        step.lr = lr
        step(x, y)
        for k in before:                        # p <- p - lr * g with the new lr
            np.testing.assert_allclose(step.params[k], before[k] - np.float32(lr) * g[k],
                                       rtol=1e-5, atol=1e-6)
    assert compile_count() == n                 # four learning rates, one compiled step
    with pytest.raises(gc.GraphcError):
        step.lr = float("nan")
    with pytest.raises(gc.GraphcError):
        step.lr = -1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_schedule_drives_the_step(backend):
    loss, params, x, y = problem(1)
    sched = warmup(cosine(0.2, 6), 2)
    ref = {k: v.astype(np.float64) for k, v in params.items()}
    mom = {k: np.zeros_like(v) for k, v in ref.items()}
    n = compile_count()
    step = gc.compile_step(loss, {k: v.copy() for k, v in params.items()},
                           gc.optim.SGD(0.2, momentum=0.9, schedule=sched), (x, y),
                           backend=backend)
    assert compile_count() == n + 1
    for t in range(8):
        g = grads_at(loss, {k: v.astype(np.float32) for k, v in ref.items()}, x, y)
        for k in ref:                           # PyTorch SGD with momentum, lr = sched(t)
            mom[k] = 0.9 * mom[k] + g[k]
            ref[k] = ref[k] - sched(t) * mom[k]
        step(x, y)
        assert step.lr == pytest.approx(sched(t), rel=1e-6)
        for k in ref:
            np.testing.assert_allclose(step.params[k], ref[k], rtol=2e-4, atol=2e-5)
    assert compile_count() == n + 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_norm_clipping_in_the_step(backend, dtype):
    loss, params, x, y = problem(2, dtype)
    step = gc.compile_step(loss, {k: v.copy() for k, v in params.items()},
                           gc.optim.SGD(0.5, clip_grad_norm=0.05), (x, y), backend=backend)
    assert any(n.op == "sqrt" and n.role == "update" for n in step.graph.nodes)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for _ in range(3):
        before = {k: v.astype(np.float64) for k, v in step.params.items()}
        g = grads_at(loss, step.params, x, y)
        norm = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        scale = min(1.0, 0.05 / (norm + 1e-6))
        assert scale < 1                         # the clip is active
        step(x, y)
        for k in before:
            np.testing.assert_allclose(step.params[k], before[k] - 0.5 * scale * g[k],
                                       rtol=tol, atol=tol)
    # a large max norm leaves the gradients alone
    loss, params, x, y = problem(2, dtype)
    big = gc.compile_step(loss, {k: v.copy() for k, v in params.items()},
                          gc.optim.SGD(0.5, clip_grad_norm=1e6), (x, y), backend=backend)
    g = grads_at(loss, params, x, y)
    big(x, y)
    for k in params:
        np.testing.assert_allclose(big.params[k], params[k] - 0.5 * g[k], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adamw_with_runtime_lr_matches_the_formula(backend):
    loss, params, x, y = problem(3)
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    step = gc.compile_step(loss, {k: v.copy() for k, v in params.items()},
                           gc.optim.AdamW(lr, weight_decay=wd), (x, y), backend=backend)
    ref = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v2 = {k: np.zeros_like(v) for k, v in ref.items()}
    for t in range(1, 4):
        g = grads_at(loss, {k: v.astype(np.float32) for k, v in ref.items()}, x, y)
        for k in ref:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            ref[k] = ref[k] * (1 - lr * wd) - lr / (1 - b1 ** t) * m[k] / (
                np.sqrt(v2[k] / (1 - b2 ** t)) + eps)
        step(x, y)
        for k in ref:
            np.testing.assert_allclose(step.params[k], ref[k], rtol=1e-4, atol=1e-5)


def test_optimizer_extras_are_checked():
    with pytest.raises(gc.GraphcError):
        gc.optim.SGD(0.1, clip_grad_norm=0)
    with pytest.raises(gc.GraphcError):
        gc.optim.Adam(0.1, clip_grad_norm=float("inf"))
    with pytest.raises(gc.GraphcError):
        gc.optim.Adam(0.1, schedule=0.5)
