"""Whole training steps compiled by the LLVM backend against the numpy backend.

Forward, backward and the optimizer update run in one native call that updates the
parameters and the optimizer state in place; after several steps the losses and every
parameter agree with the numpy backend (float32 1e-5 relative, float64 1e-10), on 1
and 2 threads, and the thread count never changes a single bit.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

import graphc as gc

TOL = {np.float32: 1e-5, np.float64: 1e-10}


def mlp_model(rng, dt, sizes=(13, 17, 9, 5)):
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dt)
        params[f"b{i}"] = (0.1 * rng.standard_normal(b)).astype(dt)

    def loss(p, x, y):
        h = x
        n = len(sizes) - 1
        for i in range(n):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < n - 1:
                h = gc.relu(h) if i % 2 == 0 else gc.tanh(h)
        return gc.nn.cross_entropy(h, y)
    return params, loss


def logreg_model(rng, dt, d=23):
    params = {"w": (0.1 * rng.standard_normal(d)).astype(dt), "b": np.zeros((), dt)}

    def loss(p, x, y):
        z = x @ p["w"] + p["b"]
        yf = gc.cast(y, dt)
        return gc.mean(gc.log(1 + gc.exp(-z)) + (1 - yf) * z)
    return params, loss


def svm_model(rng, dt, d=19):
    params = {"w": (0.1 * rng.standard_normal(d)).astype(dt), "b": np.zeros((), dt)}

    def loss(p, x, y):
        s = x @ p["w"] + p["b"]
        return gc.nn.hinge(s, y) + 0.01 * gc.sum(p["w"] * p["w"])
    return params, loss


def _data(rng, dt, model, batch):
    if model == "mlp":
        return (rng.standard_normal((batch, 13)).astype(dt), rng.integers(0, 5, batch))
    d = 23 if model == "logreg" else 19
    return (rng.standard_normal((batch, d)).astype(dt), rng.integers(0, 2, batch))


MODELS = {"mlp": mlp_model, "logreg": logreg_model, "svm": svm_model}
OPTS = {"sgd-momentum": lambda: gc.optim.SGD(0.05, momentum=0.9),
        "sgd-nesterov-wd": lambda: gc.optim.SGD(0.05, momentum=0.9, nesterov=True,
                                                weight_decay=1e-3),
        "adam": lambda: gc.optim.Adam(1e-2),
        "adamw": lambda: gc.optim.AdamW(1e-2, weight_decay=0.1)}


def _compare(model, opt, dt, batch, steps=5, threads=(1, 2)):
    rng = np.random.default_rng(0)
    params, loss = MODELS[model](rng, dt)
    batches = [_data(rng, dt, model, batch) for _ in range(steps)]
    ref = gc.compile_step(loss, copy.deepcopy(params), OPTS[opt](), batches[0],
                          backend="numpy")
    want = [ref(*b) for b in batches]
    finals = []
    for t in threads:
        step = gc.compile_step(loss, copy.deepcopy(params), OPTS[opt](), batches[0],
                               backend="llvm", threads=t)
        got = [step(*b) for b in batches]
        np.testing.assert_allclose(got, want, rtol=TOL[dt])
        for k in params:
            scale = np.max(np.abs(ref.params[k])) + 1e-30
            np.testing.assert_allclose(step.params[k], ref.params[k], rtol=TOL[dt],
                                       atol=TOL[dt] * scale, err_msg=f"{k} threads={t}")
        for k, v in ref.opt_state.items():
            scale = np.max(np.abs(v)) + 1e-30
            np.testing.assert_allclose(step.opt_state[k], v, rtol=TOL[dt],
                                       atol=TOL[dt] * scale, err_msg=f"state {k}")
        finals.append(step)
    for other in finals[1:]:
        for k in params:
            np.testing.assert_array_equal(other.params[k], finals[0].params[k])


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("opt", sorted(OPTS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_training_steps_match_numpy(model, opt, dt):
    _compare(model, opt, dt, batch=31)


@pytest.mark.parametrize("batch", [1, 16, 67])
def test_mlp_batch_sizes(batch):
    _compare("mlp", "sgd-momentum", np.float32, batch, steps=3)


def test_mlp_784_512_256_10_sgd_momentum():
    """The benchmark model, a few steps, 1 and 2 threads."""
    rng = np.random.default_rng(1)
    sizes = (784, 512, 256, 10)
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        params[f"b{i}"] = np.zeros(b, np.float32)

    def loss(p, x, y):
        h = gc.relu(x @ p["w0"] + p["b0"])
        h = gc.relu(h @ p["w1"] + p["b1"])
        return gc.nn.cross_entropy(h @ p["w2"] + p["b2"], y)
    batches = [(rng.standard_normal((128, 784)).astype(np.float32), rng.integers(0, 10, 128))
               for _ in range(3)]
    ref = gc.compile_step(loss, copy.deepcopy(params), gc.optim.SGD(0.01, momentum=0.9),
                          batches[0], backend="numpy")
    want = [ref(*b) for b in batches]
    for t in (1, 2):
        step = gc.compile_step(loss, copy.deepcopy(params), gc.optim.SGD(0.01, momentum=0.9),
                               batches[0], backend="llvm", threads=t)
        got = [step(*b) for b in batches]
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for k in params:
            np.testing.assert_allclose(step.params[k], ref.params[k], rtol=1e-5,
                                       atol=1e-5 * np.max(np.abs(ref.params[k])))


def test_step_updates_in_place_and_returns_float():
    rng = np.random.default_rng(2)
    params, loss = mlp_model(rng, np.float32)
    x, y = _data(rng, np.float32, "mlp", 8)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1), (x, y), backend="llvm")
    w = step.params["w0"]
    before = w.copy()
    assert isinstance(step(x, y), float)
    assert step.params["w0"] is w and not np.array_equal(w, before)


def test_jit_default_backend_is_llvm():
    calls = []

    def f(x, y):
        calls.append(1)
        return gc.tanh(x @ y).sum(axis=0), x * 2
    jf = gc.jit(f)
    assert jf.backend == "llvm"
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((3, 4)).astype(
        np.float32)
    a, b = jf(x, y)
    np.testing.assert_allclose(a, np.tanh(x @ y).sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(b, x * 2)
    jf(x, y)
    assert len(calls) == 1          # cached per shapes/dtypes
    jf(x.astype(np.float64), y.astype(np.float64))
    assert len(calls) == 2
