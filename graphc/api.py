"""The public transformations: trace, grad, value_and_grad, jvp, jit.

``grad``, ``value_and_grad`` and ``jvp`` trace the function on every call, run a pass
(autodiff, forward AD) and then either execute the graph on the numpy backend (when
called with arrays) or inline it into the enclosing trace (when called with tracers, so
``gc.grad(gc.grad(f))`` and ``gc.jvp(gc.grad(f), ...)`` compose).  Nothing is cached
there: ``gc.jit`` is what caches, one trace, pipeline run and compile per argument
structure, shapes and dtypes -- so ``gc.jit(gc.grad(f))`` compiles the gradient once.
"""
from __future__ import annotations

import functools

import numpy as np

from . import pytree
from .ir import (ArgumentError, DTypeError, Graph, GraphcError, ShapeError, TraceError,
                 verify)
from .ir.inline import inline
from .passes import autodiff, forward_ad
from .tracing import TraceContext, Tracer, deepest_context, leaf_names, trace_into


def _signature(leaves):
    sig = []
    for x in leaves:
        if isinstance(x, Tracer):
            sig.append((x.shape, x.dtype, "tracer"))
        else:
            a = np.asarray(x) if not isinstance(x, np.ndarray) else x
            sig.append((a.shape, a.dtype, type(x) in (float, int, bool)))
    return tuple(sig)


def _check_arity(fn, args):
    """Wrong number of arguments is an ArgumentError naming the function's parameters."""
    import inspect
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args)
    except TypeError as e:
        name = getattr(fn, "__name__", "fn")
        raise ArgumentError(f"{name}{sig} called with {len(args)} argument(s): {e}") from None


def _trace(fn, args, name=None) -> tuple[TraceContext, list]:
    _check_arity(fn, args)
    ctx = TraceContext(name or getattr(fn, "__name__", "fn").replace("<", "").replace(">", ""))
    tracers, out_tree = trace_into(ctx, fn, args, names=leaf_names(fn, args))
    ctx.graph.in_tree = pytree.flatten(list(args))[1]
    ctx.graph.out_tree = out_tree
    return ctx, tracers


def trace(fn, *example_args) -> Graph:
    """Trace ``fn`` on example arrays (or pytrees of arrays) into a forward Graph."""
    ctx, _ = _trace(fn, example_args)
    return verify(ctx.graph)


def _finish(ctx: TraceContext, graph: Graph, leaves, out_tree):
    """Run ``graph`` on concrete leaves, or inline it into the enclosing trace."""
    captured = [t for t, _ in ctx.captures.values()]
    outer = deepest_context(*leaves, *captured)
    if outer is None:
        from .backends import numpy_backend
        outs = numpy_backend.run(graph, [np.asarray(x) for x in leaves])
        outs = [o[()] if isinstance(o, np.ndarray) and o.ndim == 0 else o for o in outs]
    else:
        bindings = [outer.lift(x) for x in leaves] + [outer.capture(t) for t in captured]
        outs = [Tracer(v, outer) for v in inline(outer.graph, graph, bindings)]
    return pytree.unflatten(out_tree, outs)


def _argnum_tuple(argnums, nargs):
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not -nargs <= a < nargs:
            raise ArgumentError(f"argnums {argnums} out of range for {nargs} arguments")
    return tuple(a % nargs for a in nums), isinstance(argnums, int)


def _build_vg(fn, args, argnums, has_aux):
    """Trace fn, append its backward pass; outputs: loss, (aux leaves), grads."""
    nums, _ = _argnum_tuple(argnums, len(args))
    ctx, tracers = _trace(fn, args)
    g = ctx.graph
    out_leaves, out_tree = list(g.outputs), g.out_tree
    if has_aux:
        if out_tree.kind not in ("tuple", "list") or len(out_tree.children) != 2:
            raise GraphcError("with has_aux=True the function must return (loss, aux)")
        loss_tree, aux_tree = out_tree.children
    else:
        loss_tree, aux_tree = out_tree, None
    if loss_tree.kind != "leaf" or out_leaves[0].shape != () or out_leaves[0].dtype.kind != "f":
        v = out_leaves[0]
        what = (f"%{v.name} = {v.node.op} ...: {v.type}"
                + (f" (at {v.node.source})" if v.node.source else "")
                if loss_tree.kind == "leaf" else f"a {loss_tree}")
        err = DTypeError if loss_tree.kind == "leaf" and v.shape == () else ShapeError
        raise err(f"grad of {g.name}: the function must return a scalar float loss, "
                  f"got {what}; reduce it first (gc.mean, gc.sum)")
    loss = out_leaves[0]
    # Leaves belonging to the differentiated arguments, per argument.
    counts = [pytree.flatten(a)[1].num_leaves for a in args]
    starts = np.cumsum([0] + counts)
    wrt = [tracers[i].value for k in nums for i in range(starts[k], starts[k + 1])]
    for v in wrt:
        if v.dtype.kind != "f":
            raise DTypeError(f"grad of {g.name}: cannot differentiate with respect to %{v.name}"
                             f": {v.type}, only float arrays; pass it as floats or leave its "
                             f"argument out of argnums")
    g2, grads, vmap = autodiff.backward(g, loss, wrt)
    g2.set_outputs([vmap[v] for v in out_leaves] + grads)
    g2.remove_dead()
    verify(g2)
    grad_trees = []
    for k in nums:
        td = pytree.flatten(args[k])[1]
        grad_trees.append(td)
    return ctx, g2, out_tree, grad_trees


def value_and_grad(fn, argnums=0, has_aux=False):
    """``(value, grads)`` of a scalar function; grads shaped like the chosen argument(s)."""
    @functools.wraps(fn)
    def vg(*args):
        nums, single = _argnum_tuple(argnums, len(args))
        ctx, graph, out_tree, grad_trees = _build_vg(fn, args, argnums, has_aux)
        n_out = out_tree.num_leaves
        tree = pytree.TreeDef("tuple", (), (out_tree, pytree.TreeDef(
            "tuple", (), tuple(grad_trees))))
        leaves = pytree.flatten(list(args))[0]
        value, grads = _finish(ctx, graph, leaves, tree)
        assert n_out == out_tree.num_leaves
        return value, (grads[0] if single else grads)
    return vg


def grad(fn, argnums=0, has_aux=False):
    """The gradient of a scalar function, shaped like the argument(s) in ``argnums``."""
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def g(*args):
        value, grads = vg(*args)
        return (grads, value[1]) if has_aux else grads
    return g


def jvp(fn, primals: tuple, tangents: tuple):
    """Forward mode: ``(fn(*primals), J·tangents)``."""
    primals, tangents = tuple(primals), tuple(tangents)
    p_leaves, p_tree = pytree.flatten(list(primals))
    t_leaves, t_tree = pytree.flatten(list(tangents))
    if p_tree != t_tree:
        raise ArgumentError(f"jvp: tangents {t_tree} do not match primals {p_tree}")
    for p, t in zip(p_leaves, t_leaves):
        if np.shape(p) != np.shape(t):
            raise ArgumentError(f"jvp: tangent shape {np.shape(t)} != primal shape {np.shape(p)}")
    ctx, tracers = _trace(fn, primals)
    g = ctx.graph
    out_tree = g.out_tree
    g2, t_inputs, out_tans, _ = forward_ad.forward(g, [t.value for t in tracers])
    g2.set_outputs(list(g2.outputs) + out_tans)
    g2.remove_dead()
    verify(g2)
    # Graph inputs are primals, captures, then tangents: bind in that order.
    captured = [t for t, _ in ctx.captures.values()]
    outer = deepest_context(*p_leaves, *t_leaves, *captured)
    tree = pytree.TreeDef("tuple", (), (out_tree, out_tree))
    if outer is None:
        from .backends import numpy_backend
        t_arrays = [np.asarray(t, dtype=v.dtype) for t, v in zip(t_leaves, t_inputs)]
        outs = numpy_backend.run(g2, [np.asarray(x) for x in p_leaves] + t_arrays)
        outs = [o[()] if isinstance(o, np.ndarray) and o.ndim == 0 else o for o in outs]
    else:
        bindings = ([outer.lift(x) for x in p_leaves] + [outer.capture(t) for t in captured]
                    + [outer.lift(x) for x in t_leaves])
        outs = [Tracer(v, outer) for v in inline(outer.graph, g2, bindings)]
    return pytree.unflatten(tree, outs)


class Jitted:
    """``gc.jit(fn)``: compile once per argument signature, then call the backend."""

    def __init__(self, fn, backend="llvm", **options):
        self.fn, self.backend, self.options = fn, backend, options
        self.cache: dict = {}
        functools.update_wrapper(self, fn)

    def lower(self, *args) -> Graph:
        """The graph the backend compiles for these arguments (after the pipeline)."""
        return self._run_pipeline(trace(self.fn, *args))[0]

    def _run_pipeline(self, graph):
        """The jit pipeline (``passes=``; default: fusion on the LLVM backend) on the
        traced graph; the backend then compiles the result as it is."""
        from .passes import standard
        from .passes.pipeline import PassContext
        from .step import resolve_pipeline
        options = dict(self.options)
        passes = options.pop("passes", None)
        fuse, epilogue = options.pop("fuse", True), options.pop("epilogue", True)
        pipe = resolve_pipeline(passes, standard.jit_pipeline(self.backend, fuse))
        graph = pipe.run(graph, PassContext({"epilogue": epilogue})).graph
        if self.backend == "llvm":
            options["fuse"] = False        # fusion ran in the pipeline (or was dropped)
        return graph, options

    def __call__(self, *args):
        leaves, in_tree = pytree.flatten(list(args))
        if deepest_context(*leaves) is not None:      # inside another trace: inline
            ctx, _ = _trace(self.fn, args)
            return _finish(ctx, ctx.graph, leaves, ctx.graph.out_tree)
        key = (in_tree, _signature(leaves))
        entry = self.cache.get(key)
        if entry is None:
            from .backends import get_backend
            ctx, _ = _trace(self.fn, args)
            if ctx.captures:
                raise TraceError("a jitted function closed over a traced value")
            graph = verify(ctx.graph)
            graph, options = self._run_pipeline(graph)
            entry = (graph, get_backend(self.backend).compile(graph, **options))
            self.cache[key] = entry
        graph, compiled = entry
        outs = compiled(*[np.asarray(x) for x in leaves])
        outs = [o[()] if isinstance(o, np.ndarray) and o.ndim == 0 else o for o in outs]
        return pytree.unflatten(graph.out_tree, outs)


def jit(fn=None, backend="llvm", **options):
    """Compile ``fn`` (cached per input shapes/dtypes) to run on ``backend``."""
    if fn is None:
        return lambda f: Jitted(f, backend, **options)
    return Jitted(fn, backend, **options)
