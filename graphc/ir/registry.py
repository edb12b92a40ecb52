"""The op registry: one entry per operator, holding everything the IR knows about it.

Each op declares, in one place (autodidax style: one table per concern, keyed by op):
  - ``infer(attrs, *input_types) -> TensorType``  the shape/dtype rule,
  - ``vjp(E, node, g) -> [ct or None per input]``  the reverse-mode rule,
  - ``jvp(E, node, tangents) -> tangent or None``  the forward-mode rule,
both derivative rules written with other IR ops through an Emitter ``E``, so
derivatives are graphs too and can be differentiated again.  ``kind`` tells passes
how the op touches memory (elementwise ops may fuse or run in place).
Backends keep their own lowering tables; tests check every op has one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .errors import GraphcError

KINDS = ("source", "elementwise", "reduce", "shape", "matmul", "other")
#: how a view op re-indexes its operand's buffer (``OpDef.view``): a passes or backend
#: decides from these which views it can alias without a copy
VIEW_KINDS = ("reshape", "permute", "broadcast", "window")


@dataclass
class OpDef:
    name: str
    kind: str
    infer: Callable
    vjp: Callable | None = None       # None: not differentiable (ints, comparisons, ...)
    jvp: Callable | None = None
    check: Callable | None = None     # normalises attrs given input types; raises on bad attrs
    linear: bool = False              # linear in its (differentiable) inputs
    flops: Callable | None = None     # estimated FLOPs of one application (for remat, reports)
    doc: str = ""
    #: a view op: the output is the operand's elements re-indexed, no arithmetic
    #: ("reshape": same order; "permute": axes permuted; "broadcast": stride-0 axes;
    #: "window": a strided sub-range); None for ops that compute or copy
    view: str | None = None
    #: the output equals the (only) operand element for element (stop_gradient): a
    #: backend may alias it like a reshape
    identity: bool = False

    def check_attrs(self, attrs, in_types):
        return self.check(attrs, in_types) if self.check else attrs


_REGISTRY: dict[str, OpDef] = {}


def register(name, kind, infer, vjp=None, jvp=None, check=None, linear=False, flops=None,
             doc="", view=None, identity=False) -> OpDef:
    if kind not in KINDS:
        raise ValueError(f"unknown op kind {kind}")
    if name in _REGISTRY:
        raise ValueError(f"op {name} registered twice")
    if view is not None and (view not in VIEW_KINDS or kind != "shape"):
        raise ValueError(f"op {name}: view must be one of {VIEW_KINDS} on a shape op")
    op = OpDef(name, kind, infer, vjp, jvp, check, linear, flops, doc, view, bool(identity))
    _REGISTRY[name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GraphcError(f"unknown op '{name}'") from None


def view_ops(*kinds: str) -> frozenset:
    """Names of the view ops of the given view kinds (all kinds when none are given)."""
    return frozenset(n for n, o in _REGISTRY.items()
                     if o.view is not None and (not kinds or o.view in kinds))


def identity_ops() -> frozenset:
    """Names of the ops whose output equals their operand (``OpDef.identity``)."""
    return frozenset(n for n, o in _REGISTRY.items() if o.identity)


def all_ops() -> dict[str, OpDef]:
    """Every registered op, in registration order."""
    return dict(_REGISTRY)


# Ops whose derivative is zero/undefined by nature: the coverage test exempts them.
NON_DIFFERENTIABLE = {"input", "constant", "lt", "le", "gt", "ge", "eq", "ne", "sign",
                      "stop_gradient", "logical_and", "logical_or", "logical_not",
                      "check_index", "philox_uniform", "floor_divide"}
