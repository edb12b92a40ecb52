"""Stage 4 of the LLVM backend, *runtime*: what runs when the user calls the function.

Owns the Python callable (``compiled``: argument checks and conversions, the pointer
cache, the plan summary kept beside cached objects) and the thread launcher
(``parallel``: the persistent native worker pool; ``native_pool``: its native side and
the spin barrier the step function calls, as LLVM IR) and a GEMM kernel called from
Python for tests and benchmarks (``gemmcall``).
Imports the native stage (to build the launcher's own small module) and the codegen
stage's GEMM emitter.
"""
