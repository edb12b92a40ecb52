"""Structure of the AD passes: they append to a copy, mark roles, sum fan-out cotangents,
record saved activations, prune what the loss does not need, and accept a cotangent seed."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import numpy_backend
from graphc.ir import Graph, saved_activations, verify
from graphc.passes import autodiff, forward_ad


def mlp(x, w, k):
    h = gc.relu(x @ w)
    return gc.sum(h * h) + gc.sum(gc.cast(k, np.float64))


@pytest.fixture()
def fwd():
    return gc.trace(mlp, np.ones((2, 3)), np.ones((3, 4)), np.ones(2, np.int64))


def test_backward_leaves_the_input_graph_untouched(fwd):
    before = str(fwd)
    users = [len(v.users) for v in fwd.values()]
    autodiff.backward(fwd, fwd.outputs[0], [fwd.inputs[1]])
    assert str(fwd) == before and [len(v.users) for v in fwd.values()] == users


def test_backward_appends_after_the_forward_schedule(fwd):
    g, grads, vmap = autodiff.backward(fwd, fwd.outputs[0], [fwd.inputs[1]])
    assert [n.op for n in g.nodes[:len(fwd.nodes)]] == [n.op for n in fwd.nodes]
    assert all(n.role == "backward" for n in g.nodes[len(fwd.nodes):])
    assert all(vmap[v].name == v.name for v in fwd.values())
    g.set_outputs(grads)
    verify(g)


def test_fan_out_cotangents_are_summed(fwd):
    g, grads, _ = autodiff.backward(fwd, fwd.outputs[0], [fwd.inputs[1]])
    # h * h: h fans out twice into mul, so its cotangent is an add of two products
    adds = [n for n in g.nodes if n.role == "backward" and n.op == "add"]
    assert adds
    x = np.random.default_rng(0).standard_normal((2, 3))
    w = np.random.default_rng(1).standard_normal((3, 4))
    g.set_outputs(grads)
    (gw,) = numpy_backend.run(g, [x, w, np.ones(2, np.int64)])
    h = np.maximum(x @ w, 0)
    np.testing.assert_allclose(gw, x.T @ (2 * h * (x @ w > 0)), rtol=1e-12)


def test_saved_activations_are_forward_values_read_by_backward(fwd):
    g, grads, _ = autodiff.backward(fwd, fwd.outputs[0], [fwd.inputs[1]])
    g.set_outputs(grads)
    g.remove_dead()
    saved = saved_activations(g)
    assert [v.node.op for v in saved] == ["relu"]     # relu's VJP reads its output only
    for v in saved:
        assert any(u.role == "backward" for u in v.users)


def test_no_cotangents_through_integer_or_stop_gradient_paths(fwd):
    g, grads, _ = autodiff.backward(fwd, fwd.outputs[0], [fwd.inputs[1]])
    cast_k = next(n.output for n in g.nodes if n.op == "cast")
    assert not any(u.role == "backward" for u in cast_k.users)
    g2 = gc.trace(lambda x: gc.sum(gc.stop_gradient(gc.exp(x)) * x), np.ones(3))
    h, grads, _ = autodiff.backward(g2, g2.outputs[0], [g2.inputs[0]])
    h.set_outputs(grads)
    h.remove_dead()
    assert not any(n.op == "exp" and n.role == "backward" for n in h.nodes)


def test_gradient_of_unrelated_input_is_zeros(fwd):
    g, grads, _ = autodiff.backward(fwd, fwd.outputs[0], [fwd.inputs[0], fwd.inputs[2]])
    g.set_outputs(grads)
    outs = numpy_backend.run(g, [np.ones((2, 3)), np.zeros((3, 4)), np.ones(2, np.int64)])
    np.testing.assert_array_equal(outs[0], np.zeros((2, 3)))
    np.testing.assert_array_equal(outs[1], np.zeros(2, np.int64))


def test_non_scalar_loss_needs_a_seed():
    g = gc.trace(lambda x: gc.tanh(x), np.ones(3))
    with pytest.raises(gc.GraphcError, match="scalar"):
        autodiff.backward(g, g.outputs[0], [g.inputs[0]])
    ct = g.add_input((3,), np.float64, "ct", "cotangent")
    h, grads, _ = autodiff.backward(g, g.outputs[0], [g.inputs[0]], seed=ct)
    h.set_outputs(grads)
    x, c = np.array([0.1, 0.2, 0.3]), np.array([1.0, -1.0, 2.0])
    np.testing.assert_allclose(numpy_backend.run(h, [x, c])[0], c * (1 - np.tanh(x) ** 2))


def test_backward_of_backward_is_second_order():
    g = gc.trace(lambda x: gc.sum(x ** 3), np.ones(2))
    g1, (gx,), _ = autodiff.backward(g, g.outputs[0], [g.inputs[0]])
    s = g1.add("sum", [gx], {"axes": None})
    g2, (gxx,), _ = autodiff.backward(g1, s, [g1.inputs[0]])
    g2.set_outputs([gxx])
    verify(g2)
    np.testing.assert_allclose(numpy_backend.run(g2, [np.array([1.0, -2.0])])[0], [6.0, -12.0])


# ---- forward mode ----------------------------------------------------------------------------
def test_forward_adds_tangent_inputs_and_nodes(fwd):
    g, t_ins, outs, _ = forward_ad.forward(fwd, [fwd.inputs[0]])
    assert [v.name for v in t_ins] == ["t_x"]
    assert t_ins[0].node.attrs["kind"] == "tangent" and g.inputs[-1] is t_ins[0]
    assert all(n.role == "tangent" for n in g.nodes[len(fwd.nodes):] if n.op != "input")
    g.set_outputs(outs)
    verify(g)
    assert str(fwd).count("tangent") == 0


def test_forward_without_a_path_gives_zero_tangent():
    g = gc.trace(lambda x, y: (gc.tanh(x), y * 2), np.ones(2), np.ones(3))
    h, t_ins, outs, _ = forward_ad.forward(g, [g.inputs[0]])
    h.set_outputs(outs)
    t0, t1 = numpy_backend.run(h, [np.zeros(2), np.ones(3), np.ones(2)])
    np.testing.assert_allclose(t0, [1.0, 1.0])
    np.testing.assert_array_equal(t1, np.zeros(3))


def test_forward_integer_input_gets_no_tangent():
    g = gc.trace(lambda x, k: x * gc.cast(k, np.float64), np.ones(2), np.ones(2, np.int64))
    h, t_ins, outs, _ = forward_ad.forward(g, list(g.inputs))
    h.set_outputs(outs)
    (t,) = numpy_backend.run(h, [np.ones(2), np.array([2, 3]), np.ones(2),
                                 np.array([5, 5])])
    np.testing.assert_allclose(t, [2.0, 3.0])


def test_graph_builder_rejects_non_values():
    g = Graph()
    with pytest.raises(gc.GraphcError, match="non-Value"):
        g.add("neg", [np.ones(2)])
