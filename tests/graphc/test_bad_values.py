"""Bad values and shapes outside the model's data (issue 15, item 5): thread counts,
buffers bigger than the machine, ``//`` and ``%`` on traced arrays, reductions over an
empty axis -- each a clear GraphcError, the same on both backends."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm.runtime import parallel

BACKENDS = ["numpy", "llvm"]


# ---- GRAPHC_NUM_THREADS ----------------------------------------------------------------------
@pytest.mark.parametrize("text", ["0", "-1", "abc", "2.5", "100000"])
def test_bad_thread_count_names_the_variable(monkeypatch, text):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", text)
    with pytest.raises(gc.GraphcError, match=f"GRAPHC_NUM_THREADS={text}"):
        parallel.num_threads()
    f = gc.jit(lambda x: x * 2.0)
    with pytest.raises(gc.GraphcError, match="GRAPHC_NUM_THREADS"):
        f(np.ones(3, np.float32))


def test_good_thread_counts(monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", " 2 ")
    assert parallel.num_threads() == 2
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "")
    assert parallel.num_threads() >= 1
    with pytest.raises(gc.GraphcError, match="threads=0"):
        parallel.num_threads(0)
    with pytest.raises(gc.GraphcError, match="threads"):
        gc.jit(lambda x: x * 2.0, threads=-3)(np.ones(3, np.float32))


# ---- more memory than the machine has ---------------------------------------------------------
def test_a_value_bigger_than_memory_is_refused_at_trace_time():
    def f(x):
        return gc.sum(gc.reshape(x, (-1, 1)) * gc.reshape(x, (1, -1)))
    x = np.ones(4_000_000, np.float32)            # the product: 64 TB
    with pytest.raises(gc.ShapeError) as info:
        gc.jit(f)(x)
    msg = str(info.value)
    assert "64000000000000 bytes" in msg and "memory" in msg and "'mul'" in msg
    assert "test_bad_values.py" in msg
    with pytest.raises(gc.ShapeError, match="bytes"):
        gc.jit(f, backend="numpy")(x)


def test_broadcast_of_a_huge_shape_is_refused():
    with pytest.raises(gc.ShapeError, match="bytes"):
        gc.trace(lambda x: gc.exp(gc.broadcast_to(x, (10**7, 10**7))), np.ones(1, np.float32))


# ---- // and % ----------------------------------------------------------------------------------
def _pairs(dtype):
    a = np.array([7, -7, 7, -7, 0, 5, 3, -3], dtype)
    b = np.array([2, 2, -2, -2, 3, 5, 0, 0], dtype) if dtype.kind == "i" else \
        np.array([2, 2, -2, -2, 3, 0.5, 0.7, -1.5], dtype)
    return a, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_floor_divide_and_remainder_match_numpy(backend, dtype):
    a, b = _pairs(np.dtype(dtype))
    if a.dtype.kind == "f":
        a = a + np.array([0.25, 0.5, -0.75, 0.1, 0, 1.3, 2.9, -0.2], dtype)
    f = gc.jit(lambda a, b: (a // b, a % b, a // 3, 10 % b), backend=backend)
    with np.errstate(all="ignore"):
        want = (a // b, a % b, a // 3, 10 % b)
    for _ in range(2):
        got = f(a, b)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_remainder_gradient(backend):
    """d(a % b)/da = 1, d(a % b)/db = -floor(a / b); a // b has a zero derivative."""
    a = np.array([7.3, -7.3, 2.2, -0.4])
    b = np.array([2.0, 2.0, -1.5, 0.3])
    f = gc.jit(gc.grad(lambda a, b: gc.sum(a % b + 3.0 * (a // b)), argnums=(0, 1)),
               backend=backend)
    for _ in range(2):
        ga, gb = f(a, b)
        np.testing.assert_allclose(ga, np.ones(4))
        np.testing.assert_allclose(gb, -np.floor(a / b))
    gc.check_grads(lambda a, b: gc.sum(a % b), (a, b))
    _, t = gc.jvp(lambda a, b: a % b, (a, b), (np.ones(4), np.ones(4)))
    np.testing.assert_allclose(t, 1 - np.floor(a / b))


def test_floor_divide_on_bool_is_refused():
    with pytest.raises(gc.GraphcError):
        gc.trace(lambda a: a // a, np.array([True, False]))


# ---- empty axes -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", [lambda x: gc.max(x, axis=1), lambda x: gc.mean(x, axis=1),
                                lambda x: gc.max(x), lambda x: gc.mean(x),
                                lambda x: gc.min(x, axis=1), lambda x: gc.var(x, axis=1)])
def test_reducing_an_empty_axis_is_an_error_on_both_backends(backend, fn):
    x = np.ones((3, 0), np.float32)
    with pytest.raises(gc.ShapeError, match="empty"):
        gc.jit(fn, backend=backend)(x)


@pytest.mark.parametrize("backend,options", [("numpy", {}), ("llvm", {}),
                                             ("llvm", {"fuse": False}),
                                             ("llvm", {"threads": 1})])
def test_reducing_a_nonempty_axis_of_an_empty_array(backend, options):
    """Zero-size values hold no arena bytes (the LLVM layout check once raised KeyError)."""
    x = np.ones((0, 4), np.float32)
    f = gc.jit(lambda x: (gc.max(x, axis=1), gc.mean(x, axis=1), gc.sum(x, axis=0),
                          gc.exp(x) * 2.0), backend=backend, **options)
    for _ in range(3):
        m, mu, s, e = f(x)
        assert m.shape == (0,) and mu.shape == (0,) and e.shape == (0, 4)
        np.testing.assert_array_equal(s, np.zeros(4, np.float32))
    g = gc.jit(gc.value_and_grad(lambda x: gc.sum(gc.exp(x) * 2.0)), backend=backend,
               **options)
    for _ in range(3):
        v, dx = g(x)
        assert float(v) == 0.0 and dx.shape == (0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_divmod_on_tracers(backend):
    a = np.array([7.5, -7.5, 2.0, -0.25])
    f = gc.jit(lambda a: (divmod(a, 2.0), divmod(3.0, a + 10.0)), backend=backend)
    for _ in range(3):
        (q, r), (q2, r2) = f(a)
        np.testing.assert_array_equal(q, a // 2.0)
        np.testing.assert_array_equal(r, a % 2.0)
        np.testing.assert_array_equal(q2, 3.0 // (a + 10.0))
        np.testing.assert_array_equal(r2, 3.0 % (a + 10.0))


# ---- allocations a user asks for outside a graph -------------------------------------------
def test_eager_full_bigger_than_memory():
    with pytest.raises(gc.ShapeError, match=r"full\(1000000, 100000\) needs 400000000000 "
                       r"bytes.*memory.*test_bad_values.py"):
        gc.full((10**6, 10**5), 1.0)
    assert gc.full(3, 2.0).tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("traced", [False, True])
def test_one_hot_over_too_many_classes(traced):
    """The result and its arange of classes are checked before either is allocated."""
    labels = np.array([0, 1])
    f = gc.jit(lambda l: gc.one_hot(l, 10**10)) if traced else \
        (lambda l: gc.one_hot(l, 10**10))
    with pytest.raises(gc.ShapeError, match=r"one_hot of labels \(2,\) over 10000000000 "
                       r"classes needs 240000000000 bytes.*test_bad_values.py"):
        f(labels)


def test_parameters_bigger_than_memory_name_the_layer():
    model = gc.nn.Sequential(gc.nn.Linear(3, 4), gc.nn.Linear(4, 10**11))
    with pytest.raises(gc.ShapeError, match=r"Linear: initialising a parameter of shape "
                       r"\(4, 100000000000\) needs 3200000000000 bytes"):
        model.init(0)
    assert gc.nn.Linear(3, 4).init(0)["w"].shape == (3, 4)
