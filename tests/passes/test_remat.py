"""Rematerialization: budgets met, results bit-identical, extra FLOPs bounded."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import graphc as gc
from graphc.backends import numpy_backend as nb
from graphc.ir import Graph, GraphcError, saved_activations, saved_bytes, verify
from graphc.passes.remat import graph_flops, remat
from tests.passes.memgraphs import mlp_problem, random_args, random_graphs, same_bits

DEEP = (128,) + (256,) * 9 + (10,)          # 10 linear layers, 9 hidden activations


def deep_steps(batch=64, **options):
    """The same deep MLP compiled twice: without remat and with ``options``."""
    out = []
    for opts in ({}, options):
        loss, params, x, y = mlp_problem(DEEP, batch)
        out.append(gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x, y),
                                   backend="numpy", **opts))
    return out[0], out[1], (x, y)


def assert_same_training(s0, s1, batch, steps=2):
    for _ in range(steps):
        l0, l1 = s0(*batch), s1(*batch)
        assert l0 == l1
    for k in s0.params:
        assert same_bits(s0.params[k], s1.params[k]), k
    for k in s0.opt_state:
        assert same_bits(s0.opt_state[k], s1.opt_state[k]), k


def test_half_budget_on_a_deep_mlp():
    s0, s1, batch = deep_steps(memory_budget=0.5)
    rep = s1.memory_info["remat"]
    saved0 = saved_bytes(saved_activations(s0.graph))
    assert rep.budget == saved0 // 2
    assert rep.saved_bytes_after <= rep.budget and rep.met
    assert saved_bytes(saved_activations(s1.graph)) == rep.saved_bytes_after
    assert 0 < rep.extra_flops_ratio <= 0.35          # measured: 15.9 %
    assert graph_flops(s1.stages["remat"]) - graph_flops(s1.stages["simplify"]) \
        == rep.extra_flops
    assert "remat" in s1.stages and any(n.attrs.get("remat") for n in s1.graph.nodes)
    assert_same_training(s0, s1, batch)


def test_budget_in_bytes_and_recompute_placement():
    s0, _, _ = deep_steps()
    saved0 = saved_bytes(saved_activations(s0.graph))
    report = []
    g = remat(s0.graph, saved0 // 3, report=report)
    verify(g)
    assert report[0].saved_bytes_after <= saved0 // 3
    pos = {n: i for i, n in enumerate(g.nodes)}
    for n in g.nodes:
        if n.attrs.get("remat"):
            assert n.role == "backward" and n.output.name.endswith(".remat")
            first = min(pos[u] for u in n.output.users)
            assert g.nodes[first].role != "forward"
            # placed just before the backward node that needs it (only other
            # recomputations in between)
            assert all(g.nodes[i].attrs.get("remat") for i in range(pos[n] + 1, first))


def test_auto_remat_is_identical_and_cheap():
    s0, s1, batch = deep_steps(remat="auto")
    rep = s1.memory_info["remat"]
    assert rep.saved_bytes_after <= rep.saved_bytes_before
    assert rep.extra_flops_ratio < 0.01               # no matmul is recomputed
    assert not any(n.op == "matmul" and n.attrs.get("remat") for n in s1.graph.nodes)
    assert_same_training(s0, s1, batch)


def test_budget_too_small_is_an_error():
    s0, _, _ = deep_steps()
    report = []
    remat(s0.graph, 0, report=report)           # everything recomputable from the inputs
    assert report[0].saved_bytes_after == 0 and report[0].extra_flops_ratio < 0.4
    with pytest.raises(GraphcError, match="cannot fit"):
        remat(s0.graph, 1, banned=("matmul",))  # matmul outputs must then be saved
    with pytest.raises(GraphcError):
        gc.compile_step(*_problem_args(), backend="numpy", remat="yes")


def _problem_args():
    loss, params, x, y = mlp_problem((8, 4, 2), 4)
    return loss, params, gc.optim.SGD(0.1), (x, y)


def test_budget_that_fits_changes_nothing():
    s0, _, _ = deep_steps()
    report = []
    g = remat(s0.graph, 10 ** 12, report=report)
    assert report[0].extra_flops == 0 and len(g.nodes) == len(s0.graph.nodes)


@settings(max_examples=60, deadline=None)
@given(random_graphs())
def test_random_graphs_remat_keeps_results(g):
    for budget in (None, 0.5):
        try:
            g2 = remat(g, budget)
        except GraphcError:
            continue
        verify(g2)
        args = random_args(g)
        a1 = [np.array(a) for a in args]
        a2 = [np.array(a) for a in args]
        o1 = [np.array(o) for o in nb.run(g, a1, apply_updates=False)]
        o2 = [np.array(o) for o in nb.run(g2, a2, apply_updates=False)]
        assert all(same_bits(x, y) for x, y in zip(o1, o2))


def test_saved_bytes_count_a_view_once_as_its_base():
    g = Graph()
    x = g.add_input((4, 6), "float32", "x")
    y = g.add("exp", [x])
    r = g.add("reshape", [y], {"shape": (6, 4)})
    t = g.add("transpose", [r], {"perm": (1, 0)})
    xv = g.add("reshape", [x], {"shape": (24,)})
    assert saved_bytes([y, r, t]) == y.nbytes == 96      # one buffer, not three
    assert saved_bytes([t]) == 96                        # a view keeps its base alive
    assert saved_bytes([x, xv]) == 0                     # inputs are persistent


def test_the_choice_is_the_same_on_every_compile():
    """Ties between equal layers were broken by set order: the first compile in a
    process chose differently from the next ones (and from other hash seeds)."""
    chosen = []
    for _ in range(3):
        _, s1, _ = deep_steps(memory_budget=0.5)
        rep = s1.memory_info["remat"]
        pos = {n.output.name: i for i, n in enumerate(s1.stages["simplify"].nodes)}
        chosen.append(sorted(pos[name] for name in rep.recomputed))
    assert chosen[0] == chosen[1] == chosen[2]


def test_half_budget_recomputes_in_segments_not_one_chain():
    """On a chain of equal layers the saved layers split the recomputed ones into short
    segments (Chen et al.), so no long recomputed chain is alive at once (the choice by
    FLOPs alone recomputed the first five layers as one chain from the input)."""
    _, s1, _ = deep_steps(memory_budget=0.5)
    names = set(s1.memory_info["remat"].recomputed)
    rec = {n.output for n in s1.stages["simplify"].nodes if n.output.name in names}

    def relus_below(v):             # recomputed relus this value is recomputed from
        seen, stack = set(), [v]
        while stack:
            for x in stack.pop().node.inputs:
                if x in rec and x not in seen:
                    seen.add(x)
                    stack.append(x)
        return sum(x.node.op == "relu" for x in seen)

    relus = [v for v in rec if v.node.op == "relu"]
    assert len(relus) >= 3
    # measured: two segments, of 3 and 2 layers (the greedy is myopic, and the first
    # layer, K = 128, is cheaper to recompute than the others)
    assert max(relus_below(v) for v in relus) <= 2


def _gelu_mlp_steps(monkeypatch=None, min_gain=None, **options):
    """A two-layer tanh-GELU MLP (the transformer's MLP block): no remat, and ``options``."""
    import graphc.passes.remat as R
    if min_gain is not None:
        monkeypatch.setattr(R, "MIN_FLOPS_PER_BYTE", min_gain)
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(32, 128)).astype(np.float32) * 0.2,
              "b1": np.zeros(128, np.float32),
              "w2": rng.normal(size=(128, 32)).astype(np.float32) * 0.1}
    x = rng.normal(size=(64, 32)).astype(np.float32)

    def loss(p, x):
        h = gc.nn.gelu(x @ p["w1"] + p["b1"], approximate="tanh")
        return gc.mean((h @ p["w2"] - x) ** 2)
    out = []
    for opts in ({}, options):
        ps = {k: v.copy() for k, v in params.items()}
        out.append(gc.compile_step(loss, ps, gc.optim.SGD(0.1), (x,), backend="numpy", **opts))
    return out[0], out[1], (x,)


def test_cheap_elementwise_values_are_recomputed_though_the_budget_has_room(monkeypatch):
    """tanh-GELU's tanh spares ~1 FLOP per byte if saved: below MIN_FLOPS_PER_BYTE the
    greedy search recomputes it (the products stay saved); with the threshold at 0 it
    saves the tanh, filling the budget."""
    s0, s1, batch = _gelu_mlp_steps(memory_budget=0.9)
    ops = lambda st: sorted(v.node.op for v in saved_activations(st.graph))
    assert "tanh" in ops(s0)
    assert "tanh" not in ops(s1)
    rep = s1.memory_info["remat"]
    assert rep.met and rep.saved_bytes_after < 0.75 * rep.budget
    assert_same_training(s0, s1, batch)
    _, s2, _ = _gelu_mlp_steps(monkeypatch, 0.0, memory_budget=0.9)
    assert "tanh" in ops(s2)
    assert s2.memory_info["remat"].saved_bytes_after > rep.saved_bytes_after
