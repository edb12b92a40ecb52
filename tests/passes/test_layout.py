"""The layout pass: a product read only transposed is computed as Bᵀ @ Aᵀ."""
import numpy as np

import graphc as gc
from graphc.backends import numpy_backend
from graphc.ir import verify
from graphc.passes.layout import transposed_products


def _swaps_of_products(g):
    return [n for n in g.nodes if n.op == "transpose" and n.inputs[0].node.op == "matmul"]


def test_weight_gradient_of_x_at_w_t_comes_out_in_the_weights_layout():
    def loss(w, x):
        return gc.sum(gc.tanh(x @ w.T))
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
    g = gc.trace(gc.grad(loss), w, x)
    assert _swaps_of_products(g)          # autodiff gives dW = (xᵀ @ dy)ᵀ
    new, changed = transposed_products(g)
    verify(new)
    assert changed and not _swaps_of_products(new)
    (dw,) = [n for n in new.nodes if n.op == "matmul" and n.output.shape == (5, 7)]
    # dyᵀ @ x: the first operand is a transpose of dy, the second x itself
    assert dw.inputs[0].node.op == "transpose" and dw.inputs[1] is new.inputs[1]
    np.testing.assert_allclose(numpy_backend.run(new, [w, x])[0],
                               numpy_backend.run(g, [w, x])[0], rtol=1e-13)
    again, changed2 = transposed_products(new)
    assert not changed2 and len(again.nodes) == len(new.nodes)


def test_a_product_also_read_untransposed_or_leaving_is_kept():
    def f(a, b):
        c = a @ b
        return c.T + 1.0, c
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 3))
    g = gc.trace(f, a, b)
    new, changed = transposed_products(g)
    assert not changed and _swaps_of_products(new)


def test_batched_products_swap_their_last_two_axes():
    def f(a, b):
        return gc.transpose(a @ b, (0, 2, 1)) * 2.0
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4, 5))
    g = gc.trace(f, a, b)
    new, changed = transposed_products(g)
    verify(new)
    assert changed and not _swaps_of_products(new)
    np.testing.assert_allclose(numpy_backend.run(new, [a, b])[0], 2 * np.swapaxes(a @ b, 1, 2),
                               rtol=1e-13)
