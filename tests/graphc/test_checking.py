"""gc.check_grads: passes on right derivatives, names argument, mode and element on wrong ones."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _xw():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 4)), rng.normal(size=(4, 2))


def test_right_derivatives_pass_up_to_third_order():
    x, w = _xw()
    assert gc.check_grads(lambda x, w: gc.tanh(x @ w), (x, w), order=2) is None
    gc.check_grads(lambda x: gc.sum(gc.sigmoid(x) ** 3, axis=1), (x,), order=3)


def test_pytree_args_and_integer_leaves_held_fixed():
    x, w = _xw()
    labels = np.array([0, 1, 1])
    gc.check_grads(lambda p, y: gc.nn.cross_entropy(x @ p["w"] + p["b"], y),
                   ({"w": w, "b": np.zeros(2)}, labels))


def test_float32_arguments_are_checked_in_float64():
    x, w = _xw()
    gc.check_grads(lambda x, w: gc.exp(x @ w), (x.astype(np.float32), w.astype(np.float32)))


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_wrong_derivative_names_mode_argument_and_element(mode):
    x, w = _xw()
    # stop_gradient hides half of d(x*x)/dx from AD, so AD disagrees with FD
    f = lambda x, w: gc.sum(x * gc.stop_gradient(x), axis=1) + w[0, 0]  # noqa: E731
    with pytest.raises(gc.GradCheckError) as e:
        gc.check_grads(f, (x, w), modes=(mode,))
    msg = str(e.value)
    assert isinstance(e.value, gc.GraphcError)
    assert ("reverse mode" if mode == "rev" else "forward mode") in msg
    assert "worst element" in msg and "finite differences" in msg
    if mode == "rev":
        assert "args.0" in msg      # x is wrong; w's gradient is right


def test_second_order_error_is_reported_as_order_2():
    x, _ = _xw()
    # value x^3/3 and first derivative x^2 right; the second derivative (2x) is hidden
    g = lambda x: (gc.sum(gc.stop_gradient(x * x) * x)  # noqa: E731
                   - gc.sum(gc.stop_gradient(x ** 3)) * (2.0 / 3.0))
    gc.check_grads(g, (x,), order=1)
    with pytest.raises(gc.GradCheckError, match="order 2"):
        gc.check_grads(g, (x,), order=2, modes=("rev",))


def test_bad_arguments():
    x, _ = _xw()
    with pytest.raises(gc.ArgumentError, match="modes"):
        gc.check_grads(gc.tanh, (x,), modes=("sideways",))
    with pytest.raises(gc.ArgumentError, match="order"):
        gc.check_grads(gc.tanh, (x,), order=0)
    with pytest.raises(gc.ArgumentError, match="floating"):
        gc.check_grads(lambda y: y * 2, (np.arange(3),))
