"""Property tests: numpy broadcasting of every binary array function on random
broadcast-compatible shapes, traced and run by the numpy backend, equals numpy; and the
gradient through a broadcast (un-broadcasting by summation) matches finite differences."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphc as gc
from tests.numeric import fd_vjp

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)

BINARY = {
    "add": (gc.add, np.add),
    "subtract": (gc.subtract, np.subtract),
    "multiply": (gc.multiply, np.multiply),
    "divide": (lambda a, b: gc.divide(a, b * b + 1), lambda a, b: np.divide(a, b * b + 1)),
    "maximum": (gc.maximum, np.maximum),
    "minimum": (gc.minimum, np.minimum),
    "power": (lambda a, b: gc.power(a * a + 1, b), lambda a, b: np.power(a * a + 1, b)),
    "less": (gc.less, np.less),
    "greater_equal": (gc.greater_equal, np.greater_equal),
    "equal": (gc.equal, np.equal),
    "where": (lambda a, b: gc.where(a > b, a, b * 2), lambda a, b: np.where(a > b, a, b * 2)),
    "operator_add": (lambda a, b: a + b, lambda a, b: a + b),
    "operator_mul": (lambda a, b: a * b, lambda a, b: a * b),
}

shapes = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=1,
                                       max_side=3)
float_dtypes = st.sampled_from([np.float32, np.float64])


def arrays_for(shape_pair, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shape_pair.input_shapes]


@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(shape_pair=shapes, dtype=float_dtypes, seed=st.integers(0, 2 ** 16))
def test_binary_broadcasting_matches_numpy(name, shape_pair, dtype, seed):
    gc_fn, np_fn = BINARY[name]
    a, b = arrays_for(shape_pair, dtype, seed)
    got = gc.jit(gc_fn, backend="numpy")(a, b)
    want = np_fn(a, b)
    assert np.shape(got) == shape_pair.result_shape == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@SETTINGS
@given(shape_pair=shapes, seed=st.integers(0, 2 ** 16))
def test_trace_then_run_with_python_scalar_and_numpy_constant(shape_pair, seed):
    a, b = arrays_for(shape_pair, np.float64, seed)

    def f(a):
        return (a * 2.0 - b) / 3 + 1

    g = gc.trace(f, a)
    from graphc.backends import numpy_backend
    (got,) = numpy_backend.run(g, [a])
    np.testing.assert_allclose(got, f(a), rtol=1e-12)


GRAD_OPS = ["add", "subtract", "multiply", "divide", "power", "where"]


@pytest.mark.parametrize("name", GRAD_OPS)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(shape_pair=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                min_side=1, max_side=3),
       seed=st.integers(0, 2 ** 16))
def test_gradient_through_broadcasting(name, shape_pair, seed):
    gc_fn, np_fn = BINARY[name]
    a, b = arrays_for(shape_pair, np.float64, seed)
    rng = np.random.default_rng(seed + 1)
    if name == "where":   # a on the quarter-grid, b on the half-grid: |a - b| >= 0.25
        a = np.round(a * 2) / 2 + 0.25
        b = np.round(b * 2) / 2
    ct = rng.standard_normal(shape_pair.result_shape)

    def loss(a, b):
        return gc.sum(gc_fn(a, b) * ct)

    ga, gb = gc.grad(loss, argnums=(0, 1))(a, b)
    assert np.shape(ga) == a.shape and np.shape(gb) == b.shape
    wa, wb = fd_vjp(np_fn, [a, b], ct, [0, 1])
    np.testing.assert_allclose(ga, wa, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, wb, rtol=1e-6, atol=1e-7)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(shape_pair=mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3,
                                                min_side=2, max_side=4),
       data=st.data())
def test_incompatible_shapes_raise_shape_error(shape_pair, data):
    a_shape, b_shape = shape_pair.input_shapes
    if not b_shape:
        return
    # change one non-1 dimension of b so it clashes with a's aligned dimension
    k = data.draw(st.integers(1, len(b_shape)))
    if k > len(a_shape) or a_shape[-k] == 1:
        return
    bad = list(b_shape)
    bad[-k] = a_shape[-k] + 1
    with pytest.raises(gc.ShapeError) as info:
        gc.trace(lambda x, y: x + y, np.ones(a_shape), np.ones(tuple(bad)))
    assert "'add'" in str(info.value)
