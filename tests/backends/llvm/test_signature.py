"""Kernel signatures (``plan/signature.py``): the per-kernel cache's keys before any IR.

A signature stands in for the kernel's IR text, so the one property that matters is
that equal signatures always mean equal code: checked over random programs (the
fuzzer's), the bundled models and several thread counts.  Then: what they share
(the layers of a new graph, a transformer's layers), that a graph whose kernels are
all cached builds none of their IR, and that the text keys still work when a kernel
has no signature."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends.llvm.codegen import module as codegen
from graphc.backends.llvm.native import jit
from graphc.backends.llvm.plan import signature
from graphc.lm import CharTransformer, LMConfig
from tests.fuzz.oracle import CONFIGS, build
from tests.fuzz.programs import generate

TRANSFORMS = ("forward", "value_and_grad", "jvp", "grad_of_grad")


def _mlp(transposed=False, scale=1.0, batch=16):
    rng = np.random.default_rng(0)
    shape = (lambda i, o: (o, i)) if transposed else (lambda i, o: (i, o))
    p = {"w0": rng.standard_normal(shape(20, 24)).astype(np.float32),
         "b0": np.zeros(24, np.float32),
         "w1": rng.standard_normal(shape(24, 7)).astype(np.float32),
         "b1": np.zeros(7, np.float32)}
    x = rng.standard_normal((batch, 20)).astype(np.float32)
    y = rng.integers(0, 7, batch).astype(np.int32)

    def mm(h, w):
        return h @ w.T if transposed else h @ w

    def loss(p, x, y):
        h = gc.relu(mm(x, p["w0"]) + p["b0"])
        return gc.nn.cross_entropy(mm(h, p["w1"]) + p["b1"], y) * scale
    return gc.compile_step(loss, p, gc.optim.SGD(0.1, momentum=0.9), (x, y),
                           backend="numpy"), (x, y)


def _conv():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)

    def loss(x, w):
        h = gc.nn.max_pool2d(gc.relu(gc.nn.conv2d(x, w, padding=1)), 2)
        return gc.sum(h * h)
    return gc.trace(gc.value_and_grad(loss, argnums=(0, 1)), x, w)


def _transformer():
    model = CharTransformer(LMConfig(vocab=11, context=8, dim=16, heads=2, layers=2,
                                     hidden=32))
    params = model.init(0)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 11, (2, 8)).astype(np.int32)
    y = rng.integers(0, 11, (2, 8)).astype(np.int32)
    return gc.compile_step(model.loss, params, gc.optim.Adam(1e-3), (x, y),
                           backend="numpy")


def _graphs():
    for seed in range(40):
        prog = generate(seed)
        fn, make = build(prog, TRANSFORMS[seed % len(TRANSFORMS)],
                         np.random.default_rng(seed))
        fuse, plan, _ = CONFIGS[seed % len(CONFIGS)]
        yield f"fuzz seed {seed}", gc.trace(fn, *make()), fuse, plan
    for transposed in (False, True):
        yield f"mlp transposed={transposed}", _mlp(transposed)[0].graph, True, "shared"
    yield "conv", _conv(), True, "shared"
    yield "transformer", _transformer().graph, True, "shared"


def _codes(graph, threads, fuse=True, plan="shared"):
    """[(signature, code text)] of every kernel of ``graph``'s plan."""
    p, _ = llvm_backend.lower(graph, threads=threads, fuse=fuse, plan=plan)
    cg = codegen.Codegen(p)
    out = []
    for i, k in enumerate(p.kernels):
        m, fn, _ = cg.kernel_module(k, i)
        out.append((signature.kernel_signature(k), codegen.code_text(m, fn)))
    return out


def test_equal_signatures_mean_equal_code():
    seen, kernels = {}, 0
    for what, graph, fuse, plan in _graphs():
        for threads in (1, 2, 3):
            for sig, text in _codes(graph, threads, fuse, plan):
                assert sig is not None, f"{what}: a kernel without a signature"
                kernels += 1
                old = seen.setdefault(sig, (text, what))
                assert old[0] == text, \
                    f"one signature, two codes: {old[1]} and {what}, {threads} threads"
    assert kernels > 1000 and len(seen) > 300      # the check saw real variety


def test_a_new_constant_keeps_the_other_kernels_signatures():
    a, b = (_mlp(scale=s)[0].graph for s in (2.0, 3.0))
    sa, sb = ([s for s, _ in _codes(g, 2)] for g in (a, b))
    assert len(sa) == len(sb)
    changed = sum(x != y for x, y in zip(sa, sb))
    assert 0 < changed <= 3, f"{changed} of {len(sa)} kernels changed"


def test_transformer_layers_share_signatures():
    sigs = [s for s, _ in _codes(_transformer().graph, 1)]
    assert len(set(sigs)) < len(sigs) - 10


def test_salt_covers_sources_and_switches(monkeypatch):
    base = llvm_backend.kernel_salt()
    digest = llvm_backend.source_digest()
    monkeypatch.setattr(llvm_backend, "source_digest", lambda: digest + "/edited")
    assert llvm_backend.kernel_salt() != base
    monkeypatch.undo()
    monkeypatch.setattr(codegen, "COLD_ELEMENTS", codegen.COLD_ELEMENTS + 1)
    assert llvm_backend.kernel_salt() != base


def _run(fn, step, xy, n=3):
    args = [np.array(a) for a in (*step._p_leaves, *xy, *step.opt_state.values())]
    return [[np.array(o) for o in fn(*args)] for _ in range(n)]


def _same_as_fresh(fn, step, xy, monkeypatch):
    """``fn`` computes the bits of a compile of ``step`` that shares nothing."""
    jit.clear_memory_cache()
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "off")
    fresh = llvm_backend.compile(step.graph, threads=2)
    for a, b in zip(_run(fn, step, xy), _run(fresh, step, xy)):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)


def test_cached_kernels_build_no_ir(cache_dir, monkeypatch):
    """A new graph (another loss constant) builds IR only for the kernels that
    constant reaches; its results are those of a compile that shares nothing."""
    s1, xy = _mlp(scale=2.0)
    llvm_backend.compile(s1.graph, threads=2)
    s2, _ = _mlp(scale=2.5)
    built = []
    real = codegen.Codegen.kernel_module

    def counting(self, k, i, triple=""):
        built.append(k.name)
        return real(self, k, i, triple)
    monkeypatch.setattr(codegen.Codegen, "kernel_module", counting)
    jit.clear_memory_cache()
    before = dict(jit.STATS)
    fn = llvm_backend.compile(s2.graph, threads=2)
    hits = jit.STATS["kernel_hits"] - before.get("kernel_hits", 0)
    hot = len(codegen.Codegen(fn.plan).hot(True))
    assert hits >= hot - 3 and len(built) == hot - hits and len(built) <= 3
    monkeypatch.setattr(codegen.Codegen, "kernel_module", real)
    _same_as_fresh(fn, s2, xy, monkeypatch)


def test_kernels_without_signature_are_keyed_by_text(cache_dir, monkeypatch):
    """With no signature (data the walk does not know), kernels are keyed by their IR
    text as before: a new graph still links the kernels it shares."""
    monkeypatch.setattr(signature, "kernel_signature", lambda k: None)
    s1, xy = _mlp(scale=1.5, batch=12)
    llvm_backend.compile(s1.graph, threads=2)
    s2, _ = _mlp(scale=0.5, batch=12)
    jit.clear_memory_cache()
    before = jit.STATS["kernel_hits"]
    fn = llvm_backend.compile(s2.graph, threads=2)
    assert jit.STATS["kernel_hits"] > before
    _same_as_fresh(fn, s2, xy, monkeypatch)
