"""Graph fingerprints (compile-cache identity): equal for equal programs, different
whenever the code a backend makes could differ."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.ir import fingerprint


def _g(scale=2.0, shape=(3, 4), dtype=np.float32, big=None):
    x = np.ones(shape, dtype)

    def f(x):
        y = gc.tanh(x) * scale
        if big is not None:
            y = y + big
        return gc.sum(y)
    return gc.trace(f, x)


def test_same_program_same_fingerprint():
    assert fingerprint(_g()) == fingerprint(_g())


def test_source_lines_do_not_matter():
    a = _g()
    b = _g()
    for n in b.nodes:
        n.source = "elsewhere.py:1"
    assert fingerprint(a) == fingerprint(b)


def test_constants_shapes_and_dtypes_matter():
    base = fingerprint(_g())
    assert fingerprint(_g(scale=2.5)) != base
    assert fingerprint(_g(shape=(3, 5))) != base
    assert fingerprint(_g(dtype=np.float64)) != base
    big = np.arange(12, dtype=np.float32).reshape(3, 4)
    other = big.copy()
    other[2, 3] += 1
    assert fingerprint(_g(big=big)) != fingerprint(_g(big=other))
    assert fingerprint(_g(big=big)) == fingerprint(_g(big=big.copy()))


def test_outputs_and_updates_matter():
    g = _g()
    h = _g()
    h.set_outputs([h.outputs[0], h.outputs[0]])
    assert fingerprint(g) != fingerprint(h)
