"""The standard pipelines: what ``gc.compile_step`` and ``gc.jit`` run, as editable values.

Training step (``step_pipeline``), on the traced forward graph whose ``param`` inputs are
the parameters and whose only output is the loss:

  autodiff   append the backward pass; outputs become ``[loss, *gradients]``
  optimizer  append the update (state inputs, ``graph.updates``); outputs ``[loss]``
             (with ``check_finite``: ``[loss, all finite]`` and every update guarded)
  simplify   CSE, identities, dead code
  layout     products read only transposed computed as Bᵀ @ Aᵀ (LLVM backend)
  remat      recompute forward values in the backward pass (only with a memory budget
             or ``remat=``)
  schedule   reorder nodes for the lowest peak of live bytes (``schedule=False`` drops it)
  fusion     mark loop-fusion groups (LLVM backend; ``fuse=False`` drops it)

``gc.jit`` runs ``jit_pipeline`` (``layout`` and ``fusion`` on the LLVM backend) on the traced
function.  Every pass reads its options from ``ctx.options`` (``optimizer``,
``memory_budget``, ``remat``, ``epilogue``) and leaves its report in ``ctx.reports``.
"""
from __future__ import annotations

from graphc.ir import GraphcError

from .pipeline import Pass, Pipeline


def _autodiff(graph, ctx):
    from .autodiff import backward
    wrt = graph.params()
    if not graph.outputs:
        raise GraphcError("autodiff: the graph has no output to differentiate")
    loss = graph.outputs[0]
    g, grads, vmap = backward(graph, loss, wrt)
    g.set_outputs([vmap[loss]] + grads)
    g.remove_dead()
    ctx.reports["autodiff"] = {"params": [w.name for w in wrt],
                               "grads": [x.name for x in grads]}
    return g


def _optimizer(graph, ctx):
    from . import finite_guard
    from .optimizer import append_update
    rule = ctx.options.get("optimizer")
    if rule is None:
        raise GraphcError("optimizer pass: no optimizer in the pipeline's options")
    params = graph.params()
    if len(graph.outputs) != 1 + len(params):
        raise GraphcError(f"optimizer pass: expected outputs [loss, one gradient per "
                          f"parameter ({len(params)})], got {len(graph.outputs)} outputs; "
                          "run autodiff first")
    loss, grads = graph.outputs[0], list(graph.outputs[1:])
    check = ctx.options.get("check_finite", False)
    if check:               # the flag rides along as an output through append_update's copy
        base, vmap = graph.clone()
        loss, grads = vmap[loss], [vmap[x] for x in grads]
        params = [vmap[p] for p in params]
        base.set_outputs([loss, finite_guard.all_finite(base, [loss, *grads])])
        graph = base
    g, state_inputs = append_update(graph, params, grads, rule)
    if check:
        finite_guard.select_updates(g, g.outputs[1])
    g.set_outputs(g.outputs[:2] if check else [g.outputs[0]])
    g.remove_dead()
    ctx.reports["optimizer"] = {"state": [v.name for v in state_inputs]}
    return g


def _simplify(graph, ctx):
    from .simplify import simplify
    return simplify(graph)


def _layout(graph, ctx):
    from .layout import transposed_products
    return transposed_products(graph)


def _remat(graph, ctx):
    from .remat import remat
    rep: list = []
    g = remat(graph, ctx.options.get("memory_budget"), report=rep)
    ctx.reports["remat"] = rep[0]
    return g


def _schedule(graph, ctx):
    from .schedule import schedule_for_memory
    rep: dict = {}
    g = schedule_for_memory(graph, report=rep, memo=ctx.options.get("schedule_memo"))
    ctx.reports["schedule"] = rep
    return g


def _fusion(graph, ctx):
    from .fusion import fuse
    return fuse(graph, epilogue=ctx.options.get("epilogue", True))


PASSES = {
    "autodiff": Pass("autodiff", _autodiff, "append the backward pass (reverse-mode AD)"),
    "optimizer": Pass("optimizer", _optimizer, "append the optimizer update"),
    "simplify": Pass("simplify", _simplify, "CSE, identities, dead code"),
    "layout": Pass("layout", _layout, "compute products read only transposed as Bᵀ @ Aᵀ"),
    "remat": Pass("remat", _remat, "recompute forward values in the backward pass"),
    "schedule": Pass("schedule", _schedule, "reorder for the lowest peak of live bytes"),
    "fusion": Pass("fusion", _fusion, "mark loop-fusion groups (LLVM backend)"),
}


def check_remat_options(memory_budget=None, remat=None):
    """Whether the step pipeline needs its remat pass (and the options are coherent)."""
    if remat not in (None, False, True, "auto"):
        raise GraphcError(f"compile_step: remat must be None, False, True or 'auto', got "
                          f"{remat!r}")
    if memory_budget is not None and remat is False:
        raise GraphcError("compile_step: memory_budget needs remat (drop remat=False)")
    return bool(remat) or memory_budget is not None


def step_pipeline(backend: str = "llvm", memory_budget=None, remat=None, schedule=True,
                  fuse=True) -> Pipeline:
    """The training-step pipeline ``compile_step`` runs for these options."""
    names = ["autodiff", "optimizer", "simplify"]
    if backend == "llvm":
        names.append("layout")
    if check_remat_options(memory_budget, remat):
        names.append("remat")
    if schedule:
        names.append("schedule")
    if backend == "llvm" and fuse:
        names.append("fusion")
    return Pipeline([PASSES[n] for n in names])


def memory_pipeline(memory_budget=None, remat=None, schedule=True) -> Pipeline:
    """Just the memory passes (remat, schedule) of the step pipeline: for graphs built
    elsewhere (``graphc.distributed``'s gradient graph)."""
    step = step_pipeline("numpy", memory_budget, remat, schedule)
    return Pipeline([p for p in step if p.name in ("remat", "schedule")])


def jit_pipeline(backend: str = "llvm", fuse=True) -> Pipeline:
    """What ``gc.jit`` runs on a traced function before the backend."""
    if backend != "llvm":
        return Pipeline([])
    return Pipeline([PASSES["layout"]] + ([PASSES["fusion"]] if fuse else []))


def describe(pipeline: Pipeline) -> str:
    """One line per pass: name and what it does (``graphc ir --list-passes``)."""
    return "\n".join(f"{p.name:<12} {p.doc}" for p in pipeline)
