"""Graph-level compile cache: a hit is found by the graph's fingerprint before anything
is lowered, and runs exactly like a fresh compile (also in a new process, where the
kernel library the object links against must be loaded first)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends.llvm.native import diskcache
from graphc.backends.llvm.native import jit
from graphc.backends.llvm.runtime import compiled as runtime


def _step(seed=0, lr=0.05, momentum=0.9):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((40, 24)).astype(np.float32),
              "b": np.zeros(24, np.float32),
              "v": rng.standard_normal((24, 5)).astype(np.float32)}
    x = rng.standard_normal((16, 40)).astype(np.float32)
    # a constant too big to be baked into the code: passed as a buffer ("ext" slot)
    big = rng.standard_normal((16, 1500)).astype(np.float32)

    def loss(p, x):
        h = gc.relu(x @ p["w"] + p["b"])
        z = h @ p["v"]
        return gc.sum(z * z) * 0.01 + gc.sum(gc.tanh(gc.sum(z) + big) * 0.001)
    return gc.compile_step(loss, params, gc.optim.SGD(lr, momentum=momentum), (x,),
                           backend="numpy"), x


def _run(fn, step, x, n=3):
    args = [np.array(a) for a in (*step._p_leaves, x, *step.opt_state.values())]
    losses = [fn(*args)[0] for _ in range(n)]
    return losses, args


def test_disk_hit_skips_lowering_and_runs_identically(cache_dir, monkeypatch):
    step, x = _step()
    fresh = llvm_backend.compile(step.graph, threads=2, profile=True)
    assert fresh.compile_info["source"] == "compiled"
    want = _run(fresh, step, x)
    jit.clear_memory_cache()

    def no_lowering(*a, **k):
        raise AssertionError("a cache hit must not lower the graph")
    monkeypatch.setattr(llvm_backend, "lower", no_lowering)
    hit = llvm_backend.compile(step.graph, threads=2, profile=True)
    assert hit.compile_info["source"] == "disk"
    got = _run(hit, step, x)
    for a, b in zip(want[0] + want[1], got[0] + got[1]):
        np.testing.assert_array_equal(a, b)
    assert [k for k, _, _ in hit.profile()] == [k for k, _, _ in fresh.profile()]
    assert hit.arena_bytes == fresh.arena_bytes
    monkeypatch.undo()
    # the full plan (memory report) is made again on demand, and agrees
    assert hit.memory_report().planned_bytes == fresh.memory_report().planned_bytes


def test_options_and_constants_change_the_key(cache_dir):
    step, _ = _step()
    other, _ = _step(momentum=0.8)          # a hyper-parameter compiled as a constant
    keys = {llvm_backend.graph_key(step.graph, 1), llvm_backend.graph_key(step.graph, 2),
            llvm_backend.graph_key(step.graph, 1, profile=True),
            llvm_backend.graph_key(step.graph, 1, fuse=False),
            llvm_backend.graph_key(other.graph, 1)}
    assert len(keys) == 5
    assert llvm_backend.graph_key(step.graph, 1) == llvm_backend.graph_key(_step()[0].graph, 1)
    # the learning rate is a runtime input: another lr is the same compiled code
    assert llvm_backend.graph_key(step.graph, 1) == \
        llvm_backend.graph_key(_step(lr=0.07)[0].graph, 1)


@pytest.mark.parametrize("damage", ["version", "slot_size"])
def test_unusable_summary_plans_again(cache_dir, damage):
    step, x = _step()
    want = _run(llvm_backend.compile(step.graph, threads=1), step, x)
    jit.clear_memory_cache()
    key = llvm_backend.graph_key(step.graph, 1)
    (path,) = [p for p in cache_dir.glob("*.gco") if p.name.startswith(key[:40])]
    objs, meta = diskcache.split_objects(jit.read_entry(str(path), key))
    d = json.loads(meta)
    if damage == "version":
        d["version"] = -1
    else:       # a summary whose input buffers do not match the graph is never used
        d["slots"][0][2] += 1
    assert runtime.PlanSummary.from_meta(meta, step.graph, None) is not None
    assert runtime.PlanSummary.from_meta(json.dumps(d).encode(), step.graph, None) is None
    jit.write_entry(str(path), key, diskcache.join_objects(objs, json.dumps(d).encode()))
    hit = llvm_backend.compile(step.graph, threads=1)
    assert hit.compile_info["source"] == "disk"
    got = _run(hit, step, x)
    for a, b in zip(want[0] + want[1], got[0] + got[1]):
        np.testing.assert_array_equal(a, b)


def _twice_in_fresh_processes(script, cache):
    """The last stdout line (JSON) of ``script`` run in two fresh processes sharing the
    disk cache ``cache``: the first compiles, the second should hit."""
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache))
    outs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return outs

def test_disk_hit_in_a_fresh_process_loads_the_kernel_library(tmp_path):
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import graphc as gc
        rng = np.random.default_rng(1)
        p = {"w": rng.standard_normal((30, 70)).astype(np.float32)}
        x = rng.standard_normal((20, 30)).astype(np.float32)
        step = gc.compile_step(lambda p, x: gc.sum(gc.tanh(x @ p["w"])), p,
                               gc.optim.SGD(0.1), (x,), backend="llvm", threads=1)
        losses = [step(x) for _ in range(3)]
        print(json.dumps({"source": step._run.compile_info["source"], "losses": losses,
                          "w": float(step.params["w"].sum())}))
    """)
    outs = _twice_in_fresh_processes(script, tmp_path / "cache")
    assert [o["source"] for o in outs] == ["compiled", "disk"]
    assert outs[0]["losses"] == outs[1]["losses"] and outs[0]["w"] == outs[1]["w"]


def test_what_a_fresh_process_imports_to_compile_and_to_load(tmp_path):
    """A new MLP-like graph loads no code generator it has no kernel for (gathers,
    windows, attention, fused conv); a disk hit, with two threads (the launcher's module
    cached too), loads neither LLVM nor llvmlite.ir nor the code generator -- and both
    runs compute the same losses."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import graphc as gc
        rng = np.random.default_rng(2)
        p = {"w": rng.standard_normal((30, 64)).astype(np.float32),
             "v": rng.standard_normal((64, 10)).astype(np.float32)}
        x = rng.standard_normal((32, 30)).astype(np.float32)
        y = rng.integers(0, 10, 32)
        loss = lambda p, x, y: gc.nn.cross_entropy(gc.relu(x @ p["w"]) @ p["v"], y)
        step = gc.compile_step(loss, p, gc.optim.SGD(0.1), (x, y), backend="llvm",
                               threads=2)
        losses = [step(x, y) for _ in range(3)]
        print(json.dumps({"source": step._run.compile_info["source"], "losses": losses,
                          "modules": sorted(m for m in sys.modules
                                            if m.startswith(("llvmlite", "graphc.backends")))}))
    """)
    outs = _twice_in_fresh_processes(script, tmp_path / "cache")
    assert [o["source"] for o in outs] == ["compiled", "disk"]
    assert outs[0]["losses"] == outs[1]["losses"]
    cg = "graphc.backends.llvm.codegen."
    compiled, hit = (set(o["modules"]) for o in outs)
    assert cg + "module" in compiled and "llvmlite.binding" in compiled
    assert not compiled & {cg + m for m in ("custom", "window", "attention", "conv_fused")}
    assert not hit & {"llvmlite.binding", "llvmlite.ir", cg + "gemm", cg + "module",
                      cg + "lowerings", "graphc.backends.llvm.native.llvmcompile"}


@pytest.mark.parametrize("module,attr", [("dot", "ENABLED"), ("conv_fused", "ENABLED"),
                                         ("window_rows", "ENABLED"),
                                         ("window_pool", "ENABLED")])
def test_code_generator_switches_change_the_key(cache_dir, monkeypatch, module, attr):
    """A switch that changes the generated code (tests flip them) is in the graph key,
    so a cached object of the other setting is never reused."""
    import importlib
    mod = importlib.import_module(f"graphc.backends.llvm.codegen.{module}")
    step, _ = _step()
    before = llvm_backend.graph_key(step.graph, 1)
    monkeypatch.setattr(mod, attr, not getattr(mod, attr))
    assert llvm_backend.graph_key(step.graph, 1) != before
    monkeypatch.undo()
    assert llvm_backend.graph_key(step.graph, 1) == before
