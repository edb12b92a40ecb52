"""Bad input gives the right GraphcError subclass, naming the op, the shapes and the
user's source line (file name and line number)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from graphc.backends import numpy_backend

THIS_FILE = os.path.basename(__file__)


def line_of(fn, offset=1):
    """``test_errors.py:N`` for the line ``offset`` lines below ``def fn``."""
    return f"{THIS_FILE}:{fn.__code__.co_firstlineno + offset}"


def raises(exc, fn, *args):
    with pytest.raises(exc) as info:
        fn(*args)
    assert isinstance(info.value, gc.GraphcError)
    return str(info.value)


# ---- shapes ------------------------------------------------------------------------------------
def test_matmul_shape_mismatch():
    def f(a, b):
        return a @ b
    msg = raises(gc.ShapeError, gc.trace, f, np.ones((3, 4)), np.ones((5, 6)))
    assert "matmul" in msg
    assert "(3, 4)" in msg and "(5, 6)" in msg
    assert line_of(f) in msg
    assert "a @ b" in msg          # the offending source text is quoted


def test_add_broadcast_mismatch():
    def f(a, b):
        return a + b
    msg = raises(gc.ShapeError, gc.trace, f, np.ones(3), np.ones(4))
    assert "'add'" in msg and "(3,)" in msg and "(4,)" in msg
    assert line_of(f) in msg


@pytest.mark.parametrize("op,fn", [
    ("mul", lambda a, b: gc.multiply(a, b)),
    ("sub", lambda a, b: np.subtract(a, b)),
    ("maximum", lambda a, b: gc.maximum(a, b)),
    ("lt", lambda a, b: a < b),
])
def test_elementwise_broadcast_mismatch_names_the_op(op, fn):
    msg = raises(gc.ShapeError, gc.trace, fn, np.ones((2, 3)), np.ones((3, 2)))
    assert f"'{op}'" in msg and "(2, 3)" in msg and "(3, 2)" in msg
    assert THIS_FILE in msg


def test_shape_error_is_a_value_error():
    with pytest.raises(ValueError):
        gc.trace(lambda a, b: a + b, np.ones(3), np.ones(4))


@pytest.mark.parametrize("name,fn,op", [
    ("reshape", lambda x: x.reshape(5, 5), "reshape"),
    ("sum_axis", lambda x: x.sum(axis=3), "sum"),
    ("concatenate", lambda x: gc.concatenate([x, x.T]), "concatenate"),
    ("where", lambda x: gc.where(x > 0, x, np.ones(4)), "where"),
    ("index", lambda x: x[5], "index"),
    ("too_many_indices", lambda x: x[0, 0, 0], "indices"),
    ("broadcast_to", lambda x: gc.broadcast_to(x, (3, 2)), "broadcast_to"),
    ("cross_entropy", lambda x: gc.nn.cross_entropy(x, np.zeros(4, np.int64)), "cross_entropy"),
])
def test_other_shape_errors_name_op_and_line(name, fn, op):
    msg = raises(gc.ShapeError, gc.trace, fn, np.ones((2, 3)))
    assert op in msg
    assert THIS_FILE in msg


# ---- data-dependent control flow ----------------------------------------------------------------
def test_if_on_tracer_is_a_trace_error_suggesting_where():
    def f(t):
        if t > 0:
            return t
        return -t
    msg = raises(gc.TraceError, gc.trace, f, np.ones(()))
    assert "gc.where" in msg
    assert line_of(f) in msg and "if t > 0" in msg
    assert "gt" in msg            # the op that produced the value


@pytest.mark.parametrize("fn,what", [
    (lambda t: float(t.sum()), "float()"),
    (lambda t: int(t[0]), "int()"),
    (lambda t: np.asarray(t), "numpy array"),
    (lambda t: [1, 2, 3][t[0]], "index"),
    (lambda t: t if (t > 0).sum() and True else t, "bool()"),
])
def test_concrete_value_needed_is_a_trace_error(fn, what):
    msg = raises(gc.TraceError, gc.trace, fn, np.ones(3))
    assert what in msg and THIS_FILE in msg


def test_while_loop_on_tracer():
    def f(t):
        while t.sum() > 0:
            t = t - 1
        return t
    msg = raises(gc.TraceError, gc.trace, f, np.ones(3))
    assert line_of(f) in msg and "gc.where" in msg


def test_escaped_tracer_is_an_error():
    leaked = []

    def inner(x):
        leaked.append(x)
        return gc.sum(x)
    gc.grad(inner)(np.ones(3))
    with pytest.raises(gc.TraceError, match="escaped"):
        gc.trace(lambda y: y + leaked[0], np.ones(3))


# ---- unsupported numpy functions ------------------------------------------------------------
@pytest.mark.parametrize("fn,name", [
    (lambda t: np.fft.fft(t), "np.fft.fft"),
    (lambda t: np.argsort(t), "np.argsort"),
    (lambda t: np.sin(t), "np.sin"),
    (lambda t: np.add.reduce(t), "np.add.reduce"),
    (lambda t: np.linalg.norm(t), "np.linalg.norm"),
])
def test_unsupported_numpy_function_is_named(fn, name):
    msg = raises(gc.TraceError, gc.trace, fn, np.ones(3))
    assert name in msg
    assert THIS_FILE in msg


def test_ufunc_out_argument_is_rejected():
    msg = raises(gc.TraceError, gc.trace, lambda t: np.exp(t, out=np.empty(3)), np.ones(3))
    assert "out=" in msg


@pytest.mark.parametrize("fn,exc,what", [
    (lambda t: t[1.5], gc.TraceError, "valid indices"),
    (lambda t: t[True], gc.TraceError, "valid indices"),
    (lambda t: t[0.5:2], gc.TraceError, "valid indices"),
    (lambda t: t[..., ...], gc.ShapeError, "single ellipsis"),
    (lambda t: t[::-1], gc.TraceError, "negative steps"),
    (lambda t: t.reshape(-1, -1), gc.ShapeError, "more than one -1"),
    (lambda t: gc.cast(t, np.complex64), gc.DTypeError, "cast"),
    (lambda t: t + "a", gc.DTypeError, "add"),
])
def test_bad_index_reshape_and_dtype(fn, exc, what):
    msg = raises(exc, gc.trace, fn, np.ones(3))
    assert what in msg and THIS_FILE in msg


@pytest.mark.parametrize("fn,what", [
    (lambda t: np.add(t, 1.0, dtype=np.float32), "dtype="),
    (lambda t: np.exp(t, where=t > 0), "where="),
    (lambda t: np.max(t, initial=0.0), "initial"),
])
def test_unsupported_numpy_keyword_is_not_silently_ignored(fn, what):
    msg = raises(gc.TraceError, gc.trace, fn, np.ones(3))
    assert what in msg and THIS_FILE in msg


def test_advanced_indexing_is_rejected():
    """One integer array is a gather (gc.take); two, or a bool mask, are not supported."""
    msg = raises(gc.TraceError, gc.trace, lambda t: t[np.array([0, 2]), np.array([1, 0])],
                 np.ones((3, 3)))
    assert "advanced index" in msg and "gc.take" in msg and THIS_FILE in msg
    msg = raises(gc.TraceError, gc.trace, lambda t: t[np.array([True, False, True])],
                 np.ones(3))
    assert "advanced index" in msg


# ---- wrong arguments at call time ----------------------------------------------------------------
def test_jit_wrong_number_of_arguments():
    f = gc.jit(lambda x, y: x + y, backend="numpy")
    f(np.ones(3), np.ones(3))
    msg = raises(gc.ArgumentError, f, np.ones(3))
    assert "'y'" in msg
    raises(gc.ArgumentError, f, np.ones(3), np.ones(3), np.ones(3))


@pytest.mark.parametrize("bad", ["abc", np.ones(2, np.complex128), object()],
                         ids=["str", "complex", "object"])
def test_jit_unsupported_argument_dtype(bad):
    f = gc.jit(lambda x: x * 2, backend="numpy")
    msg = raises(gc.ArgumentError, f, bad)
    assert "x" in msg and "dtype" in msg


def test_jit_wrong_shape_against_closed_over_weight():
    w = np.ones((4, 2))

    def f(x):
        return x @ w
    jf = gc.jit(f, backend="numpy")
    jf(np.ones((3, 4)))
    msg = raises(gc.ShapeError, jf, np.ones((3, 5)))
    assert "matmul" in msg and line_of(f) in msg


def test_jit_wrong_structure():
    def f(params, x):
        return x @ params["w"]
    jf = gc.jit(f, backend="numpy")
    jf({"w": np.ones((2, 2))}, np.ones((1, 2)))
    with pytest.raises(gc.ArgumentError):
        jf({"w": np.ones((2, 2))})


@pytest.mark.parametrize("args,what", [
    ([np.ones((2, 3))], "expected 2 inputs"),
    ([np.ones((2, 3)), np.ones((3, 4)), np.ones(1)], "expected 2 inputs"),
    ([np.ones((2, 3)), np.ones((4, 4))], "shape"),
    ([np.ones((2, 3)), np.ones((3, 4), np.int64)], "dtype"),
    ([np.ones((2, 3)), "abc"], "must be an array"),
])
def test_compiled_graph_checks_arguments(args, what):
    g = gc.trace(lambda a, b: a @ b, np.ones((2, 3)), np.ones((3, 4)))
    run = numpy_backend.compile(g)
    msg = raises(gc.ArgumentError, run, *args)
    assert what in msg


def test_jvp_mismatched_tangents():
    msg = raises(gc.ArgumentError, gc.jvp, gc.tanh, (np.ones(3),), (np.ones(4),))
    assert "(4,)" in msg and "(3,)" in msg
    raises(gc.ArgumentError, gc.jvp, gc.tanh, (np.ones(3),), ([np.ones(3)],))


# ---- grad of a non-scalar loss ------------------------------------------------------------------
def test_grad_of_non_scalar_loss():
    def f(x):
        return x * 2
    msg = raises(gc.ShapeError, gc.grad(f), np.ones(3))
    assert "scalar" in msg and "f64[3]" in msg
    assert "mul" in msg and line_of(f) in msg
    assert "gc.mean" in msg or "gc.sum" in msg


def test_grad_of_integer_loss():
    def f(x):
        return gc.sum(x)
    msg = raises(gc.DTypeError, gc.grad(f), np.ones(3, np.int64))
    assert "scalar float" in msg and line_of(f) in msg


@pytest.mark.parametrize("arg", [3, np.array([1, 2]), {"w": np.ones(2), "n": np.int32(1)}],
                         ids=["py-int", "int-array", "pytree-with-int-leaf"])
def test_grad_with_respect_to_integer_argument(arg):
    """A silent zero gradient would be wrong (d(2x)/dx = 2): refuse instead."""
    def f(a):
        leaves = list(a.values()) if isinstance(a, dict) else [a]
        return sum(gc.sum(x * 2.0) for x in leaves)
    msg = raises(gc.DTypeError, gc.grad(f), arg)
    assert "float" in msg and "i" in msg


def test_grad_of_pytree_loss():
    raises(gc.GraphcError, gc.grad(lambda x: (gc.sum(x), gc.sum(x))), np.ones(3))


def test_unknown_op_and_backend():
    with pytest.raises(gc.GraphcError, match="unknown op 'frobnicate'"):
        gc.ir.get_op("frobnicate")
    with pytest.raises(gc.GraphcError, match="unknown backend"):
        gc.jit(lambda x: x, backend="cuda")(np.ones(2))


def test_dtype_error_for_float_only_op_on_ints():
    g = gc.Graph()
    x = g.add_input((2,), np.int64, "x")
    with pytest.raises(gc.DTypeError, match="tanh"):
        g.add("tanh", [x])
