"""The IR: a Graph of Nodes (operators) connected by Values (the edges).

A Graph's ``nodes`` list *is* its schedule: backends run nodes in that order, and every
pass keeps it topologically sorted.  A Value has a static shape and dtype, one producer
and an ordered list of users.  Nodes carry a *role* (forward, backward, tangent, update)
so printers and the memory planner can tell what autodiff appended.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from . import dtypes as dt
from .errors import DTypeError, GraphcError, ShapeError, where_
from .limits import too_big

ROLES = ("forward", "backward", "tangent", "update")
INPUT_KINDS = ("data", "param", "state", "tangent", "cotangent")


@dataclass(frozen=True)
class TensorType:
    """What the shape rules compute: a static shape and a dtype."""
    shape: tuple
    dtype: np.dtype

    def __str__(self):
        return dt.type_str(self.shape, self.dtype)

    @property
    def size(self) -> int:
        # math.prod: exact, and ~10x cheaper than np.prod on a short tuple (the passes
        # ask for sizes thousands of times per compile)
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class Value:
    """An edge: the single output of a node, read by its users."""
    __slots__ = ("id", "name", "type", "node", "users")

    def __init__(self, id: int, name: str, type: TensorType, node: "Node"):
        self.id, self.name, self.type, self.node = id, name, type, node
        self.users: list[Node] = []

    shape = property(lambda self: self.type.shape)
    dtype = property(lambda self: self.type.dtype)
    ndim = property(lambda self: len(self.type.shape))
    size = property(lambda self: self.type.size)
    nbytes = property(lambda self: self.type.nbytes)

    def __repr__(self):
        return f"%{self.name}:{self.type}"


class Node:
    """One operator application; ``attrs`` holds static metadata (axes, shapes, constants)."""
    __slots__ = ("op", "inputs", "attrs", "output", "role", "source")

    def __init__(self, op: str, inputs: list, attrs: dict, role: str, source: str | None):
        self.op, self.inputs, self.attrs = op, list(inputs), dict(attrs)
        self.role, self.source = role, source
        self.output: Value | None = None

    def __repr__(self):
        return f"<Node {self.op} -> {self.output!r}>"


_NAME_RE = re.compile(r"[^A-Za-z0-9_.]")


class Graph:
    """A static dataflow graph; ``nodes`` in schedule (topological) order."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        # In-place state writes: (input value, value whose contents replace it after a run).
        self.updates: list[tuple[Value, Value]] = []
        # Pytree structure of the traced function's arguments and results (set by gc.trace).
        self.in_tree = None
        self.out_tree = None
        self._next_id = 0
        self._names: set[str] = set()

    # ---- construction -------------------------------------------------------------------
    def _new_value(self, node: Node, type: TensorType, name: str | None) -> Value:
        vid = self._next_id
        self._next_id += 1
        if name is None:
            name = str(vid)
        else:
            name = _NAME_RE.sub("_", name) or "v"
            base, k = name, 1
            while name in self._names:
                name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        v = Value(vid, name, type, node)
        node.output = v
        return v

    def add_input(self, shape, dtype, name: str, kind: str = "data") -> Value:
        """Append a graph input (a placeholder the caller binds at run time)."""
        if kind not in INPUT_KINDS:
            raise GraphcError(f"unknown input kind {kind!r}")
        node = Node("input", [], {"kind": kind}, "forward" if kind in ("data", "param", "state")
                    else ("tangent" if kind == "tangent" else "backward"), None)
        v = self._new_value(node, TensorType(tuple(int(d) for d in shape), dt.as_dtype(dtype)), name)
        node.attrs["name"] = v.name
        self.nodes.append(node)
        self.inputs.append(v)
        return v

    def add(self, op: str, inputs: Iterable[Value], attrs: dict | None = None,
            role: str = "forward", source: str | None = None, name: str | None = None,
            before: "Node | None" = None) -> Value:
        """Append ``op(inputs)`` (or insert it just before node ``before``): check attrs,
        infer the output type, link users."""
        from .registry import get_op  # registry imports graph for types
        opdef = get_op(op)
        inputs = list(inputs)
        for x in inputs:
            if not isinstance(x, Value):
                raise GraphcError(f"op '{op}' got a non-Value input {x!r}")
        attrs = dict(attrs or {})
        try:
            attrs = opdef.check_attrs(attrs, [x.type for x in inputs])
            out_type = opdef.infer(attrs, *[x.type for x in inputs])
        except (ShapeError, DTypeError) as e:
            shapes = [str(x.type) for x in inputs]
            raise type(e)(f"{e} ({where_(op, shapes, source)})") from None
        # a broadcast is a view (stride 0): only what is stored needs memory
        why = (too_big(out_type.nbytes)
               if out_type.size > 1 << 24 and opdef.view != "broadcast" else None)
        if why:
            shapes = [str(x.type) for x in inputs]
            raise ShapeError(f"{op}: its result {out_type} {why} "
                             f"({where_(op, shapes, source)})")
        node = Node(op, inputs, attrs, role, source)
        v = self._new_value(node, out_type, name)
        for x in inputs:
            if node not in x.users:
                x.users.append(node)
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return v

    def set_outputs(self, outputs: Iterable[Value]):
        self.outputs = list(outputs)

    # ---- queries --------------------------------------------------------------------------
    def values(self) -> list[Value]:
        return [n.output for n in self.nodes]

    def params(self) -> list[Value]:
        return [v for v in self.inputs if v.node.attrs["kind"] == "param"]

    def __len__(self):
        return len(self.nodes)

    def __str__(self):
        from .printer import format_graph
        return format_graph(self)

    # ---- rewriting -----------------------------------------------------------------------
    def clone(self) -> tuple["Graph", dict]:
        """A deep copy (new Values with the same names); returns (graph, old->new value map)."""
        g = Graph(self.name)
        vmap: dict[Value, Value] = {}
        for n in self.nodes:
            nn = Node(n.op, [vmap[x] for x in n.inputs], n.attrs, n.role, n.source)
            v = Value(n.output.id, n.output.name, n.output.type, nn)
            nn.output = v
            for x in nn.inputs:
                if nn not in x.users:
                    x.users.append(nn)
            g.nodes.append(nn)
            vmap[n.output] = v
        g.inputs = [vmap[v] for v in self.inputs]
        g.outputs = [vmap[v] for v in self.outputs]
        g.updates = [(vmap[a], vmap[b]) for a, b in self.updates]
        g._next_id, g._names = self._next_id, set(self._names)
        g.in_tree, g.out_tree = self.in_tree, self.out_tree
        return g, vmap

    def rename(self, v: Value, name: str) -> str:
        """Give ``v`` a readable unique name (e.g. ``grad_w1``); returns the name taken."""
        self._names.discard(v.name)
        name = _NAME_RE.sub("_", name) or "v"
        base, k = name, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        v.name = name
        if v.node.op == "input":
            v.node.attrs["name"] = name
        return name

    def replace_all_uses(self, old: Value, new: Value):
        """Point every reader of ``old`` (nodes and graph outputs) at ``new``."""
        for user in list(old.users):
            user.inputs = [new if x is old else x for x in user.inputs]
            if user not in new.users:
                new.users.append(user)
        old.users = []
        self.outputs = [new if x is old else x for x in self.outputs]
        self.updates = [(a, new if b is old else b) for a, b in self.updates]

    def remove_dead(self) -> bool:
        """Drop nodes whose value reaches no output or update (inputs are kept)."""
        live = set()
        stack = [*self.outputs, *(b for _, b in self.updates), *self.inputs]
        while stack:
            v = stack.pop()
            if v in live:
                continue
            live.add(v)
            stack.extend(v.node.inputs)
        keep = [n for n in self.nodes if n.output in live]
        changed = len(keep) != len(self.nodes)
        if changed:
            for n in self.nodes:
                if n.output not in live:
                    for x in n.inputs:
                        if n in x.users:
                            x.users.remove(n)
            self.nodes = keep
        return changed
