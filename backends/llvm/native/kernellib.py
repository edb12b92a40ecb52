"""The GEMM kernel library: shape-generic GEMM code compiled once, not once per graph.

The GEMM drivers of :mod:`.gemm` take M/N/K, leading dimensions and row/column ranges as
arguments, so their code does not depend on the graph.  Compiling them into every
graph's module cost about half of a new graph's compile time (MLP step: ~0.12 s of
~0.27 s of LLVM time).  Instead, one *family* -- (dtype, MR, NV, VW, KC, prefetch): the four
transpose variants ``nn``/``tn``/``nt``/``tt`` and their micro-kernels -- is compiled
into its own module, once per process, and its object code is kept in the disk cache
like any module (:func:`.jit.compile_keyed`: same header, checksum, 0700 directory;
a corrupt or foreign entry is ignored and rebuilt).

A graph's module only *declares* the drivers it calls, under a symbol name that
carries a digest of everything the library's code depends on (format version, the
source of this file and of ``gemm.py``, llvmlite's version, the target):
``graphc_lib<digest>_<spec.name>``.  The library registers its functions under those
names with ``jit.add_symbol`` before any graph module referring to them is built or
loaded, and the loader resolves the graph's calls against them.  Because the digest is in
the graph's IR text, a cached graph object can only ever be linked against the very
library build it was compiled for.

``GRAPHC_KERNEL_LIBRARY=0`` emits the GEMMs into every graph module instead (the old
behaviour; for comparisons).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import TYPE_CHECKING

from . import jit

if TYPE_CHECKING:
    from llvmlite import ir

    from ..codegen.gemm import GemmSpec

#: the code generator of the library, whose source the library's key covers (read, not
#: imported: a process that only loads the library from disk never needs llvmlite.ir);
#: with the modules it emits through (B packing, loop scaffolding)
_CODEGEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "codegen")
GEMM_SOURCE = os.path.join(_CODEGEN, "gemm.py")
GEMM_SOURCES = (GEMM_SOURCE, os.path.join(_CODEGEN, "gemm_pack.py"),
                os.path.join(_CODEGEN, "loops.py"))

#: bump when the library's ABI or contents change in a way the source digest misses
LIB_FORMAT_VERSION = 3     # 2: the family includes the prefetch distance; 3: A packing
VARIANTS = ((False, False), (True, False), (False, True), (True, True))

_LOCK = threading.RLock()
_LOADED: dict = {}          # (target, family) -> (CompiledModule, {spec.name: symbol})
#: every library engine ever registered: graph code linked against a registered address
#: must never outlive it (even if ``_LOADED`` is reset, as tests do)
_KEEP: list = []
_SOURCE_DIGEST: str | None = None

#: one-time library work in this process (benchmarks report it separately)
STATS = {"builds": 0, "loads": 0, "seconds": 0.0}


def enabled() -> bool:
    return os.environ.get("GRAPHC_KERNEL_LIBRARY", "1") not in ("0", "off", "no")


def family(spec: GemmSpec) -> tuple:
    return (spec.dtype, spec.mr, spec.nv, spec.vw, spec.kc, spec.pf, spec.pack, spec.pack_a)


def _source_digest() -> str | None:
    """sha256 of this file and the GEMM code generator (None when a source cannot be read)."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        h = hashlib.sha256()
        try:
            for path in (*GEMM_SOURCES, __file__):
                with open(path, "rb") as f:
                    h.update(f.read())
                h.update(b"\0")
        except (OSError, TypeError):
            return None
        _SOURCE_DIGEST = h.hexdigest()
    return _SOURCE_DIGEST


def library_key(fam: tuple, target: jit.TargetInfo) -> str:
    """Cache key (and symbol digest) of a family's library for ``target``."""
    import llvmlite
    # without readable sources (a zip/pyc-only install) the library's IR text stands in
    code = _source_digest() or str(build_module(fam, target))
    h = hashlib.sha256()
    for part in (f"graphc-kernel-library/{LIB_FORMAT_VERSION}", str(jit.CACHE_FORMAT_VERSION),
                 llvmlite.__version__, target.triple, target.cpu, target.features,
                 repr(fam), code):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _specs(fam):
    from ..codegen.gemm import GemmSpec
    dtype, mr, nv, vw, kc, pf, pack, pack_a = fam
    return [GemmSpec(dtype, ta, tb, mr, nv, vw, kc, pf, pack, pack_a) for ta, tb in VARIANTS]


def _driver_names(meta: bytes | None) -> list:
    """The driver names a library entry's meta lists (what a disk hit registers)."""
    names = json.loads(meta)["drivers"]
    if not (isinstance(names, list) and len(names) == len(VARIANTS)
            and all(isinstance(n, str) and n for n in names)):
        raise ValueError("not a list of the drivers")
    return names


def build_module(fam: tuple, target: jit.TargetInfo) -> ir.Module:
    """The library module of one family: the four drivers (external) and their kernels."""
    from llvmlite import ir

    from ..codegen import gemm as gemm_mod
    m = ir.Module(name="graphc_kernel_library_" + "_".join(map(str, fam)))
    m.triple = target.triple
    for spec in _specs(fam):
        gemm_mod.emit_gemm(m, spec)
    return m


def build_parts(fam: tuple, target: jit.TargetInfo, parts: int) -> list:
    """The library as ``parts`` modules (the variants spread over them, each with its
    own internal micro-kernels) that JIT compiles concurrently."""
    from llvmlite import ir

    from ..codegen import gemm as gemm_mod
    specs = _specs(fam)
    parts = max(1, min(parts, len(specs)))
    mods = []
    for j in range(parts):
        m = ir.Module(name=f"graphc_kernel_library_{j}_" + "_".join(map(str, fam)))
        m.triple = target.triple
        for spec in specs[j::parts]:
            gemm_mod.emit_gemm(m, spec)
        mods.append(m)
    return mods


def load(spec: GemmSpec):
    """(CompiledModule, {driver name: registered symbol}) of ``spec``'s family, built or
    loaded from the disk cache once per process, its drivers registered as symbols."""
    return _load(family(spec))


def _load(fam: tuple):
    """:func:`load` of a family tuple.  The library's entry keeps its driver names in its
    meta, so a disk hit needs neither the code generator nor llvmlite.ir."""
    target = jit.host_target()
    hit = _LOADED.get((target, fam))
    if hit is not None:
        return hit
    with _LOCK:
        hit = _LOADED.get((target, fam))
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        key = library_key(fam, target)

        def build():
            names = [s.name for s in _specs(fam)]
            return jit.WithMeta(build_parts(fam, target, jit.compile_threads()),
                                json.dumps({"drivers": names}).encode())
        cm = jit.compile_keyed(key, build, require=_driver_names)
        _KEEP.append(cm)
        symbols = {}
        for name in _driver_names(cm.meta):
            sym = f"graphc_lib{key[:12]}_{name}"
            jit.add_symbol(sym, cm.get_function_address(name))
            symbols[name] = sym
        STATS["builds" if cm.source == "compiled" else "loads"] += 1
        STATS["seconds"] += time.perf_counter() - t0
        hit = (cm, symbols)
        _LOADED[(target, fam)] = hit
        return hit


def gemm_function(module: ir.Module, spec: GemmSpec) -> ir.Function:
    """The GEMM driver for ``spec`` as seen from ``module``: a declaration of the kernel
    library's registered symbol (library loaded first), or -- with the library
    disabled -- the driver emitted into ``module`` (:func:`.gemm.emit_gemm`)."""
    from llvmlite import ir

    from ..codegen import gemm as gemm_mod
    if not enabled():
        return gemm_mod.emit_gemm(module, spec)
    _, symbols = load(spec)
    sym = symbols.get(spec.name)
    if sym is None:
        raise RuntimeError(f"kernel library {family(spec)}: no driver {spec.name}")
    fn = module.globals.get(sym)
    if fn is None:
        I32, I64, PTR = ir.IntType(32), ir.IntType(64), ir.PointerType()
        fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR] + [I64] * 8 + [I32])
        fn = ir.Function(module, fnty, sym)
        fn.attributes.add("nounwind")
        for a in fn.args[:3]:
            a.add_attribute("noalias")
    return fn


def families_used(modules) -> list:
    """The library families whose drivers ``modules`` (llvmlite modules of one graph,
    built in this process) declare: what must be loaded before their object code is."""
    names = {f.name for m in modules for f in m.functions
             if f.is_declaration and f.name.startswith("graphc_lib")}
    return sorted({fam for (_, fam), (_, syms) in list(_LOADED.items())
                   if names & set(syms.values())}, key=repr)


def parse_family(fam) -> tuple:
    """A family tuple from its JSON list (a cached graph's summary); ValueError or
    TypeError when it is not one."""
    dtype, mr, nv, vw, kc, pf, pack, pack_a = fam
    return (str(dtype), int(mr), int(nv), int(vw), int(kc), int(pf), int(pack), int(pack_a))


def load_family(fam) -> None:
    """Load (or build) a family by its tuple, as :func:`families_used` lists it."""
    _load(parse_family(fam))
