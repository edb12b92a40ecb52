"""Every op in the registry, lowered by the LLVM backend, against the numpy backend.

float32 agrees to 1e-5 relative, float64 to 1e-10; integer, bool and data-movement ops
agree exactly.  Shapes include sizes 1, primes and non-multiples of the vector width;
every case runs on 1 and 2 threads (bitwise-identical results).
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends import numpy_backend
from graphc.ir import Graph, all_ops
from tests.graphc.ir.test_ops import CASES, build

TOL = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-10, 1e-12)}


def check_close(got, want, scale=None):
    """``scale``: the size of the terms summed into each element (|a|@|b| for a matmul):
    rounding error is relative to it, not to a result that may have cancelled."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind == "f":
        rtol, atol = TOL[want.dtype]
        if scale is not None:
            bound = atol + rtol * (np.abs(want) + scale)
            err = np.abs(got.astype(np.float64) - want)
            assert np.all((err <= bound) | (np.isnan(got) & np.isnan(want))), \
                f"max error/bound {np.max(err / bound)} at {np.unravel_index(np.argmax(err / bound), err.shape)}"
            return
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(got, want)


def run_both(g, arrays, threads=(1, 2), scale=None):
    want = numpy_backend.run(g, [np.array(a) for a in arrays])
    results = []
    for t in threads:
        fn = llvm_backend.compile(g, threads=t)
        got = fn(*arrays)
        for a, b in zip(got, want):
            check_close(a, np.asarray(b), scale)
        results.append(got)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)   # thread count never changes results
    return results[0]


def test_every_op_has_a_lowering():
    assert llvm_backend.missing_lowerings() == []


def test_lowering_table_covers_registry_exactly():
    from graphc.backends.llvm.codegen.lowerings import LOWERINGS
    assert set(all_ops()) <= set(LOWERINGS)


@pytest.mark.parametrize("fdt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", [c for c in CASES if c.op != "input"], ids=lambda c: c.name)
def test_op_matches_numpy(case, fdt):
    rng = np.random.default_rng(0)
    arrays = case.make(rng, fdt)
    g, ins, y = build(case, arrays)
    run_both(g, arrays)


# ---- awkward shapes -------------------------------------------------------------------------
SHAPES = [(1,), (7,), (13,), (17,), (31,), (33,), (1, 1), (3, 1), (1, 19), (5, 7), (127,),
          (2, 3, 5), (16, 17), (255,), (1031,), (37, 41)]


def _unary_graph(name, shape, dtype):
    g = Graph(name)
    x = g.add_input(shape, dtype, "x")
    g.set_outputs([g.add(name, [x])])
    return g


@pytest.mark.parametrize("fdt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op", ["exp", "log", "log1p", "tanh", "sigmoid", "sqrt", "relu", "abs",
                                "neg", "sign"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary_awkward_shapes(op, shape, fdt):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 4).astype(fdt)
    if op in ("log", "sqrt", "log1p"):
        x = np.abs(x) + fdt(0.01)
    run_both(_unary_graph(op, shape, fdt), [x])


@pytest.mark.parametrize("fdt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 1), (7, 13), (2, 3, 5), (33, 65), (4, 1, 9)],
                         ids=str)
def test_reductions_awkward_shapes(shape, fdt):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(fdt)
    for axes in [None] + [(d,) for d in range(len(shape))] + ([(0, len(shape) - 1)]
                                                              if len(shape) > 1 else []):
        for keep in (False, True):
            for op in ("sum", "max"):
                g = Graph(op)
                xi = g.add_input(shape, fdt, "x")
                g.set_outputs([g.add(op, [xi], {"axes": axes, "keepdims": keep})])
                run_both(g, [x])


def test_special_values_float32():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 88.72, 88.73, -103.9,
                  -104.0, 1e30, -1e30, 0.625, -0.625, 9.0, -9.0, 1.1754944e-38], np.float32)
    for op in ("exp", "tanh", "sigmoid", "relu", "abs", "sign", "neg"):
        g = _unary_graph(op, x.shape, np.float32)
        got = llvm_backend.compile(g, threads=1)(x)[0]
        want = numpy_backend.run(g, [x])[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-44, equal_nan=True,
                                   err_msg=op)
    xl = np.array([0.0, np.inf, -1.0, np.nan, 1e-45, 1.1754944e-38, 1.0, 3.4e38], np.float32)
    g = _unary_graph("log", xl.shape, np.float32)
    with np.errstate(all="ignore"):
        want = numpy_backend.run(g, [xl])[0]
    np.testing.assert_allclose(llvm_backend.compile(g, threads=1)(xl)[0], want, rtol=1e-5,
                               equal_nan=True)


def test_transcendentals_dense_float32():
    """~1e5 points over the useful ranges, relative error against float64 numpy."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(30000) * 3, rng.uniform(-87, 88, 30000),
                        np.linspace(-1, 1, 20001)]).astype(np.float32)
    for op, arg in [("exp", x), ("tanh", x), ("sigmoid", x),
                    ("log", np.abs(x) + np.float32(1e-30))]:
        g = _unary_graph(op, arg.shape, np.float32)
        got = llvm_backend.compile(g, threads=1)(arg)[0].astype(np.float64)
        exact = numpy_backend.run(_unary_graph(op, arg.shape, np.float64),
                                  [arg.astype(np.float64)])[0]
        ok = np.abs(exact) > 1.2e-38       # normal float32 results
        rel = np.abs(got[ok] - exact[ok]) / np.abs(exact[ok])
        assert rel.max() < 4e-7, (op, rel.max())


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_ops(dtype):
    rng = np.random.default_rng(4)
    x = rng.integers(-50, 50, (7, 9)).astype(dtype)
    y = rng.integers(-6, 7, (7, 9)).astype(dtype)
    y[0, :3] = 0                                   # division by zero gives 0, as numpy
    x[1, 0], y[1, 0] = np.iinfo(dtype).min, -1     # wraps, as numpy (no SIGFPE)
    for op in ("add", "sub", "mul", "div", "maximum", "minimum", "lt", "eq", "ne", "ge"):
        g = Graph(op)
        a, b = g.add_input(x.shape, dtype, "x"), g.add_input(y.shape, dtype, "y")
        g.set_outputs([g.add(op, [a, b])])
        with np.errstate(all="ignore"):
            run_both(g, [x, y])
    for op in ("neg", "abs", "relu", "sign"):
        run_both(_unary_graph(op, x.shape, dtype), [x])
    for to in (np.float32, np.float64, np.int32, np.int64, np.bool_):
        g = Graph("cast")
        a = g.add_input(x.shape, dtype, "x")
        g.set_outputs([g.add("cast", [a], {"dtype": to})])
        run_both(g, [x])


def test_bool_casts_and_logic():
    rng = np.random.default_rng(5)
    m = rng.random((5, 11)) < 0.5
    f = rng.standard_normal((5, 11)).astype(np.float32)
    f[0, 0] = np.nan
    f[0, 1] = 0.0
    for to in (np.float32, np.int32, np.int64):
        g = Graph("c")
        a = g.add_input(m.shape, np.bool_, "m")
        g.set_outputs([g.add("cast", [a], {"dtype": to})])
        run_both(g, [m])
    g = Graph("c")
    a = g.add_input(f.shape, np.float32, "f")
    g.set_outputs([g.add("cast", [a], {"dtype": np.bool_})])
    run_both(g, [f])


# ---- broadcasting, views, matmul layouts ------------------------------------------------------
@pytest.mark.parametrize("fdt", [np.float32, np.float64], ids=["f32", "f64"])
def test_broadcasting_through_tracing(fdt):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 1, 7)).astype(fdt)
    b = rng.standard_normal((3, 1)).astype(fdt)
    c = rng.standard_normal((7,)).astype(fdt)

    def f(a, b, c):
        return gc.tanh(a * b + c) - gc.max(a, axis=2, keepdims=True) / (1 + gc.exp(c))
    g = gc.trace(f, a, b, c)
    run_both(g, [a, b, c])


@pytest.mark.parametrize("fdt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mnk", [(1, 1, 1), (1, 17, 3), (13, 1, 7), (31, 33, 17), (64, 64, 64),
                                 (97, 130, 61), (7, 300, 259), (301, 20, 700)], ids=str)
def test_matmul_layouts(mnk, fdt):
    m, n, k = mnk
    rng = np.random.default_rng(7)
    a, at = rng.standard_normal((m, k)).astype(fdt), rng.standard_normal((k, m)).astype(fdt)
    b, bt = rng.standard_normal((k, n)).astype(fdt), rng.standard_normal((n, k)).astype(fdt)
    bias = rng.standard_normal((n,)).astype(fdt)
    fs = [lambda a, b: a @ b, lambda at, b: at.T @ b, lambda a, bt: a @ bt.T,
          lambda at, bt: at.T @ bt.T]
    args = [(a, b), (at, b), (a, bt), (at, bt)]
    for f, xs in zip(fs, args):
        g = gc.trace(f, *xs)
        run_both(g, list(xs), scale=np.abs(f(*xs)) + np.abs(f(*[np.abs(x) for x in xs])))
    g = gc.trace(lambda a, b, c: gc.relu(a @ b + c), a, b, bias)     # epilogue
    run_both(g, [a, b, bias], scale=np.abs(a) @ np.abs(b) + np.abs(bias))


def test_batched_matmul_and_strided_operands():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((3, 5, 7)).astype(np.float32)
    b = rng.standard_normal((3, 7, 4)).astype(np.float32)
    g = gc.trace(lambda a, b: a @ b, a, b)
    run_both(g, [a, b], scale=np.abs(a) @ np.abs(b))
    # a slice with steps: neither row- nor column-major -> copied before the GEMM
    x = rng.standard_normal((10, 12)).astype(np.float32)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    g = gc.trace(lambda x, w: x[::2, ::2] @ w, x, w)
    run_both(g, [x, w], scale=np.abs(x[::2, ::2]) @ np.abs(w))


def test_views_reshape_transpose_slice_concat():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)

    def f(x):
        t = gc.transpose(x, (2, 0, 1))                  # strided view
        r = gc.reshape(t, (5, 24))                      # not expressible: materialised
        s = x[1:4:2, ::3, 1:]
        c = gc.concatenate([r[:, :3], r[:, 5:9]], axis=1)
        return gc.sum(r * 2, axis=0), s + 1, c, gc.reshape(x, (24, 5))
    g = gc.trace(f, x)
    run_both(g, [x])


def test_constants_large_and_small():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((40, 50)).astype(np.float32)
    big = rng.standard_normal((40, 50)).astype(np.float32)
    g = gc.trace(lambda x: x * big + np.float32(3) + np.arange(50, dtype=np.float32), x)
    run_both(g, [x])


def test_outputs_aliasing_inputs_and_duplicates():
    g = Graph("g")
    x = g.add_input((3, 4), np.float32, "x")
    y = g.add("exp", [x])
    g.set_outputs([x, y, y, g.add("transpose", [y], {"perm": (1, 0)})])
    x0 = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    run_both(g, [x0])


def test_zero_size_arrays():
    g = Graph("z")
    x = g.add_input((0, 5), np.float32, "x")
    w = g.add_input((5, 3), np.float32, "w")
    y = g.add("matmul", [x, w])
    g.set_outputs([g.add("exp", [y]), g.add("sum", [x], {"axes": (0,)})])
    run_both(g, [np.zeros((0, 5), np.float32), np.ones((5, 3), np.float32)])


@pytest.mark.parametrize("fdt", [np.float32, np.float64], ids=["f32", "f64"])
def test_log1p_is_accurate_near_zero_and_at_special_values(fdt):
    """log1p keeps its digits where log(1 + x) loses them all (|x| < eps)."""
    tiny = np.concatenate([np.geomspace(1e-30, 1e-1, 400), -np.geomspace(1e-30, 0.5, 400),
                           np.linspace(-0.99, 50, 401)]).astype(fdt)
    g = _unary_graph("log1p", tiny.shape, fdt)
    got = llvm_backend.compile(g, threads=1)(tiny)[0].astype(np.float64)
    exact = np.log1p(tiny.astype(np.float64))
    ulp = np.finfo(fdt).eps
    assert np.max(np.abs(got - exact) / np.abs(exact)) < 4 * ulp
    special = np.array([0.0, -0.0, -1.0, -2.0, np.inf, -np.inf, np.nan, 1e-45], fdt)
    g = _unary_graph("log1p", special.shape, fdt)
    with np.errstate(all="ignore"):
        want = np.log1p(special)
    got = llvm_backend.compile(g, threads=1)(special)[0]
    np.testing.assert_array_equal(np.signbit(got[:2]), np.signbit(want[:2]))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)
