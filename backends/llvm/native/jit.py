"""JIT compilation of LLVM IR for the host CPU, with an in-memory and an on-disk cache.

This module and :mod:`.target` are the only ones of graphc that touch
``llvmlite.binding``. Everything else
builds IR with ``llvmlite.ir`` and hands it to :func:`compile_module`.

Why it looks like this:

* The target machine decides everything (:mod:`.target`: the host CPU name and
  features; ``GRAPHC_LLVM_GENERIC=1`` forces a generic x86-64 target).
* Compiling costs tens of milliseconds (optimisation + code generation), so compiled
  modules are cached in memory and on disk as object code, keyed by the IR text and
  the target (:func:`compile_module`) or by a caller's key (:func:`compile_keyed`: the
  backend keys a graph by its fingerprint, so a hit builds no IR).  A disk hit links
  the objects with :mod:`.elfload` (MCJIT if it declines): neither the optimiser nor
  the code generator runs, and ``llvmlite.binding`` is not even imported.
* A program may be compiled in *parts* (a list of modules), each in its own LLVM
  context on its own thread -- LLVM allows that; llvmlite's global lock is bypassed
  for the two heavy calls only -- and linked together.
* Kernels are cached one by one as well (:func:`find_kernels`, :func:`keep_kernels`):
  a kernel module's function is named after its code, a compiled bundle's object is
  kept content-addressed and every kernel key points to it, so a new graph compiles
  only the kernels no earlier graph had.
* Disk entries (:mod:`.diskcache`) carry a header with the key's digest and a payload
  checksum; anything that does not match exactly is ignored and rebuilt, never loaded
  blindly -- nor is a file that is not the user's alone, nor objects whose tables do
  not hold together or that lack the functions the caller needs (:mod:`.cachedir`,
  :mod:`.elfload`).
* ``GRAPHC_DUMP_LLVM=dir`` writes the IR before and after optimisation and the
  assembly of every freshly compiled module into ``dir`` (debugging aid; a cache hit
  compiles nothing: use ``GRAPHC_CACHE_DIR=off`` in a new process to see them).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

import llvmlite

from . import diagnostics, elfload
# TargetInfo and host_target are used through this module by the other stages
from .target import TargetInfo, host_target, initialise  # noqa: F401
from .diskcache import (CACHE_FORMAT_VERSION, KERNEL_SUFFIX, cache_dir, entry_path, join_objects,
                        read_entry, split_objects, write_entry)


class _LazyBinding:
    """``llvmlite.binding``, imported on first use: a disk-cache hit loads object code
    with :mod:`.elfload` and never needs it (its import costs ~20-60 ms)."""

    def __getattr__(self, name):
        import llvmlite.binding as binding
        globals()["llvm"] = binding
        return getattr(binding, name)


llvm = _LazyBinding()

_LOCK = threading.RLock()


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

#: counts real code generations (tests use it to prove a disk hit skipped codegen)
STATS = {"codegen": 0, "disk_hits": 0, "disk_rejects": 0, "memory_hits": 0,
         "elf_fallbacks": 0, "kernels_compiled": 0, "kernel_hits": 0}


def cache_key(ir_text: str, target: TargetInfo, opt: str = "O3") -> str:
    h = hashlib.sha256()
    for part in (f"graphc-llvm-cache/{CACHE_FORMAT_VERSION}", llvmlite.__version__,
                 target.triple, target.cpu, target.features, opt, ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def clear_memory_cache() -> None:
    with _LOCK:
        _MEMORY_CACHE.clear()
        _KERNEL_OBJECTS.clear()


# --------------------------------------------------------------------------- compile


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


@dataclass(frozen=True)
class Part:
    """A module part to compile with another pipeline than the default; ``ir`` may be
    a list of modules (or texts), linked into one before optimisation (a bundle).

    ``kernels``: the per-kernel cache keys (:func:`kernel_key`) of the bundle's modules
    -- once compiled, its object is kept under each of them (:func:`find_kernels`), with
    ``meta`` beside it.  ``opt == OBJECT``: ``ir`` is object code already compiled (a
    bundle found by :func:`find_kernels`), only linked."""

    ir: object
    opt: str
    kernels: tuple = ()
    meta: bytes | None = None


#: the "pipeline" of a :class:`Part` that is object code already
OBJECT = "object"


def bundles(modules, n: int, opt: str = "O3", texts=None, keys=None, meta=None) -> list:
    """``modules`` (or IR texts) as ``n`` :class:`Part` bundles of about equal size, the
    largest first onto the smallest bundle (``texts``: their text, if known; ``keys``:
    their per-kernel cache keys, kept in each part's ``kernels``; ``meta(modules)``:
    the bytes to keep beside a bundle's object)."""
    items = [((texts.get(m) if texts else None) or (m if isinstance(m, str) else str(m)), m)
             for m in modules]
    n = max(1, min(n, len(items)))
    groups, load = [[] for _ in range(n)], [0] * n
    for t, m in sorted(items, key=lambda tm: len(tm[0]), reverse=True):
        j = min(range(n), key=lambda j: load[j])
        groups[j].append((t, m))
        load[j] += len(t)
    return [Part([t for t, _ in g], opt,
                 tuple(keys[m] for _, m in g) if keys else (),
                 meta([m for _, m in g]) if meta else None)
            for g in groups if g]


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


#: functions other modules' code may call (the kernel library's drivers): name -> address
SYMBOLS: dict = {}
_MCJIT_SYMBOLS: set = set()


def add_symbol(name: str, address: int) -> None:
    """Make ``name`` resolvable by every module loaded from now on."""
    SYMBOLS[name] = address


def elf_loader_enabled() -> bool:
    return os.environ.get("GRAPHC_ELF_LOADER", "1") not in ("0", "off", "no")


def _load_objects(objs: list, target: TargetInfo, from_disk: bool = False):
    """Code holding only ``objs`` (linked to each other and to :data:`SYMBOLS`): no
    optimisation and no code generation happen.  :mod:`.elfload` when it can, else an
    MCJIT engine.  Objects read from disk (``from_disk``) that are malformed or foreign
    raise :class:`.elfload.Malformed` -- the caller's cache miss -- and never reach
    MCJIT, whose object reader trusts the tables it is given."""
    if elf_loader_enabled():
        try:
            return elfload.LoadedCode(objs, SYMBOLS.get)
        except elfload.Malformed:
            if from_disk:
                raise
            STATS["elf_fallbacks"] += 1
        except (elfload.Unsupported, OSError):    # OSError: mmap/mprotect refused
            STATS["elf_fallbacks"] += 1
    if from_disk:
        elfload.validate(objs, SYMBOLS.get)
    for name, address in list(SYMBOLS.items()):
        if name not in _MCJIT_SYMBOLS:
            llvm.add_symbol(name, address)
            _MCJIT_SYMBOLS.add(name)
    tm = target.machine()
    empty = llvm.parse_assembly(f'target triple = "{tm.triple}"\n')
    engine = llvm.create_mcjit_compiler(empty, tm)
    for obj in objs:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine


def _dump(directory: str, key: str, suffix: str, text: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{key[:12]}{suffix}"), "w") as f:
        f.write(text)


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
    t0 = time.perf_counter()
    parts = _as_parts(module_or_text, opt)
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


def _as_parts(ir_or_parts, opt: str, full: bool = False) -> list:
    """[(IR text or list of texts to link, pipeline)] of a module, a text, a
    :class:`Part` or a list of them (``full``: :class:`Part` objects of texts, their
    kernel keys kept; object-code parts only then)."""
    items = ir_or_parts if isinstance(ir_or_parts, (list, tuple)) else [ir_or_parts]
    out = []
    for p in items:
        o, kernels, meta = opt, (), None
        if isinstance(p, Part):
            p, o, kernels, meta = p.ir, p.opt, p.kernels, p.meta
        if o == OBJECT:
            if not full:
                raise ValueError("object-code parts only through compile_keyed")
            out.append(Part(bytes(p), o))
            continue
        if isinstance(p, (list, tuple)):
            t = [t if isinstance(t, str) else str(t) for t in p]
        else:
            t = p if isinstance(p, str) else str(p)
        out.append(Part(t, o, tuple(kernels), meta) if full else (t, o))
    return out


def compile_keyed(key: str, build_ir, *, use_disk_cache: bool = True, opt: str = "O3",
                  pre_timings: dict | None = None, before_load=None,
                  require: tuple = ()) -> CompiledModule:
    """Like :func:`compile_module` for a caller-computed ``key`` (64 hex digits; it must
    cover everything the object code depends on, the target included): the IR (a
    module or text, or a list of parts) is built by ``build_ir()`` only when neither
    cache holds the key.  ``before_load(meta)`` runs before a disk entry's objects are
    linked (e.g. to load what they call); ``require``: functions the code must define --
    a disk entry without them (another program's objects) is a miss."""
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
                    engine = _load_objects(entry[0], target, from_disk=True)
                    if not all(engine.get_function_address(f) for f in require):
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
            t0 = time.perf_counter()
            parts, meta = build_ir(), None
            if isinstance(parts, WithMeta):
                parts, meta = parts.ir, parts.meta
            texts = _as_parts(parts, opt, full=True)
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


def _compile_fresh(parts: list, key: str, target: TargetInfo, path: str | None,
                   timings: dict | None = None, meta: bytes | None = None):
    """Compile the :class:`Part` list -- one thread and LLVM context per part when
    there are several -- and load the objects (object-code parts only linked); a
    part with kernel keys is kept in the per-kernel cache (:func:`find_kernels`)."""
    from concurrent.futures import ThreadPoolExecutor
    timings = {} if timings is None else timings
    initialise()
    t0 = time.perf_counter()
    todo = [p for p in parts if p.opt != OBJECT]
    if len(todo) == 1:
        results = [_compile_part(todo[0].ir, todo[0].opt, target=target, own_context=False)]
    else:
        # short O0 parts run beside the others: threads = cores + the O0 parts
        n = compile_threads() + sum(PIPELINES[p.opt] is None for p in todo)
        with ThreadPoolExecutor(max(1, min(len(todo), n))) as ex:
            results = list(ex.map(lambda p: _compile_part(p.ir, p.opt, target=target,
                                                          own_context=True), todo))
    t1 = time.perf_counter()
    for phase in ("parse", "verify", "optimise", "codegen"):
        timings[phase] = max((r[1][phase] for r in results), default=0.0)
    timings["llvm"] = t1 - t0
    compiled = iter(results)
    objs = [p.ir if p.opt == OBJECT else next(compiled)[0] for p in parts]
    for p, obj in zip(parts, objs):
        if p.kernels:
            STATS["kernels_compiled"] += len(p.kernels)
            keep_kernels(p.kernels, obj, p.meta, write=path is not None)
    engine = _load_objects(objs, target)
    STATS["codegen"] += 1
    t3 = time.perf_counter()
    timings["load"] = t3 - t1
    if path is not None:
        write_entry(path, key, join_objects(objs, meta))
        timings["cache_write"] = time.perf_counter() - t3
    return CompiledModule(key, engine, target, "compiled", timings, meta=meta)


# --------------------------------------------------------------------------- per kernel
#
# A kernel module's text names its one function after a digest of the text itself
# (``codegen.module``), so a kernel compiled for one graph is the same symbol with the
# same code in every other graph.  A compiled bundle of kernel modules is kept once,
# content-addressed (its entry's key is the sha256 of its payload: the object and the
# caller's meta), and each kernel's key points to it: a graph whose kernels were all
# compiled before -- in any graph, any process -- compiles only its entry.  Kernels are
# ``weak_odr``: two objects that both define one (a bundle loaded for another of its
# kernels) link without a clash.  Every read goes through the disk cache's trust and
# checksum rules (:func:`.diskcache.read_entry`); a missing, corrupt or foreign entry is
# a miss and the kernel is compiled again.

#: kernel key -> (object digest, object, meta): this process's compiled or loaded bundles
_KERNEL_OBJECTS: dict = {}
KERNEL_FORMAT = 1


def kernel_key(ir_text: str, target: TargetInfo | None = None, opt: str = "O3",
               salt: str = "") -> str:
    """The per-kernel cache key of one kernel module's IR text (``salt``: what else
    the caller wants kept apart)."""
    target = target or host_target()
    return cache_key(f"graphc-kernel/{KERNEL_FORMAT}\0{salt}\0" + ir_text, target, opt)


def _object_entry(obj: bytes, meta: bytes | None) -> tuple:
    payload = join_objects([obj], meta)
    return hashlib.sha256(payload).hexdigest(), payload


def keep_kernels(keys, obj: bytes, meta: bytes | None, write: bool = True) -> None:
    """Remember ``obj`` (a compiled bundle) for each of ``keys``; on disk too when the
    disk cache is on and ``write``."""
    digest, payload = _object_entry(obj, meta)
    for k in keys:
        _KERNEL_OBJECTS[k] = (digest, obj, meta)
    directory = cache_dir() if write else None
    if directory is None:
        return
    write_entry(entry_path(directory, digest), digest, payload)
    for k in keys:
        write_entry(entry_path(directory, k, KERNEL_SUFFIX), k, bytes.fromhex(digest))


def find_kernels(keys, use_disk_cache: bool = True) -> dict:
    """{key: (object digest, object, meta)} of the ``keys`` whose compiled code this
    process or the disk cache holds (several keys may share one object)."""
    out, objects = {}, {}
    directory = cache_dir() if use_disk_cache else None
    for k in keys:
        hit = _KERNEL_OBJECTS.get(k)
        if hit is None and directory is not None:
            hit = _read_kernel(directory, k, objects)
            if hit is not None:
                _KERNEL_OBJECTS[k] = hit
        if hit is not None:
            out[k] = hit
    return out


def _read_kernel(directory: str, key: str, objects: dict):
    path = entry_path(directory, key, KERNEL_SUFFIX)
    if not os.path.exists(path):
        return None
    ref = read_entry(path, key)
    if ref is None or len(ref) != 32:
        STATS["disk_rejects"] += 1
        return None
    digest = ref.hex()
    if digest in objects:
        return objects[digest]
    payload = read_entry(entry_path(directory, digest), digest)
    entry = None
    if payload is not None and hashlib.sha256(payload).hexdigest() == digest:
        entry = split_objects(payload)
    if entry is None or len(entry[0]) != 1:
        STATS["disk_rejects"] += 1
        return None
    try:
        # tables in bounds, this machine (symbols: checked with the graph's objects)
        elfload.validate(entry[0], lambda name: True)
    except elfload.Malformed:
        STATS["disk_rejects"] += 1
        return None
    objects[digest] = (digest, entry[0][0], entry[1])
    return objects[digest]


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
