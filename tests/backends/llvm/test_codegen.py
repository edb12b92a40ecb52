"""What the LLVM backend generates: vector code, fused loops, one kernel per group,
in-place updates, deterministic thread partitions."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends import numpy_backend
from graphc.backends.llvm.native import jit
from graphc.ir import Graph, format_graph, verify
from graphc.passes import fusion


def _elementwise_graph(dtype=np.float32, n=1000):
    def f(x, y):
        return gc.tanh(x) * gc.exp(y) + gc.log(1 + x * x) / (1 + gc.sigmoid(y))
    x = np.linspace(-3, 3, n).astype(dtype)
    return gc.trace(f, x, x), x


def _vector_width_regs():
    t = jit.host_target()
    if t.has_feature("avx512f"):
        return r"%zmm\d+", r"%[yz]mm\d+"
    if t.has_feature("avx2") or t.has_feature("avx"):
        return r"%ymm\d+", r"%ymm\d+"
    return r"%xmm\d+", r"%xmm\d+"


def test_elementwise_loops_vectorize():
    g, _ = _elementwise_graph()
    asm = llvm_backend.assembly(g, threads=1)
    _, any_wide = _vector_width_regs()
    # packed single-precision arithmetic on full-width registers
    packed = re.findall(r"\bv?(?:add|mul|sub|div|fmadd\w*|max|min)ps\s+[^\n]*" + any_wide, asm)
    assert len(packed) > 20, asm[:2000]
    # no libm calls for float32 transcendentals
    assert not re.search(r"call\w*\s+(expf|logf|tanhf)\b", asm)


def test_bias_add_and_update_loops_vectorize():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((64, 48)).astype(np.float32),
              "b": np.zeros(48, np.float32)}

    def loss(p, x):
        return gc.mean(gc.relu(x @ p["w"] + p["b"]))
    x = rng.standard_normal((32, 64)).astype(np.float32)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x,),
                           backend="numpy")
    asm = llvm_backend.assembly(step.graph, threads=1)
    _, any_wide = _vector_width_regs()
    if jit.host_target().has_feature("fma"):
        assert re.search(r"vfmadd\w*ps\s+[^\n]*" + any_wide, asm)    # GEMM
    assert len(re.findall(r"\bv?(?:add|sub|mul)ps\s+[^\n]*" + any_wide, asm)) > 4


def test_fusion_marks_groups_and_verifies():
    g, x = _elementwise_graph()
    fg = fusion.fuse(g)
    verify(fg)
    groups = fusion.groups(fg)
    assert len(groups) == 1
    (members,) = groups.values()
    assert {n.op for n in members} >= {"tanh", "exp", "log", "sigmoid", "mul", "div", "add"}
    text = format_graph(fg)
    assert "group='g0'" in text
    assert "cluster_g0" in gc.ir.to_dot(fg)
    # every intermediate stays in registers; only the output is stored
    fused = fusion.fused_values(fg)
    assert fg.outputs[0] not in fused
    assert len(fused) == len(members) - 1 - sum(
        n.op == "broadcast_to" for n in members)
    # the input graph is untouched
    assert all("group" not in n.attrs for n in g.nodes)


def test_fusion_keeps_results_and_one_kernel():
    g, x = _elementwise_graph(np.float64, 77)
    want = numpy_backend.run(g, [x, x])[0]
    p_fused, _ = llvm_backend.lower(g, threads=1)
    p_plain, _ = llvm_backend.lower(g, threads=1, fuse=False)
    assert len(p_fused.kernels) == 1
    assert len(p_plain.kernels) > 8
    for fuse in (True, False):
        got = llvm_backend.compile(g, threads=1, fuse=fuse)(x, x)[0]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_reduction_and_epilogue_fusion():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 30)).astype(np.float32)
    w = rng.standard_normal((30, 40)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)

    def f(a, w, b):
        h = gc.relu(a @ w + b)                     # GEMM + epilogue
        return gc.sum(gc.exp(-h) * h, axis=1)      # elementwise chain feeding a reduction
    g = gc.trace(f, a, w, b)
    fg = fusion.fuse(g)
    groups = list(fusion.groups(fg).values())
    assert any(any(n.op == "matmul" for n in m) and any(n.op == "relu" for n in m)
               for m in groups)
    plan, _ = llvm_backend.lower(g, threads=2)
    assert len(plan.kernels) == 2
    got = llvm_backend.compile(g, threads=2)(a, w, b)[0]
    want = numpy_backend.run(g, [a, w, b])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # without a GEMM in front, the chain and the reduction share one loop nest
    g = gc.trace(lambda a: gc.sum(gc.exp(-a) * a, axis=1), a)
    (members,) = fusion.groups(fusion.fuse(g)).values()
    assert {n.op for n in members} == {"neg", "exp", "mul", "sum"}
    plan, _ = llvm_backend.lower(g, threads=2)
    assert len(plan.kernels) == 1 and plan.kernels[0].stores == []
    np.testing.assert_allclose(llvm_backend.compile(g, threads=2)(a)[0],
                               numpy_backend.run(g, [a])[0], rtol=1e-5)


def test_fusion_respects_outside_readers():
    """A member read outside the group before the group's last node must be stored first."""
    g = Graph("g")
    x = g.add_input((8,), np.float32, "x")
    w = g.add_input((8, 8), np.float32, "w")
    e = g.add("exp", [x])
    r = g.add("reshape", [e], {"shape": (1, 8)})
    m = g.add("matmul", [r, w])                      # reads e before ...
    m2 = g.add("reshape", [m], {"shape": (8,)})
    y = g.add("mul", [e, m2])                        # ... this would join e's group
    g.set_outputs([y])
    fg = fusion.fuse(g)
    verify(fg)
    assert fg.nodes[3].attrs.get("group") is None or \
        fg.nodes[3].attrs.get("group") != fg.nodes[-1].attrs.get("group")
    xs = [np.linspace(0, 1, 8, dtype=np.float32), np.eye(8, dtype=np.float32)]
    np.testing.assert_allclose(llvm_backend.compile(g, threads=2)(*xs)[0],
                               numpy_backend.run(g, xs)[0], rtol=1e-6)


def test_sgd_updates_are_written_in_place():
    rng = np.random.default_rng(2)
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32),
              "b": np.zeros(8, np.float32)}

    def loss(p, x):
        return gc.mean(gc.tanh(x @ p["w"] + p["b"]))
    x = rng.standard_normal((4, 16)).astype(np.float32)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x,),
                           backend="numpy")
    plan, _ = llvm_backend.lower(step.graph, threads=2)
    direct = {a for a, _ in plan.updates_direct}
    assert {"p.w", "p.b", "opt.momentum.p.w", "opt.momentum.p.b"} <= direct
    assert not any(k.name.startswith("update_") for k in plan.kernels)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_results_identical_for_any_thread_count(threads):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((67, 129)).astype(np.float32)
    w = rng.standard_normal((129, 300)).astype(np.float32)

    def f(a, w):
        h = gc.tanh(a @ w)
        return gc.sum(h, axis=0), gc.sum(h * h), gc.max(h, axis=1), h.T @ a
    g = gc.trace(f, a, w)
    base = llvm_backend.compile(g, threads=1)(a, w)
    got = llvm_backend.compile(g, threads=threads)(a, w)
    for x, y in zip(base, got):
        np.testing.assert_array_equal(x, y)


def test_dynamic_segments_many_calls_oversubscribed():
    """More threads than cores, many calls: every result bit-identical to 1 thread
    (chunks are claimed dynamically; the epoch-based counters must stay in step)."""
    rng = np.random.default_rng(4)
    params = {"w0": rng.standard_normal((40, 70)).astype(np.float32) * 0.2,
              "b0": np.zeros(70, np.float32),
              "w1": rng.standard_normal((70, 9)).astype(np.float32) * 0.2,
              "b1": np.zeros(9, np.float32)}

    def loss(p, x, y):
        h = gc.tanh(x @ p["w0"] + p["b0"])
        return gc.nn.cross_entropy(h @ p["w1"] + p["b1"], y)
    batches = [(rng.standard_normal((300, 40)).astype(np.float32), rng.integers(0, 9, 300))
               for _ in range(4)]
    steps = {t: gc.compile_step(loss, {k: v.copy() for k, v in params.items()},
                                gc.optim.Adam(1e-2), batches[0], backend="llvm", threads=t,
                                adaptive=False)
             for t in (1, 2, 3)}
    for i in range(60):
        losses = {t: s(*batches[i % 4]) for t, s in steps.items()}
        assert losses[1] == losses[2] == losses[3], (i, losses)
    for k in params:
        np.testing.assert_array_equal(steps[1].params[k], steps[3].params[k])
        np.testing.assert_array_equal(steps[1].params[k], steps[2].params[k])


def test_adaptive_mode_switches_without_changing_results():
    """With adaptive on, calls alternate between all threads and one at first, then keep
    the faster: results never depend on it."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((200, 300)).astype(np.float32)
    w = rng.standard_normal((300, 256)).astype(np.float32)
    g = gc.trace(lambda a, w: gc.tanh(a @ w).sum(axis=0), a, w)
    ref = llvm_backend.compile(g, threads=1)(a, w)[0]
    fn = llvm_backend.compile(g, threads=2, adaptive=True)
    assert fn.adaptive is not None
    for _ in range(30):
        np.testing.assert_array_equal(fn(a, w)[0], ref)
    assert fn.adaptive.mode in (1, 2)
    assert len(fn.adaptive.times[1]) > 0 and len(fn.adaptive.times[2]) > 0


def test_value_leaving_through_a_view_is_stored():
    """A fused chain whose result leaves the graph only through a reshape."""
    g = Graph("g")
    x = g.add_input((5, 3), np.float32, "x")
    w = g.add_input((3,), np.float32, "w")
    wb = g.add("broadcast_to", [w], {"shape": (5, 3)})
    y = g.add("tanh", [g.add("add", [x, wb])])
    g.set_outputs([g.add("reshape", [y], {"shape": (15,)})])
    assert not fusion.fused_values(fusion.fuse(g)) & set(fusion.fuse(g).outputs)
    xs = [np.ones((5, 3), np.float32), np.arange(3, dtype=np.float32)]
    np.testing.assert_allclose(llvm_backend.compile(g, threads=1)(*xs)[0],
                               numpy_backend.run(g, xs)[0], rtol=1e-6)
    fg = fusion.fuse(g)
    tanh = next(n for n in fg.nodes if n.op == "tanh")
    assert tanh.output not in fusion.fused_values(fg)


def test_small_k_gemm_fused_into_epilogue_is_bit_identical(monkeypatch):
    """Weight gradients at small batch (K <= 32) are computed inside the update loop; the
    arithmetic is the GEMM kernel's (fma in k order), so results match it bit for bit."""
    from graphc.backends.llvm.plan import make_kernels
    from graphc.backends.llvm.plan.kernels import SmallKKernel
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 70)).astype(np.float32)
    g = rng.standard_normal((16, 45)).astype(np.float32)
    w = rng.standard_normal((70, 45)).astype(np.float32)

    def f(x, g, w):
        return w - 0.1 * (x.T @ g), gc.relu(x.T @ g + w)
    gr = gc.trace(f, x, g, w)
    p, _ = llvm_backend.lower(gr, threads=2)
    assert sum(isinstance(k, SmallKKernel) for k in p.kernels) == 2
    fused = {t: llvm_backend.compile(gr, threads=t)(x, g, w) for t in (1, 2)}
    monkeypatch.setattr(make_kernels, "SMALLK_MAX", 0)
    # compile-cache keys cover the backend's sources, not its switches: keys of its own
    digest = llvm_backend.source_digest()
    monkeypatch.setattr(llvm_backend, "source_digest", lambda: digest + "/smallk-off")
    p, _ = llvm_backend.lower(gr, threads=2)
    assert not any(isinstance(k, SmallKKernel) for k in p.kernels)
    plain = llvm_backend.compile(gr, threads=1)(x, g, w)
    for t in (1, 2):
        for a, b in zip(fused[t], plain):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_module_parts_give_identical_code(threads):
    """Kernels in modules of their own, compiled in concurrent bundles, run exactly the
    same code as one module (only the build is faster)."""
    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal((33, 20)).astype(np.float32),
              "b": np.zeros(20, np.float32),
              "v": rng.standard_normal((20, 7)).astype(np.float32)}
    x = rng.standard_normal((11, 33)).astype(np.float32)

    def loss(p, x):
        h = gc.tanh(x @ p["w"] + p["b"])
        return gc.sum(gc.exp(h @ p["v"]) * 0.01) + gc.sum(h * h)
    step = gc.compile_step(loss, params, gc.optim.Adam(1e-2), (x,), backend="numpy")
    outs = []
    for parts in (1, 3):
        _, mod = llvm_backend.lower(step.graph, threads=threads, parts=parts)
        mods = mod if isinstance(mod, list) else [mod]
        # one module: kernels internal beside the entry; parts: the entry alone (compiled
        # without optimisation), every kernel exported from a module of its own
        assert (len(mods) == 1) == (parts == 1)
        for j, m in enumerate(mods):
            defs = [f for f in m.functions if f.name.startswith(("k", "gk_")) and not f.is_declaration]
            if parts > 1 and j == 0:
                assert not defs and m.get_global("graphc_main") is not None
            else:
                assert defs and all((f.linkage == "internal") == (parts == 1) for f in defs)
                assert parts == 1 or len(defs) == 1
        fn = llvm_backend.compile(step.graph, threads=threads, parts=parts)
        args = [np.array(a) for a in (*step._p_leaves, x, *step.opt_state.values())]
        res = [fn(*args)[0] for _ in range(3)]
        outs.append((res, args))
    for (ra, aa), (rb, ab) in [(outs[0], outs[1])]:
        for p, q in zip(ra + aa, rb + ab):
            np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("threads", [1, 2])
def test_identical_kernels_are_compiled_once(threads, monkeypatch):
    """Two layers of the same shapes have kernels of the same code (the buffers are
    arguments): each is one function, called once per plan kernel, and the step computes
    exactly what it computes with every kernel in one module."""
    from graphc.backends.llvm.codegen import module as codegen
    rng = np.random.default_rng(11)
    params = {f"w{i}": rng.standard_normal((24, 24)).astype(np.float32) * 0.3
              for i in range(3)}
    params.update({f"b{i}": np.zeros(24, np.float32) for i in range(3)})
    x = rng.standard_normal((9, 24)).astype(np.float32)

    def loss(p, x):
        h = x
        for i in range(3):
            h = gc.tanh(h @ p[f"w{i}"] + p[f"b{i}"])
        return gc.sum(h * h)
    step = gc.compile_step(loss, params, gc.optim.SGD(1e-2), (x,), backend="numpy")
    plan, mods = llvm_backend.lower(step.graph, threads=threads, parts=2, cold=True)
    defined = [f.name for m in mods[1:] for f in m.functions if not f.is_declaration]
    called = {ins.callee.name for f in mods[0].functions if not f.is_declaration
              for blk in f.blocks for ins in blk.instructions
              if getattr(ins, "callee", None) is not None}
    assert len(defined) == len(set(defined)) and set(defined) <= called
    hot = [k for k in plan.kernels if not codegen.is_cold(k)]
    assert len(defined) < len(hot)          # the three layers share kernels
    outs = []
    for parts in (1, 2):
        # parts=1 with no cold kernel: one module, every plan kernel its own function
        monkeypatch.setattr(codegen, "COLD_ELEMENTS", 0 if parts == 1 else 1024)
        fn = llvm_backend.compile(step.graph, threads=threads, parts=parts)
        args = [np.array(a) for a in (*step._p_leaves, x, *step.opt_state.values())]
        outs.append(([fn(*args)[0] for _ in range(3)], args))
    (ra, aa), (rb, ab) = outs
    for p, q in zip(ra + aa, rb + ab):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("threads", [1, 2])
def test_cold_kernels_run_unoptimised_with_the_same_bits(threads, monkeypatch):
    """Small loop kernels (bias updates, loss terms) are compiled beside the entry without
    optimisation (compile time); a step computes exactly what it computes with every
    kernel at O3 (``COLD_ELEMENTS = 0``), row sums never being cold."""
    from graphc.backends.llvm.codegen import module as codegen
    rng = np.random.default_rng(7)
    params = {"w": rng.standard_normal((33, 20)).astype(np.float32),
              "b": np.zeros(20, np.float32),
              "v": rng.standard_normal((20, 7)).astype(np.float32), "c": np.ones(7, np.float32)}
    x = rng.standard_normal((11, 33)).astype(np.float32)

    def loss(p, x):
        h = gc.tanh(x @ p["w"] + p["b"])
        z = h @ p["v"] + p["c"]
        return gc.sum(gc.log(gc.sum(gc.exp(z), axis=1))) + gc.sum(h * h) * 0.1
    step = gc.compile_step(loss, params, gc.optim.SGD(1e-2), (x,), backend="numpy")
    plan, mods = llvm_backend.lower(step.graph, threads=threads, parts=1, cold=True)
    cold = [k for k in plan.kernels if codegen.is_cold(k)]
    assert cold and len(cold) < len(plan.kernels)
    assert not any(codegen._row_sum(k) for k in cold)
    first = {f.name for f in mods[0].functions if not f.is_declaration}
    assert len(mods) > 1 and sum(n.startswith("k") for n in first) == len(cold)
    outs = []
    for limit in (codegen.COLD_ELEMENTS, 0):
        monkeypatch.setattr(codegen, "COLD_ELEMENTS", limit)
        fn = llvm_backend.compile(step.graph, threads=threads)
        args = [np.array(a) for a in (*step._p_leaves, x, *step.opt_state.values())]
        outs.append(([fn(*args)[0] for _ in range(3)], args))
    (ra, aa), (rb, ab) = outs
    for p, q in zip(ra + aa, rb + ab):
        np.testing.assert_array_equal(p, q)


def test_row_sums_vectorize_and_match_across_threads():
    """A float sum along the innermost axis (softmax, layer norm rows) is vectorized with
    reassociation (vector partial sums, float64 accumulators for float32), and the order
    is the loop's alone: 1 and 2 threads give the same bits."""
    def f(x):
        return gc.nn.softmax(x, -1) * gc.sum(x * x, axis=-1, keepdims=True)
    x = np.random.default_rng(0).standard_normal((512, 67)).astype(np.float32)
    g = gc.trace(f, x)
    asm = llvm_backend.assembly(g, threads=1)
    _, any_wide = _vector_width_regs()
    assert re.search(r"\bv?addpd\s+[^\n]*" + any_wide, asm), "row sum not vectorized"
    want = numpy_backend.run(g, [x])[0]
    outs = [llvm_backend.compile(g, threads=t)(x)[0] for t in (1, 2)]
    for _ in range(2):
        assert np.array_equal(llvm_backend.compile(g, threads=2)(x)[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], want, rtol=2e-6, atol=1e-6)
