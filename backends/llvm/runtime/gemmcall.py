"""A GEMM kernel from Python: compiled once per variant, run on fixed arrays.

For tests and benchmarks, which measure the micro-kernels of :mod:`..codegen.gemm`
without a graph: :func:`gemm` computes ``op(a) @ op(b)``, :class:`GemmPlan` binds the
arrays once and calls the kernel's job function through the :mod:`.parallel` launcher,
as the compiled step function calls it.
"""
from __future__ import annotations

import threading

import numpy as np
from llvmlite import ir

from ..codegen.gemm import GemmSpec, default_spec, shape_spec
from ..codegen.gemm_parallel import chunks_for, emit_gemm_entry, partition
from ..native import jit
from . import parallel

_COMPILED: dict = {}
_COMPILE_LOCK = threading.Lock()


def build_module(spec: GemmSpec) -> ir.Module:
    """A module holding one GEMM variant and its thread-partition wrapper."""
    module = ir.Module(name=spec.name)
    emit_gemm_entry(module, spec)
    return module


def compiled(spec: GemmSpec):
    """(CompiledModule, address of the ``_entry`` job function) for ``spec``, cached."""
    hit = _COMPILED.get(spec)
    if hit is None:
        with _COMPILE_LOCK:
            hit = _COMPILED.get(spec)
            if hit is None:
                cm = jit.compile_module(build_module(spec))
                hit = (cm, cm.get_function_address(spec.name + "_entry"))
                _COMPILED[spec] = hit
    return hit


def precompile(specs) -> None:
    """Compile the variants of ``specs`` not compiled yet into one module (one LLVM run
    instead of one per variant: what the tuner does per candidate)."""
    with _COMPILE_LOCK:
        todo = [s for s in dict.fromkeys(specs) if s not in _COMPILED]
        if not todo:
            return
        module = ir.Module(name="gemm_" + todo[0].name)
        for spec in todo:
            emit_gemm_entry(module, spec)
        cm = jit.compile_module(module)
        for spec in todo:
            _COMPILED[spec] = (cm, cm.get_function_address(spec.name + "_entry"))


def _shapes(a, b, trans_a, trans_b):
    m, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"gemm: inner dimensions differ: op(A) is {m}x{ka}, op(B) is {kb}x{n}")
    return m, n, ka


class GemmPlan:
    """A GEMM bound to fixed arrays, with pointers cached as ints (0.3 µs per call).

    ``plan()`` computes ``out (=|+=) op(a)·op(b)`` on ``threads`` threads through
    :mod:`.parallel`; this is how benchmarks measure the kernel without Python-side
    argument conversion, as the compiled step function calls it: the same split into
    chunks (:func:`..codegen.gemm_parallel.partition`), thread ``t`` running chunks ``t``,
    ``t + threads``, ... (the step's threads claim them dynamically).  Without ``spec``
    the tile is the one a compiled step would give this product (which may change with
    the thread count: 3-vector tiles in column chunks that are not whole panels); with
    ``spec`` it is that tile, always.
    """

    def __init__(self, a, b, out, trans_a=False, trans_b=False, accumulate=False,
                 threads=None, spec=None):
        for x in (a, b, out):
            if not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.ndim == 2):
                raise ValueError("gemm: operands must be C-contiguous 2-D numpy arrays")
        if not (a.dtype == b.dtype == out.dtype):
            raise TypeError(f"gemm: dtypes differ: {a.dtype}, {b.dtype}, {out.dtype}")
        m, n, k = _shapes(a, b, trans_a, trans_b)
        if out.shape != (m, n):
            raise ValueError(f"gemm: out has shape {out.shape}, expected {(m, n)}")
        threads = parallel.num_threads(threads)
        # default: the tile a compiled step would give this product
        base = spec or shape_spec(default_spec(a.dtype, trans_a, trans_b), m, n)
        parts, by_cols, units, width, self.spec = partition(
            m, n, k, trans_b, base, chunks_for(threads), retile=spec is None)
        self.partition = (parts, by_cols, units, width)
        self.cm, fn = compiled(self.spec)
        self.arrays = (a, b, out)  # keep the buffers alive while the plan exists
        self.argv = np.array([a.ctypes.data, b.ctypes.data, out.ctypes.data, m, n, k,
                              a.shape[1], b.shape[1], out.shape[1], int(bool(accumulate)),
                              parts, int(by_cols), units, width], dtype=np.int64)
        # tiny products stay in one chunk, on one thread
        self.threads = min(threads, parts)
        self.run = parallel.Launcher(fn, self.threads).bind(self.argv.ctypes.data)

    def __call__(self):
        self.run()
        return self.arrays[2]


def gemm(a, b, trans_a=False, trans_b=False, threads=None, out=None, accumulate=False):
    """``op(a) @ op(b)`` (or ``out += ...`` with ``accumulate``) by the JIT kernel.

    A convenience for tests and benchmarks: compiles the variant once (memory and disk
    cache) and runs it through ctypes, the row/column partition split over ``threads``
    (default ``GRAPHC_NUM_THREADS`` or the core count) Python threads.
    """
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm: operands must be 2-D, got shapes {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise TypeError(f"gemm: dtypes differ: {a.dtype} and {b.dtype}")
    m, n, _ = _shapes(a, b, trans_a, trans_b)
    if out is None:
        if accumulate:
            raise ValueError("gemm: accumulate=True needs out=")
        out = np.empty((m, n), dtype=a.dtype)
    return GemmPlan(a, b, out, trans_a, trans_b, accumulate, threads)()
