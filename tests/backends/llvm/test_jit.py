"""JIT and compile cache: host target, disk cache hits skip code generation, corrupt or
foreign cache entries are ignored and rebuilt, dumps, generic fallback."""
from __future__ import annotations

import ctypes
import os
import stat
import uuid

import pytest

pytest.importorskip("llvmlite")

from graphc.backends.llvm.native import diskcache  # noqa: E402
from graphc.backends.llvm.native import jit  # noqa: E402


def _ir(tag: str | None = None) -> str:
    """A tiny module whose text (hence cache key) is unique per test."""
    tag = tag or uuid.uuid4().hex
    return f"""
; unique: {tag}
define double @axpy(double %a, double %x, double %y) {{
  %p = fmul double %a, %x
  %r = fadd double %p, %y
  ret double %r
}}
"""


def _call(cm, *args):
    fn = cm.cfunc("axpy", ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double)
    return fn(*args)


def test_compile_and_call_reports_timings(cache_dir):
    cm = jit.compile_module(_ir())
    assert cm.source == "compiled"
    assert set(cm.timings) >= {"parse", "optimise", "codegen"}
    assert cm.compile_seconds > 0
    assert _call(cm, 2.0, 3.0, 1.0) == 7.0


def test_memory_cache_hit(cache_dir):
    text = _ir()
    first = jit.compile_module(text)
    again = jit.compile_module(text)
    assert again.source == "memory" and again.key == first.key
    assert _call(again, 1.0, 1.0, 1.0) == 2.0


def test_cache_dir_is_private(cache_dir):
    jit.compile_module(_ir())
    mode = stat.S_IMODE(os.stat(cache_dir).st_mode)
    assert mode == 0o700
    assert len(list(cache_dir.glob("*.gco"))) == 1
    assert not list(cache_dir.glob(".tmp-*"))  # atomic writes leave no temp files


def test_disk_cache_hit_skips_codegen(cache_dir):
    text = _ir()
    jit.compile_module(text)
    jit.clear_memory_cache()
    codegens = jit.STATS["codegen"]
    cm = jit.compile_module(text)
    assert cm.source == "disk"
    assert jit.STATS["codegen"] == codegens  # neither optimiser nor codegen ran
    assert "load" in cm.timings
    assert not {"parse", "verify", "optimise", "codegen"} & set(cm.timings)
    assert _call(cm, 3.0, 2.0, 1.0) == 7.0


def _only_entry(cache_dir):
    (path,) = cache_dir.glob("*.gco")
    return path


@pytest.mark.parametrize("damage", ["flip_payload", "flip_header", "truncate", "empty"])
def test_corrupt_entry_is_ignored_and_rebuilt(cache_dir, damage):
    text = _ir()
    jit.compile_module(text)
    jit.clear_memory_cache()
    path = _only_entry(cache_dir)
    blob = bytearray(path.read_bytes())
    if damage == "flip_payload":
        blob[-10] ^= 0xFF
    elif damage == "flip_header":
        blob[3] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    rejects, codegens = jit.STATS["disk_rejects"], jit.STATS["codegen"]
    cm = jit.compile_module(text)
    assert cm.source == "compiled"
    assert jit.STATS["codegen"] == codegens + 1
    assert jit.STATS["disk_rejects"] == rejects + 1
    assert _call(cm, 2.0, 2.0, 2.0) == 6.0
    # the entry was rewritten and is valid again
    assert jit.read_entry(str(path), cm.key) is not None


def test_foreign_entry_is_ignored(cache_dir):
    """A well-formed entry for another key at this key's path is not loaded."""
    text = _ir()
    cm = jit.compile_module(text)
    jit.clear_memory_cache()
    path = _only_entry(cache_dir)
    other_key = "ab" * 32
    payload = jit.read_entry(str(path), cm.key)
    jit.write_entry(str(path), other_key, payload)
    assert jit.read_entry(str(path), cm.key) is None
    again = jit.compile_module(text)
    assert again.source == "compiled"


def test_disk_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "off")
    assert jit.cache_dir() is None
    assert jit.compile_module(_ir()).source == "compiled"


def test_dump_ir_and_assembly(cache_dir, tmp_path, monkeypatch):
    dump = tmp_path / "dump"
    monkeypatch.setenv("GRAPHC_DUMP_LLVM", str(dump))
    jit.compile_module(_ir())
    suffixes = sorted(p.name.split(".", 1)[1] for p in dump.iterdir())
    assert suffixes == ["ll", "opt.ll", "s"]


def test_host_target_uses_cpu_features():
    t = jit.host_target()
    assert t.triple
    if not t.generic:
        assert t.cpu and t.cpu != "generic"
        assert "+" in t.features


def test_generic_fallback(cache_dir, monkeypatch):
    monkeypatch.setenv("GRAPHC_LLVM_GENERIC", "1")
    t = jit.host_target()
    assert t.generic and t.features == ""
    cm = jit.compile_module(_ir())
    assert cm.target.generic
    assert _call(cm, 1.5, 2.0, 0.5) == 3.5
    monkeypatch.delenv("GRAPHC_LLVM_GENERIC")
    assert jit.host_target().generic is False or jit.host_target().features == ""


def test_key_depends_on_target():
    text = _ir("fixed")
    a = jit.TargetInfo("x86_64-unknown-linux-gnu", "znver4", "+avx512f", False)
    b = jit.TargetInfo("x86_64-unknown-linux-gnu", "x86-64", "", True)
    assert jit.cache_key(text, a) != jit.cache_key(text, b)
    assert jit.cache_key(text, a) == jit.cache_key(text, a)


def _parts(tag: str):
    """Two modules of one program: ``twice_axpy`` (part 0) calls ``axpy2`` (part 1)."""
    caller = f"""
; unique: {tag}
declare double @axpy2(double, double, double)
define double @twice_axpy(double %a, double %x, double %y) {{
  %r = call double @axpy2(double %a, double %x, double %y)
  %t = fmul double %r, 2.0
  ret double %t
}}
"""
    callee = f"""
; unique: {tag}
define double @axpy2(double %a, double %x, double %y) {{
  %p = fmul double %a, %x
  %r = fadd double %p, %y
  ret double %r
}}
"""
    return [caller, callee]


def _call_twice(cm, *args):
    fn = cm.cfunc("twice_axpy", ctypes.c_double, *[ctypes.c_double] * 3)
    return fn(*args)


def test_parts_compile_concurrently_and_link(cache_dir):
    parts = _parts(uuid.uuid4().hex)
    cm = jit.compile_module(parts)
    assert cm.source == "compiled" and "llvm" in cm.timings
    assert _call_twice(cm, 2.0, 3.0, 1.0) == 14.0
    # one cache entry holds both objects; a disk hit links them again
    jit.clear_memory_cache()
    again = jit.compile_module(parts)
    assert again.source == "disk" and again.key == cm.key
    assert _call_twice(again, 1.0, 1.0, 1.0) == 4.0
    objs, meta = diskcache.split_objects(jit.read_entry(str(_only_entry(cache_dir)), cm.key))
    assert len(objs) == 2 and meta is None


def test_meta_is_kept_beside_the_object_code(cache_dir):
    text = _ir()
    cm = jit.compile_keyed(jit.cache_key(text, jit.host_target()),
                           lambda: jit.WithMeta(text, b'{"plan": 1}'))
    assert cm.source == "compiled" and cm.meta == b'{"plan": 1}'
    for source in ("memory", "disk"):
        if source == "disk":
            jit.clear_memory_cache()
        again = jit.compile_keyed(cm.key, lambda: pytest.fail("rebuilt"))
        assert again.source == source and again.meta == b'{"plan": 1}'
        assert _call(again, 2.0, 3.0, 1.0) == 7.0


@pytest.mark.parametrize("payload", [b"", b"\x05\0\0\0\0\0\0\0abc", b"\0" * 8, b"\x01\0\0",
                                     b"\x0c\0\0\0\0\0\0\0GRAPHCMETA\0x"])
def test_malformed_object_list_is_rejected(payload):
    assert diskcache.split_objects(payload) is None
