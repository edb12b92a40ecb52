"""``gc.compile_step``: the whole training step -- forward, backward, optimizer update --
as one graph, compiled once and run in place.

Graph inputs are the parameters (kind ``param``), the batch (``data``) and the optimizer
state (``state``); the only output is the loss; ``graph.updates`` tells the backend to
write the new parameters and state into their own buffers.  ``stages`` keeps the graph
after each pass so the CLI can show any of them (``--after autodiff``).
"""
from __future__ import annotations

import numpy as np

from . import pytree
from .gcpause import gc_paused
from .ir import ArgumentError, Graph, GraphcError, verify
from .ir import dtypes as dt
from .livetree import LiveDict, copy_into, live_tree
from .passes import autodiff, finite_guard, optimizer as optimizer_pass
from .passes.simplify import simplify
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


def trace_backward(loss_fn, params, example_batch):
    """Trace ``loss_fn(params, *batch)`` and append its backward pass.

    Returns (forward graph, backward graph with the loss as its only output, the
    parameter inputs of the backward graph, their gradient values).  Shared by
    :func:`build_step_graph` and ``graphc.distributed`` (which all-reduces the gradients
    between the backward pass and the update)."""
    p_leaves, p_tree = pytree.flatten(params)
    names = leaf_names(loss_fn, (params, *example_batch))
    kinds = ["param"] * len(p_leaves) + ["data"] * (len(names) - len(p_leaves))
    ctx = TraceContext(getattr(loss_fn, "__name__", "step").strip("<>"))
    tracers, out_tree = trace_into(ctx, loss_fn, (params, *example_batch), kinds, names)
    fwd = verify(ctx.graph)
    if out_tree.kind != "leaf":
        raise GraphcError(f"compile_step: loss_fn must return a scalar loss, got {out_tree}")
    loss = fwd.outputs[0]
    wrt = [t.value for t in tracers[:len(p_leaves)]]
    g, grads, vmap = autodiff.backward(fwd, loss, wrt)
    g.set_outputs([vmap[loss]])
    return fwd, g, [vmap[w] for w in wrt], grads


def build_step_graph(loss_fn, params, optimizer, example_batch, check_finite=False
                     ) -> tuple[dict, list, list]:
    """Trace and transform; returns (stages, param leaves, state input values).

    With ``check_finite`` the step graph has a second output, a bool that is False when
    the loss or a gradient is not finite -- and then every update writes back the old
    value (:mod:`graphc.passes.finite_guard`)."""
    p_leaves = pytree.flatten(params)[0]
    fwd, g, wrt, grads = trace_backward(loss_fn, params, example_batch)
    loss = g.outputs[0]
    stages = {"forward": fwd}
    grad_view, gmap = g.clone()          # loss and gradients as outputs: what autodiff made
    grad_view.set_outputs([gmap[loss]] + [gmap[x] for x in grads])
    grad_view.remove_dead()
    stages["autodiff"] = verify(grad_view)
    if check_finite:        # the flag rides along as an output through append_update's copy
        g.set_outputs([loss, finite_guard.all_finite(g, [loss, *grads])])
    step, state_inputs = optimizer_pass.append_update(g, wrt, grads, optimizer)
    if check_finite:
        finite_guard.select_updates(step, step.outputs[1])
    step.name = f"{fwd.name}_step"
    step.remove_dead()
    stages["optimizer"] = verify(step)
    stages["simplify"] = verify(simplify(step)[0])
    return stages, p_leaves, state_inputs


class CompiledStep:
    """A compiled training step; call it with a batch."""

    def __init__(self, loss_fn, params, optimizer, example_batch, backend="llvm",
                 check_finite=False, memory_budget=None, remat=None, schedule=True,
                 **options):
        example_batch = tuple(example_batch)
        p_leaves, self._p_tree = pytree.flatten(params)
        names = pytree.paths(self._p_tree, "params")
        p_leaves = [_own_param(x, n) for x, n in zip(p_leaves, names)]
        self._params = live_tree(pytree.unflatten(self._p_tree, p_leaves), "step.params")
        self.stages, _, state_inputs = build_step_graph(loss_fn, self.params, optimizer,
                                                        example_batch, check_finite)
        from .passes.memory import memory_passes      # remat and schedule stages
        self.memory_info: dict = {}
        self.stages.update(memory_passes(list(self.stages.values())[-1], memory_budget, remat,
                                         schedule, self.memory_info))
        self.optimizer, self.backend, self.options = optimizer, backend, options
        self.check_finite = check_finite
        self.forward_graph = self.stages["forward"]
        self.graph: Graph = list(self.stages.values())[-1]
        self._state_names = [v.name for v in state_inputs]
        state = optimizer.init_state(state_inputs)
        self._opt_state = LiveDict(zip(self._state_names, state), "step.opt_state")
        b_leaves, self._b_tree = pytree.flatten(list(example_batch))
        self._p_leaves = p_leaves
        self.steps = 0
        from .backends import get_backend
        self._run = get_backend(backend).compile(self.graph, **options)

    def __call__(self, *batch):
        b_leaves, tree = pytree.flatten(list(batch))
        if tree != self._b_tree:
            raise ArgumentError(f"step: batch structure {tree} differs from the example's "
                                f"{self._b_tree}")
        outs = self._run(*self._p_leaves, *b_leaves, *self.opt_state.values())
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
        from .passes import memory
        opts = {k: v for k, v in {**self.options, **options}.items() if k != "plan"}
        return memory.memory_report(self.graph, **opts)


def compile_step(loss_fn, params, optimizer, example_batch, **options) -> CompiledStep:
    """Compile forward + backward + ``optimizer`` update of ``loss_fn(params, *batch)``
    (with the cyclic garbage collector paused: :mod:`graphc.gcpause`)."""
    with gc_paused():
        return CompiledStep(loss_fn, params, optimizer, example_batch, **options)
