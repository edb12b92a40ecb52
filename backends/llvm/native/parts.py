"""What a compile is asked to build: a program as parts, each with its pipeline.

A program may be compiled in *parts* (:class:`Part`: a module, or a bundle of modules
linked into one before optimisation), each with a pipeline of its own, or already
object code (:data:`OBJECT`: a bundle found in the per-kernel cache, only linked).
:func:`bundles` deals kernel modules into parts of about equal size, one per core.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """A module part to compile with another pipeline than the default; ``ir`` may be
    a list of modules (or texts), linked into one before optimisation (a bundle).

    ``kernels``: the per-kernel cache keys (:func:`.kernelcache.kernel_key`) of the bundle's modules
    -- once compiled, its object is kept under each of them (:func:`.kernelcache.find_kernels`), with
    ``meta`` beside it.  ``opt == OBJECT``: ``ir`` is object code already compiled (a
    bundle found by :func:`.kernelcache.find_kernels`), only linked."""

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


def as_parts(ir_or_parts, opt: str, full: bool = False) -> list:
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
