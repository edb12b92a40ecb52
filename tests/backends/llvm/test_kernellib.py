"""The GEMM kernel library: compiled once per family, disk-cached with the same safety as
any module (0700 directory, header + checksum, corrupt or foreign entries ignored and
rebuilt), declared -- not defined -- by graph modules, and bit-identical to GEMMs
emitted into the graph module (``GRAPHC_KERNEL_LIBRARY=0``)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import graphc as gc  # noqa: E402
from graphc.backends.llvm.codegen import gemm  # noqa: E402
from graphc.backends.llvm.native import jit  # noqa: E402
from graphc.backends.llvm.native import kernellib  # noqa: E402

SPEC = gemm.default_spec("float32")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache directory and a process that has not loaded any library yet
    (previously loaded engines stay alive in ``kernellib._KEEP``)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(d))
    monkeypatch.setattr(kernellib, "_LOADED", {})
    jit.clear_memory_cache()
    yield d
    jit.clear_memory_cache()


def _reload(monkeypatch):
    monkeypatch.setattr(kernellib, "_LOADED", {})
    jit.clear_memory_cache()
    return kernellib.load(SPEC)[0]


def _entry(d):
    key = kernellib.library_key(kernellib.family(SPEC), jit.host_target())
    return d / f"{key[:40]}.gco", key


def _matmul_check(threads=1):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 70)).astype(np.float32)
    b = rng.standard_normal((70, 45)).astype(np.float32)
    f = gc.jit(lambda x, y: gc.relu(x @ y), threads=threads)
    np.testing.assert_allclose(f(a, b), np.maximum(a @ b, 0), rtol=1e-4, atol=1e-4)
    # transposed variants of the backward pass go through the library too
    g = gc.jit(lambda x, y: x.T @ y, threads=threads)
    np.testing.assert_allclose(g(a, a), a.T @ a, rtol=1e-4, atol=1e-3)


def test_library_compiled_once_then_loaded_from_disk(fresh, monkeypatch):
    cm = kernellib.load(SPEC)[0]
    assert cm.source == "compiled"
    path, key = _entry(fresh)
    assert path.exists()
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
    assert kernellib.load(SPEC)[0] is cm          # once per process
    codegens = jit.STATS["codegen"]
    again = _reload(monkeypatch)
    assert again.source == "disk" and jit.STATS["codegen"] == codegens
    _matmul_check()


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "garbage"])
def test_corrupt_or_foreign_library_entry_is_rebuilt(fresh, monkeypatch, damage):
    kernellib.load(SPEC)
    path, key = _entry(fresh)
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-100] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "foreign":   # a well-formed entry written for another key
        other = jit.compile_module(f"; {key}\ndefine i32 @f() {{\n ret i32 7\n}}\n")
        blob = bytearray((fresh / f"{other.key[:40]}.gco").read_bytes())
    else:
        blob = bytearray(b"\x7fELF" + os.urandom(4000))
    path.write_bytes(bytes(blob))
    rejects = jit.STATS["disk_rejects"]
    cm = _reload(monkeypatch)
    assert cm.source == "compiled"
    assert jit.STATS["disk_rejects"] == rejects + 1
    assert jit.read_entry(str(path), key) is not None     # rewritten, valid again
    _matmul_check()


def test_graph_module_declares_library_drivers(fresh):
    from graphc.backends.llvm import lower
    a = np.ones((20, 30), np.float32)
    b = np.ones((30, 40), np.float32)
    _, module = lower(gc.trace(lambda x, y: x @ y, a, b), threads=1)
    text = str(module)
    assert 'declare void @"graphc_lib' in text or "declare void @graphc_lib" in text
    assert "graphc_gemmk_" not in text            # no micro-kernel compiled per graph
    np.testing.assert_array_equal(gc.jit(lambda x, y: x @ y)(a, b), a @ b)


def test_library_disabled_emits_gemms_into_the_graph(fresh, monkeypatch):
    from graphc.backends.llvm import lower
    monkeypatch.setenv("GRAPHC_KERNEL_LIBRARY", "0")
    a = np.ones((20, 30), np.float32)
    _, module = lower(gc.trace(lambda x, y: x @ y, a, a.T.copy()), threads=1)
    text = str(module)
    assert "graphc_lib" not in text and "graphc_gemmk_" in text


def test_library_key_covers_target_and_sources(fresh, monkeypatch):
    fam = kernellib.family(SPEC)
    host = jit.host_target()
    key = kernellib.library_key(fam, host)
    assert kernellib.library_key(fam, jit.TargetInfo(host.triple, "x86-64", "", True)) != key
    monkeypatch.setattr(kernellib, "_SOURCE_DIGEST", "0" * 64)
    assert kernellib.library_key(fam, host) != key
    # unreadable sources: the library's IR text is hashed instead
    monkeypatch.setattr(kernellib, "_SOURCE_DIGEST", None)
    monkeypatch.setattr(kernellib, "__file__", "/nonexistent/kernellib.py")
    assert kernellib.library_key(fam, host) not in (key, None)


def test_generic_target_uses_its_own_library(fresh, monkeypatch):
    monkeypatch.setenv("GRAPHC_LLVM_GENERIC", "1")
    try:
        assert jit.host_target().generic
        _matmul_check()
        assert any(t.generic for t, _ in kernellib._LOADED)
    finally:
        monkeypatch.delenv("GRAPHC_LLVM_GENERIC")
        jit.host_target()


def _step_results(env_extra, threads):
    code = textwrap.dedent(f"""
        import json, numpy as np, graphc as gc
        rng = np.random.default_rng(1)
        p = {{"w0": rng.standard_normal((33, 70)).astype(np.float32) * 0.1,
              "b0": np.zeros(70, np.float32),
              "w1": rng.standard_normal((70, 10)).astype(np.float32) * 0.1}}
        x = rng.standard_normal((29, 33)).astype(np.float32)
        y = rng.integers(0, 10, 29)
        def loss(p, x, y):
            return gc.nn.cross_entropy(gc.relu(x @ p["w0"] + p["b0"]) @ p["w1"], y)
        step = gc.compile_step(loss, p, gc.optim.SGD(0.1, momentum=0.9), (x, y),
                               threads={threads})
        losses = [float(step(x, y)) for _ in range(3)]
        from graphc.backends.llvm.native import jit
        from graphc.backends.llvm.native import kernellib
        print("RESULT " + json.dumps({{"losses": losses,
            "w0": step.params["w0"].ravel()[:50].tolist(),
            "jit": jit.STATS, "lib": kernellib.STATS,
            "source": step._run.compile_info.get("source")}}))
    """)
    env = dict(os.environ, **env_extra)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][0]
    return json.loads(line[7:])


@pytest.mark.parametrize("threads", [1, 2])
def test_fresh_processes_disk_hits_and_inline_gemms_agree_bitwise(tmp_path, threads):
    env = {"GRAPHC_CACHE_DIR": str(tmp_path / "c")}
    first = _step_results(env, threads)
    assert first["lib"]["builds"] >= 1 and first["source"] == "compiled"
    hit = _step_results(env, threads)
    assert hit["lib"]["builds"] == 0 and hit["lib"]["loads"] >= 1
    assert hit["source"] == "disk" and hit["jit"]["codegen"] == 0
    inline = _step_results(dict(env, GRAPHC_KERNEL_LIBRARY="0"), threads)
    assert inline["lib"]["builds"] == inline["lib"]["loads"] == 0
    for other in (hit, inline):
        assert other["losses"] == first["losses"]
        assert other["w0"] == first["w0"]
