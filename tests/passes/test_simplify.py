"""The simplify pass: a sum of unslices that tile one axis becomes one concatenate."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import numpy_backend as nb
from graphc.ir import Graph, verify
from graphc.passes.simplify import simplify


def _unslice(g, x, shape, axis, lo, hi):
    starts, stops = [0] * len(shape), list(shape)
    starts[axis], stops[axis] = lo, hi
    return g.add("unslice", [x], {"shape": shape, "starts": starts, "stops": stops,
                                  "steps": [1] * len(shape)})


def _tiling(spans, shape=(6, 4), axis=0, order=None):
    """add(add(unslice(p0), unslice(p1)), ...) of pieces at ``spans`` along ``axis``."""
    g = Graph()
    pieces, terms = [], []
    for lo, hi in spans:
        pshape = list(shape)
        pshape[axis] = hi - lo
        p = g.add_input(pshape, np.float32, f"p{lo}_{hi}")
        pieces.append(p)
        terms.append(_unslice(g, g.add("neg", [p]), shape, axis, lo, hi))
    acc = terms[order[0] if order else 0]
    for i in (order[1:] if order else range(1, len(terms))):
        acc = g.add("add", [acc, terms[i]])
    g.set_outputs([g.add("mul", [acc, acc])])
    return verify(g), pieces


def _args(pieces, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=p.shape).astype(np.float32) for p in pieces]


@pytest.mark.parametrize("spans,axis,order", [
    (((0, 2), (2, 3), (3, 6)), 0, None),
    (((0, 2), (2, 3), (3, 6)), 0, (2, 0, 1)),      # any order of the terms
    (((0, 1), (1, 4)), 1, None),
    (((0, 3), (3, 3), (3, 6)), 0, None),           # an empty piece
])
def test_a_tiling_sum_of_unslices_becomes_one_concatenate(spans, axis, order):
    g, pieces = _tiling(spans, axis=axis, order=order)
    s, changed = simplify(g)
    verify(s)
    ops = [n.op for n in s.nodes]
    assert changed and ops.count("concatenate") == 1
    assert "unslice" not in ops and "add" not in ops
    args = _args(pieces)
    np.testing.assert_array_equal(nb.run(s, args), nb.run(g, args))


@pytest.mark.parametrize("spans", [
    ((0, 2), (3, 6)),            # a gap: zeros in between
    ((0, 3), (2, 6)),            # an overlap: a sum there
    ((0, 2), (2, 5)),            # not up to the end
])
def test_sums_that_do_not_tile_stay(spans):
    g, pieces = _tiling(spans)
    s, _ = simplify(g)
    assert "concatenate" not in [n.op for n in s.nodes]
    args = _args(pieces)
    np.testing.assert_array_equal(nb.run(s, args), nb.run(g, args))


def test_unslices_partial_on_two_axes_stay():
    g = Graph()
    a = g.add_input((3, 2), np.float32, "a")
    b = g.add_input((3, 2), np.float32, "b")
    ua = g.add("unslice", [a], {"shape": (6, 4), "starts": [0, 0], "stops": [3, 2],
                                "steps": [1, 1]})
    ub = g.add("unslice", [b], {"shape": (6, 4), "starts": [3, 2], "stops": [6, 4],
                                "steps": [1, 1]})
    g.set_outputs([g.add("add", [ua, ub])])
    s, _ = simplify(verify(g))
    assert "concatenate" not in [n.op for n in s.nodes]


def test_an_inner_sum_read_elsewhere_is_kept_right():
    """add(add(u0, u1), u2) where add(u0, u1) is also an output: the outer sum becomes a
    concatenate, the inner one stays and keeps its value."""
    g = Graph()
    ps = [g.add_input((2, 4), np.float32, f"p{i}") for i in range(3)]
    us = [_unslice(g, p, (6, 4), 0, 2 * i, 2 * i + 2) for i, p in enumerate(ps)]
    inner = g.add("add", [us[0], us[1]])
    outer = g.add("add", [inner, us[2]])
    g.set_outputs([outer, inner])
    s, _ = simplify(verify(g))
    verify(s)
    args = _args(ps)
    for x, y in zip(nb.run(s, args), nb.run(g, args)):
        np.testing.assert_array_equal(x, y)


def _split_qkv(x, w):
    qkv = x @ w
    q, k, v = qkv[:, :4], qkv[:, 4:8], qkv[:, 8:]
    return gc.sum(gc.tanh(q * k) * v)


def test_the_gradient_of_a_split_projection_has_no_unslice_and_checks():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(5, 3)), rng.normal(size=(3, 12))
    gc.check_grads(_split_qkv, (x, w), order=2)
    params = {"w": w.astype(np.float32)}
    step = gc.compile_step(lambda p, x: _split_qkv(x, p["w"]), params, gc.optim.SGD(0.1),
                           (x.astype(np.float32),))
    before, after = step.stages["optimizer"], step.stages["simplify"]
    assert "unslice" in [n.op for n in before.nodes]
    assert "unslice" not in [n.op for n in after.nodes]
    assert "concatenate" in [n.op for n in after.nodes]
    ref = gc.compile_step(lambda p, x: _split_qkv(x, p["w"]), {"w": w.astype(np.float32)},
                          gc.optim.SGD(0.1),
                          (x.astype(np.float32),), backend="numpy")
    xs = x.astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(step(xs), ref(xs), rtol=1e-5)
    np.testing.assert_allclose(step.params["w"], ref.params["w"], rtol=1e-5, atol=1e-6)


def _pieces_of_flat(order, via_unslice):
    """A flat (24,) input cut into three (8,) slices, reshaped to (1, 2, 4), joined along
    axis 0 in ``order`` (by concatenate, or as a sum of unslices)."""
    g = Graph()
    flat = g.add_input((24,), np.float32, "flat")
    parts = [g.add("reshape", [g.add("slice", [flat], {"starts": [8 * i], "stops": [8 * i + 8],
                                                       "steps": [1]})], {"shape": (1, 2, 4)})
             for i in range(3)]
    if via_unslice:
        us = [_unslice(g, p, (3, 2, 4), 0, i, i + 1) for i, p in zip(order, [parts[i] for i in order])]
        out = g.add("add", [g.add("add", [us[0], us[1]]), us[2]])
    else:
        out = g.add("concatenate", [parts[i] for i in order], {"axis": 0})
    g.set_outputs([g.add("mul", [out, out])])
    return verify(g), flat


@pytest.mark.parametrize("via_unslice", [False, True])
def test_joining_the_consecutive_slices_of_a_flat_value_is_a_reshape_of_it(via_unslice):
    g, flat = _pieces_of_flat((0, 1, 2), via_unslice)
    s, changed = simplify(g)
    verify(s)
    ops = [n.op for n in s.nodes]
    assert changed and ops.count("reshape") == 1
    assert not {"slice", "concatenate", "unslice", "add"} & set(ops)
    args = [np.arange(24, dtype=np.float32)]
    np.testing.assert_array_equal(nb.run(s, args), nb.run(g, args))


def test_slices_joined_out_of_order_stay_a_concatenate():
    g, flat = _pieces_of_flat((1, 0, 2), False)
    s, _ = simplify(g)
    assert "concatenate" in [n.op for n in s.nodes]
    args = [np.arange(24, dtype=np.float32)]
    np.testing.assert_array_equal(nb.run(s, args), nb.run(g, args))


def _two_reshapes_of_a_transpose():
    g = Graph()
    x = g.add_input((2, 3, 4), np.float32, "x")
    t = g.add("transpose", [x], {"perm": (1, 0, 2)})
    a = g.add("reshape", [t], {"shape": (3, 8)})
    b = g.add("reshape", [t], {"shape": (24,)})
    g.set_outputs([g.add("mul", [a, a]), g.add("neg", [b])])
    return verify(g)


def test_sibling_reshapes_of_a_transpose_share_the_first():
    g = _two_reshapes_of_a_transpose()
    s, changed = simplify(g)
    verify(s)
    (t,) = [n for n in s.nodes if n.op == "transpose"]
    rs = [n for n in s.nodes if n.op == "reshape"]
    assert changed and len(t.output.users) == 1
    assert rs[1].inputs == [rs[0].output]
    s2, changed2 = simplify(s)            # a fixpoint: the chain is not folded back
    assert not changed2 and [n.op for n in s2.nodes] == [n.op for n in s.nodes]
    args = [np.arange(24, dtype=np.float32).reshape(2, 3, 4)]
    for x, y in zip(nb.run(s, args), nb.run(g, args)):
        np.testing.assert_array_equal(x, y)


def test_sibling_reshapes_of_a_transpose_are_one_copy_in_the_llvm_plan():
    import graphc.backends.llvm as L
    g = _two_reshapes_of_a_transpose()
    s, _ = simplify(g)
    copies = lambda graph: [k for k in L.compile(graph, threads=1).plan.kernels
                            if k.name.startswith("copy_")]
    assert len(copies(g)) == 2 and len(copies(s)) == 1
    args = [np.arange(24, dtype=np.float32).reshape(2, 3, 4)]
    fn = L.compile(s, threads=1)
    for _ in range(2):
        for x, y in zip(fn(*args), nb.run(g, args)):
            np.testing.assert_array_equal(x, y)
