"""The pipeline object: ordered named passes, the verifier after each, per-pass records,
dumps, edits of the default, and a user's pass inside compile_step and gc.jit."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir import Graph
from graphc.passes.pipeline import Pass, PassContext, PassError, Pipeline
from graphc.passes.standard import jit_pipeline, step_pipeline


def _graph():
    g = Graph("g")
    x = g.add_input((3,), np.float32, "x")
    y = g.add("mul", [x, x])
    g.set_outputs([g.add("sum", [y], {"axes": None})])
    return g


def _identity(graph):
    return graph


def test_default_step_pipeline_order_follows_the_options():
    assert step_pipeline().names() == ["autodiff", "optimizer", "simplify", "layout",
                                       "schedule", "fusion"]
    assert step_pipeline("numpy", memory_budget=0.5, schedule=False).names() == [
        "autodiff", "optimizer", "simplify", "remat"]
    assert jit_pipeline("llvm").names() == ["layout", "fusion"]
    assert not jit_pipeline("numpy").names()


def test_edits_return_new_pipelines():
    p = step_pipeline()
    q = p.insert_after("simplify", Pass.wrap(_identity, "mine")).without("schedule")
    assert q.names() == ["autodiff", "optimizer", "simplify", "mine", "layout", "fusion"]
    assert "mine" not in p.names()
    assert p.insert_before("autodiff", _identity).names()[0] == "_identity"
    assert p.replace("fusion", _identity).names()[-1] == "fusion"
    with pytest.raises(PassError, match="no pass 'nope'"):
        p.without("nope")
    with pytest.raises(PassError, match="unique"):
        Pipeline([Pass.wrap(_identity), Pass.wrap(_identity)])


def test_records_changed_flags_and_stages():
    def double(g):
        g2, m = g.clone()
        out = g2.add("mul", [g2.outputs[0], g2.outputs[0]])
        g2.set_outputs([out])
        return g2
    res = Pipeline([Pass.wrap(_identity, "same"), Pass.wrap(double)]).run(_graph(), keep=True)
    assert [(r.name, r.changed) for r in res.records] == [("same", False), ("double", True)]
    assert list(res.stages) == ["same", "double"] and res.graph is res.stages["double"]
    assert "double" in res.timings()


def test_a_pass_that_breaks_the_graph_is_named_with_the_passes_before_it():
    def breaks(g):
        g2, _ = g.clone()
        g2.nodes = g2.nodes[::-1]              # operands after their users
        return g2
    with pytest.raises(PassError, match=r"after pass 'breaks' is invalid \(after same\)"):
        Pipeline([Pass.wrap(_identity, "same"), Pass.wrap(breaks)]).run(_graph())

    def raises(g):
        raise KeyError("oops")
    with pytest.raises(PassError, match=r"pass 'raises' failed \(the first pass\)"):
        Pipeline([raises]).run(_graph())
    with pytest.raises(PassError, match="returned int"):
        Pipeline([Pass.wrap(lambda g: 3, "bad")]).run(_graph())


def test_dump_after_named_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DUMP_IR", "second")
    monkeypatch.setenv("GRAPHC_DUMP_DIR", str(tmp_path))
    Pipeline([Pass.wrap(_identity, "first"), Pass.wrap(_identity, "second")]).run(_graph())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["g.second.ir"]
    assert "; IR after pass second" in (tmp_path / files[0]).read_text()


def _loss(p, x, y):
    return gc.mean((x @ p["w"] - y) ** 2)


def _problem():
    rng = np.random.default_rng(0)
    return ({"w": rng.normal(size=(4, 1)).astype(np.float32)},
            rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 1)).astype(np.float32))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_users_pass_runs_inside_compile_step(backend):
    seen = []

    def scale_gradients(graph, ctx):
        """halve every update's step: a real rewrite of the step graph"""
        seen.append(sorted(ctx.reports))
        g, _ = graph.clone()
        E = gc.ir.Emitter(g, "update")
        new = []
        for a, b in g.updates:
            if a.node.attrs["kind"] == "param":
                half = E.op("mul", E.op("sub", b, a), E.const(0.5, a.dtype, a.shape))
                b = E.op("add", a, half)
            new.append((a, b))
        g.updates = new
        return g

    params, x, y = _problem()
    ref = {"w": params["w"].copy()}
    half = gc.compile_step(_loss, params, gc.optim.SGD(0.1), (x, y), backend=backend,
                           passes=lambda p: p.insert_after("simplify", scale_gradients))
    plain = gc.compile_step(_loss, ref, gc.optim.SGD(0.05), (x, y), backend=backend)
    assert "scale_gradients" in half.stages and "optimizer" in seen[0]
    for _ in range(3):        # SGD's step halved by the user's pass == SGD at half the lr
        half(x, y)
        plain(x, y)
        np.testing.assert_allclose(params["w"], ref["w"], rtol=1e-5, atol=1e-6)


def test_jit_takes_a_pipeline():
    calls = []

    def spy(graph):
        calls.append(len(graph.nodes))
        return graph
    f = gc.jit(lambda a: gc.tanh(a) * 2.0, passes=lambda p: p.insert_before("fusion", spy))
    x = np.linspace(-1, 1, 5).astype(np.float32)
    for _ in range(2):
        np.testing.assert_allclose(f(x), np.tanh(x) * 2, rtol=1e-6)
    assert len(calls) == 1                    # traced and compiled once
    g = gc.jit(lambda a: a + 1.0, backend="numpy", passes=Pipeline([spy]))
    assert g(x).shape == (5,) and len(calls) == 2


def test_passes_argument_is_checked():
    params, x, y = _problem()
    with pytest.raises(gc.ArgumentError, match="Pipeline"):
        gc.compile_step(_loss, params, gc.optim.SGD(0.1), (x, y), passes=3)
    with pytest.raises(gc.GraphcError, match="no optimizer pass"):
        gc.compile_step(_loss, params, gc.optim.SGD(0.1), (x, y), backend="numpy",
                        passes=lambda p: p.without("optimizer"))


def test_pass_context_defaults():
    ctx = PassContext()
    assert ctx.options == {} and ctx.reports == {}
