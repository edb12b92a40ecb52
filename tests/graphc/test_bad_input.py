"""Bad input never gives a silently wrong number and never corrupts a training step.

Labels out of range, non-finite losses and gradients, bad optimizer hyper-parameters,
replacing ``step.params`` entries and unsigned integer inputs -- on the numpy and the
LLVM backend, in ``gc.jit`` and in ``gc.compile_step`` (issue 15, item 4).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc

BACKENDS = ["numpy", "llvm"]


def _ce(logits, labels):
    return gc.nn.cross_entropy(logits, labels)


def _params(rng):
    return {"w": rng.standard_normal((4, 3)).astype(np.float32),
            "b": np.zeros(3, np.float32)}


def _loss(p, x, y):
    return gc.nn.cross_entropy(x @ p["w"] + p["b"], y)


# ---- labels out of range ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [3, -1, 2**40])
def test_cross_entropy_label_out_of_range_jit(backend, bad):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 3)).astype(np.float32)
    f = gc.jit(gc.value_and_grad(_ce), backend=backend)
    good = np.array([0, 1, 2, 1, 0])
    for _ in range(2):
        f(logits, good)
    labels = good.copy()
    labels[3] = bad
    with pytest.raises(gc.GraphcError) as info:
        f(logits, labels)
    msg = str(info.value)
    assert "cross_entropy" in msg and str(bad) in msg and "(3,)" in msg
    assert "[0, 3)" in msg
    assert "test_bad_input.py" in msg          # the user's line
    v, g = f(logits, good)                     # still usable afterwards
    assert np.isfinite(v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_label_out_of_range_jit(backend):
    f = gc.jit(lambda y: gc.sum(gc.one_hot(y, 4)), backend=backend)
    assert f(np.array([[0, 3], [1, 2]])) == 4
    with pytest.raises(gc.GraphcError, match=r"one_hot: label 4 at position \(1, 0\)"):
        f(np.array([[0, 3], [4, 2]]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_computed_labels_are_checked(backend):
    """Labels computed in the graph (here y - 1) are checked as the op sees them."""
    f = gc.jit(lambda x, y: gc.nn.cross_entropy(x, y - 1), backend=backend)
    x = np.zeros((3, 2), np.float32)
    assert np.isclose(f(x, np.array([1, 2, 1])), math.log(2))
    with pytest.raises(gc.GraphcError, match=r"label -1 at position \(2,\)"):
        f(x, np.array([1, 2, 0]))


def test_one_hot_eager_checks_too():
    with pytest.raises(gc.GraphcError, match="label 5"):
        gc.one_hot(np.array([0, 5]), 3)
    with pytest.raises(gc.GraphcError, match="label 7"):
        gc.grad(_ce)(np.zeros((2, 3), np.float32), np.array([7, 0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_step_label_out_of_range_leaves_params(backend):
    rng = np.random.default_rng(1)
    params = _params(rng)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    step = gc.compile_step(_loss, params, gc.optim.Adam(0.01), (x, y), backend=backend)
    step(x, y)
    step(x, y)
    before = {k: v.copy() for k, v in step.params.items()}
    state = {k: v.copy() for k, v in step.opt_state.items()}
    bad = y.copy()
    bad[4] = 10
    with pytest.raises(gc.GraphcError, match=r"label 10 at position \(4,\)"):
        step(x, bad)
    for k in before:
        assert np.array_equal(step.params[k], before[k])
    for k in state:
        assert np.array_equal(step.opt_state[k], state[k])
    step(x, y)
    assert not np.array_equal(step.params["w"], before["w"])


# ---- check_finite ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", [gc.optim.SGD(0.1, momentum=0.9), gc.optim.Adam(0.01)])
def test_check_finite_rejects_before_the_update(backend, opt):
    rng = np.random.default_rng(2)
    params = _params(rng)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    step = gc.compile_step(_loss, params, opt, (x, y), backend=backend, check_finite=True)
    step(x, y)
    step(x, y)
    before = {k: v.copy() for k, v in step.params.items()}
    state = {k: v.copy() for k, v in step.opt_state.items()}
    for poison in (np.nan, np.inf):
        bad = x.copy()
        bad[2, 1] = poison
        with pytest.raises(gc.GraphcError, match="step 3.*not finite.*unchanged"):
            step(bad, y)
        for k in before:                       # bit-exactly as they were
            assert before[k].tobytes() == step.params[k].tobytes()
        for k in state:
            assert state[k].tobytes() == step.opt_state[k].tobytes()
    # training goes on, and the same as a step that never saw the bad batch
    ref = gc.compile_step(_loss, _params(np.random.default_rng(2)), opt, (x, y),
                          backend=backend)
    for _ in range(3):
        ref(x, y)
    step(x, y)
    for k in before:
        np.testing.assert_array_equal(step.params[k], ref.params[k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_finite_catches_a_gradient_with_a_finite_loss(backend):
    """sum(sqrt(w) * 0) is 0 at w = 0, its gradient 0 * inf = nan."""
    def loss(p, x):
        return gc.sum(gc.sqrt(p["w"]) * x)
    params = {"w": np.array([1.0, 0.0], np.float32)}
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1), (np.ones(2, np.float32),),
                           backend=backend, check_finite=True)
    with pytest.raises(gc.GraphcError, match="gradient"):
        step(np.array([1.0, 0.0], np.float32))
    assert step.params["w"].tolist() == [1.0, 0.0]


def test_check_finite_is_in_the_graph():
    """The check is part of the step graph: one flag output, every update selected."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    step = gc.compile_step(_loss, _params(rng), gc.optim.SGD(0.1), (x, y), backend="numpy",
                           check_finite=True)
    g = step.graph
    assert len(g.outputs) == 2 and g.outputs[1].dtype == np.bool_
    for _, new in g.updates:
        assert new.node.op == "where"


# ---- optimizer hyper-parameters --------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: gc.optim.SGD(float("nan")), lambda: gc.optim.SGD(float("inf")),
    lambda: gc.optim.SGD(-0.1), lambda: gc.optim.SGD(0.1, momentum=float("nan")),
    lambda: gc.optim.SGD(0.1, momentum=1.5), lambda: gc.optim.SGD(0.1, momentum=-1),
    lambda: gc.optim.SGD(0.1, weight_decay=float("inf")),
    lambda: gc.optim.SGD("0.1"), lambda: gc.optim.SGD(None),
    lambda: gc.optim.Adam(float("nan")), lambda: gc.optim.Adam(float("inf")),
    lambda: gc.optim.Adam(0.1, betas=(float("nan"), 0.9)),
    lambda: gc.optim.Adam(0.1, betas=(0.9, 1.0)), lambda: gc.optim.Adam(0.1, betas=(0.9,)),
    lambda: gc.optim.Adam(0.1, eps=float("nan")), lambda: gc.optim.Adam(0.1, eps=0.0),
    lambda: gc.optim.Adam(0.1, weight_decay=float("nan")),
    lambda: gc.optim.AdamW(float("inf")), lambda: gc.optim.AdamW(0.1, weight_decay=-1),
    lambda: gc.optim.AdamW(0.1, eps=float("inf")),
])
def test_bad_hyper_parameters_are_refused(make):
    with pytest.raises(gc.GraphcError):
        make()


def test_good_hyper_parameters_are_accepted():
    gc.optim.SGD(np.float32(0.1), momentum=0.9, nesterov=True, weight_decay=1e-4)
    gc.optim.Adam(1e-3, betas=(0.0, 0.0), eps=1e-12)
    gc.optim.AdamW(1e-3, weight_decay=0.0)


# ---- replacing params and optimizer state ---------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_assigning_a_param_copies_into_the_live_array(backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    step = gc.compile_step(_loss, _params(rng), gc.optim.SGD(0.5), (x, y), backend=backend)
    step(x, y)
    live = step.params["w"]
    step.params["w"] = np.zeros((4, 3))                  # float64 zeros: cast, copied in
    assert step.params["w"] is live and not live.any()
    b = np.array([1.0, 0.0, 0.0], np.float32)
    step.params["b"] = b
    logp = b - np.log(np.exp(b).sum())
    loss = step(x, y)
    assert np.isclose(loss, -logp[y].mean(), rtol=1e-5)   # the step used the new values
    assert not np.array_equal(step.params["b"], b)         # ... and updated them
    with pytest.raises(gc.GraphcError, match=r"shape \(3, 4\).*\(4, 3\)"):
        step.params["w"] = np.zeros((3, 4), np.float32)
    with pytest.raises(gc.GraphcError, match="dtype"):
        step.params["w"] = np.zeros((4, 3), np.complex64)
    with pytest.raises(gc.GraphcError, match="no entry 'nope'"):
        step.params["nope"] = np.zeros(3)
    for refused in (lambda: step.params.pop("w"), lambda: step.params.clear(),
                    lambda: step.params.update(nope=1)):
        with pytest.raises(gc.GraphcError, match="in place"):
            refused()
    with pytest.raises(gc.GraphcError):
        del step.params["w"]
    step.params = {"w": np.ones((4, 3)), "b": np.zeros(3)}      # the whole tree, copied in
    assert step.params["w"] is live and live.all()
    with pytest.raises(gc.GraphcError, match="keys"):
        step.params = {"w": np.ones((4, 3))}
    with pytest.raises(gc.GraphcError, match="shape"):       # checked before any copy
        step.params = {"w": np.full((4, 3), 2.0), "b": np.zeros(4)}
    assert live.all() and (live == 1).all()


def test_assigning_nested_params_and_opt_state():
    rng = np.random.default_rng(5)
    params = [{"w": rng.standard_normal((4, 3)).astype(np.float32)}]

    def loss(p, x):
        return gc.mean((x @ p[0]["w"]) ** 2)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x,),
                           backend="numpy")
    step(x)
    step.params[0]["w"] = np.zeros((4, 3), np.float32)
    (name,) = [k for k in step.opt_state if k != "opt.lr"]    # opt.lr: the runtime lr
    step.opt_state[name] = np.zeros((4, 3), np.float32)
    assert step(x) == 0.0
    with pytest.raises(gc.GraphcError, match="shape"):
        step.opt_state[name] = np.zeros(3, np.float32)
    step.params[0] = {"w": np.ones((4, 3))}                   # a sub-tree, copied in
    assert (step.params[0]["w"] == 1).all()
    for refused in (lambda: step.params.append({}), lambda: step.params.pop()):
        with pytest.raises(gc.GraphcError):
            refused()


# ---- unsigned integers ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("udt", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_unsigned_labels_and_images(backend, udt):
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (6, 4)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2], udt)

    def loss(p, x, y):
        return gc.nn.cross_entropy(gc.cast(x, np.float32) / 255.0 @ p["w"] + p["b"], y)
    p0 = _params(rng)
    step = gc.compile_step(loss, {k: v.copy() for k, v in p0.items()}, gc.optim.SGD(0.1),
                           (img, y), backend=backend)
    ref = gc.compile_step(loss, {k: v.copy() for k, v in p0.items()}, gc.optim.SGD(0.1),
                          (img.astype(np.int64), y.astype(np.int64)), backend="numpy")
    for _ in range(3):
        a, b = step(img, y), ref(img.astype(np.int64), y.astype(np.int64))
        assert np.isclose(a, b, rtol=1e-5)
    f = gc.jit(lambda x, y: gc.sum(gc.cast(x, np.float32)) + gc.sum(y), backend=backend)
    for _ in range(2):
        assert f(img, y) == img.astype(np.float64).sum() + y.astype(np.float64).sum()
    with pytest.raises(gc.GraphcError, match="label"):
        step(img, np.array([0, 1, 2, 0, 1, 3], udt))


def test_uint64_too_large_is_refused():
    f = gc.jit(lambda y: gc.sum(y), backend="llvm")
    assert f(np.array([1, 2], np.uint64)) == 3
    with pytest.raises(gc.GraphcError, match="int64"):
        f(np.array([1, 2**63], np.uint64))
