"""gc.nn.conv2d / max_pool2d / avg_pool2d / flatten and their layers.

Values and gradients against PyTorch (when installed; float64) over stride, padding,
dilation, groups, odd sizes and a batch of one; derivatives of the traced compositions
against central finite differences (first and second order, forward and reverse); eager
numpy calls against traced ones; bad arguments raise GraphcErrors naming the op.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from tests.numeric import fd_jvp, fd_vjp

try:
    import torch
    import torch.nn.functional as TF
except ImportError:          # PyTorch is optional: its comparisons are skipped
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed")

CONV_CASES = [
    # (x shape, w shape, kwargs)
    ((2, 3, 7, 6), (4, 3, 3, 3), {}),
    ((1, 3, 7, 6), (4, 3, 3, 2), {"stride": 2, "padding": 1}),
    ((2, 4, 9, 8), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1),
                                  "groups": 2}),
    ((1, 1, 5, 5), (2, 1, 5, 5), {"padding": 2}),
    ((3, 6, 6, 7), (6, 1, 3, 3), {"groups": 6, "padding": 1, "stride": (1, 2)}),
    ((2, 2, 8, 5), (3, 2, 1, 1), {"stride": 3}),
    ((1, 2, 11, 9), (2, 2, 2, 3), {"dilation": 3, "padding": (0, 1)}),
]

POOL_CASES = [
    ((2, 3, 8, 8), {"kernel_size": 2}),
    ((1, 2, 7, 9), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ((2, 1, 5, 6), {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}),
    ((1, 3, 9, 7), {"kernel_size": (2, 3), "stride": 1}),
    ((2, 2, 7, 7), {"kernel_size": 2, "stride": 3}),
]


def _rand(rng, shape):
    return rng.standard_normal(shape)


def _conv_loss(kwargs, with_bias=True):
    def f(x, w, b):
        y = gc.nn.conv2d(x, w, b if with_bias else None, **kwargs)
        return gc.sum(gc.tanh(y) * y)
    return f


# ---- against PyTorch ------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("xs,ws,kw", CONV_CASES, ids=str)
def test_conv2d_matches_torch(xs, ws, kw):
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, xs), _rand(rng, ws), _rand(rng, ws[0])
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = TF.conv2d(tx, tw, tb, **kw)
    (torch.tanh(ty) * ty).sum().backward()
    y = gc.nn.conv2d(x, w, b, **kw)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    grads = gc.grad(_conv_loss(kw), argnums=(0, 1, 2))(x, w, b)
    for g, t in zip(grads, (tx, tw, tb)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-10)
    # traced forward == eager forward, and no bias
    traced = gc.jit(lambda x, w: gc.nn.conv2d(x, w, None, **kw), backend="numpy")(x, w)
    np.testing.assert_allclose(traced, TF.conv2d(torch.tensor(x), torch.tensor(w), None,
                                                 **kw).numpy(), rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("xs,kw", POOL_CASES, ids=str)
def test_pooling_matches_torch(pool, xs, kw):
    rng = np.random.default_rng(1)
    x = _rand(rng, xs)
    ours, theirs = {"max": (gc.nn.max_pool2d, TF.max_pool2d),
                    "avg": (gc.nn.avg_pool2d, TF.avg_pool2d)}[pool]
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx, **kw)
    (ty * ty * ty).sum().backward()
    np.testing.assert_allclose(ours(x, **kw), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = gc.grad(lambda x: gc.sum(ours(x, **kw) ** 3))(x)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_ties_and_nan_as_torch(dtype):
    """Ties: the first maximum of a window (row-major) takes the whole gradient, also
    where windows overlap and where padding borders them; a NaN is the maximum."""
    x = np.zeros((1, 2, 5, 6), dtype)
    x[0, 1] = np.array([[1, 1, 2, 2, 0, 0]] * 5, dtype)
    x[0, 1, 2, 3] = np.nan
    for kw in ({"kernel_size": 2}, {"kernel_size": 3, "stride": 1, "padding": 1},
               {"kernel_size": (2, 3), "stride": (2, 1)}):
        tx = torch.tensor(x, requires_grad=True)
        ty = TF.max_pool2d(tx, **kw)
        ct = np.arange(ty.numel(), dtype=dtype).reshape(ty.shape) + 1
        (ty * torch.tensor(ct)).sum().backward()
        np.testing.assert_array_equal(gc.nn.max_pool2d(x, **kw), ty.detach().numpy())
        g = gc.grad(lambda x: gc.sum(gc.nn.max_pool2d(x, **kw) * ct))(x)
        np.testing.assert_array_equal(g, tx.grad.numpy(), err_msg=str(kw))


# ---- finite differences ----------------------------------------------------------------------------
def _fd_check_grad(f, args, wrt, rtol=1e-6, atol=1e-7):
    grads = gc.grad(f, argnums=tuple(wrt))(*args)
    want = fd_vjp(lambda *a: np.asarray(f(*a)), list(args), np.float64(1.0), list(wrt))
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("xs,ws,kw", CONV_CASES[:4], ids=str)
def test_conv2d_vjp_and_jvp_match_finite_differences(xs, ws, kw):
    rng = np.random.default_rng(2)
    args = [_rand(rng, xs), _rand(rng, ws), _rand(rng, ws[0])]
    f = _conv_loss(kw)
    _fd_check_grad(f, args, [0, 1, 2])
    tans = [_rand(rng, a.shape) for a in args]

    def conv(x, w, b):
        return gc.nn.conv2d(x, w, b, **kw)
    out, t = gc.jvp(conv, tuple(args), tuple(tans))
    np.testing.assert_allclose(out, conv(*args), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t, fd_jvp(conv, args, tans), rtol=1e-6, atol=1e-7)


def test_conv2d_second_order_matches_finite_differences():
    """grad of (grad wrt x · v): a Hessian-vector product through im2col/col2im."""
    rng = np.random.default_rng(3)
    kw = {"stride": (2, 1), "padding": 1}
    x, w, b = _rand(rng, (1, 2, 5, 4)), _rand(rng, (3, 2, 3, 2)), _rand(rng, 3)
    v = _rand(rng, x.shape)
    f = _conv_loss(kw)

    def gdotv(x, w):
        return gc.sum(gc.grad(f)(x, w, b) * v)
    _fd_check_grad(gdotv, [x, w], [0, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pool_second_order_and_jvp(pool):
    rng = np.random.default_rng(4)
    fn = {"max": gc.nn.max_pool2d, "avg": gc.nn.avg_pool2d}[pool]
    kw = {"kernel_size": 3, "stride": 2, "padding": 1}
    x = (rng.permutation(2 * 7 * 6).reshape(1, 2, 7, 6) * 0.1).astype(np.float64)
    v = _rand(rng, x.shape)

    def f(x):
        return gc.sum(gc.tanh(fn(x, **kw)) * fn(x * x, **kw))

    def gdotv(x):
        return gc.sum(gc.grad(f)(x) * v)
    _fd_check_grad(f, [x], [0])
    _fd_check_grad(gdotv, [x], [0], rtol=1e-5, atol=1e-6)
    out, t = gc.jvp(lambda x: fn(x, **kw), (x,), (v,))
    np.testing.assert_allclose(t, fd_jvp(lambda x: fn(x, **kw), [x], [v]), rtol=1e-6,
                               atol=1e-7)


# ---- shapes, layers, errors ------------------------------------------------------------------------
def test_unbatched_chw_input_and_float32():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    y = gc.nn.conv2d(x, w, padding=1)
    assert y.shape == (2, 6, 6) and y.dtype == np.float32
    np.testing.assert_allclose(y, gc.nn.conv2d(x[None], w, padding=1)[0], rtol=1e-6)
    assert gc.nn.max_pool2d(x, 2).shape == (3, 3, 3)


def test_layers_lenet_shapes():
    net = gc.nn.Sequential(gc.nn.Conv2d(1, 6, 5, padding=2), gc.nn.ReLU(),
                           gc.nn.MaxPool2d(2), gc.nn.Conv2d(6, 16, 5), gc.nn.ReLU(),
                           gc.nn.AvgPool2d(2), gc.nn.Flatten(), gc.nn.Linear(400, 10))
    p = net.init(0)
    assert p["0"]["w"].shape == (6, 1, 5, 5) and p["3"]["b"].shape == (16,)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    eager = net(p, x)
    traced = gc.jit(lambda p, x: net(p, x), backend="numpy")(p, x)
    assert eager.shape == (2, 10)
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-5)
    assert gc.nn.flatten(np.zeros((2, 3, 4, 5)), 1, 2).shape == (2, 12, 5)


@pytest.mark.parametrize("call,match", [
    (lambda x, w: gc.nn.conv2d(x, w[:, :2]), "conv2d: input .* groups=1"),
    (lambda x, w: gc.nn.conv2d(x, w, groups=2), "conv2d: .*groups=2"),
    (lambda x, w: gc.nn.conv2d(x[0, 0], w), "conv2d: expects an NCHW"),
    (lambda x, w: gc.nn.conv2d(x, w, np.zeros(3)), "conv2d: bias of shape"),
    (lambda x, w: gc.nn.conv2d(x, w, stride=0), "stride must be"),
    (lambda x, w: gc.nn.conv2d(x, w, padding=-1), "padding must be"),
    (lambda x, w: gc.nn.conv2d(x[:, :, :2], w), "does not fit an image of 2x6"),
    (lambda x, w: gc.nn.max_pool2d(x, 2, padding=2), "at most half the kernel"),
    (lambda x, w: gc.nn.avg_pool2d(x, 7), "does not fit"),
    (lambda x, w: gc.nn.flatten(x, 3, 1), "flatten: dims"),
])
@pytest.mark.parametrize("traced", [False, True], ids=["eager", "traced"])
def test_bad_arguments_raise_graphc_errors(call, match, traced):
    x = np.zeros((2, 3, 6, 6), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(gc.GraphcError, match=match) as e:
        if traced:
            gc.jit(call, backend="numpy")(x, w)
        else:
            call(x, w)
    assert "test_conv.py" in str(e.value)


def test_integer_image_is_a_dtype_error():
    with pytest.raises(gc.GraphcError, match="conv2d: operands must be float"):
        gc.nn.conv2d(np.zeros((1, 1, 4, 4), np.int32), np.zeros((1, 1, 2, 2), np.float32))
