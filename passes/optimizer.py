"""Append the optimizer update to a training graph.

For each parameter the optimizer rule declares its state (momentum buffers, Adam
moments, a step count) -- added as graph inputs of kind ``state`` -- and emits the update
with IR ops (role ``update``).  Each new value is registered in ``graph.updates`` so a
backend writes it back into the parameter's (or state's) own buffer: the step updates
in place and allocates nothing.
"""
from __future__ import annotations

from graphc.ir import Emitter, Graph, Value

from .clipping import clip_by_global_norm

LR_INPUT = "opt.lr"


def append_update(graph: Graph, params: list[Value], grads: list[Value], rule
                  ) -> tuple[Graph, list[Value]]:
    """Copy ``graph`` and append ``rule``'s update of ``params`` given ``grads``.

    ``rule`` provides ``shared_state()`` -> [(name, init)], ``param_state(value)`` ->
    [(name, init)] and ``emit(E, p, g, state, shared) -> (new_p, new_state)`` plus
    ``emit_shared(E, shared) -> new_shared`` (e.g. Adam's step count).  Returns the new
    graph and its state inputs in creation order.

    A rule with ``lr_input = True`` gets its learning rate as a graph input (``opt.lr``,
    0-d, a ``state`` input with no update) passed as ``emit(..., lr=value)``; a rule with
    ``clip_grad_norm`` set has its gradients clipped by their global norm first
    (``passes/clipping.py``).
    """
    g, vmap = graph.clone()
    params, grads = [vmap[p] for p in params], [vmap[x] for x in grads]
    E = Emitter(g, "update")
    state_inputs: list[Value] = []
    lr = None
    if getattr(rule, "lr_input", False) and params:
        # The learning rate as a 0-d input the step never writes: changing it (a
        # schedule) is a store into its buffer, not a new graph and a recompile.
        lr = g.add_input((), params[0].dtype, LR_INPUT, "state")
        state_inputs.append(lr)
    if getattr(rule, "clip_grad_norm", None):
        grads, _ = clip_by_global_norm(E, grads, rule.clip_grad_norm)
    shared = []
    for name, init in rule.shared_state():
        v = g.add_input(init.shape, init.dtype, f"opt.{name}", "state")
        shared.append(v)
        state_inputs.append(v)
    new_shared = rule.emit_shared(E, shared) if shared else []
    for s, ns in zip(shared, new_shared):
        g.updates.append((s, ns))
    for p, grad in zip(params, grads):
        states = []
        for name, init in rule.param_state(p):
            v = g.add_input(p.shape, p.dtype, f"opt.{name}.{p.name}", "state")
            states.append(v)
            state_inputs.append(v)
        if lr is None:
            new_p, new_states = rule.emit(E, p, grad, states, new_shared)
        else:
            p_lr = lr if lr.dtype == p.dtype else E.cast(lr, dtype=p.dtype)
            new_p, new_states = rule.emit(E, p, grad, states, new_shared, lr=p_lr)
        g.updates.append((p, new_p))
        g.updates.extend(zip(states, new_states))
    return g, state_inputs
