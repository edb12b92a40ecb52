"""The plan's data model: every kernel one of the declared classes with only its declared
fields, integer order keys, and a graph the backend only reads."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm.plan import kernels as K
from graphc.backends.llvm.plan.build import build_plan
from graphc.passes import fusion

KINDS = (K.LoopKernel, K.GemmKernel, K.SmallKKernel, K.CopyKernel)


def _graphs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 70)).astype(np.float32)
    g = rng.standard_normal((16, 45)).astype(np.float32)
    w = rng.standard_normal((70, 45)).astype(np.float32)

    def smallk(x, g, w):            # small-K GEMMs fused into their epilogues
        return w - 0.1 * (x.T @ g), gc.relu(x.T @ g + w)

    def mixed(x, w):                # GEMM, reductions, a reshape, concatenate/unslice
        h = gc.tanh(x @ w)
        s = gc.sum(h * h, axis=0) + gc.mean(h)
        r = gc.reshape(h.T, (45 * 16,))
        return s, r, gc.concatenate([h, h * 2], axis=1), gc.grad(
            lambda x: gc.sum(x[2:9, 1:40] ** 2))(x)
    yield gc.trace(smallk, x, g, w)
    yield gc.trace(mixed, x, w)
    params = {"w": w, "b": np.zeros(45, np.float32)}

    def loss(p, x):
        return gc.mean(gc.relu(x @ p["w"] + p["b"]) ** 2)
    yield gc.compile_step(loss, params, gc.optim.Adam(1e-3), (x,), backend="numpy").graph


def _snapshot(graph):
    return [(n.op, copy.deepcopy({k: v for k, v in n.attrs.items() if k != "value"}))
            for n in graph.nodes]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("memplan", ["shared", "naive"])
def test_kernels_are_declared_and_the_graph_is_only_read(threads, memplan):
    seen = set()
    for graph in _graphs():
        fg = fusion.fuse(graph)
        before = _snapshot(fg)
        plan = build_plan(fg, threads, memplan)
        assert _snapshot(fg) == before, "the backend changed the graph it was given"
        for k in plan.kernels:
            assert type(k) in KINDS, type(k)
            seen.add(type(k))
            declared = {f.name for f in dataclasses.fields(k)}
            assert set(vars(k)) <= declared, set(vars(k)) - declared
            assert isinstance(k.order, K.Order)
            assert all(type(x) is int or isinstance(x, int) for x in k.order)
            assert k.nchunks >= 1
            if isinstance(k, K.GemmKernel):
                assert isinstance(k.gpart, K.GemmPartition)
                assert k.nchunks == k.gpart.parts
            elif isinstance(k, K.LoopKernel):
                assert k.part is None or isinstance(k.part, K.LoopPartition)
    assert seen == set(KINDS), seen


def test_order_keys_sort_like_the_pipeline():
    """Operand copies just before their kernel, a reshape's copy just after its node,
    then output copies, staged update sources and the updates."""
    at = K.Order.at
    keys = [K.Order(K.Stage.EARLY), at(0), at(0, K.Slot.AFTER), at(1, K.Slot.OPERANDS),
            at(1), K.Order(K.Stage.OUTPUTS), K.Order(K.Stage.STAGED),
            K.Order(K.Stage.UPDATES)]
    assert sorted(reversed(keys)) == keys


def test_an_invalid_group_runs_ungrouped_and_keeps_its_attrs():
    """A group the backend rejects (members of different shapes, one a stop_gradient)
    runs as separate kernels; the nodes keep their ``group`` attributes."""
    import graphc.backends.llvm as llvm_backend
    x = np.linspace(-1, 1, 4).astype(np.float32)
    y = np.linspace(-2, 2, 5).astype(np.float32)
    graph = gc.trace(lambda x, y: (gc.exp(gc.stop_gradient(x)) * 2, gc.tanh(y) + 1), x, y)
    members = [n for n in graph.nodes if n.op in ("stop_gradient", "exp", "tanh")]
    assert len(members) == 3
    for n in members:
        n.attrs["group"] = "g-bad"
    before = _snapshot(graph)
    plan = build_plan(graph, 1)
    assert _snapshot(graph) == before
    assert len(plan.kernels) >= 3
    fn = llvm_backend.compile(graph, threads=1, fuse=False)
    for _ in range(2):
        got = fn(x, y)
        np.testing.assert_allclose(got[0], np.exp(x) * 2, rtol=1e-6)
        np.testing.assert_allclose(got[1], np.tanh(y) + 1, rtol=1e-6)
