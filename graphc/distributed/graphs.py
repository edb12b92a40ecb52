"""The training step cut in two at the gradients, for data parallel training.

``compile_step`` builds forward + backward + update as one graph.  Data parallel needs
the gradients of every rank summed between backward and update, so here the same
pipeline makes two graphs:

* the **gradient graph**: forward + backward; inputs params, batch and one gradient
  buffer per parameter (kind ``state``); its ``updates`` write each gradient into its
  buffer, which the caller lays out contiguously (:class:`.region.GradRegion`); output:
  the loss.  Parameters are only read.
* the **update graph**: inputs params, gradients (``data``) and the optimizer state;
  scales the summed gradients by ``1/world`` (the mean over the global batch) and
  appends the optimizer's update exactly as ``compile_step`` does
  (``passes.optimizer.append_update``); no outputs, only in-place updates.  (A
  gradient-norm output was tried and cost 0.5 ms per step on MLP 784-512-256-10: a
  float sum is one serial chain of adds.)

Both run the memory passes (``remat``/``schedule``) like ``compile_step``.

Random ops (dropout) make the gradient graph read an ``int64[2]`` key input, right after
the batch, like ``compile_step``'s; :func:`dropout_key` is what each rank feeds it.
"""
from __future__ import annotations

from ..ir import Emitter, Graph, verify
from ..passes import optimizer as optimizer_pass
from ..passes.standard import memory_pipeline
from ..step import trace_backward


def _memory(graph: Graph, options: dict) -> Graph:
    pipe = memory_pipeline(options.pop("memory_budget", None), options.pop("remat", None),
                           options.pop("schedule", True))
    return pipe.run(graph).graph


def gradient_graph(loss_fn, params, example_batch, options: dict) -> tuple[dict, Graph]:
    """(stages, graph): forward + backward writing gradients into buffer inputs."""
    fwd, g, wrt, grads = trace_backward(loss_fn, params, example_batch)
    bufs = [g.add_input(w.shape, w.dtype, f"grad.{w.name}", "state") for w in wrt]
    g.updates.extend(zip(bufs, grads))
    g.name = f"{fwd.name}_grad"
    g.remove_dead()
    stages = {"forward": fwd, "autodiff": verify(g)}
    stages["memory"] = verify(_memory(g, options))
    return stages, stages["memory"]


def rng_input_index(graph: Graph) -> int | None:
    """Position of the gradient graph's dropout key input (``rng``), or None."""
    for i, v in enumerate(graph.inputs):
        if v.name == "rng" and v.shape == (2,) and v.dtype == "int64":
            return i
    return None


def dropout_key(out, seed: int, step: int, stream: int):
    """Fill ``out`` (int64[2]) with the dropout key of ``step`` on random stream
    ``stream`` (sync: the rank; async: the worker's slot): ``(seed, step + stream *
    2**32)``.  The Philox counter of element i is ``(i, step)`` as 2 + 2 32-bit words,
    so stream r's numbers are stream 0's counters with the high step word r: distinct
    for every rank, step (< 2**32) and element, a pure function of them (runs repeat
    bit-identically), and stream 0 is exactly the one-process ``compile_step(seed=)``
    sequence."""
    out[0] = seed
    out[1] = int(step) + (int(stream) << 32)
    return out


def update_graph(param_types, optimizer, world: int, parts: int = 1
                 ) -> tuple[Graph, list]:
    """(graph, state inputs): ``optimizer``'s update from gradients summed over
    ``world`` ranks.  ``param_types``: [(shape, dtype, name)] in parameter order.

    ``parts`` > 1: the graph takes ``parts`` gradients per parameter (one set per rank,
    rank after rank: the slots of a shared-memory window) and sums them itself, left to
    right, inside the update's fused loop."""
    g = Graph("dp_update")
    ps = [g.add_input(s, d, n, "param") for s, d, n in param_types]
    sets = [[g.add_input(s, d, f"grad.{n}" if parts == 1 else f"grad{r}.{n}", "data")
             for s, d, n in param_types] for r in range(parts)]
    E = Emitter(g, "update")
    gs = sets[0]
    for more in sets[1:]:
        gs = [E.add(a, b) for a, b in zip(gs, more)]
    if world > 1:
        gs = [E.mul(x, E.const(1.0 / world, x.dtype, x.shape)) for x in gs]
    step, state_inputs = optimizer_pass.append_update(g, ps, gs, optimizer)
    step.set_outputs([])
    step.remove_dead()
    return verify(step), state_inputs
