"""The host target every stage specialises for: triple, CPU name and features.

The target machine decides everything (docs/llvm-backend.md): without the host CPU name
and feature string, ``llvm.fma`` becomes a libm call and AVX-512 is not used.
``GRAPHC_LLVM_GENERIC=1`` forces a generic x86-64 target (for debugging/portability).
LLVM's answer is remembered in the cache directory, so a process that only loads cached
code never imports ``llvmlite.binding`` (it is imported inside the functions that need
it).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass

import llvmlite

from .cachedir import read_trusted, touch
from .diskcache import cache_dir, write_atomic

_INIT_LOCK = threading.Lock()
_INITIALISED = False


def initialise() -> None:
    """LLVM's native target and assembly printer, once per process."""
    global _INITIALISED
    if _INITIALISED:
        return
    with _INIT_LOCK:
        if not _INITIALISED:
            # llvmlite >= 0.45: binding.initialize() raises; only these are needed.
            import llvmlite.binding as llvm
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _INITIALISED = True




@dataclass(frozen=True)
class TargetInfo:
    """What the generated code is specialised for; part of every cache key."""

    triple: str
    cpu: str
    features: str
    generic: bool

    def machine(self, opt: int = 3) -> "llvmlite.binding.TargetMachine":
        """A fresh target machine (MCJIT takes ownership of the one it is given);
        ``opt`` is the code generator's level."""
        import llvmlite.binding as llvm
        initialise()
        target = llvm.Target.from_triple(self.triple)
        return target.create_target_machine(
            cpu=self.cpu, features=self.features, opt=opt, reloc="default",
            codemodel="jitdefault", jit=True)

    def has_feature(self, name: str) -> bool:
        return ("+" + name) in self.features.split(",")


_TARGET: TargetInfo | None = None


def _cpu_fingerprint() -> str | None:
    """What identifies this CPU model and its features without LLVM (Linux
    /proc/cpuinfo: vendor, family, model, stepping, flags of the first CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read(65536)
    except OSError:
        return None
    first = text.split("\n\n", 1)[0]
    keep = [ln for ln in first.splitlines() if ln.split(":", 1)[0].strip() in
            ("vendor_id", "cpu family", "model", "model name", "stepping", "flags")]
    if not any(ln.startswith("flags") for ln in keep):
        return None
    return hashlib.sha256("\n".join(keep).encode()).hexdigest()


def _target_memo_path(generic: bool) -> str | None:
    directory = cache_dir()
    fp = _cpu_fingerprint()
    if directory is None or fp is None:
        return None
    h = hashlib.sha256(f"{fp}/{llvmlite.__version__}/{generic}".encode()).hexdigest()
    return os.path.join(directory, f"target-{h[:32]}.json")


def host_target() -> TargetInfo:
    """The host CPU target, or generic x86-64 when GRAPHC_LLVM_GENERIC=1 or detection fails.

    LLVM's answer is remembered in the cache directory under a fingerprint of the CPU
    (/proc/cpuinfo) and llvmlite's version, so a process that only loads cached code
    does not import ``llvmlite.binding`` to ask again."""
    global _TARGET
    generic = os.environ.get("GRAPHC_LLVM_GENERIC", "") not in ("", "0")
    if _TARGET is not None and _TARGET.generic == generic:
        return _TARGET
    memo = _target_memo_path(generic)
    if memo is not None:
        try:
            raw = read_trusted(memo)
            if raw is None:
                raise OSError("no trusted target memo")
            d = json.loads(raw)
            t = TargetInfo(str(d["triple"]), str(d["cpu"]), str(d["features"]),
                           bool(d["generic"]))
            if t.generic == generic or t.generic:   # (a non-generic CPU may detect
                _TARGET = t                          # as generic, never the reverse)
                touch(memo)
                return _TARGET
        except (OSError, ValueError, KeyError, TypeError):
            pass
    _TARGET = _detect_target(generic)
    if memo is not None:
        write_atomic(memo, json.dumps(_TARGET.__dict__).encode())
    return _TARGET


def _detect_target(generic: bool) -> TargetInfo:
    import llvmlite.binding as llvm
    initialise()
    triple = llvm.get_process_triple()
    cpu, features = "", ""
    if not generic:
        try:
            cpu = llvm.get_host_cpu_name()
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:  # feature detection unsupported: fall back below
            cpu, features = "", ""
    if not cpu or cpu == "generic":
        generic = True
        cpu = "x86-64" if triple.startswith("x86_64") else "generic"
        features = ""
    return TargetInfo(triple, cpu, features, generic)
