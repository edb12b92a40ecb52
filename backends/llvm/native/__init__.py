"""Stage 3 of the LLVM backend, *native*: LLVM IR turned into callable machine code.

Owns the host target (``target``), the JIT (``jit``: the front door and its memory and
disk caches; ``parts``: a program as parts and bundles; ``llvmcompile``: optimisation
and object emission, module parts compiled concurrently; ``loader``: objects made
callable; ``kernelcache``: kernels reused across graphs; ``stats``: counters), the
on-disk cache entries (``diskcache``), the loader that links cached objects without
LLVM (``elfload``) and the GEMM kernel library compiled once per family
(``kernellib``).  Imports nothing of the other stages except the GEMM emitter the
kernel library is built from.
"""
