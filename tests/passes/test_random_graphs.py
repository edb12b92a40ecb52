"""Property test of the AD passes: random small compositions of unary, binary, reduction
and shape ops; gc.grad (reverse mode) and gc.jvp (forward mode) match central finite
differences in float64, and the traced value matches eager numpy.

A program is a list of steps over a pool of values (the two inputs first).  The same
program runs on tracers (inside gc.grad / gc.jvp) and eagerly on numpy arrays (graphc's
array functions fall through to numpy), which gives the oracle.  Only smooth ops are used
or kinks that random normal inputs never sit on (relu, abs, max, maximum, where): exact
ties arise only between copies of one value, which move together under the FD step.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphc as gc
from tests.numeric import fd_jvp, fd_vjp

UNARY = {
    "tanh": gc.tanh,
    "sigmoid": gc.sigmoid,
    "neg": gc.negative,
    "square": gc.square,
    "cube": lambda v: v ** 3,
    "exp_tanh": lambda v: gc.exp(gc.tanh(v)),
    "log1p_sq": lambda v: gc.log(v * v + 1.0),
    "sqrt1p_sq": lambda v: gc.sqrt(v * v + 1.0),
    "rational": lambda v: v / (1.0 + v * v),
    "scale_shift": lambda v: 0.5 * v - 0.25,
    "relu": gc.relu,
    "abs": gc.abs,
}

BINARY = {
    "add": gc.add,
    "sub": gc.subtract,
    "mul": gc.multiply,
    "div": lambda a, b: a / (1.0 + b * b),
    "pow": lambda a, b: (a * a + 1.0) ** gc.tanh(b),
    "maximum": gc.maximum,
    "minimum": gc.minimum,
    "where": lambda a, b: gc.where(a > b, a * 2.0, b),
}


def _reduce(kind):
    def f(v, axis, keepdims):
        if kind == "sum":
            return gc.sum(v, axis=axis, keepdims=keepdims)
        if kind == "mean":
            return gc.mean(v, axis=axis, keepdims=keepdims)
        if kind == "max":
            return gc.max(v, axis=axis, keepdims=keepdims)
        return gc.logsumexp(v, axis=axis, keepdims=keepdims)
    return f


@st.composite
def programs(draw):
    shapes = draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3,
                                                min_side=1, max_side=3))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    x, y = (rng.standard_normal(s) for s in shapes.input_shapes)
    pool = [x, y]                       # eager values, to know shapes while generating
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "shape", "matmul",
                                     "concat"]))
        i = draw(st.integers(0, len(pool) - 1))
        v = pool[i]
        if kind == "unary":
            step = ("unary", draw(st.sampled_from(sorted(UNARY))), i)
        elif kind == "binary":
            partners = [j for j, w in enumerate(pool) if _broadcasts(v.shape, w.shape)]
            step = ("binary", draw(st.sampled_from(sorted(BINARY))), i,
                    draw(st.sampled_from(partners)))
        elif kind == "reduce":
            if v.ndim == 0:
                continue
            axis = draw(st.one_of(st.none(), st.integers(-v.ndim, v.ndim - 1)))
            step = ("reduce", draw(st.sampled_from(["sum", "mean", "logsumexp", "max"])), i,
                    axis, draw(st.booleans()))
        elif kind == "shape":
            choices = ["flatten", "expand"]
            if v.ndim >= 2:
                choices += ["transpose", "swap_last"]
            if v.ndim >= 1 and v.shape[0] >= 2:
                choices += ["slice_tail", "slice_step", "index0"]
            step = ("shape", draw(st.sampled_from(choices)), i)
        elif kind == "matmul":
            if v.ndim < 1:
                continue
            w = rng.standard_normal((v.shape[-1], draw(st.integers(1, 3))))
            step = ("matmul", w, i)
        else:
            if v.ndim < 1:
                continue
            step = ("concat", draw(st.integers(-v.ndim, v.ndim - 1)), i)
        steps.append(step)
        pool.append(run_step(step, pool))
    cts = [rng.standard_normal(np.shape(v)) for v in pool[2:]]
    return x, y, steps, cts


def _broadcasts(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def run_step(step, pool):
    kind, what, i = step[0], step[1], step[2]
    v = pool[i]
    if kind == "unary":
        return UNARY[what](v)
    if kind == "binary":
        return BINARY[what](v, pool[step[3]])
    if kind == "reduce":
        return _reduce(what)(v, step[3], step[4])
    if kind == "shape":
        if what == "flatten":
            return gc.reshape(v, (-1,))
        if what == "expand":
            return v[None]
        if what == "transpose":
            return gc.transpose(v)
        if what == "swap_last":
            return gc.swapaxes(v, -1, -2)
        if what == "slice_tail":
            return v[1:]
        if what == "slice_step":
            return v[::2]
        return v[0]
    if kind == "matmul":
        return v @ what
    return gc.concatenate([v, gc.tanh(v)], axis=what)


def program_fn(steps, cts):
    """``f`` returns every intermediate (so every step is checked); ``loss`` is a random
    linear functional of all of them."""
    def f(x, y):
        pool = [x, y]
        for step in steps:
            pool.append(run_step(step, pool))
        return pool[2:]

    def loss(x, y):
        return sum(gc.sum(v * c) for v, c in zip(f(x, y), cts))
    return f, loss


def np_loss(f, cts):
    return lambda x, y: sum(np.sum(np.asarray(v) * c) for v, c in zip(f(x, y), cts))


def describe(steps):
    return " ; ".join(f"{s[0]}:{s[1] if not isinstance(s[1], np.ndarray) else s[1].shape}"
                      f"{tuple(s[2:])}" for s in steps)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(programs())
def test_random_program_gradient_matches_finite_differences(prog):
    x, y, steps, cts = prog
    f, loss = program_fn(steps, cts)
    value, (gx, gy) = gc.value_and_grad(loss, argnums=(0, 1))(x, y)
    ref = np_loss(f, cts)
    np.testing.assert_allclose(value, ref(x, y), rtol=1e-10, atol=1e-12)
    wx, wy = fd_vjp(ref, [x, y], 1.0, [0, 1])
    msg = describe(steps)
    np.testing.assert_allclose(gx, wx, rtol=1e-5, atol=1e-6, err_msg=msg)
    np.testing.assert_allclose(gy, wy, rtol=1e-5, atol=1e-6, err_msg=msg)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(programs())
def test_random_program_jvp_matches_finite_differences(prog):
    x, y, steps, _ = prog
    f, _ = program_fn(steps, None)
    rng = np.random.default_rng(7)
    tx, ty = rng.standard_normal(x.shape), rng.standard_normal(y.shape)
    outs, ts = gc.jvp(f, (x, y), (tx, ty))
    for k, (o, t, want_o) in enumerate(zip(outs, ts, f(x, y))):
        np.testing.assert_allclose(o, want_o, rtol=1e-10, atol=1e-12)
        want = fd_jvp(lambda x, y: np.asarray(f(x, y)[k]), [x, y], [tx, ty])
        np.testing.assert_allclose(t, want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"step {k}: {describe(steps)}")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(programs())
def test_random_program_hvp_forward_over_reverse_matches_reverse_over_reverse(prog):
    x, y, steps, cts = prog
    _, loss = program_fn(steps, cts)
    v = np.random.default_rng(8).standard_normal(x.shape)
    grad_x = gc.grad(loss)
    _, fwd = gc.jvp(lambda x: grad_x(x, y), (x,), (v,))
    rev = gc.grad(lambda x: gc.sum(grad_x(x, y) * v))(x)
    np.testing.assert_allclose(fwd, rev, rtol=1e-8, atol=1e-9, err_msg=describe(steps))
