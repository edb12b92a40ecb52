"""LLVM's remarks and warnings are collected and counted, never printed on the user's
stderr; other output written to fd 2 meanwhile still appears (``native/diagnostics.py``)."""
from __future__ import annotations

import os

from graphc.backends.llvm.native import diagnostics, jit

#: a forced vectorization LLVM cannot do: a[i] = 2·a[i-1] + 1 (a recurrence through memory)
_RECURRENCE = """
define void @recur(ptr noalias %a, i64 %n) {
entry:
  br label %head
head:
  %i = phi i64 [1, %entry], [%next, %body]
  %c = icmp slt i64 %i, %n
  br i1 %c, label %body, label %out
body:
  %im1 = sub i64 %i, 1
  %pp = getelementptr inbounds float, ptr %a, i64 %im1
  %p = getelementptr inbounds float, ptr %a, i64 %i
  %v = load float, ptr %pp
  %w = fmul float %v, 2.0
  %x = fadd float %w, 1.0
  store float %x, ptr %p
  %next = add nsw i64 %i, 1
  br label %head, !llvm.loop !0
out:
  ret void
}
!0 = distinct !{!0, !1}
!1 = !{!"llvm.loop.vectorize.enable", i1 1}
"""


def test_failed_forced_vectorization_is_counted_not_printed(capfd, monkeypatch):
    monkeypatch.delenv("GRAPHC_LLVM_DIAGNOSTICS", raising=False)
    before = dict(diagnostics.COUNTS)
    for _ in range(2):      # the memory cache answers the second: nothing compiled
        mod = jit.compile_module(_RECURRENCE, use_disk_cache=False)
    assert mod.get_function_address("recur")
    err = capfd.readouterr().err
    assert "loop not vectorized" not in err
    assert diagnostics.COUNTS["missed_vectorization"] > before["missed_vectorization"]
    assert diagnostics.COUNTS["llvm"] > before["llvm"]
    assert any("loop not vectorized" in line for line in diagnostics.LAST)


def test_other_output_on_fd2_is_written_back(capfd):
    with diagnostics.collected():
        with diagnostics.collected():           # re-entrant (parts compiled at once)
            os.write(2, b"user output\n")
        os.write(2, b"remark: <unknown>:0:0: loop not vectorized: test\n")
    err = capfd.readouterr().err
    assert err == "user output\n"


def test_show_leaves_fd2_alone(capfd, monkeypatch):
    monkeypatch.setenv("GRAPHC_LLVM_DIAGNOSTICS", "show")
    jit.clear_memory_cache()
    jit.compile_module(_RECURRENCE + "\n; show\n", use_disk_cache=False)
    assert "loop not vectorized" in capfd.readouterr().err
