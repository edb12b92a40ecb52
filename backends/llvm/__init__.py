"""LLVM backend: a whole graph lowered to one JIT-compiled native function.

``compile(graph, **options)`` returns a callable ``fn(*arrays) -> [outputs]`` with the
numpy backend's interface (and ``graph.updates`` applied in place).  Options:

* ``threads`` -- threads of the one parallel region per call (default
  ``GRAPHC_NUM_THREADS`` or the core count);
* ``fuse`` (default True), ``epilogue`` (default True) -- loop fusion
  (``graphc.passes.fusion``), including elementwise epilogues after matmuls;
* ``plan`` -- ``"shared"`` (default): the arena is laid out by the memory planner
  (``graphc.passes.memory``) over this backend's kernel levels, ``fn.memory_plan`` is
  that ``MemoryPlan`` and ``fn.arena_bytes == fn.memory_plan.arena_bytes``; ``"naive"``:
  every stored value its own bytes (a reference for tests; ``fn.memory_plan`` is None);
* ``parts`` -- modules the kernels are spread over and LLVM compiles concurrently
  (default: the cores this process may use; same code, only faster to build);
* ``profile`` -- record cycles per kernel (``fn.profile()``; meaningful with 1 thread);
* ``adaptive`` (default off; ``GRAPHC_ADAPTIVE=1``) -- with ``threads`` > 1, run each
  call with all threads or with one, whichever recent calls measured faster (identical
  results; on a loaded machine the OS may not give the other threads a core).

Kept light on purpose: importing the package does not import llvmlite; submodules
(``jit``, ``gemm``, ``parallel``, ``plan``, ``codegen``, ``runtime``, ...) load on use.
"""
from __future__ import annotations


def missing_lowerings() -> list[str]:
    """Ops in the registry this backend cannot lower (a test asserts the list is empty)."""
    from .lowerings import missing_lowerings as _missing
    return _missing()


def lower(graph, threads=None, fuse=True, epilogue=True, profile=False, plan="shared",
          parts=1):
    """(plan, llvmlite module) for ``graph`` -- the IR before JIT compilation (with
    ``parts`` > 1: a list of modules, the kernels spread over them, compiled
    concurrently by :func:`.jit.compile_module`)."""
    from graphc.ir import verify
    from graphc.passes import fusion

    from . import codegen, jit, parallel, plan as plan_mod
    threads = parallel.num_threads(threads)
    g = fusion.fuse(graph, epilogue=epilogue) if fuse else graph.clone()[0]
    verify(g)
    p = plan_mod.build_plan(g, threads, plan)
    module = codegen.Codegen(p, jit.host_target().triple, profile).build(parts)
    return p, module


def compile(graph, threads=None, fuse=True, epilogue=True, profile=False, adaptive=None,
            plan="shared", parts=None, **options):
    """Compile ``graph``; returns ``fn(*arrays) -> list of outputs``.

    With ``profile=True`` thread 0 records the cycle counter after every kernel;
    ``fn.profile()`` then lists (kernel, cycles) of the last call."""
    import time

    from . import jit, runtime
    t0 = time.perf_counter()
    # one module part per core (``parts``): LLVM compiles the parts concurrently
    p, module = lower(graph, threads, fuse, epilogue, profile, plan,
                      parts=parts or jit.compile_threads())
    t1 = time.perf_counter()
    cm = jit.compile_module(module)
    info = {"lower_seconds": t1 - t0, "source": cm.source, **cm.timings}
    if adaptive is None:
        import os
        adaptive = os.environ.get("GRAPHC_ADAPTIVE", "0") not in ("", "0")
    return runtime.CompiledGraph(graph, p, cm, p.threads, info, profile=profile,
                                 adaptive=adaptive)


def assembly(graph, threads=None, **kw) -> str:
    """Host assembly of the compiled graph (for tests and curiosity)."""
    from . import jit
    _, module = lower(graph, threads, **kw)
    return jit.assembly(module)
