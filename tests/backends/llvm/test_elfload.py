"""The ELF loader used for cached object code: same results as MCJIT, code pages
read+execute only, and anything it does not handle refused before it can run."""
from __future__ import annotations

import ctypes
import uuid

import numpy as np
import pytest

from graphc.backends.llvm.native import elfload
from graphc.backends.llvm.native import jit

_PROGRAM = """
; unique: {tag}
@table = internal constant [4 x double] [double 1.5, double 2.5, double 3.5, double 4.5], align 32
@counter = global i64 0, align 8
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare double @helper(double)

define double @lookup(i64 %i, double %x) {{
  %p = getelementptr [4 x double], ptr @table, i64 0, i64 %i
  %v = load double, ptr %p
  %c = load i64, ptr @counter
  %c1 = add i64 %c, 1
  store i64 %c1, ptr @counter
  %h = call double @helper(double %x)
  %r = fmul double %v, %h
  ret double %r
}}

define void @copy(ptr %dst, ptr %src, i64 %n) {{
  call void @llvm.memcpy.p0.p0.i64(ptr %dst, ptr %src, i64 %n, i1 false)
  ret void
}}

define i64 @count() {{
  %c = load i64, ptr @counter
  ret i64 %c
}}
"""

_HELPER = """
; unique: {tag}
define double @helper(double %x) {{
  %y = fadd double %x, 1.0
  ret double %y
}}
"""


def _objects():
    tag = uuid.uuid4().hex
    target = jit.host_target()
    return [jit._compile_part(t.format(tag=tag), "O3", target, False)[0]
            for t in (_PROGRAM, _HELPER)]


def _exercise(code):
    lookup = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_int64, ctypes.c_double)(
        code.get_function_address("lookup"))
    copy = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        code.get_function_address("copy"))
    count = ctypes.CFUNCTYPE(ctypes.c_int64)(code.get_function_address("count"))
    vals = [lookup(i, 2.0) for i in range(4)]
    src = np.arange(10000, dtype=np.float64)
    dst = np.zeros_like(src)
    copy(dst.ctypes.data, src.ctypes.data, src.nbytes)
    return vals, dst, count()


def test_same_results_as_mcjit():
    objs = _objects()
    mine = _exercise(elfload.LoadedCode(objs))
    vals, dst, n = mine
    assert vals == [4.5, 7.5, 10.5, 13.5] and n == 4
    np.testing.assert_array_equal(dst, np.arange(10000, dtype=np.float64))
    theirs = _exercise(_mcjit(objs))
    assert theirs[0] == vals and theirs[2] == n


def _mcjit(objs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_ELF_LOADER", "0")
        engine = jit._load_objects(objs, jit.host_target())
    assert not isinstance(engine, elfload.LoadedCode)
    return engine


def test_code_is_not_writable():
    code = elfload.LoadedCode(_objects())
    addr = code.get_function_address("lookup")
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                assert line.split()[1].startswith("r-x")
                break
        else:
            pytest.fail("code address not mapped")


@pytest.mark.parametrize("damage", ["not_elf", "machine", "undefined"])
def test_refuses_what_it_does_not_handle(damage):
    prog, helper = _objects()
    if damage == "not_elf":
        objs = [b"\0" * 64]
    elif damage == "machine":
        b = bytearray(prog)
        b[18:20] = (183).to_bytes(2, "little")    # EM_AARCH64
        objs = [bytes(b)]
    else:
        objs = [prog]                             # @helper is defined nowhere
    with pytest.raises(elfload.Unsupported):
        elfload.LoadedCode(objs)


def test_jit_falls_back_to_mcjit(monkeypatch):
    objs = _objects()

    def refuse(*a, **k):
        raise elfload.Unsupported("test")
    monkeypatch.setattr(elfload, "LoadedCode", refuse)
    before = jit.STATS["elf_fallbacks"]
    engine = jit._load_objects(objs, jit.host_target())
    assert jit.STATS["elf_fallbacks"] == before + 1
    assert _exercise(engine)[0] == [4.5, 7.5, 10.5, 13.5]
