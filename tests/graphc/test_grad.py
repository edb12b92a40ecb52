"""gc.grad / value_and_grad / jvp against hand-derived gradients and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from tests.numeric import fd_grad, fd_jvp


def rand(rng, *shape):
    return rng.standard_normal(shape)


# ---- a 2-layer MLP with softmax cross-entropy ----------------------------------------------------
def mlp_loss(params, x, y):
    h = gc.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return gc.nn.cross_entropy(logits, y)


def mlp_loss_numpy_and_grad(params, x, y):
    """Forward and backward written out by hand in numpy."""
    w1, b1, w2, b2 = params["w1"], params["b1"], params["w2"], params["b2"]
    n = x.shape[0]
    z1 = x @ w1 + b1
    h = np.tanh(z1)
    logits = h @ w2 + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    dlogits = p.copy()
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    dw2 = h.T @ dlogits
    db2 = dlogits.sum(axis=0)
    dz1 = (dlogits @ w2.T) * (1 - h ** 2)
    dw1 = x.T @ dz1
    db1 = dz1.sum(axis=0)
    return loss, {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2}


def mlp_problem(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {"w1": rand(rng, 5, 8) * 0.5, "b1": rand(rng, 8) * 0.1,
              "w2": rand(rng, 8, 3) * 0.5, "b2": rand(rng, 3) * 0.1}
    params = {k: v.astype(dtype) for k, v in params.items()}
    x = rand(rng, 6, 5).astype(dtype)
    y = rng.integers(0, 3, 6).astype(np.int64)
    return params, x, y


def test_mlp_grad_matches_hand_derived_gradient():
    params, x, y = mlp_problem()
    grads = gc.grad(mlp_loss)(params, x, y)
    _, want = mlp_loss_numpy_and_grad(params, x, y)
    assert set(grads) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k].dtype == np.float64
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_mlp_value_and_grad():
    params, x, y = mlp_problem(1)
    loss, grads = gc.value_and_grad(mlp_loss)(params, x, y)
    want_loss, want = mlp_loss_numpy_and_grad(params, x, y)
    assert np.ndim(loss) == 0
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-10, atol=1e-12)


def test_mlp_grad_float32_close_to_float64():
    params, x, y = mlp_problem(2, np.float32)
    grads = gc.grad(mlp_loss)(params, x, y)
    _, want = mlp_loss_numpy_and_grad({k: v.astype(np.float64) for k, v in params.items()},
                                      x.astype(np.float64), y)
    for k in params:
        assert grads[k].dtype == np.float32
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-4, atol=1e-5)


def test_mlp_grad_with_int32_labels():
    params, x, y = mlp_problem(3)
    g64 = gc.grad(mlp_loss)(params, x, y)
    g32 = gc.grad(mlp_loss)(params, x, y.astype(np.int32))
    for k in params:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-12)


# ---- argnums and pytrees ---------------------------------------------------------------------------
def f3(a, b, c):
    return gc.sum(gc.tanh(a) * b) + gc.sum(c ** 2) * gc.mean(a)


def f3_numpy(a, b, c):
    return np.sum(np.tanh(a) * b) + np.sum(c ** 2) * np.mean(a)


@pytest.mark.parametrize("argnums", [0, 1, 2, -1, (0,), (0, 2), (2, 0, 1)])
def test_argnums(argnums):
    rng = np.random.default_rng(4)
    args = [rand(rng, 3, 2), rand(rng, 3, 2), rand(rng, 4)]
    got = gc.grad(f3, argnums=argnums)(*args)
    nums = (argnums,) if isinstance(argnums, int) else argnums
    want = []
    for k in nums:
        def fk(v, k=k):
            a = list(args)
            a[k] = v
            return f3_numpy(*a)
        want.append(fd_grad(fk, args[k]))
    if isinstance(argnums, int):
        assert isinstance(got, np.ndarray)
        got = (got,)
    else:
        assert isinstance(got, tuple) and len(got) == len(nums)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_argnums_out_of_range_is_an_error():
    with pytest.raises(gc.GraphcError, match="argnums"):
        gc.grad(f3, argnums=3)(np.ones(2), np.ones(2), np.ones(2))


def test_grad_of_pytree_of_lists_and_dicts():
    rng = np.random.default_rng(5)
    tree = {"layers": [{"w": rand(rng, 2, 3)}, {"w": rand(rng, 3, 1)}], "scale": rand(rng)}

    def f(t, x):
        h = x
        for layer in t["layers"]:
            h = gc.tanh(h @ layer["w"])
        return gc.sum(h) * t["scale"]

    x = rand(rng, 4, 2)
    g = gc.grad(f)(tree, x)
    assert isinstance(g, dict) and isinstance(g["layers"], list)
    assert g["layers"][0]["w"].shape == (2, 3) and np.shape(g["scale"]) == ()

    def f_np(w0, w1, s):
        return np.sum(np.tanh(np.tanh(x @ w0) @ w1)) * s
    w0, w1, s = tree["layers"][0]["w"], tree["layers"][1]["w"], tree["scale"]
    np.testing.assert_allclose(g["layers"][0]["w"], fd_grad(lambda v: f_np(v, w1, s), w0),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g["layers"][1]["w"], fd_grad(lambda v: f_np(w0, v, s), w1),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g["scale"], f_np(w0, w1, 1.0), rtol=1e-10)


def test_grad_of_tuple_argument_returns_tuple():
    a, b = np.array([1.0, 2.0]), np.array([3.0])
    g = gc.grad(lambda ab: gc.sum(ab[0] * ab[0]) + gc.sum(ab[1]) * 2)((a, b))
    assert isinstance(g, tuple)
    np.testing.assert_allclose(g[0], 2 * a)
    np.testing.assert_allclose(g[1], [2.0])


def test_grad_of_unused_argument_is_zero():
    g = gc.grad(lambda a, b: gc.sum(a * 3.0), argnums=(0, 1))(np.ones(3), np.ones((2, 2)))
    np.testing.assert_allclose(g[0], 3.0)
    np.testing.assert_array_equal(g[1], np.zeros((2, 2)))


def test_grad_through_fan_out_sums_cotangents():
    x = np.array([0.3, -0.7, 1.1])
    g = gc.grad(lambda x: gc.sum(x * x + gc.exp(x) * x))(x)
    np.testing.assert_allclose(g, 2 * x + np.exp(x) * (1 + x), rtol=1e-12)


def test_grad_through_broadcasting_unbroadcasts():
    rng = np.random.default_rng(6)
    x, b = rand(rng, 4, 3), rand(rng, 3)
    gb = gc.grad(lambda b, x: gc.sum(gc.tanh(x + b)), argnums=0)(b, x)
    assert gb.shape == (3,)
    np.testing.assert_allclose(gb, (1 - np.tanh(x + b) ** 2).sum(0), rtol=1e-12)


# ---- value_and_grad, has_aux ---------------------------------------------------------------------
def test_value_and_grad_matches_value_and_grad_separately():
    x = np.linspace(-1, 1, 5)
    f = lambda x: gc.sum(gc.sigmoid(x) * x)  # noqa: E731
    v, g = gc.value_and_grad(f)(x)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(v, np.sum(s * x), rtol=1e-12)
    np.testing.assert_allclose(g, s + x * s * (1 - s), rtol=1e-12)
    np.testing.assert_allclose(gc.grad(f)(x), g)


def test_has_aux():
    x = np.array([1.0, 2.0, 3.0])

    def f(x):
        y = x * 2.0
        return gc.sum(y * y), {"y": y, "n": gc.max(x)}

    g, aux = gc.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, 8 * x)
    np.testing.assert_allclose(aux["y"], 2 * x)
    np.testing.assert_allclose(aux["n"], 3.0)
    (v, aux2), g2 = gc.value_and_grad(f, has_aux=True)(x)
    np.testing.assert_allclose(v, np.sum(4 * x * x))
    np.testing.assert_allclose(aux2["y"], 2 * x)
    np.testing.assert_allclose(g2, g)


def test_has_aux_requires_a_pair():
    with pytest.raises(gc.GraphcError, match="aux"):
        gc.grad(lambda x: gc.sum(x), has_aux=True)(np.ones(3))


# ---- second derivatives ---------------------------------------------------------------------------
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


SECOND = [
    ("tanh", lambda x: gc.tanh(x),
     lambda x: 1 - np.tanh(x) ** 2, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    ("cube", lambda x: x ** 3, lambda x: 3 * x ** 2, lambda x: 6 * x),
    ("log_sigmoid", lambda x: gc.log(gc.sigmoid(x)),
     lambda x: 1 - _sigmoid(x), lambda x: -_sigmoid(x) * (1 - _sigmoid(x))),
    ("exp_sin_like", lambda x: gc.exp(-x * x), lambda x: -2 * x * np.exp(-x * x),
     lambda x: (4 * x * x - 2) * np.exp(-x * x)),
    ("sqrt", lambda x: gc.sqrt(x * x + 1.0), lambda x: x / np.sqrt(x * x + 1),
     lambda x: (x * x + 1) ** -1.5),
    ("div", lambda x: 1.0 / (x * x + 2.0), lambda x: -2 * x / (x * x + 2) ** 2,
     lambda x: (6 * x * x - 4) / (x * x + 2) ** 3),
]


@pytest.mark.parametrize("x0", [-1.3, -0.2, 0.4, 2.0])
@pytest.mark.parametrize("name,f,df,d2f", SECOND, ids=[s[0] for s in SECOND])
def test_second_derivative_of_scalar_function(name, f, df, d2f, x0):
    x = np.float64(x0)
    np.testing.assert_allclose(gc.grad(f)(x), df(x0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gc.grad(gc.grad(f))(x), d2f(x0), rtol=1e-9, atol=1e-12)


def test_third_derivative_of_cube():
    d3 = gc.grad(gc.grad(gc.grad(lambda x: x ** 3)))(np.float64(0.7))
    np.testing.assert_allclose(d3, 6.0, rtol=1e-10)


def test_second_derivative_on_vector_input_sum():
    x = np.array([0.1, -0.5, 1.5])
    gg = gc.grad(lambda x: gc.sum(gc.grad(lambda y: gc.sum(gc.tanh(y)))(x)))(x)
    t = np.tanh(x)
    np.testing.assert_allclose(gg, -2 * t * (1 - t ** 2), rtol=1e-10)


# ---- jvp -------------------------------------------------------------------------------------------------
def test_jvp_matches_finite_differences():
    rng = np.random.default_rng(7)
    x, w, tx, tw = rand(rng, 3, 4), rand(rng, 4, 2), rand(rng, 3, 4), rand(rng, 4, 2)

    def f(x, w):
        return gc.sigmoid(x @ w) * gc.sum(x)

    def f_np(x, w):
        return _sigmoid(x @ w) * np.sum(x)

    out, t = gc.jvp(f, (x, w), (tx, tw))
    np.testing.assert_allclose(out, f_np(x, w), rtol=1e-12)
    np.testing.assert_allclose(t, fd_jvp(f_np, [x, w], [tx, tw]), rtol=1e-6, atol=1e-8)


def test_jvp_of_pytree_output():
    x, tx = np.array([0.5, 1.5]), np.array([1.0, -2.0])
    out, t = gc.jvp(lambda x: {"a": gc.exp(x), "b": [gc.sum(x * x)]}, (x,), (tx,))
    np.testing.assert_allclose(out["a"], np.exp(x))
    np.testing.assert_allclose(t["a"], np.exp(x) * tx)
    np.testing.assert_allclose(t["b"][0], np.sum(2 * x * tx))


def test_jvp_rejects_mismatched_tangents():
    with pytest.raises(gc.GraphcError):
        gc.jvp(gc.tanh, (np.ones(3),), (np.ones(4),))
    with pytest.raises(gc.GraphcError):
        gc.jvp(lambda a, b: a * b, (np.ones(3), np.ones(3)), (np.ones(3),))


def test_hessian_vector_product_forward_over_reverse():
    rng = np.random.default_rng(8)
    A = rand(rng, 4, 4)
    x, v = rand(rng, 4), rand(rng, 4)

    def f(x):
        return gc.sum(gc.tanh(A @ x) ** 3) + 0.5 * gc.sum(x * x * x * x)

    _, hvp = gc.jvp(gc.grad(f), (x,), (v,))
    # explicit Hessian: f = sum(tanh(Ax)^3) + 0.5 sum x^4
    z = A @ x
    t = np.tanh(z)
    s = 1 - t ** 2
    # d/dz t^3 = 3 t^2 s ; d2/dz2 = 6 t s^2 - 6 t^3 s
    d2 = 6 * t * s ** 2 - 6 * t ** 3 * s
    H = A.T @ np.diag(d2) @ A + np.diag(6 * x ** 2)
    np.testing.assert_allclose(hvp, H @ v, rtol=1e-9, atol=1e-12)


def test_hessian_vector_product_reverse_over_reverse_agrees():
    rng = np.random.default_rng(9)
    x, v = rand(rng, 3), rand(rng, 3)

    def f(x):
        return gc.sum(gc.exp(x) * gc.tanh(x))
    _, fwd = gc.jvp(gc.grad(f), (x,), (v,))
    rev = gc.grad(lambda x: gc.sum(gc.grad(f)(x) * v))(x)
    np.testing.assert_allclose(fwd, rev, rtol=1e-10)


# ---- closures and nesting ------------------------------------------------------------------------------
def test_nested_grad_with_closure_over_outer_tracer():
    # d/dx [ d/dy (x*y^2) at y=x ] = d/dx [2 x y]|_{y=x} = d/dx 2x^2 = 4x
    def outer(x):
        inner = gc.grad(lambda y: x * y * y)
        return inner(x)
    x = np.float64(1.7)
    np.testing.assert_allclose(outer(x), 2 * 1.7 ** 2, rtol=1e-12)
    np.testing.assert_allclose(gc.grad(outer)(x), 4 * 1.7, rtol=1e-12)


def test_closure_over_outer_tracer_in_vector_case():
    rng = np.random.default_rng(10)
    w, x = rand(rng, 3), rand(rng, 3)

    def loss(w):
        gx = gc.grad(lambda x: gc.sum(gc.tanh(w * x)))(x)   # = w (1 - tanh(w x)^2)
        return gc.sum(gx * gx)

    def loss_np(w):
        gx = w * (1 - np.tanh(w * x) ** 2)
        return np.sum(gx * gx)

    np.testing.assert_allclose(gc.grad(loss)(w), fd_grad(loss_np, w), rtol=1e-6, atol=1e-9)


def test_grad_inside_jit_numpy_backend():
    f = gc.jit(gc.grad(lambda x: gc.sum(x ** 3)), backend="numpy")
    x = np.array([1.0, -2.0])
    np.testing.assert_allclose(f(x), 3 * x ** 2)


def test_non_differentiable_path_gives_zero_gradient():
    x = np.array([0.5, -1.5])
    g = gc.grad(lambda x: gc.sum(gc.stop_gradient(x) * x))(x)
    np.testing.assert_allclose(g, x)
    g2 = gc.grad(lambda x: gc.sum(gc.where(x > 0, x, 0.0 * x)))(x)
    np.testing.assert_allclose(g2, [1.0, 0.0])


def test_mlp_hessian_vector_product_matches_finite_difference_of_gradient():
    params, x, y = mlp_problem(11)
    rng = np.random.default_rng(12)
    v = {k: rng.standard_normal(p.shape) for k, p in params.items()}
    g = gc.grad(mlp_loss)
    _, hv = gc.jvp(lambda p: g(p, x, y), (params,), (v,))
    h = 1e-5
    gp = g({k: params[k] + h * v[k] for k in params}, x, y)
    gm = g({k: params[k] - h * v[k] for k in params}, x, y)
    for k in params:
        np.testing.assert_allclose(hv[k], (gp[k] - gm[k]) / (2 * h), rtol=1e-6, atol=1e-8)


def test_grad_of_identity_and_constant_functions():
    np.testing.assert_allclose(gc.grad(lambda x: x)(np.float64(2.0)), 1.0)
    np.testing.assert_array_equal(gc.grad(lambda x: 1.0)(np.ones(2)), np.zeros(2))
    np.testing.assert_allclose(gc.grad(gc.grad(lambda x: x * x))(np.float64(3.0)), 2.0)
    np.testing.assert_allclose(gc.grad(gc.grad(lambda x: gc.sum(x)))(np.float64(3.0)), 0.0)


def test_jvp_inside_grad_and_grad_inside_jvp_with_closures():
    x0, t0, w0 = np.array([0.3, -0.4]), np.array([1.0, 2.0]), np.array([0.7, 1.1])

    def f(w):   # sum of d/dx tanh(w x) . t  =  sum((1 - tanh(wx)^2) w t)
        return gc.sum(gc.jvp(lambda x: gc.tanh(w * x), (x0,), (t0,))[1])

    def f_np(w):
        return np.sum((1 - np.tanh(w * x0) ** 2) * w * t0)
    np.testing.assert_allclose(gc.grad(f)(w0), fd_grad(f_np, w0), rtol=1e-6)

    def g(w):
        return gc.grad(lambda x: gc.sum(gc.tanh(w * x)))(x0)

    def g_np(w):
        return w * (1 - np.tanh(w * x0) ** 2)
    _, tw = gc.jvp(g, (w0,), (t0,))
    np.testing.assert_allclose(tw, fd_jvp(g_np, [w0], [t0]), rtol=1e-6)
