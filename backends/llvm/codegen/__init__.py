"""Stage 2 of the LLVM backend, *codegen*: a plan turned into ``llvmlite.ir`` modules.

Owns the lowering table (``lowerings``, one entry per registry op, with ``mathfn``'s
inline polynomials), the module builder (``module``: one function per kernel, the entry
function, module parts), the GEMM micro-kernels (``gemm``) and the small-K register
tiles (``smallk``), long-K dot products (``dot``: narrow weight gradients), the
sliding-window kernels of convolution and pooling (``window``) and the conv kernels that
never store a patch matrix (``conv_fused``).  Imports the plan stage's data; asks the native stage for the GEMM
kernel library's symbols.
"""
