"""What the compile caches and the compiler did in this process: counters only.

Tests use them to prove that a disk hit skipped code generation or that a bad entry was
refused; benchmarks report the kernels compiled and reused.  Read as ``jit.STATS``.
"""

#: counts real code generations (tests use it to prove a disk hit skipped codegen)
STATS = {"codegen": 0, "disk_hits": 0, "disk_rejects": 0, "memory_hits": 0,
         "elf_fallbacks": 0, "kernels_compiled": 0, "kernel_hits": 0}
