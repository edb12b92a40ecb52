"""``gc.compile_step``: the whole training step -- forward, backward, optimizer update --
as one graph, compiled once and run in place.

Graph inputs are the parameters (kind ``param``), the batch (``data``) and the optimizer
state (``state``); the only output is the loss; ``graph.updates`` tells the backend to
write the new parameters and state into their own buffers.  The graph is made by the
step pipeline (``graphc.passes.standard.step_pipeline``; ``passes=`` replaces or edits
it); ``stages`` keeps the graph after each pass so the CLI can show any of them
(``--after autodiff``).
"""
from __future__ import annotations

import numpy as np

from . import pytree
from .gcpause import gc_paused
from .ir import ArgumentError, Graph, GraphcError, verify
from .ir import dtypes as dt
from .livetree import LiveDict, copy_into, live_tree
from .passes import autodiff, standard
from .passes.pipeline import PassContext, Pipeline
from .passes.optimizer import LR_INPUT
from .tracing import TraceContext, leaf_names, trace_into


def _own_param(x, name):
    """Use the caller's array in place when it can be updated in place; else copy."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=np.float32 if isinstance(x, float) else None)
    if x.dtype not in dt.FLOATS:
        raise ArgumentError(f"compile_step: parameter {name} has dtype {x.dtype}; parameters "
                            "must be float32 or float64 arrays")
    if not (x.flags.c_contiguous and x.flags.writeable and x.flags.aligned):
        x = np.array(x, order="C")
    return x


def resolve_pipeline(passes, default: Pipeline) -> Pipeline:
    """``passes=``: None (the default pipeline), a Pipeline, or a function editing the
    default (``lambda p: p.insert_after("simplify", my_pass)``)."""
    if passes is None:
        return default
    if isinstance(passes, Pipeline):
        return passes
    if callable(passes):
        out = passes(default)
        if not isinstance(out, Pipeline):
            raise ArgumentError(f"passes=: the function must return a Pipeline, got "
                                f"{type(out).__name__}")
        return out
    raise ArgumentError(f"passes= takes a Pipeline or a function of the default pipeline, "
                        f"got {type(passes).__name__}")


def trace_forward(loss_fn, params, example_batch) -> Graph:
    """The forward graph of ``loss_fn(params, *batch)``: params are inputs of kind
    ``param``, the batch ``data``, the loss the only output."""
    p_leaves, _ = pytree.flatten(params)
    names = leaf_names(loss_fn, (params, *example_batch))
    kinds = ["param"] * len(p_leaves) + ["data"] * (len(names) - len(p_leaves))
    ctx = TraceContext(getattr(loss_fn, "__name__", "step").strip("<>"))
    ctx.rng_input = True          # random ops (dropout) read a (seed, step) input
    _, out_tree = trace_into(ctx, loss_fn, (params, *example_batch), kinds, names)
    fwd = verify(ctx.graph)
    if out_tree.kind != "leaf":
        raise GraphcError(f"compile_step: loss_fn must return a scalar loss, got {out_tree}")
    return fwd


def trace_backward(loss_fn, params, example_batch):
    """Trace ``loss_fn(params, *batch)`` and append its backward pass.

    Returns (forward graph, backward graph with the loss as its only output, the
    parameter inputs of the backward graph, their gradient values).  Used by
    ``graphc.distributed``, which all-reduces the gradients between the backward pass
    and the update (``compile_step`` runs the autodiff pass of its pipeline instead)."""
    fwd = trace_forward(loss_fn, params, example_batch)
    loss, wrt = fwd.outputs[0], fwd.params()
    g, grads, vmap = autodiff.backward(fwd, loss, wrt)
    g.set_outputs([vmap[loss]])
    return fwd, g, [vmap[w] for w in wrt], grads


def build_step_graph(loss_fn, params, optimizer, example_batch, passes=None,
                     backend="llvm", memory_budget=None, remat=None, schedule=True,
                     fuse=True, epilogue=True, check_finite=False, keep=True
                     ) -> tuple[dict, object]:
    """Trace ``loss_fn`` and run the step pipeline on it (see ``graphc.passes.standard``).

    Returns (stages, result): ``stages`` maps ``forward`` and each pass kept to its graph
    (``keep``: True for all); ``result`` is the ``PipelineResult`` (final graph, per-pass
    records, the reports in ``result.ctx.reports``).  With ``check_finite`` the step
    graph has a second output, False when the loss or a gradient is not finite -- and
    then every update writes back the old value (:mod:`graphc.passes.finite_guard`)."""
    fwd = trace_forward(loss_fn, params, example_batch)
    pipe = resolve_pipeline(passes, standard.step_pipeline(backend, memory_budget, remat,
                                                           schedule, fuse))
    ctx = PassContext({"optimizer": optimizer, "memory_budget": memory_budget,
                       "remat": remat, "epilogue": epilogue, "check_finite": check_finite,
                       "schedule_memo": _schedule_memo(backend)})
    result = pipe.run(fwd, ctx, keep=keep, stages={"forward": fwd})
    result.graph.name = f"{fwd.name}_step"
    return result.stages, result


def _schedule_memo(backend):
    """The LLVM backend keeps the memory-schedule search's answers in its disk cache
    (``backends/llvm/native/passmemo.py``), salted with the sources that compute them."""
    if backend != "llvm":
        return None
    from graphc.backends import llvm
    from graphc.backends.llvm.native.passmemo import PassMemo
    return PassMemo(llvm.source_digest())


class CompiledStep:
    """A compiled training step; call it with a batch."""

    def __init__(self, loss_fn, params, optimizer, example_batch, backend="llvm",
                 check_finite=False, memory_budget=None, remat=None, schedule=True,
                 passes=None, seed=0, **options):
        example_batch = tuple(example_batch)
        p_leaves, self._p_tree = pytree.flatten(params)
        names = pytree.paths(self._p_tree, "params")
        p_leaves = [_own_param(x, n) for x, n in zip(p_leaves, names)]
        self._params = live_tree(pytree.unflatten(self._p_tree, p_leaves), "step.params")
        fuse, epilogue = options.pop("fuse", True), options.pop("epilogue", True)
        self.stages, result = build_step_graph(
            loss_fn, self.params, optimizer, example_batch, passes, backend, memory_budget,
            remat, schedule, fuse, epilogue, check_finite)
        #: the pipeline's per-pass records (name, seconds, changed, nodes)
        self.pipeline_records = result.records
        self.memory_info = {k: v for k, v in result.ctx.reports.items()
                            if k in ("remat", "schedule")}
        self.optimizer, self.backend, self.options = optimizer, backend, options
        self.check_finite = check_finite
        self.forward_graph = self.stages["forward"]
        self.graph: Graph = result.graph
        if "optimizer" not in result.ctx.reports:
            raise GraphcError("compile_step: the pipeline has no optimizer pass "
                              f"({', '.join(r.name for r in result.records)})")
        self._state_names = list(result.ctx.reports["optimizer"]["state"])
        by_name = {v.name: v for v in self.graph.inputs}
        missing = [n for n in self._state_names if n not in by_name]
        if missing:
            raise GraphcError(f"compile_step: a pass removed optimizer state inputs {missing}")
        state = optimizer.init_state([by_name[n] for n in self._state_names])
        # dropout's key: (seed, step number), fed every call (graphc.ir.ops.random)
        self.seed = int(seed)
        n_batch = len(pytree.flatten(list(example_batch))[0])
        self._has_rng = len(self.graph.inputs) == (len(p_leaves) + n_batch + 1
                                                   + len(self._state_names))
        self._rng = np.zeros(2, np.int64)
        self._opt_state = LiveDict(zip(self._state_names, state), "step.opt_state")
        b_leaves, self._b_tree = pytree.flatten(list(example_batch))
        self._p_leaves = p_leaves
        self.steps = 0
        self.lr_schedule = getattr(optimizer, "schedule", None)
        from .backends import get_backend
        if backend == "llvm":
            options["fuse"] = False          # fusion ran in the pipeline (or was dropped)
        self._run = get_backend(backend).compile(self.graph, **options)
        _COMPILES[0] += 1

    @property
    def lr(self) -> float:
        """The learning rate of the next update (a runtime input: setting it is free)."""
        if LR_INPUT not in self.opt_state:
            return float(self.optimizer.lr)
        return float(self.opt_state[LR_INPUT])

    @lr.setter
    def lr(self, value):
        if LR_INPUT not in self.opt_state:
            raise ArgumentError(f"step: the optimizer {self.optimizer!r} compiles its learning "
                                "rate as a constant; it cannot be changed")
        value = float(value)
        if not (np.isfinite(value) and value > 0):
            raise ArgumentError(f"step: the learning rate must be a positive number, got "
                                f"{value}")
        self.opt_state[LR_INPUT][...] = value       # in place: the compiled step reads it

    def __call__(self, *batch):
        b_leaves, tree = pytree.flatten(list(batch))
        if tree != self._b_tree:
            raise ArgumentError(f"step: batch structure {tree} differs from the example's "
                                f"{self._b_tree}")
        if self.lr_schedule is not None:
            self.lr = self.lr_schedule(self.steps)
        rng = ()
        if self._has_rng:
            self._rng[:] = (self.seed, self.steps)
            rng = (self._rng,)
        outs = self._run(*self._p_leaves, *b_leaves, *rng, *self.opt_state.values())
        loss = float(outs[0])
        if self.check_finite and not bool(outs[1]):
            what = (f"the loss is {loss}, not finite" if not np.isfinite(loss)
                    else f"a gradient is not finite (the loss is {loss})")
            raise GraphcError(f"step {self.steps + 1}: {what} (check_finite): "
                              "the update was skipped, parameters and optimizer state are "
                              "unchanged; lower the learning rate or check the batch")
        self.steps += 1
        return loss

    @property
    def params(self):
        """The live parameter pytree; ``step.params["w"] = array`` copies into it."""
        return self._params

    @params.setter
    def params(self, new):
        copy_into("step.params", self._params, new)

    @property
    def opt_state(self):
        """The live optimizer state by name; assignment copies in, as for ``params``."""
        return self._opt_state

    @opt_state.setter
    def opt_state(self, new):
        copy_into("step.opt_state", self._opt_state, new)

    def memory_report(self, **options):
        """The memory plan of the step graph (see graphc.passes.memory).  Without
        ``options``, a backend that runs in a planned arena of its own (llvm) reports that
        arena: the plan over its fused graph and kernel levels, ``planned_bytes`` = the
        bytes it allocated.  Otherwise (or with planner ``options``) the step graph is
        planned here."""
        native = getattr(self._run, "memory_report", None)
        rep = native() if native is not None and not options else None
        if rep is not None:
            return rep
        from .passes.memreport import memory_report
        opts = {k: v for k, v in {**self.options, **options}.items() if k != "plan"}
        return memory_report(self.graph, **opts)


_COMPILES = [0]


def compile_count() -> int:
    """Training steps compiled by this process so far (tests count recompiles with it)."""
    return _COMPILES[0]


def compile_step(loss_fn, params, optimizer, example_batch, **options) -> CompiledStep:
    """Compile forward + backward + ``optimizer`` update of ``loss_fn(params, *batch)``
    (with the cyclic garbage collector paused: :mod:`graphc.gcpause`)."""
    with gc_paused():
        return CompiledStep(loss_fn, params, optimizer, example_batch, **options)
