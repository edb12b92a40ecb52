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
    from .codegen.lowerings import missing_lowerings as _missing
    return _missing()


def lower(graph, threads=None, fuse=True, epilogue=True, profile=False, plan="shared",
          parts=1, cold=False):
    """(plan, llvmlite module) for ``graph`` -- the IR before JIT compilation (with
    ``parts`` > 1: a list of modules, the entry's first, then one per distinct kernel,
    compiled in ``parts`` concurrent bundles by :func:`.jit.compile_module`; with
    ``cold``: also a list, the cold kernels beside the entry in the first, unoptimised
    one, see ``codegen.module.Codegen.build``)."""
    p, module, _ = _lower(graph, threads, fuse, epilogue, profile, plan, parts, cold)
    return p, module


def _lower(graph, threads, fuse, epilogue, profile, plan, parts, cold, cached=None):
    """:func:`lower`, and the code generator (the IR text of the kernel modules it
    printed, the symbols of those it named by signature).  ``cached(codegen)`` -> (names,
    reuse): the kernels to name by signature and those not to build (``Codegen.build``)."""
    from graphc.ir import verify
    from graphc.passes import fusion

    from .codegen import module as codegen
    from .native import jit
    from .runtime import parallel
    from .plan import build as plan_mod
    threads = parallel.num_threads(threads)
    if fuse:
        g = fusion.fuse(graph, epilogue=epilogue)
    else:
        g = graph.clone()[0]
        g.remove_dead()     # dead values get no buffer, so they must not be computed
    verify(g)
    p = plan_mod.build_plan(g, threads, plan)
    cg = codegen.Codegen(p, jit.host_target().triple, profile)
    names, reuse = cached(cg) if cached is not None else ({}, frozenset())
    module = cg.build(parts, cold, names, reuse)
    return p, module, cg


def compile(graph, threads=None, fuse=True, epilogue=True, profile=False, adaptive=None,
            plan="shared", parts=None, **options):
    """Compile ``graph``; returns ``fn(*arrays) -> list of outputs``.

    (The cyclic garbage collector is paused meanwhile: :mod:`graphc.gcpause`.)

    The caches are looked up by the graph's fingerprint and the options
    (:func:`graph_key`) before anything is lowered: a hit loads the object code and the
    plan summary kept beside it, so it neither fuses, plans nor builds IR.

    With ``profile=True`` thread 0 records the cycle counter after every kernel;
    ``fn.profile()`` then lists (kernel, cycles) of the last call."""
    from graphc.gcpause import gc_paused

    from ..guard import split_checks
    from ..numpy_backend import evaluate_outputs
    graph, guard = split_checks(graph, evaluate_outputs)      # label ranges: checked before each call
    with gc_paused():
        fn = _compile(graph, threads, fuse, epilogue, profile, adaptive, plan, parts)
    fn.guard = guard
    return fn


def _compile(graph, threads, fuse, epilogue, profile, adaptive, plan, parts):
    import time

    from .native import jit
    from .native import kernellib
    from .native import tuning
    from .runtime import parallel
    from .runtime import compiled as runtime
    if tuning.needs_tuning():   # once per CPU (GRAPHC_TUNE); before the key, which has it
        from .runtime import tuner
        tuner.ensure_tuned()
    t0 = time.perf_counter()
    threads = parallel.num_threads(threads)
    key = graph_key(graph, threads, fuse, epilogue, profile, plan)
    t1 = time.perf_counter()
    built = {}

    def build():
        # the kernels in one bundle per core (``parts``): LLVM compiles them concurrently
        n = parts or jit.compile_threads()
        signed = _Signed()
        p, module, cg = _lower(graph, threads, fuse, epilogue, profile, plan, n, True,
                               lambda cg: signed.look_up(cg, n))
        built["plan"] = p
        mods = module if isinstance(module, list) else [module]
        libs = kernellib.families_used(mods)
        if isinstance(module, list):    # the entry (and cold kernels) first: unoptimised
            module, libs = _kernel_parts(mods, cg, signed, n, libs)
        built["lower_seconds"] = time.perf_counter() - t1
        return jit.WithMeta(module, runtime.PlanSummary.of(p).to_meta({"libs": libs}))

    summary = None
    # a disk entry without the entry point (codegen.module.ENTRY) is another program's
    cm = jit.compile_keyed(key, build, pre_timings={"key": t1 - t0}, before_load=_libraries,
                           require=("graphc_main",))
    if "plan" in built:
        summary = runtime.PlanSummary.of(built["plan"])
    elif cm.meta is not None:
        summary = runtime.PlanSummary.from_meta(
            cm.meta, graph, _lazy_plan(graph, threads, fuse, epilogue, profile, plan))
    if summary is None:             # no usable summary: plan again (same code, same key)
        summary = runtime.PlanSummary.of(
            lower(graph, threads, fuse, epilogue, profile, plan)[0])
    info = {"lower_seconds": built.get("lower_seconds", 0.0), "source": cm.source,
            **cm.timings}
    if adaptive is None:
        import os
        adaptive = os.environ.get("GRAPHC_ADAPTIVE", "0") not in ("", "0")
    return runtime.CompiledGraph(graph, summary, cm, summary.threads, info, profile=profile,
                                 adaptive=adaptive)


class _Signed:
    """The hot kernels of a plan keyed by their signatures (:mod:`.plan.signature`)
    before any of their IR is built, and those the per-kernel object cache holds in
    usable objects (:meth:`look_up`); empty when a kernel has no signature (then every
    kernel is keyed by its IR text, after it is built)."""

    def __init__(self):
        self.keys: dict = {}            # symbol -> per-kernel cache key
        self.objects: dict = {}         # object digest -> object, of the reused kernels
        self.fams: set = set()          # the library families those objects call
        self.reuse: frozenset = frozenset()

    def look_up(self, cg, parts: int):
        """(names {kernel index: symbol}, symbols not to build) for ``Codegen.build``."""
        from .native import jit
        from .plan.signature import kernel_signature
        if not cg.splits(parts, True):
            return {}, frozenset()
        sigs = {}
        for i in cg.hot(True):
            sig = kernel_signature(cg.plan.kernels[i])
            if sig is None:
                return {}, frozenset()
            sigs[i] = sig
        names = {i: "gs_" + sig[:32] for i, sig in sigs.items()}
        salt = kernel_salt()
        self.keys = {names[i]: jit.kernel_key("graphc-signature\0" + sig, salt=salt)
                     for i, sig in sigs.items()}
        found = jit.find_kernels(list(self.keys.values()))
        self.objects, self.fams = _usable(found, set())
        if self.objects:
            self.reuse = frozenset(n for n, k in self.keys.items() if k in found)
        return names, self.reuse


def _usable(found: dict, libs: set) -> tuple:
    """(objects {digest: object}, library families) of the per-kernel cache's ``found``
    bundles, the families they call loaded (``libs``: those already needed) -- or
    ({}, ``libs``) when a bundle's meta cannot be read or a symbol of the objects does
    not resolve (then their kernels are compiled)."""
    import json

    from .native import elfload, jit, kernellib
    objects, fams = {}, set(libs)
    for digest, obj, meta in found.values():
        if digest not in objects:
            objects[digest] = obj
            try:
                fams.update(tuple(f) for f in json.loads(meta or b"{}")["kernel_libs"])
            except (ValueError, TypeError, KeyError, AttributeError):
                return {}, set(libs)
    if objects:
        try:
            for fam in sorted(fams - set(libs), key=repr):
                kernellib.load_family(fam)
            # every symbol of the reused objects resolvable (else: compile them all)
            elfload.validate(list(objects.values()), jit.SYMBOLS.get)
        except (elfload.Malformed, RuntimeError, OSError, ValueError, TypeError):
            return {}, set(libs)
    return objects, fams


def _kernel_parts(mods, cg, signed, n, libs):
    """The parts of a graph's modules (the entry first, unoptimised) and the library
    families its objects need: kernels compiled before (in any graph: the per-kernel
    object cache, ``jit.find_kernels``) are linked from their bundle's object, only the
    others compiled, in ``n`` bundles.  Kernels named by signature were looked up before
    their IR was built (``signed``: only the missing ones were); the others are keyed by
    their text here.  A reused bundle may hold other graphs' kernels too: their library
    families are loaded as well."""
    import json

    from .native import jit, kernellib
    kernels = mods[1:]
    libs = set(map(tuple, libs))
    if signed.keys:             # named by signature, looked up before any IR
        keys = {m: signed.keys[cg.named[m]] for m in kernels}
        objects, fams, missing = signed.objects, signed.fams | libs, kernels
        jit.STATS["kernel_hits"] += len(signed.reuse)
    else:
        # bundles of GEMMs inlined (GRAPHC_KERNEL_LIBRARY=0) never call the library: apart
        salt = f"library={kernellib.enabled()}"
        keys = {m: jit.kernel_key(cg.texts.get(m) or str(m), salt=salt) for m in kernels}
        found = jit.find_kernels(list(keys.values()))
        objects, fams = _usable(found, libs)
        missing = [m for m in kernels if not objects or keys[m] not in found]
        jit.STATS["kernel_hits"] += len(kernels) - len(missing)

    def meta(group):
        fams = kernellib.families_used(group)
        return json.dumps({"kernel_libs": [list(f) for f in fams]}).encode()
    parts = [jit.Part(mods[0], "O0")] + [jit.Part(o, jit.OBJECT) for o in objects.values()]
    if missing:
        parts += jit.bundles(missing, n, texts=cg.texts, keys=keys, meta=meta)
    return parts, sorted(fams, key=repr)


def _libraries(meta: bytes | None) -> None:
    """Load the kernel-library families a cached graph object links against."""
    import json

    from .native import kernellib
    if meta is None:
        return
    try:
        fams = [kernellib.parse_family(f) for f in json.loads(meta).get("libs", [])]
    except (ValueError, TypeError, AttributeError):
        # a summary that does not parse: the objects' library calls then stay
        # unresolved and the loader refuses them (a cache miss)
        return
    for fam in fams:
        kernellib.load_family(fam)


def _lazy_plan(graph, threads, fuse, epilogue, profile, plan):
    memo = []

    def full():
        if not memo:
            memo.append(lower(graph, threads, fuse, epilogue, profile, plan)[0])
        return memo[0]
    return full


_SOURCE_DIGEST: list = []


def source_digest() -> str:
    """sha256 of the code that decides what a graph compiles to: the IR and its ops, the
    passes and this backend (any edit changes every graph key)."""
    if not _SOURCE_DIGEST:
        import hashlib
        import os

        import graphc.ir
        import graphc.passes
        h = hashlib.sha256()
        for mod in (graphc.ir, graphc.passes):
            for root in mod.__path__:
                _digest_tree(h, root)
        _digest_tree(h, os.path.dirname(__file__))
        _SOURCE_DIGEST.append(h.hexdigest())
    return _SOURCE_DIGEST[0]


def _digest_tree(h, root) -> None:
    import os
    for dirpath, dirnames, files in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read() + b"\0")


def _code_parts() -> tuple:
    """What every compiled object depends on beside its own input: the cache format,
    llvmlite, the target, the GEMM tuning, the backend's sources and switches."""
    import llvmlite

    from .codegen import knobs      # not the code generator: a hit builds no IR
    from .native import jit
    from .native import kernellib
    from .native import tuning
    t = jit.host_target()
    return (str(jit.CACHE_FORMAT_VERSION), llvmlite.__version__, t.triple, t.cpu,
            t.features, tuning.key_part(), source_digest(),
            repr((kernellib.enabled(), *knobs.key_values())))


def kernel_salt() -> str:
    """The per-kernel cache keys' salt for kernels keyed by signature: a signature
    covers the kernel's data, this the code that turns it into IR (any edit to the
    backend, a switch, the tuned GEMM tiles)."""
    return "\0".join(("graphc-kernel-signature",) + _code_parts())


def graph_key(graph, threads, fuse=True, epilogue=True, profile=False, plan="shared") -> str:
    """Cache key of ``graph`` compiled with these options for the host: its fingerprint,
    the options, the backend's sources, the kernel-library switch and the target."""
    import hashlib

    from graphc.ir import fingerprint
    h = hashlib.sha256()
    for part in ("graphc-llvm-graph", *_code_parts(), fingerprint(graph),
                 repr((threads, bool(fuse), bool(epilogue), bool(profile), plan))):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def assembly(graph, threads=None, **kw) -> str:
    """Host assembly of the compiled graph (for tests and curiosity)."""
    from .native import jit
    _, module = lower(graph, threads, **kw)
    return jit.assembly(module)
