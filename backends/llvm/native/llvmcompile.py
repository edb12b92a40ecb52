"""Running LLVM on module parts: parse, verify, optimise, emit object code.

This module, :mod:`.loader` (MCJIT, when the ELF loader declines) and :mod:`.target`
are the only ones of graphc that touch ``llvmlite.binding``; it is imported on first
use, so a process that only loads cached objects never imports it.

The parts of one program are compiled at once, each in its own LLVM context on its own
thread -- LLVM allows that; llvmlite's global lock is bypassed for the two heavy calls
only (optimising and emitting).  ``GRAPHC_DUMP_LLVM=dir`` writes the IR before and
after optimisation and the assembly of every module compiled here into ``dir``.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time

from . import diagnostics
from .parts import OBJECT
from .target import TargetInfo, host_target, initialise


class _LazyBinding:
    """``llvmlite.binding``, imported on first use: a disk-cache hit loads object code
    with :mod:`.elfload` and never needs it (its import costs ~20-60 ms)."""

    def __getattr__(self, name):
        import llvmlite.binding as binding
        globals()["llvm"] = binding
        return getattr(binding, name)


llvm = _LazyBinding()


#: optimisation pipelines: name -> (speed level, loop vectorizer, SLP vectorizer, unrolling)
PIPELINES = {
    "O3": (3, True, True, True),
    # lighter pipelines: measured on the MLP step's module they save < 10% of its
    # compile time (code generation of the IR volume dominates), so O3 stays the default
    "O2": (2, True, True, True),
    "O2-noslp": (2, True, False, True),
    "O1": (1, True, False, False),
    # no IR optimisation, fast instruction selection and register allocation: for code
    # whose speed does not matter (a step's entry function only claims chunks and
    # calls kernels) but whose size makes O3 expensive
    "O0": None,
}



def _optimise(mod, tm, opt: str = "O3", unlocked: bool = False) -> None:
    """Run the ``opt`` pipeline (nothing for O0); ``unlocked``: without llvmlite's lock
    (the module lives in its own context, see :func:`_unlocked`)."""
    if PIPELINES[opt] is None:
        return
    level, lv, slp, unroll = PIPELINES[opt]
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = lv
    pto.slp_vectorization = slp
    pto.loop_unrolling = unroll
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    run = _unlocked("LLVMPY_RunNewModulePassManager") if unlocked else None
    if run is None:
        pm.run(mod, pb)
    else:
        run(pm, mod, pb)


def _emit_object(tm, mod, unlocked: bool = False) -> bytes:
    """Object code of ``mod`` (``unlocked`` as for :func:`_optimise`)."""
    emit = _unlocked("LLVMPY_TargetMachineEmitToMemory") if unlocked else None
    if emit is None:
        return tm.emit_object(mod)
    import ctypes

    from llvmlite.binding import ffi
    with ffi.OutputString() as err:
        buf = emit(tm, mod, 1, err)
        if not buf:
            raise RuntimeError(str(err))
    try:
        return ctypes.string_at(ffi.lib.LLVMPY_GetBufferStart(buf),
                                ffi.lib.LLVMPY_GetBufferSize(buf))
    finally:
        ffi.lib.LLVMPY_DisposeMemoryBuffer(buf)


def _parse(ir_text, tm, timings: dict | None = None, context=None):
    """Parse ``ir_text`` (a list: parse each and link them into the first)."""
    t0 = time.perf_counter()
    texts = [ir_text] if isinstance(ir_text, str) else list(ir_text)
    mods = [llvm.parse_assembly(t) if context is None else
            llvm.parse_assembly(t, context=context) for t in texts]
    mod = mods[0]
    for other in mods[1:]:
        mod.link_in(other)
    t1 = time.perf_counter()
    mod.verify()
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    if timings is not None:
        timings["parse"] = t1 - t0
        timings["verify"] = time.perf_counter() - t1
    return mod


def _unlocked(name: str):
    """llvmlite serialises every LLVM call with one global lock; optimising and
    emitting a module that lives in its *own* context is thread-safe in LLVM, so the
    parts' two heavy calls use the raw function (None: the wrapper changed; the
    callers then stay serial)."""
    from llvmlite.binding import ffi
    try:
        return getattr(ffi.lib, name)._cfn
    except AttributeError:
        return None


def _compile_part(text, opt: str, target: TargetInfo, own_context: bool) -> tuple:
    """(object code, timings) of one module; in its own LLVM context when
    ``own_context`` (several parts at once), under llvmlite's lock otherwise."""
    timings = {}
    ctx = llvm.create_context() if own_context else None
    tm = target.machine(0 if PIPELINES[opt] is None else 3)
    mod = _parse(text, tm, timings, ctx)
    t1 = time.perf_counter()
    with diagnostics.collected():
        _optimise(mod, tm, opt, unlocked=own_context)
        t2 = time.perf_counter()
        obj = _emit_object(tm, mod, unlocked=own_context)
    timings.update(optimise=t2 - t1, codegen=time.perf_counter() - t2)
    dump_dir = os.environ.get("GRAPHC_DUMP_LLVM")
    if dump_dir:
        text = text if isinstance(text, str) else "\n".join(text)
        dkey = hashlib.sha256(text.encode()).hexdigest()
        _dump(dump_dir, dkey, ".ll", text)
        _dump(dump_dir, dkey, ".opt.ll", str(mod))
        _dump(dump_dir, dkey, ".s", tm.emit_assembly(mod))
    mod.close()
    if ctx is not None:
        ctx.close()
    return obj, timings


def compile_threads() -> int:
    """Threads compiling the parts of one module: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def compile_parts(parts: list, target: TargetInfo, timings: dict) -> list:
    """Object code of each :class:`~.parts.Part` (object-code parts as they are): one
    thread and one LLVM context per part when there are several.  ``timings`` gets the
    slowest part's ``parse``, ``verify``, ``optimise`` and ``codegen`` and their wall
    time, ``llvm``."""
    initialise()
    t0 = time.perf_counter()
    todo = [p for p in parts if p.opt != OBJECT]
    if len(todo) == 1:
        results = [_compile_part(todo[0].ir, todo[0].opt, target=target, own_context=False)]
    else:
        # short O0 parts run beside the others: threads = cores + the O0 parts
        n = compile_threads() + sum(PIPELINES[p.opt] is None for p in todo)
        results = _thread_map(lambda p: _compile_part(p.ir, p.opt, target=target,
                                                      own_context=True), todo, n)
    t1 = time.perf_counter()
    for phase in ("parse", "verify", "optimise", "codegen"):
        timings[phase] = max((r[1][phase] for r in results), default=0.0)
    timings["llvm"] = t1 - t0
    compiled = iter(results)
    return [p.ir if p.opt == OBJECT else next(compiled)[0] for p in parts]


def _thread_map(fn, items: list, threads: int) -> list:
    """``[fn(x) for x in items]`` on up to ``threads`` threads taking the items in order
    (the first exception, in item order, is raised).  Plain threads, not
    ``concurrent.futures``: its import (~5 ms) would be paid by every compiling process."""
    results: list = [None] * len(items)
    errors: list = [None] * len(items)
    nxt = iter(range(len(items)))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as e:      # noqa: BLE001 -- re-raised by the caller
                errors[i] = e
    workers = [threading.Thread(target=work, name=f"graphc-llvm-{j}", daemon=True)
               for j in range(max(1, min(len(items), threads)))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results


def _dump(directory: str, key: str, suffix: str, text: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{key[:12]}{suffix}"), "w") as f:
        f.write(text)




def assembly(module_or_text, optimise: bool = True, opt: str = "O3") -> str:
    """Assembly of a module for the host target (for tests and dumps; not cached)."""
    ir_text = module_or_text if isinstance(module_or_text, str) else str(module_or_text)
    target = host_target()
    tm = target.machine()
    mod = _parse(ir_text, tm)
    with diagnostics.collected():
        if optimise:
            _optimise(mod, tm, opt)
        return tm.emit_assembly(mod)


def optimised_ir(module_or_text) -> str:
    """The module's IR after the O3 pipeline for the host target (debugging aid)."""
    ir_text = module_or_text if isinstance(module_or_text, str) else str(module_or_text)
    tm = host_target().machine()
    mod = _parse(ir_text, tm)
    with diagnostics.collected():
        _optimise(mod, tm)
    return str(mod)
