"""Object code made callable, with no optimisation and no code generation: linked by
:mod:`.elfload` when it can, by an MCJIT engine when it declines, against each other
and the symbols graphc registers (:func:`add_symbol`: the kernel library's drivers)."""
from __future__ import annotations

import os

from . import elfload
from .stats import STATS
from .target import TargetInfo


#: functions other modules' code may call (the kernel library's drivers): name -> address
SYMBOLS: dict = {}
_MCJIT_SYMBOLS: set = set()


def add_symbol(name: str, address: int) -> None:
    """Make ``name`` resolvable by every module loaded from now on."""
    SYMBOLS[name] = address


def elf_loader_enabled() -> bool:
    return os.environ.get("GRAPHC_ELF_LOADER", "1") not in ("0", "off", "no")


def load_objects(objs: list, target: TargetInfo, from_disk: bool = False):
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
    from .llvmcompile import llvm     # MCJIT: the only path of a load that needs LLVM
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
