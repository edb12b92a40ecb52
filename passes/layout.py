"""Layout assignment at the graph level: each product computed in the layout its readers want.

A value read only through a transpose of its last two axes is better computed
transposed: ``(A @ B)ᵀ = Bᵀ @ Aᵀ``.  The case that matters is the weight gradient of a
layer written the PyTorch way, ``y = x @ W.T`` with ``W`` stored (out, in): autodiff
gives ``dW = (xᵀ @ dy)ᵀ``, a product stored (in, out) and then read transposed by the
optimizer update -- a strided loop over the whole weight, which also keeps the update
out of the GEMM's epilogue.  Rewritten as ``dW = dyᵀ @ x`` the product comes out in
``W``'s own layout, and the update fuses into it as it does for ``x @ W``.

The transposes of the operands are views the LLVM backend folds into the GEMM's
transpose flags (a transpose of a transpose is dropped here), so the rewrite costs no
copy.  Every element is the same K products summed in the same k order
(``fma(a, b, acc) == fma(b, a, acc)``): results are bit-identical.

Which operand a GEMM packs, and whether it computes its product transposed, is the
backend's choice from its own kernels' costs (``backends/llvm/plan/layout.py``); this
pass only removes the transposes a graph does not need.
"""
from __future__ import annotations

from graphc.ir import Graph, Node, Value


def _swap_perm(ndim: int) -> tuple:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


def _is_swap(n: Node) -> bool:
    return (n.op == "transpose" and n.output.ndim >= 2
            and tuple(n.attrs["perm"]) == _swap_perm(n.output.ndim))


def _swapped(g: Graph, x: Value, at: Node) -> Value:
    """``x`` with its last two axes swapped: the input of a swap transpose, else a new
    transpose node just before ``at``."""
    if _is_swap(x.node):
        return x.node.inputs[0]
    return g.add("transpose", [x], {"perm": _swap_perm(x.ndim)}, role=at.role,
                 source=at.source, before=at)


def transposed_products(graph: Graph) -> tuple[Graph, bool]:
    """A copy of ``graph`` where every matmul read only through swap transposes (and
    neither an output nor an update source itself) is computed as ``Bᵀ @ Aᵀ``."""
    g, _ = graph.clone()
    leaving = set(g.outputs) | {b for _, b in g.updates}
    changed = False
    for m in list(g.nodes):
        if m.op != "matmul" or m.output in leaving:
            continue
        users = list(m.output.users)
        if not users or not all(_is_swap(u) for u in users):
            continue
        a, b = m.inputs
        bt = _swapped(g, b, m)
        at = _swapped(g, a, m)
        name = users[0].output.name
        new = g.add("matmul", [bt, at], role=m.role, source=m.source, before=m)
        for u in users:
            g.replace_all_uses(u.output, new)
        g.remove_dead()
        g.rename(users[0].output, name + ".dead")   # frees the name for the product
        g.rename(new, name)
        changed = True
    return g, changed
