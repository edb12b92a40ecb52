"""The numpy reference backend: an interpreter that runs a graph node by node.

It is the oracle: every other backend and every pass is tested against it.  One table,
``IMPLS``, maps each op to a numpy function of (attrs, *operand arrays); a test fails
when an op in the registry has no entry.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import ArgumentError, Graph, GraphcError, get_op
from graphc.ir import dtypes as dt
from graphc.ir.ops.checks import check_range

from . import numpy_attention, numpy_window


def _sigmoid(a, x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _check_index(a, x):
    check_range(x, a["limit"], a["what"])
    return x


def _unslice(a, g):
    out = np.zeros(a["shape"], g.dtype)
    out[tuple(slice(*t) for t in zip(a["starts"], a["stops"], a["steps"]))] = g
    return out


def _check_indices(op, idx, limit):
    """Indices outside [0, limit) are an error, never an out-of-bounds read."""
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= limit):
        bad = int(np.flatnonzero((idx < 0) | (idx >= limit))[0])
        pos = tuple(int(i) for i in np.unravel_index(bad, idx.shape))
        raise GraphcError(f"{op}: index {idx.reshape(-1)[bad]} at position {pos} is out of "
                          f"range [0, {limit})")


def _take(a, x, idx):
    _check_indices("take", idx, x.shape[a["axis"]])
    return np.take(x, idx, axis=a["axis"])


def _take_add(a, g, idx):
    ax, k = a["axis"], idx.ndim
    _check_indices("take_add", idx, a["size"])
    out = np.zeros(g.shape[:ax] + (a["size"],) + g.shape[ax + k:], g.dtype)
    rows = g.reshape(g.shape[:ax] + (-1,) + g.shape[ax + k:])
    np.add.at(out, (slice(None),) * ax + (idx.reshape(-1),), rows)
    return out


def _erf(a, x):
    from scipy.special import erf      # scikit-learn's dependency; correctly rounded-ish
    return erf(x.astype(np.float64)).astype(x.dtype)


def _philox(a, key):
    from graphc.ir.ops.random import uniform
    return uniform(key[0], key[1], a["salt"], a["shape"], a["dtype"])


IMPLS = {
    "take": _take,
    "take_add": _take_add,
    "erf": _erf,
    "philox_uniform": _philox,
    "add": lambda a, x, y: x + y,
    "sub": lambda a, x, y: x - y,
    "mul": lambda a, x, y: x * y,
    "div": lambda a, x, y: x / y if x.dtype.kind == "f" else x // y,
    "pow": lambda a, x, y: np.power(x, y),
    "floor_divide": lambda a, x, y: np.floor_divide(x, y),
    "remainder": lambda a, x, y: np.remainder(x, y),
    "maximum": lambda a, x, y: np.maximum(x, y),
    "minimum": lambda a, x, y: np.minimum(x, y),
    "neg": lambda a, x: -x,
    "exp": lambda a, x: np.exp(x),
    "log": lambda a, x: np.log(x),
    "log1p": lambda a, x: np.log1p(x),
    "tanh": lambda a, x: np.tanh(x),
    "sigmoid": _sigmoid,
    "relu": lambda a, x: np.maximum(x, x.dtype.type(0)),
    "sqrt": lambda a, x: np.sqrt(x),
    "abs": lambda a, x: np.abs(x),
    "sign": lambda a, x: np.sign(x),
    "lt": lambda a, x, y: x < y,
    "le": lambda a, x, y: x <= y,
    "gt": lambda a, x, y: x > y,
    "ge": lambda a, x, y: x >= y,
    "eq": lambda a, x, y: x == y,
    "ne": lambda a, x, y: x != y,
    "logical_and": lambda a, x, y: x & y,
    "logical_or": lambda a, x, y: x | y,
    "logical_not": lambda a, x: ~x,
    "where": lambda a, c, x, y: np.where(c, x, y),
    "cast": lambda a, x: x.astype(a["dtype"]),
    "stop_gradient": lambda a, x: x,
    "check_index": _check_index,
    "matmul": lambda a, x, y: np.matmul(x, y),
    "sum": lambda a, x: np.sum(x, axis=a["axes"], keepdims=a["keepdims"], dtype=x.dtype),
    "max": lambda a, x: np.max(x, axis=a["axes"], keepdims=a["keepdims"]),
    "reshape": lambda a, x: np.reshape(x, a["shape"]),
    "transpose": lambda a, x: np.transpose(x, a["perm"]),
    "broadcast_to": lambda a, x: np.broadcast_to(x, a["shape"]),
    "slice": lambda a, x: x[tuple(slice(*t) for t in zip(a["starts"], a["stops"], a["steps"]))],
    "unslice": _unslice,
    "concatenate": lambda a, *xs: np.concatenate(xs, axis=a["axis"]),
    "constant": lambda a: a["value"],
    **numpy_window.IMPLS,
    **numpy_attention.IMPLS,
}


def check_inputs(graph: Graph, args) -> list[np.ndarray]:
    """Arrays for ``graph.inputs``: right count, shapes and dtypes, else ArgumentError."""
    if len(args) != len(graph.inputs):
        raise ArgumentError(f"{graph.name}: expected {len(graph.inputs)} inputs, got {len(args)}")
    out = []
    for v, a in zip(graph.inputs, args):
        if not isinstance(a, (np.ndarray, np.generic, int, float, bool)):
            raise ArgumentError(f"{graph.name}: input %{v.name} must be an array of {v.type}, "
                                f"got {type(a).__name__}")
        arr = np.asarray(a)
        if arr.shape != v.shape:
            raise ArgumentError(f"{graph.name}: input %{v.name} has shape {arr.shape}, "
                                f"expected {v.shape}")
        if arr.dtype != v.dtype:
            widened = dt.unsigned_to_signed(arr, v.dtype, f"{graph.name}: input %{v.name}")
            if widened is not None:
                arr = widened
            elif np.can_cast(arr.dtype, v.dtype, "same_kind") and arr.dtype.kind == v.dtype.kind:
                arr = arr.astype(v.dtype)
            else:
                raise ArgumentError(f"{graph.name}: input %{v.name} has dtype {arr.dtype}, "
                                    f"expected {v.dtype}")
        out.append(arr)
    return out


def run(graph: Graph, args, apply_updates=True) -> list[np.ndarray]:
    """Execute ``graph`` on ``args``; returns its outputs.

    With ``apply_updates``, each ``(input, new)`` pair in ``graph.updates`` is written
    back into the caller's input array in place (how optimizer steps update params).
    """
    arrays = check_inputs(graph, args)
    env = dict(zip(graph.inputs, arrays))
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            if n.op == "input":
                continue
            if n.op == "check_index":       # says where: the node knows the user's line
                check_range(env[n.inputs[0]], n.attrs["limit"], n.attrs["what"], n.source)
                env[n.output] = env[n.inputs[0]]
                continue
            out = IMPLS[n.op](n.attrs, *[env[x] for x in n.inputs])
            env[n.output] = np.asarray(out, dtype=n.output.dtype)
    outputs = [env[v] for v in graph.outputs]
    if apply_updates and graph.updates:
        # Outputs may be views of inputs about to be overwritten: snapshot them first.
        outputs = [np.array(o) for o in outputs]
        new = [np.array(env[b]) for _, b in graph.updates]   # read all before writing any
        for (a, _), val in zip(graph.updates, new):
            target = args[graph.inputs.index(a)]
            if not isinstance(target, np.ndarray) or not target.flags.writeable:
                raise ArgumentError(f"{graph.name}: state input %{a.name} must be a writeable "
                                    "numpy array to be updated in place")
            target[...] = val
    return outputs


def arena_view(arena: np.ndarray, offset: int, v, like: np.ndarray | None = None) -> np.ndarray:
    """The planned home of value ``v``: its shape and dtype at byte ``offset`` of ``arena``.

    With ``like`` (the array ``run`` would hold, e.g. a transposed or broadcast view) the
    home has the same strides when they fit in ``v.nbytes``, so later ops see the same
    layout as in ``run`` (numpy's sums and BLAS calls round differently per layout).
    """
    region = arena[offset:offset + v.nbytes].view(v.dtype)
    if like is not None and not like.flags.c_contiguous and like.ndim and like.size:
        st, item = like.strides, v.dtype.itemsize
        if all(s >= 0 and s % item == 0 for s in st) and \
                sum((d - 1) * s for d, s in zip(like.shape, st)) + item <= v.nbytes:
            return np.lib.stride_tricks.as_strided(region, shape=v.shape, strides=st)
    return region.reshape(v.shape)


def run_planned(graph: Graph, args, plan, arena: np.ndarray | None = None) -> list[np.ndarray]:
    """Execute ``graph`` inside one arena laid out by ``plan`` (a ``passes.memory.MemoryPlan``).

    Every planned value is written into its view of one uint8 arena, views alias their
    operand, ``update`` values are written straight into their parameter/state input,
    the rest of ``graph.updates`` is copied after the last node.  A wrong plan (two live
    values sharing bytes) therefore gives wrong numbers -- how plans are tested without LLVM.
    Updates are always applied, as by ``run``.
    """
    if plan.schedule != [n.output.name for n in graph.nodes]:
        raise ArgumentError(f"{graph.name}: the memory plan was made for another schedule")
    arrays = check_inputs(graph, args)
    if arena is None:
        raw = np.zeros(plan.arena_bytes + plan.alignment, np.uint8)
        skip = (-raw.ctypes.data) % plan.alignment
        arena = raw[skip:skip + plan.arena_bytes]
    env = dict(zip(graph.inputs, arrays))
    targets = {a.name: args[i] for i, a in enumerate(graph.inputs)}
    kinds, offsets = plan.kinds, plan.offsets
    results = {v: np.array(env[v]) for v in graph.outputs if v in env}   # inputs as given
    # A fusion group (attrs["group"]) runs as one kernel at its last member: run its
    # members (and what reads them) there too, as the plan assumes.
    from graphc.passes.liveness import exec_positions
    pos = exec_positions(graph)
    order = sorted(graph.nodes, key=lambda n: pos[n])      # stable: ties keep the schedule
    with np.errstate(all="ignore"):
        for n in order:
            v = n.output
            if n.op == "input":
                continue
            kind = kinds[v.name]
            out = IMPLS[n.op](n.attrs, *[env[x] for x in n.inputs])
            if kind == "view":
                env[v] = out if isinstance(out, np.ndarray) and out.dtype == v.dtype \
                    else np.asarray(out, dtype=v.dtype)
                continue
            out = np.asarray(out, dtype=v.dtype)
            home = plan.homes.get(v.name)
            if home is not None:                   # written into an input's own memory
                dest = targets[home]
                if not isinstance(dest, np.ndarray) or not dest.flags.writeable \
                        or not dest.flags.c_contiguous or dest.nbytes != v.nbytes:
                    raise ArgumentError(f"{graph.name}: state input %{home} must be a "
                                        "writeable contiguous numpy array of its type to be "
                                        "updated in place")
                dest = dest.view(v.dtype).reshape(v.shape)
            elif kind in ("arena", "inplace"):
                dest = arena_view(arena, offsets[v.name], v, out)
            elif kind == "output":                 # own memory, same layout as in run
                dest = arena_view(np.empty(v.nbytes, np.uint8), 0, v, out)
                results[v] = dest
            elif kind == "fused":                  # a register value: a snapshot, no arena
                env[v] = arena_view(np.empty(v.nbytes, np.uint8), 0, v, out)
                env[v][...] = out
                continue
            else:                                  # constant
                env[v] = out
                continue
            dest[...] = out
            env[v] = dest
    byname = {v.name: v for v in graph.values()}
    new = [np.array(env[byname[b]]) for _, b in plan.update_copies]   # read all, then write
    for (a, _), val in zip(plan.update_copies, new):
        target = targets[a]
        if not isinstance(target, np.ndarray) or not target.flags.writeable:
            raise ArgumentError(f"{graph.name}: state input %{a} must be a writeable "
                                "numpy array to be updated in place")
        target[...] = val
    return [results[v] if v in results else np.array(env[v]) for v in graph.outputs]


def missing_lowerings() -> list[str]:
    """Ops in the registry this backend cannot run (a test asserts the list is empty)."""
    from graphc.ir import all_ops
    return [name for name in all_ops() if name != "input" and name not in IMPLS]


def evaluate_outputs(graph: Graph, args: list) -> list:
    """Outputs of ``graph`` on ``args``, updates not applied (for ``guard``)."""
    return run(graph, args, apply_updates=False)


def compile(graph: Graph, plan=None, threads=None, **native_options):
    """The backend interface shared with llvm: ``compile(graph)(*arrays) -> outputs``.

    With a memory ``plan`` (``passes.memory.MemoryPlan``), runs in one arena (``run_planned``).
    ``threads`` and the native backends' code-generation options (``fuse``, ``profile``,
    ...) are accepted so one call site can switch backends; the interpreter ignores them.
    """
    for n in graph.nodes:
        get_op(n.op)
    from .guard import split_checks
    checked, guard = split_checks(graph, evaluate_outputs)
    if plan is not None:
        checked = graph     # the plan was made for this graph: run its checks in place
        run_fn = lambda *args: run_planned(graph, list(args), plan)  # noqa: E731
    else:
        run_fn = lambda *args: run(checked, list(args))  # noqa: E731
    if guard is None:
        return run_fn

    def guarded(*args):
        guard(args)
        return run_fn(*args)
    return guarded
