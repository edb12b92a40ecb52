"""Which layer each node belongs to: the grouping behind readable pictures.

A traced graph has no module boundaries, but its parameters do: ``params.0.w`` and
``params.0.b`` are layer ``params.0``.  ``layer_of(graph)`` assigns every node a group:

* forward: a node reading a parameter joins that parameter's layer; a node whose operands
  all come from one layer and that runs the same source file joins it (the bias add and
  the activation after a matmul); anything else (the loss, data preparation) forms a group
  named after its source line (``loss`` when it is the last forward group);
* backward: the VJP nodes of layer k read layer k's saved values and the cotangent flowing
  back from layer k+1, so a backward node takes the *earliest* layer among what it reads
  (``grad_<param>`` values take their parameter's layer);
* update: the layer of the parameter (or state) it writes; shared optimizer scalars form
  the ``optimizer`` group.

It is a heuristic for drawing, never used to compile anything.  Keys are strings; order
is the forward order of the layers (``order``).
"""
from __future__ import annotations

from .graph import Graph, Node


def _prefix(name: str) -> str:
    head, dot, _ = name.rpartition(".")
    return head if dot else name


def _src_file(n: Node) -> str:
    return (n.source or "").partition(":")[0]


class Layers:
    """``group[node]`` -> layer key; ``order`` the keys in forward order."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.group: dict = {}
        self.order: list[str] = []
        self._files: dict[str, set] = {}
        self._assign()

    def _add(self, key: str) -> str:
        if key not in self._files:
            self._files[key] = set()
            self.order.append(key)
        return key

    def _assign(self):
        g = self.graph
        params = {n.output: _prefix(n.attrs.get("name", n.output.name)) for n in g.nodes
                  if n.op == "input" and n.attrs.get("kind") == "param"}
        self._params = set(params.values())
        for n in g.nodes:               # inputs: params by layer, the rest alone
            if n.op == "input":
                kind = n.attrs.get("kind")
                if kind == "param":
                    self.group[n] = self._add(params[n.output])
                elif kind == "state":
                    self.group[n] = "optimizer"
                else:
                    self.group[n] = "inputs"
        for n in g.nodes:
            if n.op == "input" or n.role != "forward":
                continue
            self.group[n] = self._forward(n, params)
        rank = {k: i for i, k in enumerate(self.order)}
        for n in g.nodes:
            if n.role in ("backward", "tangent"):
                self.group[n] = self._backward(n, params, rank)
        for n in reversed(g.nodes):     # backward nodes that read only forward values
            if n.role not in ("backward", "tangent") or n.output.name.startswith("grad_"):
                continue
            if any(x.node.role in ("backward", "tangent") and x.node.op != "constant"
                   for x in n.inputs):
                continue                # (x^T of a weight gradient, a relu mask) serve
            users = {self.group.get(u) for u in n.output.users   # the layer that reads them
                     if u.role in ("backward", "tangent")}
            users.discard(None)
            if len(users) == 1:
                self.group[n] = users.pop()
        targets = {b.node: a for a, b in g.updates}
        for n in reversed(g.nodes):     # updates: the layer of what they write
            if n.role != "update" or n.op == "input":
                continue
            a = targets.get(n)
            key = None
            if a is not None:
                key = params.get(a) or _prefix(a.name).replace("opt.", "", 1)
                key = self._match(key)
            if key is None:
                users = [self.group.get(u) for u in n.output.users if u.role == "update"]
                users = [u for u in users if u]
                key = users[0] if users and all(u == users[0] for u in users) else "optimizer"
            self.group[n] = key
        if "optimizer" in self.group.values():
            self._add("optimizer")
        for n in g.nodes:               # constants follow their first reader
            if n.op == "constant" and n.output.users:
                self.group[n] = self.group.get(n.output.users[0], self.group.get(n))
        self._name_loss()

    def _name_loss(self):
        """The forward group holding the last forward node is the loss: call it so."""
        fwd = [n for n in self.graph.nodes if n.role == "forward" and n.op != "input"]
        if not fwd:
            return
        key = self.group.get(fwd[-1])
        if key is None or key == "loss" or key in self._params or "loss" in self._files:
            return
        self.order[self.order.index(key)] = "loss"
        self._files["loss"] = self._files.pop(key)
        for n, k in self.group.items():
            if k == key:
                self.group[n] = "loss"

    def _match(self, key: str):
        """``opt.m.params.0.w`` -> ``params.0`` (the layer whose key ends the name)."""
        for k in self.order:
            if key == k or key.endswith("." + k) or key.endswith(k):
                return k
        return None

    def _forward(self, n: Node, params) -> str:
        direct = [params[x] for x in n.inputs if x in params]
        if direct:
            key = self._add(direct[-1])
        else:
            srcs = {self.group.get(x.node) for x in n.inputs
                    if x.node.op not in ("input", "constant")}
            srcs.discard(None)
            key = None
            if len(srcs) == 1:
                (only,) = srcs
                if _src_file(n) in self._files.get(only, set()) or not n.source:
                    key = only
            if key is None:
                key = self._add(self._named(n))
        self._files[key].add(_src_file(n))
        return key

    def _named(self, n: Node) -> str:
        return n.source or "?"

    def _backward(self, n: Node, params, rank) -> str:
        if n.output.name.startswith("grad_"):
            p = _prefix(n.output.name[len("grad_"):])
            if p in rank:
                return p
        cands = []
        for x in n.inputs:
            if x.node.op == "constant":
                continue
            k = params.get(x) or self.group.get(x.node)
            if k in rank:
                cands.append(k)
        if not cands:
            users = [u for u in n.output.users]
            return self.group.get(users[0], self.order[-1] if self.order else "loss") \
                if users and users[0] in self.group else (self.order[-1] if self.order
                                                          else "loss")
        return min(cands, key=rank.get)

    def label(self, key: str, names: dict | None = None) -> str:
        if names and key in names:
            return names[key]
        return key


def layer_of(graph: Graph) -> Layers:
    return Layers(graph)
