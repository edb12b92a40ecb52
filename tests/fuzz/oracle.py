"""Run one fuzz case on the numpy oracle and on the LLVM backend, and compare.

A *case* is (program, transformation, backend configuration).  Transformations:
``forward`` (the outputs), ``value_and_grad`` of the program's scalar loss, ``jvp``,
``grad_of_grad`` (value and gradient of a scalar of the gradient) and ``step``
(``compile_step`` with one of the optimizers, parameters updated in place).  Each compiled
function is called ``CALLS`` times with fresh inputs: state leaking between calls (an
accumulator never cleared, a buffer read before it is written) shows up on the second call.

On a mismatch :func:`run_case` raises ``AssertionError`` with everything needed to
reproduce it: the program, the traced graph as IR text, the configuration, the call and
the worst element.
"""
from __future__ import annotations

import itertools

import numpy as np

import graphc as gc

from .programs import Program, generate

CALLS = 3
TRANSFORMS = ("forward", "value_and_grad", "jvp", "grad_of_grad", "step")
#: LLVM configurations: (fuse, plan, threads); every case picks one in rotation
CONFIGS = tuple(itertools.product((True, False), ("shared", "naive"), (1, 2, 3)))
OPTIMIZERS = (
    lambda: gc.optim.SGD(0.05),
    lambda: gc.optim.SGD(0.05, momentum=0.9, nesterov=True),
    lambda: gc.optim.SGD(0.05, momentum=0.5, weight_decay=0.01),
    lambda: gc.optim.Adam(0.01),
    lambda: gc.optim.AdamW(0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
)


class Mismatch(AssertionError):
    pass


def _tol(dtype):
    return (1e-9, 1e-9) if dtype == np.float64 else (3e-4, 3e-4)


def _tol_dtype(prog: Program):
    """float32 tolerances if any value of the program is float32 (casts mix precisions)."""
    return np.float32 if any(v.dtype is np.float32 for v in prog.pool) else np.float64


def compare(what, got, ref, dtype, context, slack=None):
    """Raise :class:`Mismatch` unless ``got`` matches ``ref`` (lists of arrays);
    ``slack``: per-array extra allowance (arrays broadcastable to each result)."""
    if len(got) != len(ref):
        raise Mismatch(f"{what}: {len(got)} results, the oracle gave {len(ref)}\n{context()}")
    rtol, atol = _tol(dtype)
    for j, (a, b) in enumerate(zip(got, ref)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise Mismatch(f"{what}[{j}]: shape {a.shape}, oracle {b.shape}\n{context()}")
        if b.dtype == np.bool_ or b.size == 0:
            if not np.array_equal(a, b):
                raise Mismatch(f"{what}[{j}]: differs from the oracle\n{context()}")
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        fin = np.isfinite(b64)
        # non-finite values must be the same ones in the same places: NaN matches NaN
        # (array_equal's default says NaN != NaN), never a finite value or an infinity
        if not np.array_equal(np.isfinite(a64), fin) or not np.array_equal(
                a64[~fin], b64[~fin], equal_nan=True):
            raise Mismatch(f"{what}[{j}]: non-finite values differ\n got {a}\n ref {b}\n"
                           f"{context()}")
        scale = 1.0 + float(np.max(np.abs(b64[fin]), initial=0.0))
        af, bf = np.where(fin, a64, 0.0), np.where(fin, b64, 0.0)   # inf - inf: no NaN
        err = np.abs(af - bf)
        bound = atol * scale + rtol * np.abs(bf)
        if slack is not None:
            bound = bound + np.where(fin, slack[j], 0.0)
        if np.any(err > bound):
            idx = np.unravel_index(int(np.argmax(err - bound)), err.shape) if err.ndim else ()
            raise Mismatch(f"{what}[{j}]: worst element {idx}: got {a64[idx]!r}, oracle "
                           f"{b64[idx]!r} (|diff| {err[idx]:.3g} > {bound[idx]:.3g})\n"
                           f"{context()}")


def _flat(x):
    leaves, _ = gc.pytree.flatten(x)
    return [np.asarray(v) for v in leaves]


def build(prog: Program, transform: str, rng):
    """(fn, make_args): the function to compile and a maker of fresh arguments."""
    n = len(prog.inputs)
    dtype = prog.inputs[0].dtype

    def fresh():
        return prog.sample_inputs(rng)

    if transform == "forward":
        return prog.run, fresh
    if transform == "value_and_grad":
        return gc.value_and_grad(prog.loss, argnums=tuple(range(n))), fresh
    if transform == "jvp":
        def f(*xt):
            return gc.jvp(prog.run, tuple(xt[:n]), tuple(xt[n:]))

        def args():
            xs = fresh()
            return xs + [rng.normal(size=x.shape).astype(x.dtype) for x in xs]
        return f, args
    if transform == "grad_of_grad":
        weights = [rng.normal(size=v.shape).astype(v.dtype) for v in prog.inputs]
        inner = gc.grad(prog.loss, argnums=tuple(range(n)))

        def h(*xs):
            gs = inner(*xs)
            total = None
            for g, w in zip(gs, weights):
                t = gc.sum(gc.tanh(g) * w)
                total = t if total is None else total + t
            return total
        return gc.value_and_grad(h, argnums=tuple(range(n))), fresh
    raise ValueError(transform)


def describe(prog: Program, transform, config, args_fn=None) -> str:
    lines = [prog.describe(), f"# transform {transform}, llvm config {config}"]
    try:
        fn, make = args_fn or build(prog, transform, np.random.default_rng(0))
        lines.append(str(gc.trace(fn, *make())))
    except Exception as e:       # the IR is a courtesy; the mismatch is the report
        lines.append(f"(tracing for the report failed: {e})")
    lines.append(f"# reproduce: pytest tests/fuzz --fuzz-seed {prog.seed} "
                 f"--fuzz-transform {transform}")
    return "\n".join(lines)


def run_case(prog: Program, transform: str, config) -> None:
    """Run the case; LLVM diagnostics printed while compiling it (a forced vectorization
    that failed, say) fail it too: graphc must never put them on the user's stderr."""
    from graphc.backends.llvm.native import diagnostics
    before = diagnostics.COUNTS["llvm"]
    _run_case(prog, transform, config)
    new = diagnostics.COUNTS["llvm"] - before
    if new:
        lines = "\n".join(diagnostics.LAST[-new:])
        raise Mismatch(f"LLVM printed {new} diagnostic line(s) while compiling:\n{lines}\n"
                       f"{describe(prog, transform, config)}")


def _run_case(prog: Program, transform: str, config) -> None:
    fuse, plan, threads = config
    opts = dict(fuse=fuse, plan=plan, threads=threads)
    ctx = lambda: describe(prog, transform, config)       # noqa: E731
    dtype = _tol_dtype(prog)
    if transform == "step":
        return _run_step(prog, opts, ctx, config)
    rng = np.random.default_rng(prog.seed + 1)
    fn, make = build(prog, transform, rng)
    ref = gc.jit(fn, backend="numpy")
    got = gc.jit(fn, backend="llvm", **opts)
    for call in range(CALLS):
        args = make()
        r = _flat(ref(*args))
        g = _flat(got(*[a.copy() for a in args]))
        what = f"{transform} call {call + 1}"
        try:
            compare(what, g, r, dtype, ctx)
        except Mismatch:
            # within what float32 rounding alone moves the oracle itself?
            wide = _in_float64(fn, args) if dtype == np.float32 else None
            if wide is None or len(wide) != len(r):
                raise
            nudged = [_in_float64(fn, _nudged(args, prog.seed * 31 + s))
                      for s in range(NUDGES)]
            compare(what, g, r, dtype, ctx, slack=_rounding_slack(r, wide, nudged))


def _in_float64(fn, args):
    """The numpy oracle's results of ``fn`` on ``args`` widened to float64 -- None if the
    program does not run widened.  A gradient that is mostly rounding noise (layer norm
    of equal values: the noise of ``x - mean`` times ``1/sqrt(eps)``) differs between two
    correct float32 backends by more than any fixed tolerance; the oracle's own distance
    from float64 says how much noise an element carries.  Seed 284196."""
    try:
        return _flat(gc.jit(fn, backend="numpy")(*[_wide(a) for a in args]))
    except Exception:       # noqa: BLE001 -- a program whose dtypes do not widen
        return None


def _wide(x):
    x = np.asarray(x)
    return x.astype(np.float64) if x.dtype == np.float32 else x.copy()


#: how many float64 runs on inputs nudged by one float32 rounding estimate a result's
#: sensitivity to rounding (only after a failed comparison)
NUDGES = 6


def _nudged(args, seed):
    """``args`` with every float32 element moved by one float32 rounding error
    (``x * (1 ± 2**-24)``, signs at random), widened to float64 -- the inputs of a
    backward-stable float32 computation's exact twin."""
    rng = np.random.default_rng(seed)
    out = []
    for a in args:
        a = np.asarray(a)
        if a.dtype == np.float32:
            sign = rng.choice(np.array([-1.0, 1.0]), size=a.shape)
            out.append(a.astype(np.float64) * (1.0 + sign * 2.0 ** -24))
        else:
            out.append(a.copy())
    return out


def _rounding_slack(refs, wides, nudged=()) -> list:
    """Per result element: ``ROUNDING_SLACK`` times the larger of the float32 oracle's
    distance from float64 and the distance that nudging the inputs by one float32
    rounding moves the float64 result (the problem's own condition: seed 287293, the
    second derivative of a layer norm over a rank-one product, moves by up to 0.005
    under such a nudge, and the float32 oracle happened to land 0.0017 away).  Where
    a value is not finite there is no slack: an overflow in one precision only must
    not excuse anything."""
    out = []
    for j, (r, w) in enumerate(zip(refs, wides)):
        r, w = np.asarray(r), np.asarray(w)
        if r.dtype == np.bool_ or w.dtype == np.bool_ or r.shape != w.shape:
            out.append(np.zeros(r.shape))
            continue
        w64 = w.astype(np.float64)
        d = np.abs(r.astype(np.float64) - w64)
        for run in nudged:
            if run is not None and len(run) == len(wides) and \
                    np.shape(run[j]) == w.shape and np.asarray(run[j]).dtype != np.bool_:
                d = np.maximum(d, np.abs(np.asarray(run[j], np.float64) - w64))
        out.append(np.where(np.isfinite(d), ROUNDING_SLACK * d, 0.0))
    return out


def _run_step(prog: Program, opts, ctx, config):
    n = len(prog.inputs)
    rng = np.random.default_rng(prog.seed + 2)
    k = max(1, n // 2)              # the first inputs are parameters, the rest the batch
    init = prog.sample_inputs(rng)
    names = [f"p{i}" for i in range(k)]
    opt = OPTIMIZERS[(prog.seed // len(TRANSFORMS)) % len(OPTIMIZERS)]

    def loss_fn(params, *batch):
        return prog.loss(*[params[nm] for nm in names], *batch)

    steps = []
    for backend, o in (("numpy", {}), ("llvm", opts)):
        params = {nm: x.copy() for nm, x in zip(names, init)}
        steps.append(gc.compile_step(loss_fn, params, opt(), tuple(init[k:]),
                                     backend=backend, **o))
    ref, got = steps
    dtype = _tol_dtype(prog)
    fed = []
    for call in range(CALLS):
        batch = prog.sample_inputs(rng)[k:]
        fed.append(batch)
        lr = ref(*[b.copy() for b in batch])
        lg = got(*[b.copy() for b in batch])
        mine = [[lg], [got.params[nm] for nm in names], list(got.opt_state.values())]
        oracle = [[lr], [ref.params[nm] for nm in names], list(ref.opt_state.values())]
        try:
            _compare_step(call, mine, oracle, dtype, ctx)
        except Mismatch:
            # within what float32 rounding alone moves the oracle itself?
            wide = _step_in_float64(prog, loss_fn, names, init, k, opt, fed)
            if wide is None or dtype != np.float32:
                raise
            nudged = [_step_in_float64(prog, loss_fn, names, init, k, opt, fed,
                                       nudge=prog.seed * 31 + s) for s in range(NUDGES)]
            _compare_step(call, mine, oracle, dtype, ctx, slack=[
                _rounding_slack(rs, ws, [n[i] for n in nudged if n is not None])
                for i, (rs, ws) in enumerate(zip(oracle, wide))])


#: how many times the oracle's own float32 rounding error (its distance from the same
#: step in float64) an element may differ by after a failed strict comparison
ROUNDING_SLACK = 2.0


def _compare_step(call, mine, oracle, dtype, ctx, slack=None):
    for what, a, b, sl in zip(("loss", "params", "optimizer state"), mine, oracle,
                              slack or (None, None, None)):
        compare(f"step {call + 1} {what}", a, b, dtype, ctx, sl)


def _step_in_float64(prog, loss_fn, names, init, k, opt, fed, nudge=None):
    """[loss], params, optimizer state of the numpy oracle's step run in float64 (float32
    inputs widened) over the same batches -- None if the program does not run widened.
    With ``nudge`` (a seed) the initial parameters and every batch are first moved by one
    float32 rounding (:func:`_nudged`).

    An optimizer that normalises its step (Adam) turns a gradient that is mostly
    rounding noise (a cancellation: layer norm of a scaled row, attention over one key)
    into a full-size update, so two correct float32 backends can disagree by more than
    any fixed tolerance there.  The oracle's own distance from float64 says how much
    noise an element carries; a backend within a small multiple of it is correct.
    Seeds 31269, 80094, 240049."""
    try:
        widen = (lambda xs, i: [_wide(x) for x in xs]) if nudge is None else \
            (lambda xs, i: _nudged(xs, nudge * 1009 + i))
        params = dict(zip(names, widen(init[:k], 0)))
        step = gc.compile_step(loss_fn, params, opt(), tuple(_wide(x) for x in init[k:]),
                               backend="numpy")
        for i, batch in enumerate(fed):
            loss = step(*widen(batch, i + 1))
        return [[loss], [step.params[nm] for nm in names], list(step.opt_state.values())]
    except Exception:       # noqa: BLE001 -- a program whose dtypes do not widen
        return None


def cases(seeds):
    """(program, transform, config) per seed: transforms and configs in rotation (their
    counts are coprime, so every 60 consecutive seeds cover every pair)."""
    for seed in seeds:
        yield case(seed)


def case(seed: int, transform: str | None = None):
    prog = generate(seed)
    transform = transform or TRANSFORMS[seed % len(TRANSFORMS)]
    return prog, transform, CONFIGS[seed % len(CONFIGS)]
