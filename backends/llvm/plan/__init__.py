"""Stage 1 of the LLVM backend, *plan*: the fused graph turned into data, no LLVM yet.

Owns the kernels (what loops run, in which order, over which storage), the view model
(``views``: storages and strided views), and the arena (``arena``: kernel levels, the
byte layout by the memory planner, synchronisation points).  Imports the IR, the passes
and the codegen stage's op table and GEMM tile shapes only for decisions (which ops
have a lowering, which tile a GEMM gets); it builds no IR.
"""
