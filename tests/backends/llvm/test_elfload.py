"""The ELF loader used for cached object code: same results as MCJIT, code pages
read+execute only, and anything it does not handle refused before it can run."""
from __future__ import annotations

import ctypes
import uuid

import numpy as np
import pytest

from graphc.backends.llvm.native import elfload
from graphc.backends.llvm.native import jit, llvmcompile, loader

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
    return [llvmcompile._compile_part(t.format(tag=tag), "O3", target, False)[0]
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
        engine = loader.load_objects(objs, jit.host_target())
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
    engine = loader.load_objects(objs, jit.host_target())
    assert jit.STATS["elf_fallbacks"] == before + 1
    assert _exercise(engine)[0] == [4.5, 7.5, 10.5, 13.5]


def _unwind_table_of(pc: int) -> int:
    """What the unwinder finds for ``pc`` (libgcc's ``_Unwind_Find_FDE``; 0: nothing)."""
    lib = ctypes.CDLL("libgcc_s.so.1")
    find = lib._Unwind_Find_FDE
    find.argtypes, find.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_void_p
    bases = (ctypes.c_void_p * 3)()
    return find(pc, bases) or 0


def test_unwind_tables_are_registered_while_the_code_lives():
    code = elfload.LoadedCode(_objects())
    pc = code.get_function_address("lookup")
    assert code._frames, "no .eh_frame was loaded"
    fde = _unwind_table_of(pc + 1)
    assert code.base <= fde < code.base + code.size    # the FDE in our own mapping
    assert _exercise(code)[0] == [4.5, 7.5, 10.5, 13.5]
    code.__del__()                                      # deregistered before unmapping
    assert _unwind_table_of(pc + 1) == 0


def test_refuses_a_global_defined_twice():
    _, helper = _objects()
    with pytest.raises(elfload.Unsupported, match="helper defined by two objects"):
        elfload.LoadedCode([helper, helper])


@pytest.mark.parametrize("name", ["getpid", "PyLong_FromLong"])
def test_resolves_only_what_graphc_provides(name):
    """Functions of the process that are not graphc's (a libc function not in
    C_FUNCTIONS, a symbol of the Python executable) are never bound."""
    assert ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value
    text = (f"; unique: {uuid.uuid4().hex}\ndeclare i64 @{name}(i64)\n"
            f"define i64 @f(i64 %x) {{\n  %r = call i64 @{name}(i64 %x)\n  ret i64 %r\n}}\n")
    obj = llvmcompile._compile_part(text, "O3", jit.host_target(), False)[0]
    with pytest.raises(elfload.Unsupported, match=f"undefined symbol {name}"):
        elfload.LoadedCode([obj])


def test_generated_code_calls_only_listed_c_functions():
    """Every external function the backend's modules declare is graphc's own (a kernel
    of another part, the kernel library) or listed in ``elfload.C_FUNCTIONS``."""
    import graphc as gc
    import graphc.backends.llvm as llvm_backend
    x = np.linspace(0.1, 2, 40)

    def f(x):
        y = gc.tanh(x) * gc.exp(x) + gc.log(x) + x ** 1.5 + gc.sigmoid(x) + gc.sqrt(x)
        return gc.sum(y), gc.log1p(x), gc.erf(x) if hasattr(gc, "erf") else x
    for dtype in (np.float32, np.float64):
        g = gc.trace(f, x.astype(dtype))
        for threads, parts in ((1, 1), (2, 3)):
            _, mods = llvm_backend.lower(g, threads=threads, parts=parts)
            mods = mods if isinstance(mods, list) else [mods]
            defined = {fn.name for m in mods for fn in m.functions if not fn.is_declaration}
            external = {fn.name for m in mods for fn in m.functions if fn.is_declaration
                        and not fn.name.startswith(("llvm.", "graphc_lib"))} - defined
            assert external <= elfload.C_FUNCTIONS, external - elfload.C_FUNCTIONS


def test_relocation_types_are_named():
    for typ, (name, width, _pcrel) in elfload.RELOCATIONS.items():
        assert getattr(elfload, name) == typ and width in (4, 8)
