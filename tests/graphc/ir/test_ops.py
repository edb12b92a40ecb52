"""Every registered op: its shape/dtype rule against the numpy reference, and (unless it is
non-differentiable) its VJP and JVP rules against central finite differences in float64.

Adding an op to the registry without a case here, without derivative rules or without a
numpy lowering makes a coverage test fail.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from graphc.backends import numpy_backend
from graphc.backends.numpy_backend import IMPLS
from graphc.ir import Graph, all_ops, get_op, verify
from graphc.ir.registry import NON_DIFFERENTIABLE
from graphc.passes import autodiff, forward_ad
from tests.numeric import fd_jvp, fd_vjp


# ---- input generators (kept away from kinks and singularities) ------------------------------
def normal(*shape):
    return lambda rng, f: rng.standard_normal(shape).astype(f)


def positive(*shape):
    return lambda rng, f: rng.uniform(0.5, 2.0, shape).astype(f)


def nonzero(*shape):
    """|x| >= 0.2: no kink of relu/abs/sign within the finite-difference step."""
    return lambda rng, f: (rng.choice([-1.0, 1.0], shape)
                           * rng.uniform(0.2, 1.5, shape)).astype(f)


def distinct(*shape):
    """Values at least 0.1 apart: a unique max along any axis."""
    def make(rng, f):
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)).astype(f)
    return make


def boolean(*shape):
    return lambda rng, f: rng.random(shape) < 0.5


def integer(dtype, *shape):
    return lambda rng, f: rng.integers(-3, 4, shape).astype(dtype)


def index(limit, dtype, *shape):
    """Integer indices in [0, limit), repeats included (a scatter-add must sum them)."""
    return lambda rng, f: rng.integers(0, limit, shape).astype(dtype)


def between_multiples(sign, *shape):
    """(x, y) with x / y at least 0.1 from an integer (no jump of x % y or x // y within
    the finite-difference step); ``sign`` is the sign of the divisor y."""
    def make(rng, f):
        y = sign * rng.uniform(0.5, 2.0, shape)
        q = rng.integers(-3, 4, shape) + rng.uniform(0.1, 0.9, shape)
        return [(q * y).astype(f), y.astype(f)]
    return make


def apart_pair(*shape):
    """(x, y) with |x - y| >= 0.2 everywhere: no ties for maximum/minimum."""
    def make(rng, f):
        x = rng.standard_normal(shape)
        return [x.astype(f), (x + nonzero(*shape)(rng, np.float64)).astype(f)]
    return make


@dataclass
class Case:
    op: str
    inputs: list | Callable               # generators per input, or one making all inputs
    attrs: dict = field(default_factory=dict)
    id: str = ""
    differentiable: bool = True           # run the derivative tests on this case
    rtol: float = 1e-6
    atol: float = 1e-7
    h: float = 1e-6                       # finite-difference step

    def make(self, rng, fdt):
        if callable(self.inputs):
            return self.inputs(rng, fdt)
        return [g(rng, fdt) for g in self.inputs]

    @property
    def name(self):
        return f"{self.op}-{self.id}" if self.id else self.op


def image_and(pooled_attrs, image, op="max_pool2d"):
    """[distinct image, normal array shaped like ``op``'s output on it]."""
    def make(rng, f):
        from graphc.ir import TensorType, get_op
        x = distinct(*image)(rng, f)
        a = get_op(op).check_attrs(dict(pooled_attrs), [TensorType(image, f)])
        out = get_op(op).infer(a, TensorType(image, f))
        return [x, rng.standard_normal(out.shape).astype(f)]
    return make


# sliding-window ops: odd sizes, strides, padding, dilation, a batch of one
CONV_A = {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 2), "dilation": (2, 1)}
CONV_B = {"kernel": 2, "stride": 1, "padding": 0}
POOL_A = {"kernel": 2}                                           # LeNet's
POOL_B = {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 1)}  # overlapping, padded
WINDOW_CASES = [
    Case("sdpa", [normal(2, 4, 3), normal(2, 5, 3), normal(2, 5, 2)],
         {"causal": False, "scale": 0.6}),
    Case("sdpa", [normal(2, 1, 5, 3), normal(2, 1, 4, 3), normal(2, 1, 4, 3)],
         {"causal": True, "scale": 0.5}, id="causal"),
    Case("sdpa_grad", [normal(2, 4, 3), normal(2, 5, 3), normal(2, 5, 2), normal(2, 4, 2),
                       normal(2, 4, 2)], {"causal": True, "scale": 0.6}),
    Case("im2col", [normal(2, 3, 7, 6)], CONV_A),
    Case("im2col", [normal(1, 2, 4, 5)], CONV_B, id="stride1"),
    Case("col2im", [normal(18, 2 * 3 * 9)], {"shape": (2, 3, 7, 6), **CONV_A}),
    Case("col2im", [normal(8, 12)], {"shape": (1, 2, 4, 5), **CONV_B}, id="stride1"),
    Case("avg_pool2d", [normal(2, 3, 5, 7)], POOL_A),
    Case("avg_pool2d", [normal(1, 2, 5, 4)], POOL_B, id="padded"),
    Case("avg_pool2d_grad", [normal(2, 3, 2, 3)], {"shape": (2, 3, 5, 7), **POOL_A}),
    Case("avg_pool2d_grad", [normal(1, 2, 3, 5)], {"shape": (1, 2, 5, 4), **POOL_B},
         id="padded"),
    Case("max_pool2d", [distinct(2, 3, 5, 7)], POOL_A),
    Case("max_pool2d", [distinct(1, 2, 5, 4)], POOL_B, id="padded"),
    Case("max_pool2d_grad", image_and(POOL_A, (2, 3, 5, 7)), POOL_A),
    Case("max_pool2d_grad", image_and(POOL_B, (1, 2, 5, 4)), POOL_B, id="padded"),
    Case("max_pool2d_select", lambda rng, f: [distinct(2, 3, 5, 7)(rng, f),
                                              normal(2, 3, 5, 7)(rng, f)], POOL_A),
    Case("max_pool2d_select", lambda rng, f: [distinct(1, 2, 5, 4)(rng, f),
                                              normal(1, 2, 5, 4)(rng, f)], POOL_B,
         id="padded"),
]
S = (2, 3)
CASES = [
    Case("add", [normal(*S), normal(*S)]),
    Case("add", [normal(), normal()], id="scalar"),
    Case("sub", [normal(*S), normal(*S)]),
    Case("mul", [normal(*S), normal(*S)]),
    Case("div", [normal(*S), positive(*S)]),
    Case("div", [normal(*S), lambda rng, f: -positive(*S)(rng, f)], id="negative-divisor"),
    Case("pow", [positive(*S), normal(*S)]),
    Case("remainder", between_multiples(1.0, *S)),
    Case("remainder", between_multiples(-1.0, *S), id="negative-divisor"),
    Case("remainder", [integer(np.int64, *S), integer(np.int64, *S)], id="int",
         differentiable=False),
    Case("floor_divide", between_multiples(1.0, *S), differentiable=False),
    Case("floor_divide", between_multiples(-1.0, *S), id="negative-divisor",
         differentiable=False),
    Case("floor_divide", [integer(np.int32, *S), integer(np.int32, *S)], id="int",
         differentiable=False),
    Case("maximum", apart_pair(*S)),
    Case("minimum", apart_pair(*S)),
    Case("neg", [normal(*S)]),
    Case("exp", [normal(*S)]),
    Case("exp", [normal()], id="scalar"),
    Case("log", [positive(*S)]),
    Case("log1p", [positive(*S)]),
    Case("log1p", [lambda rng, f: rng.uniform(-0.5, 0.5, S).astype(f)], id="near-zero"),
    Case("tanh", [normal(*S)]),
    Case("sigmoid", [lambda rng, f: (4 * rng.standard_normal(S)).astype(f)]),
    Case("relu", [nonzero(*S)]),
    Case("sqrt", [positive(*S)]),
    Case("abs", [nonzero(*S)]),
    Case("sign", [nonzero(*S)], differentiable=False),
    *[Case(c, [normal(*S), normal(*S)], differentiable=False)
      for c in ("lt", "le", "gt", "ge", "eq", "ne")],
    Case("eq", [integer(np.int64, *S), integer(np.int64, *S)], id="int64", differentiable=False),
    Case("lt", [integer(np.int32, *S), integer(np.int32, *S)], id="int32", differentiable=False),
    Case("logical_and", [boolean(*S), boolean(*S)], differentiable=False),
    Case("logical_or", [boolean(*S), boolean(*S)], differentiable=False),
    Case("logical_not", [boolean(*S)], differentiable=False),
    Case("where", [boolean(*S), normal(*S), normal(*S)]),
    Case("cast", [normal(*S)], {"dtype": np.float64}, id="to-f64"),
    Case("cast", [normal(*S)], {"dtype": np.float32}, id="to-f32", rtol=1e-4, atol=1e-4,
         h=1e-2),
    Case("cast", [normal(*S)], {"dtype": np.int64}, id="to-i64", differentiable=False),
    Case("cast", [integer(np.int32, *S)], {"dtype": np.float64}, id="i32-to-f64",
         differentiable=False),
    Case("stop_gradient", [normal(*S)], differentiable=False),
    Case("check_index", [lambda rng, f: rng.integers(0, 5, S)], {"limit": 5},
         differentiable=False),
    Case("matmul", [normal(2, 3), normal(3, 4)]),
    Case("matmul", [normal(2, 2, 3), normal(2, 3, 4)], id="batched"),
    Case("sum", [normal(2, 3, 4)], {"axes": None}, id="all"),
    Case("sum", [normal(2, 3, 4)], {"axes": (1,)}, id="axis1"),
    Case("sum", [normal(2, 3, 4)], {"axes": (0, -1), "keepdims": True}, id="keepdims"),
    Case("sum", [integer(np.int64, 2, 3)], {"axes": (0,)}, id="int", differentiable=False),
    Case("max", [distinct(2, 3, 4)], {"axes": None}, id="all"),
    Case("max", [distinct(2, 3, 4)], {"axes": (1,)}, id="axis1"),
    Case("max", [distinct(2, 3, 4)], {"axes": (0, 2), "keepdims": True}, id="keepdims"),
    Case("reshape", [normal(2, 3, 4)], {"shape": (6, 4)}),
    Case("reshape", [normal(1)], {"shape": ()}, id="to-scalar"),
    Case("transpose", [normal(2, 3, 4)], {"perm": (2, 0, 1)}),
    Case("transpose", [normal(2, 3)], {"perm": None}, id="reverse"),
    Case("broadcast_to", [normal(3, 1)], {"shape": (2, 3, 4)}),
    Case("broadcast_to", [normal()], {"shape": (2, 3)}, id="scalar"),
    Case("slice", [normal(4, 5)], {"starts": (1, 0), "stops": (4, 5), "steps": (2, 2)}),
    Case("slice", [normal(4, 5)], {"starts": (0, 2), "stops": (4, 3), "steps": (1, 1)},
         id="column"),
    Case("unslice", [normal(2, 3)],
         {"shape": (4, 5), "starts": (1, 0), "stops": (4, 5), "steps": (2, 2)}),
    Case("concatenate", [normal(2, 3), normal(2, 2), normal(2, 1)], {"axis": 1}),
    Case("concatenate", [normal(1, 3), normal(2, 3)], {"axis": -2}, id="negative-axis"),
    Case("erf", [normal(*S)]),
    Case("take", [normal(4, 3), index(4, np.int64, 2, 5)], {"axis": 0}),
    Case("take", [normal(2, 4, 3), index(4, np.int32, 3)], {"axis": 1}, id="axis1-int32"),
    Case("take_add", [normal(2, 5, 3), index(4, np.int64, 2, 5)], {"axis": 0, "size": 4}),
    Case("take_add", [normal(2, 3, 3), index(4, np.int32, 3)], {"axis": 1, "size": 4},
         id="axis1-int32"),
    Case("philox_uniform", [lambda rng, f: np.array([7, 3], np.int64)],
         {"shape": (3, 4), "dtype": np.float32, "salt": 5}, differentiable=False),
    *WINDOW_CASES,
    Case("constant", [], {"value": np.arange(6.0).reshape(2, 3)}, differentiable=False),
    Case("input", [], differentiable=False),
]

DIFF_CASES = [c for c in CASES if c.differentiable]


def ids(case):
    return case.name


def build(case, arrays):
    """A graph with one input per array and one node applying the op."""
    g = Graph(case.name)
    ins = [g.add_input(a.shape, a.dtype, f"x{i}") for i, a in enumerate(arrays)]
    y = g.add(case.op, ins, case.attrs)
    g.set_outputs([y])
    return g, ins, y


def reference(case, node, arrays):
    return np.asarray(IMPLS[case.op](node.attrs, *arrays))


def float_inputs(arrays):
    return [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]


# ---- coverage -------------------------------------------------------------------------------
def test_every_op_has_a_test_case():
    missing = sorted(set(all_ops()) - {c.op for c in CASES})
    assert not missing, f"ops without a case in tests/graphc/ir/test_ops.py: {missing}"


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_differentiable_op_has_vjp_and_jvp(name):
    op = get_op(name)
    if name in NON_DIFFERENTIABLE:
        return
    assert op.vjp is not None, f"op {name} has no VJP rule"
    assert op.jvp is not None, f"op {name} has no JVP rule"


def test_every_differentiable_op_has_a_derivative_case():
    diff = set(all_ops()) - NON_DIFFERENTIABLE
    assert not diff - {c.op for c in DIFF_CASES}


def test_numpy_backend_lowers_every_op():
    assert numpy_backend.missing_lowerings() == []


# ---- shape/dtype rules ------------------------------------------------------------------------
@pytest.mark.parametrize("fdt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", [c for c in CASES if c.op != "input"], ids=ids)
def test_shape_rule_matches_numpy(case, fdt):
    rng = np.random.default_rng(0)
    arrays = case.make(rng, fdt)
    g, ins, y = build(case, arrays)
    verify(g)
    ref = reference(case, y.node, arrays)
    assert y.shape == ref.shape
    assert y.dtype == ref.dtype
    (out,) = numpy_backend.run(g, arrays)
    assert out.shape == y.shape and out.dtype == y.dtype
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.bool_])
def test_input_node_type(dtype):
    g = Graph()
    x = g.add_input((2, 0, 3), dtype, "x")
    assert x.shape == (2, 0, 3) and x.dtype == np.dtype(dtype)
    assert x.node.op == "input" and g.inputs == [x]
    verify(g)


# ---- derivative rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", DIFF_CASES, ids=ids)
def test_vjp_matches_finite_differences(case):
    rng = np.random.default_rng(1)
    arrays = case.make(rng, np.float64)
    g, ins, y = build(case, arrays)
    wrt = float_inputs(arrays)
    ct_in = g.add_input(y.shape, y.dtype, "ct", "cotangent")
    g2, grads, _ = autodiff.backward(g, y, [ins[i] for i in wrt], seed=ct_in)
    g2.set_outputs(grads)
    verify(g2)
    assert {n.role for n in g2.nodes[len(g.nodes):]} <= {"backward"}
    ct = rng.standard_normal(y.shape)
    got = numpy_backend.run(g2, arrays + [ct])
    want = fd_vjp(lambda *xs: reference(case, y.node, xs), arrays, ct, wrt, h=case.h)
    for i, a, b in zip(wrt, got, want):
        assert a.shape == arrays[i].shape and a.dtype == arrays[i].dtype
        np.testing.assert_allclose(a, b, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"VJP of {case.name} w.r.t. input {i}")


@pytest.mark.parametrize("case", DIFF_CASES, ids=ids)
def test_jvp_matches_finite_differences(case):
    rng = np.random.default_rng(2)
    arrays = case.make(rng, np.float64)
    g, ins, y = build(case, arrays)
    wrt = float_inputs(arrays)
    g2, t_ins, outs, _ = forward_ad.forward(g, [ins[i] for i in wrt])
    g2.set_outputs(outs)
    verify(g2)
    tans = [rng.standard_normal(arrays[i].shape) for i in wrt]
    (got,) = numpy_backend.run(g2, arrays + tans)
    full_t = [None] * len(arrays)
    for i, t in zip(wrt, tans):
        full_t[i] = t
    want = fd_jvp(lambda *xs: reference(case, y.node, xs), arrays, full_t, h=case.h)
    assert got.shape == y.shape and got.dtype == y.dtype
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case", [c for c in DIFF_CASES if c.op != "cast"], ids=ids)
def test_vjp_rule_is_differentiable_again(case):
    """The VJP graph is IR, so it has a VJP too: check d<ct2, vjp_0(x, ct)>/dx by FD."""
    rng = np.random.default_rng(3)
    arrays = case.make(rng, np.float64)
    g, ins, y = build(case, arrays)
    wrt = float_inputs(arrays)
    ct_in = g.add_input(y.shape, y.dtype, "ct", "cotangent")
    g1, grads, vmap = autodiff.backward(g, y, [ins[i] for i in wrt], seed=ct_in)
    g1.set_outputs([grads[0]])
    ct = rng.standard_normal(y.shape)
    x0 = wrt[0]

    def first(*xs):
        return numpy_backend.run(g1, list(xs) + [ct])[0]

    h, m = g1.clone()
    ct2_in = h.add_input(grads[0].shape, grads[0].dtype, "ct2", "cotangent")
    g2, grads2, _ = autodiff.backward(h, m[grads[0]], [h.inputs[x0]], seed=ct2_in)
    g2.set_outputs(grads2)
    verify(g2)
    ct2 = rng.standard_normal(grads[0].shape)
    (got,) = numpy_backend.run(g2, arrays + [ct, ct2])
    (want,) = fd_vjp(first, arrays, ct2, [x0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [c for c in DIFF_CASES if len(float_inputs(
    c.make(np.random.default_rng(0), np.float64))) > 1], ids=ids)
def test_jvp_with_a_tangent_on_one_input_only(case):
    """Rules must handle absent (zero) tangents on the other operands."""
    rng = np.random.default_rng(4)
    arrays = case.make(rng, np.float64)
    g, ins, y = build(case, arrays)
    for i in float_inputs(arrays):
        g2, _, outs, _ = forward_ad.forward(g, [ins[i]])
        g2.set_outputs(outs)
        verify(g2)
        t = rng.standard_normal(arrays[i].shape)
        (got,) = numpy_backend.run(g2, arrays + [t])
        full_t = [None] * len(arrays)
        full_t[i] = t
        want = fd_jvp(lambda *xs: reference(case, y.node, xs), arrays, full_t, h=case.h)
        np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"tangent on input {i} only")


# ---- the same rules through the user-facing checker ------------------------------------------------
def _op_fn(case, arrays):
    """The op as a user function of its floating operands (the others held fixed)."""
    from graphc.tracing import deepest_context
    wrt = float_inputs(arrays)

    def f(*xs):
        full = list(arrays)
        for i, x in zip(wrt, xs):
            full[i] = x
        ctx = deepest_context(*xs)
        return ctx.emit(case.op, *[ctx.lift(a) for a in full], **case.attrs)
    return f, [arrays[i] for i in wrt]


@pytest.mark.parametrize("case", DIFF_CASES, ids=ids)
def test_check_grads_to_second_order(case):
    """gc.check_grads: forward and reverse mode, first and second order, against FD."""
    import graphc as gc
    arrays = case.make(np.random.default_rng(5), np.float64)
    f, xs = _op_fn(case, arrays)
    gc.check_grads(f, tuple(xs), order=2, eps=case.h, rtol=max(case.rtol, 1e-5),
                   atol=max(case.atol, 1e-6))
