"""Cheap producers duplicated into each reader's loop (passes/duplicate.py)."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc import pytree
from graphc.passes.fusion import fuse, fused_values


def _traced(f, *args):
    return gc.trace(f, *args)


def test_a_cheap_value_read_by_two_loops_is_computed_in_each():
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((8, 16)).astype(np.float32) for _ in range(2))

    def f(a, b):
        t = a * b                       # read by two loops of different kinds
        return gc.sum(gc.exp(t), axis=1) + gc.sum(t, axis=1)

    g = fuse(_traced(f, a, b))
    dups = [n for n in g.nodes if ".dup" in n.output.name]
    assert len(dups) == 1 and dups[0].op == "mul"
    t = [n for n in g.nodes if n.op == "mul" and ".dup" not in n.output.name][0]
    assert t.output in fused_values(g)             # no buffer for it any more
    fn = gc.jit(f)
    want = np.sum(np.exp(a * b), axis=1) + np.sum(a * b, axis=1)
    for _ in range(3):
        np.testing.assert_allclose(fn(a, b), want, rtol=1e-5)


def test_not_duplicated_into_a_matmul_or_when_expensive():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 8)).astype(np.float32)

    def f(a):
        t = a + 1.0
        return gc.sum(t @ a) + gc.sum(t)          # a GEMM reads t: it must be stored

    def h(a):
        t = gc.tanh(a)                             # not cheap: computed once
        return gc.sum(gc.exp(t), axis=1) + gc.sum(t, axis=1)

    for fun in (f, h):
        g = fuse(_traced(fun, a))
        assert not any(".dup" in n.output.name for n in g.nodes)


def test_training_step_is_bit_identical_with_and_without_duplication(monkeypatch):
    """Same ops on the same operands: the duplicated step gives the same bits."""
    import graphc.passes.fusion as F
    from graphc.lm import CharTransformer, LMConfig

    def run(duplicate):
        orig = F.fuse
        monkeypatch.setattr(F, "fuse", lambda g, *a, **k: orig(g, *a, **{**k, "duplicate": duplicate}))
        model = CharTransformer(LMConfig(vocab=11, context=8, dim=16, heads=2, layers=1, hidden=32))
        params = model.init(0)
        rng = np.random.default_rng(2)
        x = rng.integers(0, 11, (4, 8)).astype(np.int32)
        y = rng.integers(0, 11, (4, 8)).astype(np.int32)
        st = gc.compile_step(model.loss, params, gc.optim.SGD(0.1), (x, y), memory_budget=0.5)
        dups = sum(".dup" in n.output.name for n in st.stages["fusion"].nodes)
        losses = [st(x, y) for _ in range(3)]
        monkeypatch.setattr(F, "fuse", orig)
        return dups, losses, pytree.flatten(st.params)[0]

    (d0, l0, p0), (d1, l1, p1) = run(False), run(True)
    assert d0 == 0 and d1 > 0
    assert l0 == l1
    for a, b in zip(p0, p1, strict=True):
        assert np.array_equal(a, b)
