"""Which GEMM variant this CPU gets: the tuner's measured choice, or a known-good default.

The GEMM micro-kernel's tile (MR rows × NV vectors), its K block (KC) and its B-panel
prefetch decide how close to the FMA ceiling it runs, and the best values differ per CPU
(16 ymm registers on AVX2 against 32 zmm on AVX-512, 512 KiB of L2 per core on Zen 3
against 1-2 MiB on Zen 4/5 and Intel).  So they are measured on the host
(:mod:`..runtime.tuner`: a short search, a few seconds, once per CPU) and the choice is
kept in the disk cache directory as ``tune-<digest>.json``, the digest covering the CPU
fingerprint (``/proc/cpuinfo``: model, stepping, flags), the LLVM target and
:data:`TUNE_FORMAT_VERSION`.

:func:`choice` answers, in order: the choice already made in this process; with
``GRAPHC_TUNE=0`` (or the disk cache off, ``GRAPHC_CACHE_DIR=off``) the table
:data:`KNOWN` of defaults per CPU family; a trusted, valid cache entry for this CPU
(read as :func:`.cachedir.read_trusted` reads code: the user's own file, not writable by
others; a corrupt or foreign entry reads as a miss); else the table.  It never measures:
:func:`..runtime.tuner.ensure_tuned` does, called by the backend before a graph's first compile when
``GRAPHC_TUNE`` is ``auto`` (the default) and no choice is cached -- the one-time cost,
stated on stderr -- and ``graphc tune`` reruns it.  The test suite sets ``GRAPHC_TUNE=0``.

Every compiled artefact that depends on the choice is keyed by it: the kernel library by
its family (tile, KC, prefetch), a graph by :func:`key_part` in its cache key; so a new
choice never loads code built for the old one.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass

from . import cachedir
from .target import _cpu_fingerprint, host_target

#: bump when the meaning of a cached choice or the candidate space changes
TUNE_FORMAT_VERSION = 3      # 2: the B-panel packing knob; 3: A packing
LOCK = threading.RLock()


@dataclass(frozen=True)
class TileChoice:
    """The dtype-independent part of a GEMM variant (the vector width follows the dtype)."""

    mr: int
    nv: int
    kc: int
    pf: int = 1
    #: copy non-transposed B panels into contiguous buffers (calls of > 16 rows)
    pack: int = 0
    #: pack a transposed A into contiguous tile strips (``codegen.gemm.GemmSpec.pack_a``)
    pack_a: int = 0

    @property
    def label(self) -> str:
        return (f"{self.mr}x{self.nv}v kc{self.kc} pf{self.pf}" + (" pack" if self.pack else "")
                + (" packA" if self.pack_a else ""))


#: known-good defaults by LLVM CPU name; :func:`family_default` falls back on the vector
#: width.  AVX-512 (32 zmm): 6x4 vectors, 24 accumulators (measured on Zen 4/5).  AVX2
#: (16 ymm): 6x2 vectors, 12 accumulators + 2 B vectors + a broadcast.
KNOWN = {
    "znver4": TileChoice(6, 4, 256, 1),
    "znver5": TileChoice(6, 4, 256, 1),
    "sapphirerapids": TileChoice(6, 4, 256, 1),
    "emeraldrapids": TileChoice(6, 4, 256, 1),
    "graniterapids": TileChoice(6, 4, 256, 1),
    "icelake-server": TileChoice(6, 4, 256, 1),
    "skylake-avx512": TileChoice(6, 4, 256, 1),
    "znver3": TileChoice(4, 3, 256, 0, 1, 1),  # tuned on Zen 3: docs/benchmarks.md
    "znver2": TileChoice(6, 2, 256, 1),
    "haswell": TileChoice(6, 2, 256, 1),
    "skylake": TileChoice(6, 2, 256, 1),
    "alderlake": TileChoice(6, 2, 256, 1),
}
_BY_WIDTH = {512: TileChoice(6, 4, 256, 1), 256: TileChoice(6, 2, 256, 1),
             128: TileChoice(4, 2, 256, 1)}

_CHOICE: TileChoice | None = None
_SOURCE: str | None = None       # "tuned" / "cached" / "default"


def _vector_bits(t) -> int:
    return 512 if t.has_feature("avx512f") else 256 if t.has_feature("avx2") else 128


def vector_registers(t=None) -> int:
    t = t or host_target()
    return 32 if t.has_feature("avx512f") else 16


def family_default(t=None) -> TileChoice:
    """The table's choice for this target (by CPU name, else by vector width)."""
    t = t or host_target()
    hit = KNOWN.get(t.cpu)
    return hit if hit is not None and valid(hit, t) else _BY_WIDTH[_vector_bits(t)]


def mode() -> str:
    """``GRAPHC_TUNE``: ``auto`` (default: tune once when nothing is cached) or ``off``."""
    v = os.environ.get("GRAPHC_TUNE", "auto").strip().lower()
    return "off" if v in ("0", "off", "no", "false", "none") else "auto"


def valid(c, t=None) -> bool:
    """Whether ``c`` is a choice the code generator can use on this target (what a cache
    entry must pass before it is believed)."""
    if not isinstance(c, TileChoice):
        return False
    if not all(type(x) is int for x in (c.mr, c.nv, c.kc, c.pf, c.pack, c.pack_a)):
        return False
    regs = vector_registers(t)
    return (1 <= c.mr <= 16 and 1 <= c.nv <= 8 and c.mr * c.nv + c.nv + 1 <= regs
            and 8 <= c.kc <= 4096 and 0 <= c.pf <= 4 and c.pack in (0, 1)
            and c.pack_a in (0, 1))


def cache_path() -> str | None:
    """Where this CPU's choice is kept (None: no usable cache directory)."""
    directory = cachedir.cache_dir()
    fp = _cpu_fingerprint()
    if directory is None or fp is None:
        return None
    return os.path.join(directory, f"tune-{_digest(fp)[:32]}.json")


def _digest(fp: str) -> str:
    t = host_target()
    return hashlib.sha256(f"graphc-tune/{TUNE_FORMAT_VERSION}/{fp}/{t.triple}/{t.cpu}/"
                          f"{t.features}".encode()).hexdigest()


def read_cached() -> tuple | None:
    """(TileChoice, record) from a trusted, valid cache entry for this CPU, else None."""
    path = cache_path()
    if path is None:
        return None
    raw = cachedir.read_trusted(path)
    if raw is None:
        return None
    try:
        rec = json.loads(raw)
        if rec.get("digest") != _digest(_cpu_fingerprint() or ""):
            return None                      # another CPU's (or version's) entry
        c = TileChoice(**{k: rec["choice"][k]
                          for k in ("mr", "nv", "kc", "pf", "pack", "pack_a")})
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not valid(c):
        return None
    cachedir.touch(path)
    return c, rec


def write_cached(c: TileChoice, results: list, seconds: float) -> str | None:
    """Keep ``c`` (and the candidates' figures, for ``graphc tune``) for this CPU."""
    path = cache_path()
    if path is None:
        return None
    t = host_target()
    rec = {"digest": _digest(_cpu_fingerprint() or ""), "cpu": t.cpu,
           "choice": asdict(c), "seconds": round(seconds, 3), "results": results}
    data = json.dumps(rec, indent=1).encode()
    if cachedir.write_atomic(path, data):
        cachedir.after_write(os.path.dirname(path), path, len(data))
        return path
    return None


def choice() -> TileChoice:
    """This process's GEMM choice (see the module docstring for the order); never times
    anything."""
    global _CHOICE, _SOURCE
    if _CHOICE is not None:
        return _CHOICE
    with LOCK:
        if _CHOICE is None:
            hit = read_cached() if mode() == "auto" else None
            if hit is not None:
                _CHOICE, _SOURCE = hit[0], "cached"
            else:
                _CHOICE, _SOURCE = family_default(), "default"
        return _CHOICE


def needs_tuning() -> bool:
    """Whether :func:`..runtime.tuner.ensure_tuned` would time candidates: tuning on,
    a usable cache directory, and this process's choice is the table's for want of a
    cached one."""
    if mode() == "off" or cache_path() is None:
        return False
    choice()
    return _SOURCE == "default"


def source() -> str:
    choice()
    return _SOURCE or "default"


def set_choice(c: TileChoice | None, src: str = "tuned") -> None:
    """Use ``c`` from now on in this process (None: forget, ask :func:`choice` again)."""
    global _CHOICE, _SOURCE
    with LOCK:
        _CHOICE, _SOURCE = c, (src if c is not None else None)


def key_part() -> str:
    """What graph cache keys must include: the choice in use."""
    c = choice()
    return f"gemm-tile/{c.mr}/{c.nv}/{c.kc}/{c.pf}/{c.pack}/{c.pack_a}"
