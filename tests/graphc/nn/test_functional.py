"""gc.nn losses and activations: values against numpy, gradients against finite
differences, numerical stability, and the same answer eager, traced and differentiated."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from tests.numeric import fd_grad

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((6, 4))
LABELS = np.array([0, 3, 1, 2, 2, 0])


def np_log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_cross_entropy(z, y):
    return -np.mean(np_log_softmax(z)[np.arange(len(y)), y])


def np_hinge(s, y):
    y = np.where(np.asarray(y) > 0, 1.0, -1.0)
    return np.mean(np.maximum(0, 1 - y * s))


def np_bce(s, t):
    return np.mean(np.maximum(s, 0) - s * t + np.log1p(np.exp(-np.abs(s))))


CASES = {
    "softmax": (lambda z: gc.nn.softmax(z), lambda z: np.exp(np_log_softmax(z))),
    "softmax_axis0": (lambda z: gc.nn.softmax(z, axis=0), lambda z: np.exp(np_log_softmax(z, 0))),
    "log_softmax": (lambda z: gc.nn.log_softmax(z), np_log_softmax),
    "cross_entropy": (lambda z: gc.nn.cross_entropy(z, LABELS),
                      lambda z: np_cross_entropy(z, LABELS)),
    "cross_entropy_sum": (lambda z: gc.nn.cross_entropy(z, LABELS, reduction="sum"),
                          lambda z: np_cross_entropy(z, LABELS) * len(LABELS)),
    "mse": (lambda z: gc.nn.mse(z, np.ones_like(z)), lambda z: np.mean((z - 1) ** 2)),
    "hinge_pm1": (lambda z: gc.nn.hinge(z[:, 0], np.array([1, -1, 1, 1, -1, -1])),
                  lambda z: np_hinge(z[:, 0], [1, -1, 1, 1, -1, -1])),
    "hinge_01": (lambda z: gc.nn.hinge(z[:, 0], np.array([1, 0, 1, 1, 0, 0])),
                 lambda z: np_hinge(z[:, 0], [1, 0, 1, 1, 0, 0])),
    "bce": (lambda z: gc.nn.binary_cross_entropy_with_logits(z, (LABELS[:, None] > 1) * 1.0),
            lambda z: np_bce(z, (LABELS[:, None] > 1) * 1.0)),
    "softplus": (lambda z: gc.nn.softplus(z), lambda z: np.log1p(np.exp(z))),
    "sigmoid": (lambda z: gc.nn.sigmoid(z), lambda z: 1 / (1 + np.exp(-z))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_eager_and_traced(name):
    gfn, nfn = CASES[name]
    want = nfn(LOGITS)
    np.testing.assert_allclose(gfn(LOGITS), want, rtol=1e-12)
    np.testing.assert_allclose(gc.jit(gfn, backend="numpy")(LOGITS), want, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_finite_differences(name):
    gfn, nfn = CASES[name]
    g = gc.grad(lambda z: gc.sum(gfn(z) * 1.5))(LOGITS)
    np.testing.assert_allclose(g, fd_grad(lambda z: np.sum(nfn(z) * 1.5), LOGITS),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("labels", [np.array([1, -1, 1, -1]), np.array([1, 0, 1, 0])],
                         ids=["pm1", "01"])
def test_hinge_with_traced_labels(labels):
    """Labels passed as an argument are tracers: their values are unknown at trace time."""
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal(3), rng.standard_normal((4, 3))

    def loss(w, x, y):
        return gc.nn.hinge(x @ w, y)
    want = np_hinge(x @ w, labels)
    np.testing.assert_allclose(gc.jit(loss, backend="numpy")(w, x, labels), want, rtol=1e-12)
    np.testing.assert_allclose(gc.grad(loss)(w, x, labels),
                               fd_grad(lambda w: np_hinge(x @ w, labels), w), rtol=1e-6)


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_cross_entropy_with_traced_labels(label_dtype):
    y = LABELS.astype(label_dtype)
    g = gc.grad(gc.nn.cross_entropy)(LOGITS, y)
    np.testing.assert_allclose(g, fd_grad(lambda z: np_cross_entropy(z, LABELS), LOGITS),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_is_stable_for_huge_logits(dtype):
    z = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4 + 1]], dtype)
    y = np.array([0, 2])
    for fn in (gc.nn.softmax, gc.nn.log_softmax, lambda z: gc.nn.cross_entropy(z, y)):
        out = gc.jit(fn, backend="numpy")(z)
        assert np.all(np.isfinite(out)) and np.asarray(out).dtype == dtype
    g = gc.grad(lambda z: gc.nn.cross_entropy(z, y))(z)
    assert np.all(np.isfinite(g))
    bce = gc.nn.binary_cross_entropy_with_logits
    assert np.isfinite(gc.jit(lambda s: bce(s, np.ones(2, dtype)),
                              backend="numpy")(np.array([1e4, -1e4], dtype)))


def test_labels_shape_and_dtype_are_checked():
    with pytest.raises(gc.ShapeError, match="cross_entropy"):
        gc.nn.cross_entropy(LOGITS, LABELS[:3])
    with pytest.raises(gc.ShapeError, match="integer"):
        gc.nn.cross_entropy(LOGITS, LABELS.astype(np.float64))


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        gc.nn.mse(np.ones(2), np.ones(2), reduction="max")


def test_cross_entropy_reduction_none_shape():
    out = gc.jit(lambda z: gc.nn.cross_entropy(z, LABELS, reduction="none"),
                 backend="numpy")(LOGITS)
    assert out.shape == (6,)
    np.testing.assert_allclose(out, -np_log_softmax(LOGITS)[np.arange(6), LABELS])
