"""JIT compilation of LLVM IR for the host CPU, with an in-memory and an on-disk cache.

The native stage's front door: :func:`compile_module` and :func:`compile_keyed` return
a :class:`CompiledModule` from the memory cache, the disk cache, or a fresh compile.

Why it looks like this:

* The target machine decides everything (:mod:`.target`: the host CPU name and
  features; ``GRAPHC_LLVM_GENERIC=1`` forces a generic x86-64 target).
* Compiling costs tens of milliseconds (optimisation + code generation), so compiled
  modules are cached in memory and on disk as object code, keyed by the IR text and
  the target (:func:`compile_module`) or by a caller's key (:func:`compile_keyed`: the
  backend keys a graph by its fingerprint, so a hit builds no IR).  A disk hit links
  the objects with :mod:`.elfload` (MCJIT if it declines: :mod:`.loader`): neither the
  optimiser nor the code generator runs, and ``llvmlite.binding`` is not even imported
  (only :mod:`.llvmcompile`, :mod:`.loader` and :mod:`.target` touch it).
* A program may be compiled in *parts* (:mod:`.parts`: a list of modules), each in its
  own LLVM context on its own thread (:mod:`.llvmcompile`), and linked together.
* Kernels are cached one by one as well (:mod:`.kernelcache`): a new graph compiles
  only the kernels no earlier graph had.
* Disk entries (:mod:`.diskcache`) carry a header with the key's digest and a payload
  checksum; anything that does not match exactly is ignored and rebuilt, never loaded
  blindly -- nor is a file that is not the user's alone, nor objects whose tables do
  not hold together or that lack the functions the caller needs (:mod:`.cachedir`,
  :mod:`.elfload`).
* ``GRAPHC_DUMP_LLVM=dir`` writes the IR before and after optimisation and the
  assembly of every freshly compiled module into ``dir`` (debugging aid; a cache hit
  compiles nothing: use ``GRAPHC_CACHE_DIR=off`` in a new process to see them).

The other stages and the tools use the stage through this module (``jit.X``), so it
re-exports the names they need from the modules above.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field

import sys

from . import elfload
# re-exported: the other stages, the benchmarks and the tests use them as ``jit.X``
from .diskcache import (CACHE_FORMAT_VERSION, cache_dir, cache_key,  # noqa: F401
                        entry_path, join_objects, read_entry, split_objects, write_entry)
from .loader import SYMBOLS, add_symbol, elf_loader_enabled, load_objects  # noqa: F401
from .stats import STATS
from .target import TargetInfo, host_target, initialise  # noqa: F401

_LOCK = threading.RLock()

#: re-exported too, from the modules only a compile needs (imported on first use: a
#: disk-cache hit loads objects without them)
_COMPILE_NAMES = {
    "kernelcache": ("find_kernels", "keep_kernels", "kernel_key"),
    "llvmcompile": ("PIPELINES", "assembly", "compile_parts", "compile_threads",
                    "optimised_ir"),
    "parts": ("OBJECT", "Part", "as_parts", "bundles"),
}
_LAZY = {name: mod for mod, names in _COMPILE_NAMES.items() for name in names}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"{__package__}.{mod}"), name)
    globals()[name] = value
    return value


# --------------------------------------------------------------------------- result


@dataclass
class CompiledModule:
    """A JIT-compiled module. Keeps the execution engine (and so the code) alive.

    ``source`` is ``"compiled"`` (optimised and code-generated now), ``"disk"`` (object
    code loaded from the disk cache) or ``"memory"`` (returned from the in-memory cache).
    ``timings`` holds seconds per phase of the compilation that produced this object.
    """

    key: str
    engine: object
    target: TargetInfo
    source: str
    timings: dict = field(default_factory=dict)
    _cfuncs: dict = field(default_factory=dict, repr=False)
    #: caller data cached with the object code (:class:`WithMeta`), e.g. a plan summary
    meta: bytes | None = None

    def get_function_address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(f"function {name!r} not found in compiled module")
        return addr

    def cfunc(self, name: str, restype, *argtypes):
        """A ctypes callable for ``name`` (ctypes releases the GIL during the call)."""
        sig = (name, restype, argtypes)
        fn = self._cfuncs.get(sig)
        if fn is None:
            fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.get_function_address(name))
            self._cfuncs[sig] = fn
        return fn

    @property
    def compile_seconds(self) -> float:
        return sum(self.timings.values())


# --------------------------------------------------------------------------- caches

_MEMORY_CACHE: dict[str, CompiledModule] = {}


def clear_memory_cache() -> None:
    with _LOCK:
        _MEMORY_CACHE.clear()
        kc = sys.modules.get(f"{__package__}.kernelcache")
        if kc is not None:              # (nothing to clear if never imported)
            kc.clear()


# --------------------------------------------------------------------------- compile


def compile_module(module_or_text, *, use_disk_cache: bool = True,
                   opt: str = "O3") -> CompiledModule:
    """Parse, verify, optimise (new pass manager, ``opt`` pipeline, default O3) and JIT
    ``module_or_text``.

    Accepts an ``llvmlite.ir.Module`` or IR text, or a list of them: the *parts* of one
    program (functions of one part may call exported functions of another), compiled
    concurrently -- one thread and one LLVM context per part -- and linked into one
    engine.  Returns a :class:`CompiledModule` whose ``timings`` report the phases that
    ran (``ir_text``: printing the llvmlite module; ``key``: hashing;
    ``cache_read``/``load`` on a disk hit; ``parse``, ``verify``, ``optimise``,
    ``codegen`` -- the slowest part's, when compiled in parts -- ``llvm`` (their wall
    time) and ``cache_write`` when compiled).  Cached in memory and on disk.
    """
    from .parts import Part, as_parts
    t0 = time.perf_counter()
    parts = as_parts(module_or_text, opt)
    ir_text = parts[0][0] if len(parts) == 1 and parts[0][1] == opt \
        and isinstance(parts[0][0], str) else \
        "".join(f"\n; ---- graphc part ({o}) ----\n" + (t if isinstance(t, str) else
                "\n; ---- linked ----\n".join(t)) for t, o in parts)
    t1 = time.perf_counter()
    target = host_target()
    key = cache_key(ir_text, target, opt)
    pre = {"ir_text": t1 - t0, "key": time.perf_counter() - t1}
    return compile_keyed(key, lambda: [Part(t, o) for t, o in parts],
                         use_disk_cache=use_disk_cache, opt=opt, pre_timings=pre)


def compile_keyed(key: str, build_ir, *, use_disk_cache: bool = True, opt: str = "O3",
                  pre_timings: dict | None = None, before_load=None,
                  require: tuple = ()) -> CompiledModule:
    """Like :func:`compile_module` for a caller-computed ``key`` (64 hex digits; it must
    cover everything the object code depends on, the target included): the IR (a
    module or text, or a list of parts) is built by ``build_ir()`` only when neither
    cache holds the key.  ``before_load(meta)`` runs before a disk entry's objects are
    linked (e.g. to load what they call); ``require``: functions the code must define --
    a disk entry without them (another program's objects) is a miss; it may also be a
    function of the entry's meta giving those names (an entry whose meta it cannot read
    is a miss too)."""
    target = host_target()
    timings = dict(pre_timings or {})
    with _LOCK:
        hit = _MEMORY_CACHE.get(key)
        if hit is not None:
            STATS["memory_hits"] += 1
            return CompiledModule(key, hit.engine, target, "memory", dict(hit.timings),
                                  hit._cfuncs, hit.meta)
        directory = cache_dir() if use_disk_cache else None
        path = entry_path(directory, key) if directory else None
        result = None
        if path is not None and os.path.exists(path):
            t0 = time.perf_counter()
            entry = split_objects(read_entry(path, key))
            t1 = time.perf_counter()
            if entry is None:
                STATS["disk_rejects"] += 1
            else:
                try:
                    if before_load is not None:
                        try:
                            before_load(entry[1])
                        except Exception:       # noqa: BLE001 -- a meta it cannot use:
                            raise RuntimeError("unusable metadata") from None  # a miss
                    try:
                        names = require(entry[1]) if callable(require) else require
                    except Exception:           # noqa: BLE001 -- a meta it cannot use
                        raise RuntimeError("unusable metadata") from None
                    engine = load_objects(entry[0], target, from_disk=True)
                    if not all(engine.get_function_address(f) for f in names):
                        engine = None           # well formed, but not this program's
                except (RuntimeError, OSError, elfload.Malformed):
                    engine = None
                if engine is None:
                    STATS["disk_rejects"] += 1
                else:
                    STATS["disk_hits"] += 1
                    timings.update(cache_read=t1 - t0, load=time.perf_counter() - t1)
                    result = CompiledModule(key, engine, target, "disk", timings,
                                            meta=entry[1])
        if result is None:
            from .parts import as_parts
            t0 = time.perf_counter()
            parts, meta = build_ir(), None
            if isinstance(parts, WithMeta):
                parts, meta = parts.ir, parts.meta
            texts = as_parts(parts, opt, full=True)
            timings["ir_build"] = time.perf_counter() - t0
            result = _compile_fresh(texts, key, target, path, timings, meta)
        _MEMORY_CACHE[key] = result
        return result


@dataclass(frozen=True)
class WithMeta:
    """What a ``build_ir`` callback may return: the IR plus bytes to keep beside its
    object code (returned as ``CompiledModule.meta`` by every later cache hit)."""

    ir: object
    meta: bytes


def _compile_fresh(parts: list, key: str, target: TargetInfo, path: str | None,
                   timings: dict | None = None, meta: bytes | None = None):
    """Compile the :class:`.parts.Part` list (:func:`.llvmcompile.compile_parts`) and
    load the objects (object-code parts only linked); a part with kernel keys is kept
    in the per-kernel cache (:func:`.kernelcache.find_kernels`)."""
    from .kernelcache import keep_kernels
    from .llvmcompile import compile_parts
    timings = {} if timings is None else timings
    objs = compile_parts(parts, target, timings)
    t1 = time.perf_counter()
    for p, obj in zip(parts, objs):
        if p.kernels:
            STATS["kernels_compiled"] += len(p.kernels)
            keep_kernels(p.kernels, obj, p.meta, write=path is not None)
    engine = load_objects(objs, target)
    STATS["codegen"] += 1
    t3 = time.perf_counter()
    timings["load"] = t3 - t1
    if path is not None:
        write_entry(path, key, join_objects(objs, meta))
        timings["cache_write"] = time.perf_counter() - t3
    return CompiledModule(key, engine, target, "compiled", timings, meta=meta)
