"""Liveness: intervals against a brute-force definition, persistence, saved activations,
fused values."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings

from graphc.ir import Emitter, Graph, saved_activations
from graphc.passes.liveness import fused_values, liveness
from tests.passes.memgraphs import mlp_step, random_graphs


def brute_intervals(graph):
    idx = {n: i for i, n in enumerate(graph.nodes)}
    end_step = len(graph.nodes)
    out = {}
    for n in graph.nodes:
        v = n.output
        end = max([idx[u] for u in v.users], default=idx[n])
        if v in graph.outputs or any(b is v for _, b in graph.updates):
            end = end_step
        out[v] = (idx[n], end)
    return out


@settings(max_examples=60, deadline=None)
@given(random_graphs())
def test_intervals_match_definition(g):
    live = liveness(g)
    for v, (s, e) in brute_intervals(g).items():
        assert live.interval(v) == (s, e), v


def test_mlp_step_liveness():
    step, _ = mlp_step()
    g = step.graph
    live = liveness(g)
    kinds = {v.name: k for v, k in live.persistent.items()}
    for v in g.inputs:
        assert kinds[v.name] == "input"
    assert kinds[g.outputs[0].name] == "output"
    assert all(kinds[n.output.name] == "constant" for n in g.nodes if n.op == "constant")
    saved = saved_activations(g)
    assert live.saved == saved and live.saved_bytes == sum(v.nbytes for v in saved)
    # the relu outputs of both hidden layers are saved: 128x512 and 128x256 float32
    assert {v.nbytes for v in saved} >= {128 * 512 * 4, 128 * 256 * 4}
    for v in saved:                    # alive from the forward pass into the backward pass
        s, e = live.interval(v)
        assert g.nodes[s].role == "forward"
        assert any(g.nodes[i].role == "backward" and v in g.nodes[i].inputs
                   for i in range(s, e + 1))
    assert max(live.live_bytes()) > 0


def test_fused_values_extend_operand_lifetimes():
    g = Graph("fused")
    x = g.add_input((4,), np.float32, "x", "data")
    E = Emitter(g)
    a = E.exp(x)                              # 1
    b = E.neg(E.tanh(a))                      # 2, 3
    c = E.add(b, a)                           # 4
    g.set_outputs([c])
    for v in (a.node, b.node.inputs[0].node, b.node):
        v.attrs["group"] = 7
    c.node.attrs["group"] = 7
    fused = fused_values(g)
    assert fused == {a, b.node.inputs[0], b}
    live = liveness(g)
    assert live.fused == fused
    assert live.interval(x)[1] == live.interval(c)[0]    # read when the group runs
    assert liveness(g, fused=set()).fused == set()
