"""Graph construction and rewriting: names, users, clone, replace_all_uses, remove_dead,
inline, and the verifier's invariants."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import numpy_backend
from graphc.ir import Emitter, Graph, TensorType, verify
from graphc.ir.inline import inline


def small():
    g = Graph("g")
    x = g.add_input((2, 3), np.float64, "x")
    E = Emitter(g)
    y = E.tanh(x)
    z = E.add(y, y)
    g.set_outputs([z])
    return g, x, y, z


def test_names_are_unique_and_sanitised():
    g = Graph()
    a = g.add_input((1,), np.float32, "x")
    b = g.add_input((1,), np.float32, "x")
    c = g.add_input((1,), np.float32, "params/w 1")
    assert (a.name, b.name, c.name) == ("x", "x_1", "params_w_1")
    with pytest.raises(gc.GraphcError, match="input kind"):
        g.add_input((1,), np.float32, "y", kind="weird")
    with pytest.raises(gc.DTypeError):
        g.add_input((1,), np.float16, "h")


def test_users_are_linked_once_per_node():
    g, x, y, z = small()
    assert x.users == [y.node] and y.users == [z.node]
    assert z.node.inputs == [y, y]
    assert y.type == TensorType((2, 3), np.dtype(np.float64)) and str(y.type) == "f64[2,3]"
    assert y.nbytes == 48


def test_clone_is_independent():
    g, x, y, z = small()
    h, vmap = g.clone()
    assert [v.name for v in h.values()] == [v.name for v in g.values()]
    assert vmap[z] is h.outputs[0] and vmap[z] is not z
    Emitter(h).exp(vmap[z])
    assert len(h.nodes) == len(g.nodes) + 1 and z.users == []
    verify(g)
    verify(h)


def test_replace_all_uses_and_remove_dead():
    g, x, y, z = small()
    g.replace_all_uses(y, x)                 # z = tanh(x) + tanh(x)  ->  x + x
    assert z.node.inputs == [x, x] and y.users == [] and z.node in x.users
    assert g.remove_dead()
    assert y.node not in g.nodes and y.node not in x.users
    assert not g.remove_dead()
    verify(g)
    (out,) = numpy_backend.run(g, [np.ones((2, 3))])
    np.testing.assert_allclose(out, 2.0)
    g.replace_all_uses(z, x)
    assert g.outputs == [x]


def test_remove_dead_keeps_inputs_and_update_sources():
    g = Graph()
    w = g.add_input((2,), np.float64, "w", "param")
    unused = g.add_input((2,), np.float64, "u")
    E = Emitter(g, "update")
    new = E.neg(w)
    Emitter(g).exp(w)                        # dead
    g.updates.append((w, new))
    g.remove_dead()
    assert [n.op for n in g.nodes] == ["input", "input", "neg"]
    assert unused in g.inputs
    verify(g)


def test_inline_binds_inputs():
    src, *_ = small()
    dst = Graph("dst")
    a = dst.add_input((2, 3), np.float64, "a")
    (out,) = inline(dst, src, [Emitter(dst).neg(a)])
    dst.set_outputs([out])
    verify(dst)
    x = np.random.default_rng(0).standard_normal((2, 3))
    np.testing.assert_allclose(numpy_backend.run(dst, [x])[0], 2 * np.tanh(-x))


def test_emitter_helpers():
    g = Graph()
    x = g.add_input((2, 3), np.float32, "x")
    E = Emitter(g, "backward", source="here.py:1")
    c = E.full_like(x, 2)
    assert c.shape == (2, 3) and c.dtype == np.float32 and c.node.op == "broadcast_to"
    assert E.sum_to(x, (3,)).shape == (3,) and E.sum_to(x, (2, 1)).shape == (2, 1)
    assert E.sum_to(x, (2, 3)) is x and E.broadcast(x, (2, 3)) is x
    assert E.add_maybe(None, x) is x and E.add_maybe(x, None) is x
    assert all(n.role == "backward" and n.source == "here.py:1"
               for n in g.nodes if n.op != "input")
    with pytest.raises(gc.GraphcError, match="unknown op"):
        E.frobnicate(x)


@pytest.mark.parametrize("break_it,what", [
    (lambda g, x, y, z: g.nodes.reverse(), "before its definition"),
    (lambda g, x, y, z: x.users.clear(), "missing from the users"),
    (lambda g, x, y, z: setattr(y, "type", TensorType((3, 2), y.dtype)), "rule gives"),
    (lambda g, x, y, z: g.set_outputs([Graph().add_input((1,), np.float32, "o")]),
     "not defined"),
    (lambda g, x, y, z: g.nodes.append(y.node), "defined twice"),
    (lambda g, x, y, z: g.inputs.clear(), "not listed in graph.inputs"),
    (lambda g, x, y, z: g.updates.append((x, Emitter(g).sum(x))), "same type"),
])
def test_verifier_catches(break_it, what):
    g, x, y, z = small()
    verify(g)
    break_it(g, x, y, z)
    with pytest.raises(gc.VerifyError, match=what):
        verify(g)
