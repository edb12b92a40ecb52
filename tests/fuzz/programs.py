"""Random well-typed array programs for the differential fuzzer.

A :class:`Program` is a list of steps over a pool of values (the inputs first).  Each step
is a tuple ``(op, args, params)`` naming pool indices; :meth:`Program.run` replays it with
graphc's public array functions, so the same program traces on tracers (inside
``gc.value_and_grad``, ``gc.jvp``, ``compile_step``) and runs on every backend.  The
generator tracks each value's shape and dtype, so every program is well typed by
construction: elementwise chains, broadcasting in every direction, reductions over any
axes with and without keepdims, every view op, matmul in every transpose combination,
concatenate/stack, where, comparisons, casts and constants of every shape, // and %;
gathers (gc.take / t[idx] with int32, int64 and uint8 indices), layer_norm, attention
(causal or not, broadcast batch dims), batched matmul, erf, gelu and dropout; conv2d (any kernel,
stride, padding, dilation and groups, with or without bias), max/avg pooling (overlapping
and padded windows or not) and flatten, on any value reshaped to NCHW.

Kinks (relu, abs, max, where, comparisons) are allowed: both backends run the same graph,
so they agree wherever the values they compare agree; random normal inputs do not sit on
ties except between copies of one value, which move together.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import graphc as gc

FLOATS = (np.float32, np.float64)

UNARY = {
    "tanh": gc.tanh,
    "sigmoid": gc.sigmoid,
    "neg": gc.negative,
    "abs": gc.abs,
    "relu": gc.relu,
    "square": gc.square,
    "exp_tanh": lambda v: gc.exp(gc.tanh(v)),
    "log_1p_sq": lambda v: gc.log(v * v + 1.0),
    "log1p_sq": lambda v: gc.log1p(v * v),
    "sqrt_1p_sq": lambda v: gc.sqrt(v * v + 1.0),
    "rational": lambda v: v / (1.0 + v * v),
    "scale_shift": lambda v: 0.5 * v - 0.25,
    "sign_mul": lambda v: gc.sign(v) * v,
    "stop_gradient_mix": lambda v: v + gc.stop_gradient(v) * 0.5,
    "clip": lambda v: gc.clip(v, -0.5, 0.75),
    "cube": lambda v: v ** 3,
    "erf": gc.erf,
    "gelu": gc.nn.gelu,
    "gelu_tanh": lambda v: gc.nn.gelu(v, approximate="tanh"),
    "dropout": lambda v: gc.nn.dropout(v, 0.3),
}

BINARY = {
    "add": gc.add,
    "sub": gc.subtract,
    "mul": gc.multiply,
    "div": lambda a, b: a / (1.5 + b * b),
    "pow": lambda a, b: (a * a + 1.0) ** gc.tanh(b),
    "maximum": gc.maximum,
    "minimum": gc.minimum,
}

# numpy's // and % (floor_divide, remainder), divisors kept away from zero, one of each
# sign.  They jump where the quotient is whole: a dividend or divisor that the backends
# round differently (a long matmul, a reduction) would jump on one backend only, so the
# generator feeds them values that are bit-identical on both in large programs.
DIVMOD = {
    "floor_divide": lambda a, b: (3.0 * a) // (1.5 + b * b),
    "remainder": lambda a, b: (3.0 * a) % (1.5 + b * b),
    "remainder_neg": lambda a, b: a % -(0.75 + b * b),
}

COMPARE = {"lt": gc.less, "le": gc.less_equal, "gt": gc.greater, "ge": gc.greater_equal,
           "eq": gc.equal, "ne": gc.not_equal}

REDUCE = {
    "sum": gc.sum,
    "mean": gc.mean,
    "max": gc.max,
    "min": gc.min,
    "logsumexp": gc.logsumexp,
}


@dataclass
class Var:
    shape: tuple
    dtype: object          # numpy scalar type; np.bool_ for masks


@dataclass
class Program:
    inputs: list                            # Var per input
    steps: list = field(default_factory=list)
    pool: list = field(default_factory=list)   # Var per pool entry (inputs first)
    consts: list = field(default_factory=list)  # numpy arrays, by index
    outputs: list = field(default_factory=list)  # pool indices returned
    seed: int = 0

    # ---- replay ----------------------------------------------------------------------------
    def run(self, *xs):
        """The program's outputs (a tuple) on ``xs`` -- tracers or arrays."""
        vals = list(xs)
        for op, args, params in self.steps:
            vals.append(_apply(op, [vals[i] for i in args], params, self.consts))
        return tuple(vals[i] for i in self.outputs)

    def loss(self, *xs):
        """A scalar of every output: sum(out * weight), weights fixed per program."""
        total = None
        for j, o in enumerate(self.run(*xs)):
            w = self.consts[self.loss_weights[j]]
            term = gc.sum(gc.cast(o, w.dtype) * w) if self.pool[self.outputs[j]].dtype \
                is np.bool_ else gc.sum(o * w)
            total = term if total is None else total + term
        return total

    def describe(self) -> str:
        lines = [f"# program seed {self.seed}: inputs "
                 + ", ".join(f"x{i}: {np.dtype(v.dtype).name}{list(v.shape)}"
                             for i, v in enumerate(self.inputs))]
        n = len(self.inputs)
        for k, (op, args, params) in enumerate(self.steps):
            lines.append(f"v{n + k} = {op}({', '.join(f'v{a}' for a in args)}"
                         f"{', ' if params else ''}{_fmt(params)})  "
                         f"# {np.dtype(self.pool[n + k].dtype).name}{list(self.pool[n + k].shape)}")
        lines.append(f"return {', '.join(f'v{i}' for i in self.outputs)}")
        return "\n".join(lines)

    def sample_inputs(self, rng):
        return [_sample(rng, v) for v in self.inputs]


def _fmt(params):
    return ", ".join(f"{k}={v!r}" for k, v in params.items() if k != "const")


def _sample(rng, var: Var):
    if var.dtype is np.bool_:
        return rng.random(var.shape) < 0.5
    return rng.normal(size=var.shape).astype(var.dtype)


def _apply(op, xs, p, consts):
    if op in UNARY:
        return UNARY[op](xs[0])
    if op in BINARY:
        return BINARY[op](xs[0], xs[1])
    if op in DIVMOD:
        return DIVMOD[op](xs[0], xs[1])
    if op in COMPARE:
        return COMPARE[op](xs[0], xs[1])
    if op in REDUCE:
        return REDUCE[op](xs[0], axis=p["axis"], keepdims=p["keepdims"])
    if op == "const_binary":
        c = consts[p["const"]]
        return xs[0] * c + c if p["side"] == "right" else c * xs[0] - c * c
    if op == "where":
        return gc.where(xs[0], xs[1], xs[2])
    if op == "mask_mul":
        return gc.cast(xs[0], xs[1].dtype) * xs[1]
    if op == "logical":
        return {"and": gc.logical_and, "or": gc.logical_or}[p["fn"]](xs[0], xs[1])
    if op == "logical_not":
        return gc.logical_not(xs[0])
    if op == "cast":
        return gc.cast(xs[0], p["dtype"])
    if op == "reshape":
        return gc.reshape(xs[0], p["shape"])
    if op == "transpose":
        return gc.transpose(xs[0], p["perm"])
    if op == "broadcast_to":
        return gc.broadcast_to(xs[0], p["shape"])
    if op == "expand_dims":
        return gc.expand_dims(xs[0], p["axis"])
    if op == "squeeze":
        return gc.squeeze(xs[0], p["axis"])
    if op == "slice":
        return xs[0][tuple(slice(*s) for s in p["slices"])]
    if op == "concatenate":
        return gc.concatenate(xs, axis=p["axis"])
    if op == "stack":
        return gc.stack(xs, axis=p["axis"])
    if op == "take":
        idx = consts[p["const"]]
        return xs[0][idx] if p["axis"] == 0 and p["getitem"] else \
            gc.take(xs[0], idx, axis=p["axis"])
    if op == "layer_norm":
        w, b = (consts[p[k]] if p[k] is not None else None for k in ("w", "b"))
        return gc.nn.layer_norm(xs[0], w, b)
    if op == "attention":
        return gc.nn.scaled_dot_product_attention(xs[0], xs[1], xs[2],
                                                  is_causal=p["causal"])
    if op == "conv2d":
        return gc.nn.conv2d(xs[0], xs[1], xs[2] if len(xs) > 2 else None,
                            stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
                            groups=p["groups"])
    if op in ("max_pool2d", "avg_pool2d"):
        pool = gc.nn.max_pool2d if op == "max_pool2d" else gc.nn.avg_pool2d
        return pool(xs[0], p["kernel"], stride=p["stride"], padding=p["padding"])
    if op == "flatten":
        return gc.nn.flatten(xs[0])
    if op == "matmul":
        a, b = xs
        if p["ta"]:
            a = gc.transpose(a)
        if p["tb"]:
            b = gc.transpose(b)
        return a @ b
    raise AssertionError(op)


# ---- generation ---------------------------------------------------------------------------------
class _Gen:
    def __init__(self, rng, dtype, large: bool):
        self.rng, self.dtype, self.large = rng, dtype, large
        self.prog = Program([])

    def dims(self, rank):
        if self.large:   # big enough that loop kernels and GEMMs are split over threads
            big = [int(self.rng.integers(96, 140)), int(self.rng.integers(60, 130))]
            return tuple(big[:rank]) if rank <= 2 else (int(self.rng.integers(2, 4)),
                                                        *big)
        return tuple(int(self.rng.choice([1, 2, 3, 4, 5, 7])) for _ in range(rank))

    def const(self, shape, dtype=None):
        dtype = dtype or self.dtype
        arr = self.rng.normal(size=shape).astype(dtype)
        if self.rng.random() < 0.2:       # a constant of one repeated value
            arr = np.full(shape, arr.flat[0] if arr.size else 1.0, dtype)
        self.prog.consts.append(arr)
        return len(self.prog.consts) - 1

    def add(self, op, args, params, var):
        self.prog.steps.append((op, list(args), params))
        self.prog.pool.append(var)
        return len(self.prog.pool) - 1

    def floats(self):
        return [i for i, v in enumerate(self.prog.pool) if v.dtype is not np.bool_]

    def pick(self, cands=None):
        cands = self.floats() if cands is None else cands
        # prefer recent values so programs grow deep rather than wide
        w = np.arange(1, len(cands) + 1, dtype=float) ** 2
        return cands[int(self.rng.choice(len(cands), p=w / w.sum()))]

    def broadcast_partner(self, shape):
        """A shape that broadcasts with ``shape`` (either direction, any missing dims)."""
        r = self.rng
        out = [d if r.random() < 0.6 else 1 for d in shape]
        if shape and r.random() < 0.3:
            out = out[int(r.integers(0, len(out) + 1)):]       # fewer leading dims
        return tuple(out)

    def step(self):
        r, pool = self.rng, self.prog.pool
        a = self.pick()
        va = pool[a]
        shape, nd = va.shape, len(va.shape)
        kind = r.choice(["unary", "binary", "binary", "const", "reduce", "view", "view",
                         "matmul", "concat", "where", "mask", "cast", "take", "layer_norm",
                         "attention", "window", "divmod"])
        if kind == "window" and int(np.prod(shape, dtype=np.int64)) > 0:
            return self.window(a, va)
        if kind == "take" and nd >= 1:
            ax = int(r.integers(0, nd))
            ishape = tuple(int(r.integers(1, 5)) for _ in range(int(r.integers(0, 3))))
            if self.large:
                ishape = (int(r.integers(60, 130)),)
            idx = r.integers(0, max(shape[ax], 1), ishape).astype(
                r.choice([np.int32, np.int64, np.uint8]))
            if shape[ax] == 0:
                return self.add("neg", [a], {}, Var(shape, va.dtype))
            self.prog.consts.append(idx)
            out = shape[:ax] + ishape + shape[ax + 1:]
            return self.add("take", [a], {"axis": ax, "const": len(self.prog.consts) - 1,
                                          "getitem": bool(r.random() < 0.5)},
                            Var(out, va.dtype))
        if kind == "layer_norm" and nd >= 1:
            w = self.const((shape[-1],), va.dtype) if r.random() < 0.6 else None
            b = self.const((shape[-1],), va.dtype) if r.random() < 0.6 else None
            return self.add("layer_norm", [a], {"w": w, "b": b}, Var(shape, va.dtype))
        if kind == "attention" and nd >= 2:
            # q = a (..., L, d); k, v new inputs (..., S, d), (..., S, dv), maybe broadcast
            S = shape[-2] if r.random() < 0.5 else int(r.integers(1, 6))
            causal = bool(r.random() < 0.5)
            batch = shape[:-2] if r.random() < 0.7 else shape[-3:-2] if nd > 2 else ()
            k = self.new_input(batch + (S, shape[-1]), va.dtype)
            dv = int(r.integers(1, 6))
            v = self.new_input(batch + (S, dv), va.dtype)
            out = shape[:-1] + (dv,)
            return self.add("attention", [a, k, v], {"causal": causal}, Var(out, va.dtype))
        if kind == "divmod":
            return self.divmod(a, va)
        if kind in ("take", "layer_norm", "attention", "window"):
            kind = "unary"
        if kind == "unary":
            op = str(r.choice(sorted(UNARY)))
            return self.add(op, [a], {}, Var(shape, va.dtype))
        if kind == "binary":
            # a partner of a broadcast-compatible shape: an existing value or a new input
            cands = [i for i in self.floats() if _bcast(pool[i].shape, shape) is not None]
            if r.random() < 0.3 or len(cands) < 2:
                b = self.new_input(self.broadcast_partner(shape) if r.random() < 0.7 else shape)
            else:
                b = self.pick(cands)
            op = str(r.choice(sorted(BINARY)))
            args = [a, b] if r.random() < 0.5 else [b, a]
            out = _bcast(pool[args[0]].shape, pool[args[1]].shape)
            return self.add(op, args, {}, Var(out, _promote(pool[a].dtype, pool[b].dtype)))
        if kind == "const":
            cshape = self.broadcast_partner(shape) if r.random() < 0.7 else shape
            c = self.const(cshape, va.dtype)
            return self.add("const_binary", [a], {"const": c, "side": str(r.choice(
                ["left", "right"]))}, Var(_bcast(shape, cshape), va.dtype))
        if kind == "reduce":
            op = str(r.choice(sorted(REDUCE)))
            if nd == 0:
                axis = None
            else:
                k = int(r.integers(0, nd + 1))
                axes = sorted(int(x) for x in r.choice(nd, size=k, replace=False))
                axis = None if k == nd and r.random() < 0.5 else \
                    (axes[0] - nd if k == 1 and r.random() < 0.3 else tuple(axes))
            axes = range(nd) if axis is None else ((axis % nd,) if isinstance(axis, int)
                                                   else axis)
            if op in ("max", "min") and any(shape[d] == 0 for d in axes):
                op = "sum"
            keep = bool(r.random() < 0.5)
            out = tuple((1 if d in axes else e) for d, e in enumerate(shape) if keep
                        or d not in axes)
            return self.add(op, [a], {"axis": axis, "keepdims": keep}, Var(out, va.dtype))
        if kind == "view":
            return self.view(a, va)
        if kind == "matmul":
            return self.matmul(a, va)
        if kind == "concat":
            if nd == 0:
                return self.add("stack", [a, a], {"axis": 0}, Var((2,), va.dtype))
            b = self.new_input(shape, va.dtype) if r.random() < 0.5 else a
            if r.random() < 0.5:
                ax = int(r.integers(0, nd))
                out = tuple(2 * e if d == ax else e for d, e in enumerate(shape))
                return self.add("concatenate", [a, b], {"axis": ax}, Var(out, va.dtype))
            ax = int(r.integers(0, nd + 1))
            out = shape[:ax] + (2,) + shape[ax:]
            return self.add("stack", [a, b], {"axis": ax}, Var(out, va.dtype))
        if kind == "where":
            m = self.mask(shape)
            b = self.new_input(self.broadcast_partner(shape), va.dtype) \
                if r.random() < 0.5 else a
            out = _bcast(_bcast(pool[m].shape, shape), pool[b].shape)
            return self.add("where", [m, a, b], {}, Var(out, va.dtype))
        if kind == "mask":
            m = self.mask(shape)
            return self.add("mask_mul", [m, a], {}, Var(_bcast(pool[m].shape, shape),
                                                          va.dtype))
        other = np.float64 if va.dtype is np.float32 else np.float32
        c = self.add("cast", [a], {"dtype": np.dtype(other).name}, Var(shape, other))
        return self.add("cast", [c], {"dtype": np.dtype(va.dtype).name}, Var(shape, va.dtype)) \
            if r.random() < 0.5 else c

    def divmod(self, a, va):
        """``a // b`` or ``a % b`` with a broadcast partner b; in a large program, of two
        new inputs (exact on both backends: see DIVMOD), added to ``a``."""
        r, pool, shape = self.rng, self.prog.pool, va.shape
        op = str(r.choice(sorted(DIVMOD)))
        if self.large:
            x = self.new_input(shape, va.dtype)
            y = self.new_input(self.broadcast_partner(shape), va.dtype)
            q = self.add(op, [x, y], {}, Var(shape, va.dtype))
            return self.add("add", [a, q], {}, Var(shape, va.dtype))
        cands = [i for i in self.floats() if _bcast(pool[i].shape, shape) is not None]
        b = self.new_input(self.broadcast_partner(shape)) if r.random() < 0.3 or \
            len(cands) < 2 else self.pick(cands)
        args = [a, b] if r.random() < 0.5 else [b, a]
        out = _bcast(pool[args[0]].shape, pool[args[1]].shape)
        return self.add(op, args, {}, Var(out, _promote(pool[a].dtype, pool[b].dtype)))

    def mask(self, shape):
        """A bool mask broadcasting with ``shape``: a comparison of values, maybe combined."""
        r, pool = self.rng, self.prog.pool
        cands = [i for i in self.floats() if _bcast(pool[i].shape, shape) is not None]
        a = self.pick(cands)
        cb = [i for i in cands if _bcast(pool[i].shape, pool[a].shape) is not None
              and _bcast(_bcast(pool[i].shape, pool[a].shape), shape) is not None]
        b = self.new_input(pool[a].shape) if r.random() < 0.5 else self.pick(cb)
        out = _bcast(pool[a].shape, pool[b].shape)
        m = self.add(str(r.choice(sorted(COMPARE))), [a, b], {}, Var(out, np.bool_))
        if r.random() < 0.3:
            m2 = self.add("lt", [a, self.new_input(pool[a].shape)], {},
                          Var(pool[a].shape, np.bool_))
            out2 = _bcast(out, pool[a].shape)
            m = self.add("logical", [m, m2], {"fn": str(r.choice(["and", "or"]))},
                         Var(out2, np.bool_))
        if r.random() < 0.2:
            m = self.add("logical_not", [m], {}, Var(pool[m].shape, np.bool_))
        if _bcast(pool[m].shape, shape) is None:
            return self.mask(shape)
        return m

    def view(self, a, va):
        r = self.rng
        shape, nd = va.shape, len(va.shape)
        choice = r.choice(["reshape", "transpose", "broadcast", "expand", "squeeze", "slice"])
        if choice == "transpose" and nd >= 2:
            perm = tuple(int(x) for x in r.permutation(nd))
            return self.add("transpose", [a], {"perm": perm},
                            Var(tuple(shape[i] for i in perm), va.dtype))
        if choice == "broadcast":
            new = tuple(int(r.integers(2, 4)) for _ in range(int(r.integers(0, 2))))
            out = new + tuple(int(r.integers(2, 4)) if e == 1 and r.random() < 0.7 else e
                              for e in shape)
            return self.add("broadcast_to", [a], {"shape": out}, Var(out, va.dtype))
        if choice == "expand":
            ax = int(r.integers(-nd - 1, nd + 1))
            out = list(shape)
            out.insert(ax % (nd + 1), 1)
            return self.add("expand_dims", [a], {"axis": ax}, Var(tuple(out), va.dtype))
        if choice == "squeeze" and 1 in shape:
            ax = [d for d, e in enumerate(shape) if e == 1][0]
            out = shape[:ax] + shape[ax + 1:]
            return self.add("squeeze", [a], {"axis": ax}, Var(out, va.dtype))
        if choice == "slice" and nd >= 1:
            slices, out = [], []
            for e in shape:
                start = int(r.integers(0, max(1, e)))
                stop = int(r.integers(start + 1, e + 1)) if e > start else e
                step = int(r.choice([1, 1, 2])) if e > 2 else 1
                if r.random() < 0.3:
                    start, stop, step = None, None, 1
                s = slice(start, stop, step)
                slices.append((s.start, s.stop, s.step))
                out.append(len(range(*s.indices(e))))
            return self.add("slice", [a], {"slices": slices}, Var(tuple(out), va.dtype))
        # reshape: to a random factorisation of the size (or a flat vector)
        size = int(np.prod(shape, dtype=np.int64))
        out = _factor(r, size)
        if r.random() < 0.2 and out:
            out = list(out)
            out[int(r.integers(0, len(out)))] = -1
            real = tuple(size // int(np.prod([d for d in out if d != -1] or [1])) if d == -1
                         else d for d in out)
            return self.add("reshape", [a], {"shape": tuple(out)}, Var(real, va.dtype))
        return self.add("reshape", [a], {"shape": out}, Var(out, va.dtype))

    def window(self, a, va):
        """A convolution or a pooling of ``a`` (reshaped to NCHW first when it is not
        4-d), maybe flattened after: random kernel, stride, padding, dilation, groups."""
        r = self.rng
        if len(va.shape) != 4 and r.random() < 0.35:     # a fresh image, big enough
            hw = (30, 50) if self.large else (3, 10)         # to be cut over threads
            img = (int(r.integers(1, 4)), int(r.integers(1, 5)),
                   int(r.integers(*hw)), int(r.integers(*hw)))
            a = self.new_input(img, va.dtype)
            va = self.prog.pool[a]
        if len(va.shape) != 4:
            rest = int(np.prod(va.shape, dtype=np.int64))
            dims = []
            for limit in (4, 6, None):          # n, c, h (w is the rest)
                ds = [d for d in range(1, rest + 1) if rest % d == 0
                      and (d <= limit if limit else 16 * d * d >= rest and d * d <= 16 * rest)]
                dims.append(int(r.choice(ds or [1])))   # h and w within 4x of each other
                rest //= dims[-1]
            shape4 = tuple(dims) + (rest,)
            a = self.add("reshape", [a], {"shape": shape4}, Var(shape4, va.dtype))
            va = self.prog.pool[a]
        n, c, h, w = va.shape
        op = str(r.choice(["conv2d", "conv2d", "max_pool2d", "avg_pool2d"]))
        conv = op == "conv2d"
        geo = [self._window_dim(size, conv) for size in (h, w)]
        k, s, pad, dil, out = (tuple(g[i] for g in geo) for i in range(5))

        def form(pair):          # an int when both are equal, sometimes
            return pair[0] if pair[0] == pair[1] and r.random() < 0.5 else pair
        if conv:
            groups = int(r.choice([g for g in range(1, c + 1) if c % g == 0]))
            groups = groups if r.random() < 0.4 else 1
            cout = groups * int(r.integers(1, 4 if not self.large else 6))
            wt = self.new_input((cout, c // groups) + k, va.dtype)
            args = [a, wt]
            if r.random() < 0.6:
                args.append(self.new_input((cout,), va.dtype))
            y = self.add("conv2d", args, {"stride": form(s), "padding": form(pad),
                                          "dilation": form(dil), "groups": groups},
                         Var((n, cout) + out, va.dtype))
        else:
            stride = None if s == k else form(s)
            y = self.add(op, [a], {"kernel": form(k), "stride": stride, "padding": form(pad)},
                         Var((n, c) + out, va.dtype))
        vy = self.prog.pool[y]
        # flatten only to rows other ops can take whole (attention on a row of 16k
        # features would make a 16k x 16k score matrix)
        if r.random() < 0.3 and int(np.prod(vy.shape[1:])) <= 2048:
            y = self.add("flatten", [y], {}, Var((vy.shape[0], int(np.prod(vy.shape[1:]))),
                                                 va.dtype))
        return y

    def _window_dim(self, size, conv):
        """(kernel, stride, padding, dilation, output size) along a dim of ``size``: a
        window that fits (pool padding at most half the kernel, as PyTorch requires)."""
        r = self.rng
        k = int(r.integers(1, 4))
        s = int(r.choice([1, 1, 2])) if conv or r.random() < 0.5 else k
        d = int(r.choice([1, 1, 2])) if conv else 1
        p = int(r.integers(0, k // 2 + 1))

        def out():
            return (size + 2 * p - d * (k - 1) - 1) // s + 1
        while out() < 1:
            if d > 1:
                d = 1
            else:
                k -= 1
                p = min(p, k // 2)
        return k, s, p, d, out()

    def matmul(self, a, va):
        """A 2-d product with ``a`` (made 2-d first) on either side, operands maybe
        transposed -- every transpose combination over the rounds; or, for an operand
        of 3 or more dims, a batched product against a new input whose batch dims
        broadcast."""
        r = self.rng
        if len(va.shape) >= 3 and r.random() < 0.5:
            n = int(r.integers(60, 140)) if self.large else int(r.choice([1, 2, 3, 5, 8]))
            batch = tuple(d if r.random() < 0.6 else 1 for d in va.shape[:-2])
            if r.random() < 0.3:
                batch = batch[1:]
            b = self.new_input(batch + (va.shape[-1], n), va.dtype)
            return self.add("matmul", [a, b], {"ta": False, "tb": False},
                            Var(va.shape[:-1] + (n,), va.dtype))
        if len(va.shape) != 2:
            size = int(np.prod(va.shape, dtype=np.int64))
            m = _divisor(r, size)
            shape2 = (m, size // m)
            a = self.add("reshape", [a], {"shape": shape2}, Var(shape2, va.dtype))
        M, K = self.prog.pool[a].shape
        ta, tb = bool(r.random() < 0.5), bool(r.random() < 0.5)
        left = r.random() < 0.6
        n = int(r.integers(60, 140)) if self.large else int(r.choice([1, 2, 3, 5, 8, 17]))
        if left:      # a @ b with a (M, K): b is (K, n)
            b = self.new_input((n, K) if tb else (K, n), va.dtype)
            if ta:    # keep the product's meaning: transpose a first, then back
                a = self.add("transpose", [a], {"perm": (1, 0)}, Var((K, M), va.dtype))
            return self.add("matmul", [a, b], {"ta": ta, "tb": tb}, Var((M, n), va.dtype))
        # b @ a: b is (n, M), a used as the right operand (M, K)
        b = self.new_input((M, n) if ta else (n, M), va.dtype)
        if tb:
            a = self.add("transpose", [a], {"perm": (1, 0)}, Var((K, M), va.dtype))
        return self.add("matmul", [b, a], {"ta": ta, "tb": tb}, Var((n, K), va.dtype))

    def new_input(self, shape, dtype=None):
        var = Var(tuple(shape), dtype or self.dtype)
        # an input is a pool entry whose step index precedes every step: inputs are
        # renumbered when the program is finished (see generate)
        self.prog.inputs.append(var)
        self.prog.pool.append(var)
        self.prog.steps.append(("__input__", [], {}))
        return len(self.prog.pool) - 1


def _bcast(a, b):
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        return None


def _promote(a, b):
    return np.float64 if np.float64 in (a, b) else np.float32


def _divisor(r, n):
    ds = [d for d in range(1, n + 1) if n % d == 0]
    return int(r.choice(ds))


def _factor(r, size):
    out, rest = [], size
    for _ in range(int(r.integers(0, 3))):
        d = _divisor(r, rest)
        out.append(d)
        rest //= d
    out.append(rest)
    if size == 1 and r.random() < 0.5:
        return ()
    return tuple(int(x) for x in r.permutation(out))


def generate(seed: int, dtype=None, large=None, n_steps=None) -> Program:
    """A random program; everything follows from ``seed``."""
    r = np.random.default_rng(seed)
    dtype = dtype or FLOATS[int(r.integers(0, 2))]
    large = bool(r.random() < 0.15) if large is None else large
    gen = _Gen(r, dtype, large)
    for _ in range(int(r.integers(1, 3))):
        gen.new_input(gen.dims(int(r.integers(0, 4))))
    for _ in range(n_steps or int(r.integers(3, 10 if large else 14))):
        gen.step()
    p = gen.prog
    n_out = int(r.integers(1, 3))
    floats = [i for i, v in enumerate(p.pool) if v.dtype is not np.bool_
              and p.steps[i][0] != "__input__"]
    outs = [len(p.pool) - 1] if p.pool[-1].dtype is not np.bool_ else []
    outs += [int(x) for x in r.choice(floats, size=min(n_out, len(floats)), replace=False)]
    p.outputs = list(dict.fromkeys(outs)) or floats[-1:]
    p.seed = seed
    return _renumber(p, r)


def _renumber(p: Program, r) -> Program:
    """Inputs first in the pool (they were created on demand between steps)."""
    order = [i for i, s in enumerate(p.steps) if s[0] == "__input__"] + \
            [i for i, s in enumerate(p.steps) if s[0] != "__input__"]
    new_index = {old: new for new, old in enumerate(order)}
    q = Program([p.pool[i] for i in order if p.steps[i][0] == "__input__"], seed=p.seed,
                consts=p.consts)
    q.pool = [p.pool[i] for i in order]
    q.steps = [(op, [new_index[a] for a in args], params)
               for op, args, params in (p.steps[i] for i in order)
               if op != "__input__"]
    q.outputs = [new_index[i] for i in p.outputs]
    q.loss_weights = []
    for i in q.outputs:
        shape = q.pool[i].shape
        dt = q.pool[i].dtype if q.pool[i].dtype is not np.bool_ else np.float32
        q.consts.append(r.normal(size=shape).astype(dt))
        q.loss_weights.append(len(q.consts) - 1)
    return q
