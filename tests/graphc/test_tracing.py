"""Tracing: operator overloading, numpy's own functions on tracers, constants, dtypes and
source-line provenance.  Each traced function is compared with the same code run eagerly
on numpy arrays (graphc's functions fall through to numpy on plain arrays)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from graphc.backends import numpy_backend
from graphc.tracing import Tracer

THIS_FILE = os.path.basename(__file__)


def run_traced(fn, *args):
    """Trace ``fn`` on ``args`` and execute the graph with the numpy reference backend."""
    return gc.jit(fn, backend="numpy")(*args)


def rng_arrays(dtype=np.float64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(dtype)
    y = rng.standard_normal((3, 4)).astype(dtype)
    return x, y


# ---- operators ---------------------------------------------------------------------------------
BINARY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "truediv": lambda x, y: x / (y * y + 1),
    "pow": lambda x, y: (x * x + 1) ** y,
    "matmul": lambda x, y: x @ y.T,
    "radd_scalar": lambda x, y: 2 + x,
    "rsub_scalar": lambda x, y: 2 - x,
    "rmul_scalar": lambda x, y: 2.5 * x,
    "rdiv_scalar": lambda x, y: 1 / (x * x + 1),
    "rpow_scalar": lambda x, y: 2.0 ** x,
    "pow_scalar": lambda x, y: x ** 3,
    "pow_two": lambda x, y: x ** 2,
    "neg": lambda x, y: -x,
    "pos": lambda x, y: +x,
    "abs": lambda x, y: abs(x),
    "lt": lambda x, y: x < y,
    "le": lambda x, y: x <= y,
    "gt": lambda x, y: x > y,
    "ge": lambda x, y: x >= 0.1,
    "eq": lambda x, y: x == x,
    "ne": lambda x, y: x != y,
    "and_or_not": lambda x, y: ((x > 0) & (y > 0)) | ~(x < y),
    "broadcast_row": lambda x, y: x + y[0],
    "broadcast_col": lambda x, y: x * y[:, :1],
    "rmatmul_numpy": lambda x, y: np.ones((2, 3)) @ x,
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_operator_matches_numpy(name):
    fn = BINARY[name]
    x, y = rng_arrays()
    got = run_traced(fn, x, y)
    want = fn(x, y)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    np.testing.assert_allclose(got, want, rtol=1e-12)


INDEX = {
    "int": lambda x: x[1],
    "neg_int": lambda x: x[-1],
    "int_int": lambda x: x[2, 3],
    "slice": lambda x: x[1:],
    "slice_step": lambda x: x[::2, 1::2],
    "neg_slice": lambda x: x[-2:, :-1],
    "empty_slice": lambda x: x[2:1],
    "none": lambda x: x[None],
    "none_middle": lambda x: x[:, None, 1:3],
    "ellipsis": lambda x: x[..., 1],
    "ellipsis_none": lambda x: x[None, ..., 1:3],
    "ellipsis_lead": lambda x: x[1, ...],
    "mixed": lambda x: x[1:3, 2],
}


@pytest.mark.parametrize("name", sorted(INDEX))
def test_getitem_matches_numpy(name):
    fn = INDEX[name]
    x, _ = rng_arrays()
    got = run_traced(fn, x)
    want = fn(x)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_array_equal(got, want)


def test_getitem_on_3d():
    x = np.arange(24.0).reshape(2, 3, 4)
    for fn in (lambda x: x[..., None, ::3], lambda x: x[1, ..., 2], lambda x: x[:, -1],
               lambda x: x[None, 1, None, :, 1:]):
        np.testing.assert_array_equal(run_traced(fn, x), fn(x))


METHODS = {
    "T": lambda x: x.T,
    "reshape_tuple": lambda x: x.reshape((4, 3)),
    "reshape_args": lambda x: x.reshape(2, -1),
    "flatten": lambda x: x.flatten(),
    "transpose": lambda x: x.transpose(),
    "transpose_axes": lambda x: x.transpose(1, 0),
    "sum": lambda x: x.sum(),
    "sum_axis": lambda x: x.sum(axis=1),
    "sum_keepdims": lambda x: x.sum(axis=0, keepdims=True),
    "mean": lambda x: x.mean(axis=-1),
    "max": lambda x: x.max(axis=0),
    "min": lambda x: x.min(),
    "astype": lambda x: x.astype(np.float32),
    "dot": lambda x: x.dot(x.T),
    "clip": lambda x: x.clip(-0.5, 0.5),
    "squeeze": lambda x: x[:1].squeeze(),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_matches_numpy(name):
    fn = METHODS[name]
    x, _ = rng_arrays()
    got = run_traced(fn, x)
    want = fn(x)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_shape_dtype_ndim_size_len_are_static():
    seen = {}

    def f(x):
        seen.update(shape=x.shape, dtype=x.dtype, ndim=x.ndim, size=x.size, len=len(x),
                    np_shape=np.shape(x), np_ndim=np.ndim(x))
        return x
    gc.trace(f, np.zeros((3, 4), np.float32))
    assert seen == {"shape": (3, 4), "dtype": np.float32, "ndim": 2, "size": 12, "len": 3,
                    "np_shape": (3, 4), "np_ndim": 2}


def test_iterating_a_tracer_unrolls_the_first_axis():
    x = np.arange(6.0).reshape(3, 2)
    got = run_traced(lambda x: sum(row * i for i, row in enumerate(x)), x)
    np.testing.assert_allclose(got, 0 * x[0] + 1 * x[1] + 2 * x[2])


# ---- numpy's own functions on tracers -----------------------------------------------------------
NUMPY_FUNCS = {
    "tanh": lambda x, y: np.tanh(x),
    "exp": lambda x, y: np.exp(x),
    "log": lambda x, y: np.log(x * x + 1),
    "sqrt": lambda x, y: np.sqrt(x * x),
    "abs": lambda x, y: np.abs(x),
    "square": lambda x, y: np.square(x),
    "sign": lambda x, y: np.sign(x),
    "log1p": lambda x, y: np.log1p(x * x),
    "expm1": lambda x, y: np.expm1(x),
    "sum_axis": lambda x, y: np.sum(x, axis=1),
    "sum_keepdims": lambda x, y: np.sum(x, axis=0, keepdims=True),
    "mean": lambda x, y: np.mean(x),
    "max": lambda x, y: np.max(x, axis=1),
    "amin": lambda x, y: np.amin(x, axis=0),
    "var": lambda x, y: np.var(x, axis=1),
    "maximum": lambda x, y: np.maximum(x, y),
    "minimum_scalar": lambda x, y: np.minimum(x, 0.0),
    "where": lambda x, y: np.where(x > y, x, y * 2),
    "where_scalar": lambda x, y: np.where(x > 0, x, 0.0),
    "matmul": lambda x, y: np.matmul(x, y.T),
    "dot": lambda x, y: np.dot(x, y.T),
    "reshape": lambda x, y: np.reshape(x, (2, 6)),
    "transpose": lambda x, y: np.transpose(x),
    "concatenate": lambda x, y: np.concatenate([x, y], axis=1),
    "stack": lambda x, y: np.stack([x, y]),
    "expand_squeeze": lambda x, y: np.squeeze(np.expand_dims(x, 1), 1),
    "broadcast_to": lambda x, y: np.broadcast_to(x[0], (5, 4)),
    "clip": lambda x, y: np.clip(x, -0.3, 0.3),
    "add_numpy_array": lambda x, y: np.add(x, np.arange(4.0)),
    "numpy_array_left": lambda x, y: np.arange(4.0) - x,
    "zeros_ones_like": lambda x, y: np.zeros_like(x) + np.ones_like(y) * 2,
    "logical": lambda x, y: np.logical_and(x > 0, np.logical_not(y > 0)),
}


@pytest.mark.parametrize("name", sorted(NUMPY_FUNCS))
def test_numpy_function_on_tracer(name):
    fn = NUMPY_FUNCS[name]
    x, y = rng_arrays()
    seen = []

    def traced(x, y):
        out = fn(x, y)
        seen.append(type(out))
        return out
    got = run_traced(traced, x, y)
    assert seen == [Tracer], f"{name} did not stay symbolic"
    want = fn(x, y)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ---- constants ------------------------------------------------------------------------------------
def test_python_scalars_become_constants_of_the_array_dtype():
    g = gc.trace(lambda x: x * 2 + 0.5, np.ones(3, np.float32))
    consts = [n for n in g.nodes if n.op == "constant"]
    assert consts and all(n.output.dtype == np.float32 for n in consts)
    assert g.outputs[0].dtype == np.float32


def test_numpy_array_becomes_a_constant_node():
    w = np.arange(6.0).reshape(2, 3)
    g = gc.trace(lambda x: x @ w, np.ones((4, 2)))
    consts = [n for n in g.nodes if n.op == "constant"]
    assert len(consts) == 1
    np.testing.assert_array_equal(consts[0].attrs["value"], w)
    assert not consts[0].attrs["value"].flags.writeable
    # the constant is a private copy: mutating the user's array later changes nothing
    w[...] = 0
    (out,) = numpy_backend.run(g, [np.ones((4, 2))])
    np.testing.assert_allclose(out, np.ones((4, 2)) @ np.arange(6.0).reshape(2, 3))


def test_constant_output_and_pytree_output():
    out = run_traced(lambda x: {"a": x + 1, "b": [3.0, x.sum()]}, np.ones(2))
    np.testing.assert_allclose(out["a"], [2.0, 2.0])
    assert out["b"][0] == 3.0 and out["b"][1] == 2.0


def test_closure_over_numpy_constant():
    b = np.array([1.0, -1.0])
    f = gc.jit(lambda x: gc.relu(x + b), backend="numpy")
    np.testing.assert_allclose(f(np.array([0.5, 0.5])), [1.5, 0.0])


# ---- dtypes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtype_is_preserved(dtype):
    x, y = rng_arrays(dtype)

    def f(x, y):
        h = gc.tanh(x @ y.T) * 0.5 + 1
        return gc.nn.log_softmax(h).sum(axis=1) / 3, gc.mean(x), gc.sigmoid(y) ** 2

    g = gc.trace(f, x, y)
    assert all(v.dtype == dtype for v in g.outputs)
    assert all(n.output.dtype == dtype for n in g.nodes if n.output.dtype.kind == "f")
    outs = run_traced(f, x, y)
    assert all(np.asarray(o).dtype == dtype for o in outs)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_labels(dtype):
    logits = np.random.default_rng(1).standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2], dtype)
    g = gc.trace(gc.nn.cross_entropy, logits, labels)
    assert g.inputs[1].dtype == dtype
    loss = run_traced(gc.nn.cross_entropy, logits, labels)
    z = logits - logits.max(1, keepdims=True)
    want = -np.mean(z[np.arange(4), labels] - np.log(np.exp(z).sum(1)))
    np.testing.assert_allclose(loss, want, rtol=1e-12)


def test_int_arithmetic_stays_int_and_float_mixing_promotes():
    i = np.array([1, 2, 3], np.int32)
    f = np.array([0.5, 0.5, 0.5], np.float64)
    out = run_traced(lambda i, f: (i + 1, i * 2, i + f, i / 2), i, f)
    assert [np.asarray(o).dtype for o in out[:3]] == [np.int32, np.int32, np.float64]
    # true division of ints gives graphc's default float (float32), not numpy's float64
    assert np.asarray(out[3]).dtype == np.float32
    np.testing.assert_allclose(out[2], i + f)
    np.testing.assert_allclose(out[3], i / 2)


def test_bool_mask_and_sum_of_bools():
    x = np.array([-1.0, 2.0, 3.0])
    got = run_traced(lambda x: (x > 0).sum(), x)
    assert got == 2


def test_float32_default_for_python_float_argument():
    g = gc.trace(lambda x: x * 2, 1.5)
    assert g.inputs[0].dtype == np.float32


# ---- provenance ------------------------------------------------------------------------------------
def test_each_node_records_the_user_source_line():
    def f(x, w):
        h = x @ w              # line A
        return gc.tanh(h).sum()  # line B
    line_a = f.__code__.co_firstlineno + 1
    g = gc.trace(f, np.ones((2, 3)), np.ones((3, 4)))
    by_op = {n.op: n for n in g.nodes}
    assert by_op["matmul"].source == f"{THIS_FILE}:{line_a}"
    assert by_op["tanh"].source == f"{THIS_FILE}:{line_a + 1}"
    assert by_op["sum"].source == f"{THIS_FILE}:{line_a + 1}"
    for n in g.nodes:
        if n.op != "input":
            assert n.source and n.source.startswith(THIS_FILE + ":"), n


def test_source_line_of_library_function_is_the_callers_line():
    def f(logits, y):
        return gc.nn.cross_entropy(logits, y)
    line = f.__code__.co_firstlineno + 1
    g = gc.trace(f, np.ones((2, 3)), np.array([0, 1]))
    assert {n.source for n in g.nodes if n.op != "input"} == {f"{THIS_FILE}:{line}"}


def test_backward_nodes_keep_the_forward_source_line():
    def f(x):
        return gc.sum(gc.tanh(x))
    line = f.__code__.co_firstlineno + 1
    from graphc.passes import autodiff
    g = gc.trace(f, np.ones(3))
    g2, _, _ = autodiff.backward(g, g.outputs[0], [g.inputs[0]])
    back = [n for n in g2.nodes if n.role == "backward" and n.op != "constant"]
    assert back and all(n.source == f"{THIS_FILE}:{line}" for n in back)


def test_input_names_follow_argument_names_and_pytree_paths():
    g = gc.trace(lambda params, x: params["w"][0] @ x,
                 {"w": [np.ones((2, 3))]}, np.ones((3, 1)))
    assert [v.name for v in g.inputs] == ["params.w.0", "x"]


def test_trace_result_verifies_and_is_cached_by_jit():
    calls = []

    def f(x):
        calls.append(1)
        return x * 2

    jf = gc.jit(f, backend="numpy")
    jf(np.ones(3))
    jf(np.zeros(3))
    assert len(calls) == 1
    jf(np.ones(4))
    jf(np.ones(3, np.float32))
    assert len(calls) == 3


def test_builtin_model_nodes_name_the_model_file_not_the_caller():
    """Code in graphc/models (the built-in models) counts as the user's: its lines are the
    provenance, not the CLI or runpy that called it."""
    from graphc.source import _MODELS
    src = "import graphc as gc\ndef model(x):\n    return gc.tanh(x)\n"
    ns = {}
    exec(compile(src, os.path.join(_MODELS[0], "fake_model.py"), "exec"), ns)
    g = gc.trace(ns["model"], np.ones(2))
    assert [n.source for n in g.nodes if n.op == "tanh"] == ["fake_model.py:3"]
