"""LLVM backend: lowers graphc kernels to native code through llvmlite.

Kept minimal on purpose: importing the package must stay cheap, so submodules
(`jit`, `gemm`, `parallel`, ...) are imported explicitly by their users.
"""
