"""The numpy reference backend: argument checks, dtype handling, in-place state updates."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import get_backend, numpy_backend
from graphc.ir import Graph, all_ops


def test_every_registered_op_has_a_lowering():
    assert numpy_backend.missing_lowerings() == []
    assert set(all_ops()) - {"input"} <= set(numpy_backend.IMPLS)


def test_get_backend():
    assert get_backend("numpy") is numpy_backend
    with pytest.raises(gc.GraphcError, match="unknown backend"):
        get_backend("tpu")


def test_outputs_have_the_declared_dtype_and_shape():
    g = gc.trace(lambda x: (gc.sum(x), x > 0, gc.mean(x, axis=0)), np.ones((2, 3), np.float32))
    outs = numpy_backend.run(g, [np.ones((2, 3), np.float32)])
    for v, o in zip(g.outputs, outs):
        assert o.shape == v.shape and o.dtype == v.dtype


def test_same_kind_inputs_are_cast_other_kinds_rejected():
    g = gc.trace(lambda x: x * 2, np.ones(2, np.float64))
    (out,) = numpy_backend.run(g, [np.ones(2, np.float32)])
    assert out.dtype == np.float64
    with pytest.raises(gc.ArgumentError, match="dtype"):
        numpy_backend.run(g, [np.ones(2, np.int64)])


def test_updates_write_state_in_place():
    g = Graph("step")
    w = g.add_input((3,), np.float64, "w", "param")
    gr = g.add_input((3,), np.float64, "g", "data")
    lr = g.add("broadcast_to", [g.add("constant", [], {"value": np.float64(0.1)})],
               {"shape": (3,)})
    new = g.add("sub", [w, g.add("mul", [lr, gr])], role="update")
    g.updates.append((w, new))
    g.set_outputs([new])
    warr = np.ones(3)
    numpy_backend.run(g, [warr, np.array([1.0, 2.0, 3.0])])
    np.testing.assert_allclose(warr, [0.9, 0.8, 0.7])
    numpy_backend.run(g, [warr, np.zeros(3)], apply_updates=False)
    np.testing.assert_allclose(warr, [0.9, 0.8, 0.7])
    ro = np.ones(3)
    ro.setflags(write=False)
    with pytest.raises(gc.ArgumentError, match="writeable"):
        numpy_backend.run(g, [ro, np.zeros(3)])


def test_no_floating_point_warnings_leak():
    g = gc.trace(lambda x: gc.log(x), np.ones(2))
    with np.errstate(all="raise"):
        (out,) = numpy_backend.run(g, [np.array([0.0, -1.0])])
    assert np.isneginf(out[0]) and np.isnan(out[1])


def test_sigmoid_extremes():
    s = numpy_backend.IMPLS["sigmoid"]({}, np.array([-1000.0, 0.0, 1000.0], np.float32))
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, [0.0, 0.5, 1.0])
