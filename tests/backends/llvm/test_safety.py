"""Bad arguments to compiled functions raise GraphcError (ArgumentError), never crash.

Wrong count, shape, dtype, layout and non-array objects are rejected before any native
code runs; read-only inputs with another layout or a same-kind dtype are converted;
in-place targets (parameters, optimizer state) must be writeable C-contiguous arrays of
the exact dtype that share memory with no other argument.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.ir import ArgumentError, Graph, GraphcError


def _graph():
    g = Graph("g")
    x = g.add_input((4, 5), np.float32, "x")
    w = g.add_input((5, 3), np.float32, "w")
    lab = g.add_input((4,), np.int64, "lab")
    p = g.add_input((3,), np.float32, "p", "param")
    y = g.add("matmul", [x, w])
    s = g.add("sum", [y], {"axes": (0,)})
    newp = g.add("sub", [p, s])
    c = g.add("cast", [lab], {"dtype": np.float32})
    g.set_outputs([g.add("sum", [c], {"axes": None}), y])
    g.updates.append((p, newp))
    return g


def _args(rng):
    return [rng.standard_normal((4, 5)).astype(np.float32),
            rng.standard_normal((5, 3)).astype(np.float32),
            rng.integers(0, 3, 4), np.zeros(3, np.float32)]


@pytest.fixture(scope="module")
def fn():
    return llvm_backend.compile(_graph(), threads=2)


def test_good_call_and_conversions(fn):
    rng = np.random.default_rng(0)
    x, w, lab, p = _args(rng)
    total, y = fn(x, w, lab, p)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, -(x @ w).sum(0), rtol=1e-5, atol=1e-5)
    # non-contiguous / float64 / int32 read-only inputs are converted
    xf = np.asfortranarray(x)
    _, y2 = fn(xf, w.astype(np.float64), lab.astype(np.int32), p)
    np.testing.assert_allclose(y2, y, rtol=1e-6)
    big = rng.standard_normal((8, 10)).astype(np.float32)
    _, y3 = fn(big[::2, ::2], w, lab, p)
    np.testing.assert_allclose(y3, big[::2, ::2] @ w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [
    lambda a: a[:3],                                      # too few arguments
    lambda a: a + [a[0]],                                 # too many
    lambda a: [a[0][:3]] + a[1:],                         # wrong shape
    lambda a: [a[0].reshape(5, 4)] + a[1:],
    lambda a: [a[0][None]] + a[1:],
    lambda a: [a[0].astype(np.int32)] + a[1:],            # int for a float input
    lambda a: [a[0].astype(np.complex64)] + a[1:],
    lambda a: a[:2] + [a[2].astype(np.float32)] + a[3:],  # float labels
    lambda a: a[:3] + [a[3].astype(np.float64)],          # in-place target, wrong dtype
    lambda a: a[:3] + [np.zeros(6, np.float32)[::2]],     # in-place target, strided
    lambda a: a[:3] + [np.zeros(4, np.float32)],
    lambda a: a[:3] + [[0.0, 0.0, 0.0]],                  # list
    lambda a: a[:3] + [1.0],                              # scalar for an in-place target
    lambda a: [None] + a[1:],
    lambda a: ["abc"] + a[1:],
    lambda a: [a[0].tolist()] + a[1:],
    lambda a: [object()] + a[1:],
], ids=lambda f: "")
def test_bad_arguments_raise(fn, bad):
    args = bad(_args(np.random.default_rng(1)))
    with pytest.raises(ArgumentError):
        fn(*args)


def test_readonly_inplace_target_and_aliasing(fn):
    x, w, lab, p = _args(np.random.default_rng(2))
    ro = p.copy()
    ro.setflags(write=False)
    with pytest.raises(ArgumentError):
        fn(x, w, lab, ro)
    # the in-place target sharing memory with another input
    buf = np.zeros(20, np.float32)
    with pytest.raises(ArgumentError):
        fn(buf.reshape(4, 5), w, lab, buf[:3])
    fn(x, w, lab, p)    # still works afterwards


def test_cached_pointers_follow_new_arrays(fn):
    rng = np.random.default_rng(3)
    x, w, lab, p = _args(rng)
    fn(x, w, lab, p)
    x2 = rng.standard_normal((4, 5)).astype(np.float32)
    _, y = fn(x2, w, lab, p)
    np.testing.assert_allclose(y, x2 @ w, rtol=1e-5, atol=1e-6)
    x2[...] = 1.0                   # same object, new contents
    _, y = fn(x2, w, lab, p)
    np.testing.assert_allclose(y, x2 @ w, rtol=1e-5, atol=1e-6)
    x2.shape = (5, 4)               # same object, reshaped in place
    with pytest.raises(ArgumentError):
        fn(x2, w, lab, p)


def test_fuzz_random_bad_arguments(fn):
    """Random shapes, dtypes, strides and objects: only GraphcError, or a correct result."""
    rng = np.random.default_rng(4)
    good = _args(rng)
    dtypes = [np.float32, np.float64, np.int32, np.int64, np.bool_, np.int8, np.uint16,
              np.complex128, np.float16, object]
    raised = 0
    for trial in range(400):
        args = [a.copy() for a in good]
        i = int(rng.integers(0, 4))
        kind = int(rng.integers(0, 6))
        if kind == 0:
            shape = tuple(int(s) for s in rng.integers(0, 6, int(rng.integers(0, 4))))
            args[i] = np.zeros(shape, good[i].dtype)
        elif kind == 1:
            dt = dtypes[int(rng.integers(0, len(dtypes)))]
            args[i] = np.zeros(good[i].shape, dt) if dt is not object else \
                np.empty(good[i].shape, object)
        elif kind == 2:
            base = np.zeros(tuple(3 * s + 1 for s in good[i].shape), good[i].dtype)
            sl = tuple(slice(None, None, int(rng.integers(1, 4))) for _ in good[i].shape)
            args[i] = base[sl]
        elif kind == 3:
            args[i] = [None, "x", 3, 2.5, (1, 2), {"a": 1}, b"raw", np.float32(1)][
                int(rng.integers(0, 8))]
        elif kind == 4:
            n = int(rng.integers(0, 7))
            args = (args + args)[:n]
        else:
            args[i] = np.asfortranarray(np.ones(good[i].shape[::-1], good[i].dtype).T) \
                if good[i].ndim > 1 else good[i][::-1]
        try:
            fn(*args)
        except GraphcError:
            raised += 1
        except Exception as e:      # pragma: no cover - the failure we are looking for
            raise AssertionError(f"trial {trial}: {type(e).__name__}: {e}") from e
    assert raised > 100


def test_compile_step_bad_batch_raises():
    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal((3, 2)).astype(np.float32)}

    def loss(p, x):
        return gc.mean(gc.tanh(x @ p["w"]))
    x = rng.standard_normal((4, 3)).astype(np.float32)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1), (x,), backend="llvm")
    step(x)
    for bad in (x[:2], x.astype(np.int64), "x", None, x.T):
        with pytest.raises(GraphcError):
            step(bad)


def test_check_finite_names_the_step():
    params = {"w": np.ones(3, np.float32)}

    def loss(p, x):
        return gc.sum(gc.log(x * p["w"]))
    x = np.ones(3, np.float32)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1), (x,), backend="llvm",
                           check_finite=True)
    step(x)
    with pytest.raises(GraphcError, match="step 2"):
        step(-x)
