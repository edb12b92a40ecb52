"""Graphs for the memory-planning tests: training steps (MLP, logistic regression, a deep
MLP) built with gc.compile_step on the numpy backend, random IR graphs drawn with
hypothesis, and helpers to run a graph with and without a plan."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import graphc as gc
from graphc.backends import numpy_backend as nb
from graphc.ir import Emitter, Graph
from graphc.passes.memory import plan_memory


# ---- training steps -------------------------------------------------------------------------
def mlp_problem(sizes=(784, 512, 256, 10), batch=128, seed=0, act=None):
    act = act or gc.relu
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        params[f"W{i:02d}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        params[f"b{i:02d}"] = (0.01 * rng.standard_normal(b)).astype(np.float32)
    n = len(sizes) - 1

    def loss(p, x, y):
        h = x
        for i in range(n):
            h = h @ p[f"W{i:02d}"] + p[f"b{i:02d}"]
            if i < n - 1:
                h = act(h)
        return gc.nn.cross_entropy(h, y)

    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return loss, params, x, y


def mlp_step(sizes=(784, 512, 256, 10), batch=128, **options):
    loss, params, x, y = mlp_problem(sizes, batch)
    step = gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x, y),
                           backend="numpy", **options)
    return step, (x, y)


def logreg_step(features=20, batch=32, **options):
    rng = np.random.default_rng(3)
    params = {"w": np.zeros((features, 1), np.float32), "b": np.zeros(1, np.float32)}

    def loss(p, x, t):
        z = (x @ p["w"] + p["b"])[:, 0]
        return gc.nn.binary_cross_entropy_with_logits(z, t)

    x = rng.standard_normal((batch, features)).astype(np.float32)
    t = (rng.random(batch) < 0.5).astype(np.float32)
    step = gc.compile_step(loss, params, gc.optim.Adam(0.05), (x, t), backend="numpy",
                           **options)
    return step, (x, t)


def step_args(step, batch):
    """Fresh copies of the arrays a step graph takes: params, batch, optimizer state."""
    leaves = [np.array(p) for p in step._p_leaves]
    return leaves + [np.array(b) for b in batch] + [np.array(s) for s in
                                                    step.opt_state.values()]


def random_args(graph: Graph, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for v in graph.inputs:
        if v.dtype.kind == "f":
            out.append((rng.standard_normal(v.shape)).astype(v.dtype))
        elif v.dtype.kind == "b":
            out.append(rng.random(v.shape) < 0.5)
        else:
            out.append(rng.integers(0, 10, v.shape).astype(v.dtype))
    return out


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def run_both(graph: Graph, args, plan=None, steps=2, **plan_options):
    """Run ``graph`` ``steps`` times with ``run`` and with ``run_planned``; return
    (outputs, args) of each so the caller can compare them bit for bit."""
    plan = plan or plan_memory(graph, **plan_options)
    a1 = [np.array(a) for a in args]
    a2 = [np.array(a) for a in args]
    for _ in range(steps):
        # nb.run may return a view of an input it then updates in place: take the outputs
        # from a run without updates, then run again to apply them.
        o1 = [np.array(o) for o in nb.run(graph, a1, apply_updates=False)]
        nb.run(graph, a1)
        o2 = nb.run_planned(graph, a2, plan)
    return (o1, a1), (o2, a2)


def assert_same_run(graph, args, plan=None, steps=2, **plan_options):
    (o1, a1), (o2, a2) = run_both(graph, args, plan, steps, **plan_options)
    for x, y in zip(o1, o2):
        assert same_bits(x, y), "outputs differ with the plan"
    for v, x, y in zip(graph.inputs, a1, a2):
        assert same_bits(x, y), f"updated input %{v.name} differs with the plan"


# ---- random graphs ----------------------------------------------------------------------------
SHAPES = [(2, 3), (3, 2), (6,), (3, 3), (2, 3, 2), (4,), ()]
RESHAPES = {6: [(2, 3), (3, 2), (6,), (1, 6)], 9: [(3, 3), (9,)], 12: [(2, 3, 2), (12,), (4, 3)],
            4: [(4,), (2, 2)], 1: [()], 2: [(2,), (1, 2)], 3: [(3,), (3, 1)]}
ROLES = ["forward", "forward", "backward", "update"]


@st.composite
def random_graphs(draw, max_nodes=30):
    """A random graph of float32 values: elementwise, reductions, matmuls, views,
    constants; random roles, outputs and in-place updates of its param/state inputs."""
    g = Graph("random")
    vals = []
    for i in range(draw(st.integers(1, 4))):
        shape = draw(st.sampled_from(SHAPES[:6]))
        kind = draw(st.sampled_from(["param", "data", "state"]))
        vals.append(g.add_input(shape, np.float32, f"in{i}", kind))
    E = Emitter(g)
    for _ in range(draw(st.integers(1, max_nodes))):
        E.role = draw(st.sampled_from(ROLES))
        op = draw(st.sampled_from(["unary", "unary", "binary", "binary", "matmul", "sum",
                                   "reshape", "transpose", "broadcast", "stop", "const",
                                   "where"]))
        x = draw(st.sampled_from(vals))
        if op == "unary":
            v = getattr(E, draw(st.sampled_from(["neg", "tanh", "relu", "abs", "sigmoid"])))(x)
        elif op == "binary":
            same = [y for y in vals if y.type == x.type]
            y = draw(st.sampled_from(same))
            v = getattr(E, draw(st.sampled_from(["add", "mul", "sub", "maximum"])))(x, y)
        elif op == "matmul":
            cands = [y for y in vals if x.ndim == 2 and y.ndim == 2 and y.shape[0] == x.shape[1]]
            if not cands:
                continue
            v = E.matmul(x, draw(st.sampled_from(cands)))
        elif op == "sum":
            if x.ndim == 0:
                continue
            axes = draw(st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim,
                                 unique=True))
            v = E.sum(x, axes=tuple(axes), keepdims=draw(st.booleans()))
        elif op == "reshape":
            opts = RESHAPES.get(x.size, [])
            if not opts:
                continue
            v = E.op("reshape", x, shape=draw(st.sampled_from(opts)))
        elif op == "transpose":
            if x.ndim < 2:
                continue
            v = E.transpose(x, perm=tuple(reversed(range(x.ndim))))
        elif op == "broadcast":
            v = E.broadcast_to(x, shape=(2,) + x.shape)
        elif op == "stop":
            v = E.stop_gradient(x)
        elif op == "const":
            v = E.const(draw(st.floats(-2, 2, width=32)), np.float32,
                        draw(st.sampled_from(SHAPES)))
        else:
            c = E.gt(x, E.zeros_like(x))
            v = E.where(c, x, E.neg(x))
        vals.append(v)
    computed = [v for v in vals if v.node.op != "input"] or vals
    outs = draw(st.lists(st.sampled_from(computed), min_size=1, max_size=3, unique=True))
    g.set_outputs(outs)
    for a in g.inputs:
        if a.node.attrs["kind"] in ("param", "state") and draw(st.booleans()):
            same = [v for v in computed if v.type == a.type]
            if same:
                g.updates.append((a, draw(st.sampled_from(same))))
    return g
