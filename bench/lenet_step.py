"""LeNet-5 training step, batch 64: graphc (LLVM) vs PyTorch eager, torch.compile, JAX jit.

LeNet-5 as ``graphc train lenet`` builds it: conv 6@5x5 pad 2 -> ReLU -> max-pool 2 ->
conv 16@5x5 -> ReLU -> max-pool 2 -> 400-120-84-10 (ReLU), softmax cross-entropy, plain
SGD lr 0.01, float32, 1x28x28 inputs.  Contenders (same initial weights and data):

* ``graphc``        -- ``gc.compile_step`` (one native call per step, in place);
* ``torch``         -- PyTorch eager, ``nn.Module`` + ``optim.SGD``;
* ``torch.compile`` -- a functional full-graph step: ``torch.func.grad`` of the loss over
                       the parameter dict plus the SGD update, ``torch.compile(fullgraph=True)``
                       (the fastest torch variant measured here);
* ``jax``           -- ``jax.jit`` of value_and_grad + SGD, parameters donated.

Each thread count runs in its own processes (torch alone in one: its OpenMP threads spin
after each call), pinned to that many CPUs; contenders alternate in rounds; figures are
medians of per-step times, ratios are within one invocation.  "compile" is the first
call of each (graphc: ``compile_step`` with an empty disk cache, i.e. a real compile,
the GEMM kernel library's one-time build included and shown beside it; the GEMM tuner,
once per CPU, runs before it when it would and is shown on its own; JAX: trace, compile
and the first step).  ``python bench/compile_time.py --model lenet`` separates every
compile scenario (new graph with the library on disk, cache hits).

    python bench/lenet_step.py [--threads 1 2] [--rounds 15]
    python bench/lenet_step.py --profile     # graphc's kernels on one thread, by cost
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BATCH, LR = 64, 0.01


def init(seed=0):
    """Parameters in PyTorch's layout (conv (out, in, kh, kw), linear (in, out) here)."""
    import numpy as np
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    p = {"c1w": he((6, 1, 5, 5), 25), "c1b": np.zeros(6, np.float32),
         "c2w": he((16, 6, 5, 5), 150), "c2b": np.zeros(16, np.float32),
         "f1w": he((400, 120), 400), "f1b": np.zeros(120, np.float32),
         "f2w": he((120, 84), 120), "f2b": np.zeros(84, np.float32),
         "f3w": he((84, 10), 84), "f3b": np.zeros(10, np.float32)}
    x = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    return p, x, y


def graphc_loss(gc):
    def loss(p, x, y):
        h = gc.relu(gc.nn.conv2d(x, p["c1w"], p["c1b"], padding=2))
        h = gc.nn.max_pool2d(h, 2)
        h = gc.relu(gc.nn.conv2d(h, p["c2w"], p["c2b"]))
        h = gc.nn.flatten(gc.nn.max_pool2d(h, 2))
        h = gc.relu(h @ p["f1w"] + p["f1b"])
        h = gc.relu(h @ p["f2w"] + p["f2b"])
        return gc.nn.cross_entropy(h @ p["f3w"] + p["f3b"], y)
    return loss


def make_graphc(threads):
    """(step, compile seconds): ``compile_step`` with an empty disk cache, so the GEMM
    kernel library is built too (once per machine; ``LIB_S`` says how long) -- but not
    the GEMM tuner, which runs first when it would (once per CPU; ``TUNE_S``)."""
    import graphc as gc
    from graphc.backends.llvm.native import kernellib, tuning
    p, x, y = init()
    with tempfile.TemporaryDirectory() as d:     # an empty disk cache: a real compile
        os.environ["GRAPHC_CACHE_DIR"] = d
        if tuning.needs_tuning():
            from graphc.backends.llvm.runtime import tuner
            t0 = time.perf_counter()
            tuner.ensure_tuned()
            TUNE_S[0] = time.perf_counter() - t0
        lib0 = kernellib.STATS["seconds"]
        t0 = time.perf_counter()
        step = gc.compile_step(graphc_loss(gc), p, gc.optim.SGD(LR), (x, y), threads=threads)
        compile_s = time.perf_counter() - t0
        LIB_S[0] = kernellib.STATS["seconds"] - lib0
        step(x, y)
    return (lambda: step(x, y)), compile_s


#: the one-time costs of make_graphc's compile: the tuner (before it, not in it) and the
#: kernel library build (in it)
TUNE_S, LIB_S = [None], [None]


def _torch_loss(F, p, x, y):
    h = F.max_pool2d(F.relu(F.conv2d(x, p["c1w"], p["c1b"], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p["c2w"], p["c2b"])), 2).flatten(1)
    h = F.relu(h @ p["f1w"] + p["f1b"])
    h = F.relu(h @ p["f2w"] + p["f2b"])
    return F.cross_entropy(h @ p["f3w"] + p["f3b"], y)


def make_torch(threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    p, x, y = init()
    params = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    opt = torch.optim.SGD(list(params.values()), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = _torch_loss(F, params, xt, yt)
        loss.backward()
        opt.step()
        return loss.item()
    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


def make_torch_compile(threads):
    import torch
    import torch.nn.functional as F
    from torch.func import grad_and_value
    torch.set_num_threads(threads)
    p, x, y = init()
    params = {k: torch.tensor(v) for k, v in p.items()}
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    @torch.compile(fullgraph=True)
    def update(params, x, y):
        g, loss = grad_and_value(lambda q: _torch_loss(F, q, x, y))(params)
        return loss, {k: params[k] - LR * g[k] for k in params}
    state = [params]

    def step():
        loss, state[0] = update(state[0], xt, yt)
        return loss.item()
    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


def make_jax(threads):
    import jax
    import jax.numpy as jnp
    p, x, y = init()
    params = {k: jnp.asarray(v) for k, v in p.items()}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def conv(h, w, b, pad):
        out = jax.lax.conv_general_dilated(h, w, (1, 1), [(pad, pad)] * 2,
                                           dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return out + b[None, :, None, None]

    def pool(h):
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2),
                                     "VALID")

    def loss(p, x, y):
        h = pool(jax.nn.relu(conv(x, p["c1w"], p["c1b"], 2)))
        h = pool(jax.nn.relu(conv(h, p["c2w"], p["c2b"], 0))).reshape(x.shape[0], -1)
        h = jax.nn.relu(h @ p["f1w"] + p["f1b"])
        h = jax.nn.relu(h @ p["f2w"] + p["f2b"])
        logp = jax.nn.log_softmax(h @ p["f3w"] + p["f3b"])
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def update(p, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        return l, jax.tree_util.tree_map(lambda w, d: w - LR * d, p, g)
    update = jax.jit(update, donate_argnums=0)
    state = [params]

    def step():
        l, state[0] = update(state[0], xj, yj)
        return float(l)
    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


CONTENDERS = {"graphc": make_graphc, "torch": make_torch,
              "torch.compile": make_torch_compile, "jax": make_jax}
GROUPS = [("graphc", "jax"), ("torch", "torch.compile")]


def worker(threads, rounds, per_round, names):
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > threads:
            os.sched_setaffinity(0, set(cpus[:threads]))
    steps, out = {}, {}
    for name in names:
        try:
            fn, compile_s = CONTENDERS[name](threads)
        except ImportError:
            continue
        except Exception as e:        # a broken optional contender is reported, not fatal
            out[name] = {"error": repr(e)[:300]}
            continue
        for _ in range(5):
            fn()
        steps[name] = (fn, compile_s)
        if name == "graphc":
            out["graphc_once"] = {"tune_s": TUNE_S[0], "library_s": LIB_S[0]}
    order = list(steps)
    times = {n: [] for n in order}
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            fn = steps[name][0]
            for _ in range(3):
                fn()
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[name].append((time.perf_counter() - t0) / per_round)
            time.sleep(0.02)
    for name in order:
        out[name] = {**out.get(name, {}), "median_ms": 1e3 * statistics.median(times[name]),
                     "min_ms": 1e3 * min(times[name]), "compile_s": steps[name][1]}
    print("RESULT " + json.dumps(out))


def env_for(threads):
    env = dict(os.environ)
    env["GRAPHC_NUM_THREADS"] = str(threads)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                            " intra_op_parallelism_threads=1").strip()
    return env


def run_all(thread_counts, rounds, per_round, names, script=__file__):
    results = {}
    for t in thread_counts:
        merged = {}
        for group in GROUPS:
            sel = [n for n in names if n in group]
            if not sel:
                continue
            cmd = [sys.executable, script, "--worker", "--threads", str(t), "--rounds",
                   str(rounds), "--per-round", str(per_round), "--only", *sel]
            proc = subprocess.run(cmd, env=env_for(t), capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"worker for {t} threads failed")
            merged.update(json.loads(line[-1][7:]))
        results[t] = merged
    return results


def _f(v, fmt):
    return fmt.format(v) if v is not None else "–"


def table(results):
    """Markdown: per-step medians, graphc's ratio to the best peer, first-call times."""
    names = [n for n in CONTENDERS
             if any("median_ms" in r.get(n, {}) for r in results.values())]
    lines = ["| threads | " + " | ".join(f"{n} ms" for n in names)
             + " | graphc / best peer | graphc compile s (of it: kernel library) "
             "| GEMM tuner s (once, not in compile) | JAX first call s |",
             "|" + "---:|" * (len(names) + 5)]
    for t, r in results.items():
        ms = {n: r[n]["median_ms"] for n in names if "median_ms" in r.get(n, {})}
        once = r.get("graphc_once", {})
        peers = [v for n, v in ms.items() if n != "graphc"]
        ratio = ms["graphc"] / min(peers) if peers and "graphc" in ms else None
        lines.append(f"| {t} | " + " | ".join(_f(ms.get(n), "{:.2f}") for n in names)
                     + f" | {_f(ratio, '{:.2f}')} | "
                     + f"{_f(r.get('graphc', {}).get('compile_s'), '{:.2f}')} "
                     + f"({_f(once.get('library_s'), '{:.2f}')}) | "
                     + f"{_f(once.get('tune_s'), '{:.2f}')} | "
                     + f"{_f(r.get('jax', {}).get('compile_s'), '{:.2f}')} |")
    return "\n".join(lines)


def profile(calls=150, top=16):
    """Per-kernel rdtsc ticks of graphc's step on one thread (minimum over calls, which
    filters out the other processes of a shared machine), largest first."""
    import numpy as np
    from kernel_ticks import kernel_ticks   # bench/, on sys.path when run as a script

    import graphc as gc
    import graphc.backends.llvm as L
    p, x, y = init()
    step = gc.compile_step(graphc_loss(gc), p, gc.optim.SGD(LR), (x, y), threads=1)
    fn = L.compile(step.graph, threads=1, profile=True)
    args = [*step._p_leaves, x, y, *step.opt_state.values()]
    rows, walls = kernel_ticks(fn, args, calls)
    cyc = np.min(rows, axis=0)
    tot = cyc.sum()
    k_of = {k.name: k for k in fn.plan.kernels}
    print(f"{len(cyc)} kernels, {tot / 1e6:.2f} M ticks (sum of per-kernel minima); "
          f"fastest call {1e3 * min(walls):.2f} ms, median {1e3 * np.median(walls):.2f} ms")
    for (name, _, _), c in sorted(zip(fn.profile(), cyc), key=lambda t: -t[1])[:top]:
        k = k_of[name]
        g = getattr(k, "gemm", None)
        what = (f"GEMM {g.m}x{g.k}x{g.n} {'nt'[g.trans_a]}{'nt'[g.trans_b]} "
                f"{type(k).__name__}" if g else type(k).__name__)
        print(f"  {name:24s} {c / 1e6:7.3f} M {100 * c / tot:5.1f}%  {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--only", nargs="+", default=list(CONTENDERS))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true",
                    help="per-kernel cycles of graphc's step on one thread, then exit")
    args = ap.parse_args()
    if args.profile:
        profile()
        return
    if args.worker:
        worker(args.threads[0], args.rounds, args.per_round, args.only)
        return
    results = run_all(args.threads, args.rounds, args.per_round, args.only)
    for t, r in results.items():
        for n, v in r.items():
            if "error" in v:
                print(f"{n} ({t} threads) failed: {v['error']}", file=sys.stderr)
    print(table(results))


if __name__ == "__main__":
    main()
