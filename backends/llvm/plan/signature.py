"""A kernel's identity from its plan data alone: the per-kernel object cache's key
before any IR exists.

A new graph that shares most kernels with graphs compiled before (one constant
changed, another loss, the same layers) used to build and print every kernel's IR
only to hash the text and find the object already cached -- on Zen 3 ~0.1 s of a
0.2 s compile.  :func:`kernel_signature` hashes instead what the code generator reads
of a kernel: every field of the kernel's data (its class, views, nodes, partitions,
GEMM spec), nothing that only the entry function uses (its name, its place in the
order, its barrier).  Storages are numbered in the order of the kernel's parameters
(:func:`kernel_storages`), values in the order they are met, so the same code in
two graphs (a transformer's layers, the same layer with another constant in the
loss) has one signature.  The code generator's sources and switches are not in it:
the caller adds them (``backends.llvm.kernel_salt``).

Anything the walk does not know makes the signature None, and the kernel is then
keyed by its IR text as before: an unknown field must never be left out of a key
(``tests/backends/llvm/test_signature.py`` checks that equal signatures always
mean equal IR text, over random graphs and the bundled models).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib

import numpy as np

from graphc.ir import Node
from graphc.ir.graph import Value

from .views import Storage, View

#: kernel fields only the entry function reads (the call order and synchronisation)
ENTRY_FIELDS = frozenset({"name", "order", "barrier"})
#: node attributes that do not reach the code (fusion's group label, remat's mark)
NO_CODE_ATTRS = frozenset({"group", "remat"})


def kernel_storages(k) -> list:
    """The storages a kernel's function takes a pointer to, in parameter order (module
    constants are globals of its module, not parameters)."""
    sts = []
    for v in k.views():
        if v.st.kind != "global" and v.st not in sts:
            sts.append(v.st)
    return sts


def aliasing(sts) -> list:
    """For each storage of ``sts``: whether it shares bytes with another arena storage
    of the list (a cast computed in place), so that its pointer may not be ``noalias``."""
    return [any(o is not st and o.kind == st.kind == "arena"
                and o.offset < st.offset + st.nbytes and st.offset < o.offset + o.nbytes
                for o in sts) for st in sts]


class _Unknown(Exception):
    pass


class _Walk:
    def __init__(self, sts):
        self.parts: list[str] = []
        self.storages = {id(st): i for i, st in enumerate(sts)}
        self.values: dict = {}

    def add(self, s: str) -> None:
        self.parts.append(s)

    def item(self, x) -> None:     # noqa: C901 -- one case per kind of data
        if x is None or isinstance(x, (bool, int, float, str)):
            self.add(f"{type(x).__name__}:{x!r}")
        elif isinstance(x, enum.Enum):
            self.add(f"{type(x).__name__}:{x.value!r}")
        elif isinstance(x, (np.integer, np.floating, np.bool_)):
            self.add(f"{x.dtype.str}:{x.item()!r}")
        elif isinstance(x, np.dtype):
            self.add(f"dtype:{x.str}")
        elif isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            self.add(f"array<{a.dtype.str}{a.shape}>:" + hashlib.sha256(a.tobytes()).hexdigest())
        elif isinstance(x, (tuple, list)):
            self.add("(" if isinstance(x, tuple) else "[")
            for y in x:
                self.item(y)
            self.add(")")
        elif isinstance(x, dict):      # insertion order: the order loads are emitted in
            self.add("{")
            for key, y in x.items():
                self.item(key)
                self.add(":")
                self.item(y)
            self.add("}")
        elif isinstance(x, View):
            self.add("view")
            self.storage(x.st)
            self.item((x.offset, tuple(x.shape), tuple(x.strides)))
        elif isinstance(x, Storage):
            self.storage(x)
        elif isinstance(x, Value):
            self.value(x)
        elif isinstance(x, Node):
            self.node(x)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            fields = dataclasses.fields(x)
            if set(getattr(x, "__dict__", ())) - {f.name for f in fields}:
                raise _Unknown("an attribute that is not a declared field")
            self.add(f"<{type(x).__module__}.{type(x).__qualname__}")
            for f in fields:
                if f.name not in ENTRY_FIELDS:
                    self.add(f.name + "=")
                    self.item(getattr(x, f.name))
            self.add(">")
        else:
            raise _Unknown(type(x).__qualname__)

    def storage(self, st: Storage) -> None:
        if st.kind == "global":        # a module constant: its bytes are in the code
            self.add(f"global:{st.dtype.str}:{st.size}")
            self.item(np.asarray(st.value))
            return
        i = self.storages.get(id(st))
        if i is None:                  # every view's storage is a parameter
            raise _Unknown("storage outside the kernel's views")
        self.add(f"st{i}:{st.kind}:{st.dtype.str}:{st.size}")

    def value(self, v: Value) -> None:
        i = self.values.setdefault(id(v), len(self.values))
        self.add(f"%{i}:{tuple(v.shape)}:{v.dtype.str}")

    def node(self, n: Node) -> None:
        self.add(f"node:{n.op}(")
        for x in n.inputs:
            self.value(x)
        self.add(")->")
        self.value(n.output)
        for key in sorted(n.attrs):
            if key not in NO_CODE_ATTRS:
                self.add(key + "=")
                self.item(n.attrs[key])


def kernel_signature(k) -> str | None:
    """sha256 (hex) of what the code generator reads of kernel ``k`` (module docstring),
    or None when ``k`` holds data the walk does not know."""
    sts = kernel_storages(k)
    w = _Walk(sts)
    try:
        w.add(f"aliasing:{aliasing(sts)}")
        w.item(k)
    except _Unknown:
        return None
    return hashlib.sha256("\0".join(w.parts).encode()).hexdigest()
