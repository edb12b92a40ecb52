"""MLP 784-512-256-10 training step: graphc (LLVM) vs numpy, PyTorch, torch.compile, JAX.

One step = forward, softmax cross-entropy, backward, plain SGD update (lr 0.01), float32,
batch 16 and 128.  Every contender runs the same step on the same data:

* ``graphc``        -- ``gc.compile_step(..., backend="llvm", threads=T)``: one native call
                       per step on T threads, parameters updated in place;
* ``graphc-adaptive`` -- the same with ``adaptive=True`` (T > 1 only): each call runs on
                       T threads or 1, whichever recent calls measured faster;
* ``numpy``         -- a hand-written forward/backward/SGD step (OpenBLAS matmuls);
* ``torch``         -- PyTorch eager (``torch.set_num_threads(T)``), ``optim.SGD``;
* ``torch.compile`` -- the model compiled with ``torch.compile`` (backward and SGD eager);
* ``jax``           -- ``jax.jit`` of the whole step (``value_and_grad`` + SGD), donated
                       parameters.

Each thread count runs in its own processes (thread pools are fixed at import; torch in
a process of its own, its OpenMP threads spin long after each call), and inside a
process the contenders alternate in rounds so background noise hits all of them alike;
the figure is the median per-step time, ratios are taken within the same invocation.
torch and jax are optional (``pip install -e .[bench]``).

    python bench/mlp_step.py [--threads 1 2] [--batches 16 128] [--update-docs]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (784, 512, 256, 10)
LR = 0.01


def _init(batch, seed=0, layout="native"):
    """Parameters, inputs and labels; ``layout="torch"`` stores each weight as
    (out, in) -- PyTorch's layout, used as ``x @ W.T`` -- with the same values."""
    import numpy as np
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        w = (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
        params[f"w{i}"] = np.ascontiguousarray(w.T) if layout == "torch" else w
        params[f"b{i}"] = np.zeros(b, np.float32)
    x = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], batch).astype(np.int64)
    return params, x, y


# ---- contenders: each returns a zero-argument step function --------------------------------
def mlp_loss(layout="native"):
    """The graphc loss of the benchmark MLP in either weight layout."""
    import graphc as gc

    def lin(h, w, b):
        return (h @ w.T if layout == "torch" else h @ w) + b

    def loss(p, x, y):
        h = gc.relu(lin(x, p["w0"], p["b0"]))
        h = gc.relu(lin(h, p["w1"], p["b1"]))
        return gc.nn.cross_entropy(lin(h, p["w2"], p["b2"]), y)
    return loss


def make_graphc(batch, threads, adaptive=False, layout="native"):
    import graphc as gc
    params, x, y = _init(batch, layout=layout)
    loss = mlp_loss(layout)
    t0 = time.perf_counter()
    step = gc.compile_step(loss, params, gc.optim.SGD(LR), (x, y), backend="llvm",
                           threads=threads, adaptive=adaptive)
    compile_s = time.perf_counter() - t0

    def run():
        return step(x, y)
    run.step = step
    return run, compile_s


def make_graphc_torch_layout(batch, threads):
    """The same model written the PyTorch way: W (out, in), ``x @ W.T``."""
    return make_graphc(batch, threads, layout="torch")


def make_graphc_adaptive(batch, threads):
    if threads == 1:
        raise RuntimeError("same as graphc with 1 thread")
    return make_graphc(batch, threads, adaptive=True)


def make_numpy(batch, threads):
    import numpy as np
    p, x, y = _init(batch)
    w0, b0, w1, b1, w2, b2 = (p[k] for k in ("w0", "b0", "w1", "b1", "w2", "b2"))
    n = x.shape[0]
    onehot = np.zeros((n, SIZES[-1]), np.float32)
    onehot[np.arange(n), y] = 1
    lr = np.float32(LR)

    def step():
        h1 = np.maximum(x @ w0 + b0, 0)
        h2 = np.maximum(h1 @ w1 + b1, 0)
        z = h2 @ w2 + b2
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - (z * onehot).sum(1)))
        dz = (e / s - onehot) / np.float32(n)
        dw2, db2 = h2.T @ dz, dz.sum(0)
        dh2 = (dz @ w2.T) * (h2 > 0)
        dw1, db1 = h1.T @ dh2, dh2.sum(0)
        dh1 = (dh2 @ w1.T) * (h1 > 0)
        dw0, db0 = x.T @ dh1, dh1.sum(0)
        for w, g in ((w0, dw0), (b0, db0), (w1, dw1), (b1, db1), (w2, dw2), (b2, db2)):
            w -= lr * g
        return loss
    return step, 0.0


def _torch_model(batch, threads, compiled):
    import torch
    torch.set_num_threads(threads)
    p, x, y = _init(batch)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    with torch.no_grad():
        for i, j in enumerate((0, 2, 4)):
            model[j].weight.copy_(torch.from_numpy(p[f"w{i}"].T.copy()))
            model[j].bias.copy_(torch.from_numpy(p[f"b{i}"]))
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lossf = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(fwd(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()
    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


def make_torch(batch, threads):
    return _torch_model(batch, threads, False)


def make_torch_compile(batch, threads):
    return _torch_model(batch, threads, True)


def make_jax(batch, threads):
    import jax
    import jax.numpy as jnp
    p, x, y = _init(batch)
    params = {k: jnp.asarray(v) for k, v in p.items()}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss(p, x, y):
        h = jax.nn.relu(x @ p["w0"] + p["b0"])
        h = jax.nn.relu(h @ p["w1"] + p["b1"])
        z = h @ p["w2"] + p["b2"]
        logp = jax.nn.log_softmax(z)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def update(p, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        return l, jax.tree_util.tree_map(lambda w, d: w - LR * d, p, g)
    update = jax.jit(update.__wrapped__ if hasattr(update, "__wrapped__") else update,
                     donate_argnums=0)
    state = [params]

    def step():
        l, state[0] = update(state[0], xj, yj)
        return float(l)
    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


CONTENDERS = {"graphc": make_graphc, "graphc-W.T": make_graphc_torch_layout,
              "graphc-adaptive": make_graphc_adaptive,
              "numpy": make_numpy, "torch": make_torch,
              "torch.compile": make_torch_compile, "jax": make_jax}


def _available(name):
    import importlib.util
    mod = {"torch": "torch", "torch.compile": "torch", "jax": "jax"}.get(name)
    return mod is None or importlib.util.find_spec(mod) is not None


# ---- one process per thread count -------------------------------------------------------------
def worker(threads, batches, rounds, per_round, names):
    # the process may use exactly `threads` CPUs (JAX/XLA and OpenBLAS otherwise
    # grab every core whatever they are told)
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > threads:
            os.sched_setaffinity(0, set(cpus[:threads]))
    steps = {}
    out = {"threads": threads, "results": {}}
    for batch in batches:
        for name in names:
            if not _available(name):
                continue
            try:
                fn, compile_s = CONTENDERS[name](batch, threads)
            except Exception as e:   # a broken optional contender is reported, not fatal
                if "same as graphc" not in str(e):
                    out["results"].setdefault(str(batch), {})[name] = {"error": repr(e)[:200]}
                continue
            for _ in range(5):
                fn()
            steps[(batch, name)] = (fn, compile_s)
    for batch in batches:
        times = {name: [] for (b, name) in steps if b == batch}
        order = list(times)
        for r in range(rounds):
            # rotate the order each round: whoever runs right after another contender
            # suffers its idle threads' spinning; rotation spreads that evenly
            for name in order[r % len(order):] + order[:r % len(order)]:
                fn = steps[(batch, name)][0]
                t0 = time.perf_counter()
                for _ in range(per_round):
                    fn()
                times[name].append((time.perf_counter() - t0) / per_round)
                # let idle worker threads (graphc's, OpenBLAS's, XLA's) stop spinning
                # before the next contender runs
                time.sleep(0.05)
        # steady state: what a training loop sees -- steps back to back, caches warm
        steady = {name: [] for name in order}
        for r in range(STEADY_BLOCKS):
            for name in order[r % len(order):] + order[:r % len(order)]:
                fn = steps[(batch, name)][0]
                for _ in range(STEADY_STEPS // 4):
                    fn()
                t0 = time.perf_counter()
                for _ in range(STEADY_STEPS):
                    fn()
                steady[name].append((time.perf_counter() - t0) / STEADY_STEPS)
                time.sleep(0.05)
        res = out["results"].setdefault(str(batch), {})
        for name, ts in times.items():
            ts.sort()
            res[name] = {"median_ms": 1e3 * ts[len(ts) // 2],
                         "min_ms": 1e3 * ts[0],
                         "steady_ms": 1e3 * statistics.median(steady[name]),
                         "steady_min_ms": 1e3 * min(steady[name]),
                         "compile_s": steps[(batch, name)][1]}
            st = getattr(steps[(batch, name)][0], "step", None)
            ad = getattr(getattr(st, "_run", None), "adaptive", None)
            if ad is not None:
                res[name]["mode"] = ad.mode
    print("RESULT " + json.dumps(out))


#: steady-state blocks per contender (each: a quarter block of warm-up, then timed steps)
STEADY_BLOCKS, STEADY_STEPS = 5, 200


def _env_for(threads):
    env = dict(os.environ)
    env["GRAPHC_NUM_THREADS"] = str(threads)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                            " intra_op_parallelism_threads=1").strip()
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


#: contenders sharing a process: PyTorch's OpenMP threads keep spinning long after a
#: call and would steal the cores of whoever runs next, so torch gets its own process
GROUPS = [("graphc", "graphc-W.T", "graphc-adaptive", "numpy", "jax"), ("torch", "torch.compile")]


def run_all(thread_counts, batches, rounds, per_round, names):
    results = []
    for t in thread_counts:
        merged = {"threads": t, "results": {}}
        for group in GROUPS:
            sel = [n for n in names if n in group]
            if not sel:
                continue
            cmd = [sys.executable, __file__, "--worker", "--threads", str(t), "--rounds",
                   str(rounds), "--per-round", str(per_round), "--batches",
                   *map(str, batches), "--only", *sel]
            proc = subprocess.run(cmd, env=_env_for(t), capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"worker for {t} threads failed")
            for b, res in json.loads(line[-1][7:])["results"].items():
                merged["results"].setdefault(b, {}).update(res)
        results.append(merged)
    return results


def table(results, names, field="median_ms", contenders=None, vs=("jax", "numpy", "torch")):
    """Markdown table of ``field`` per contender and graphc's ratio to each of ``vs``; with
    ``graphc-W.T`` (the PyTorch layout) also its ratio to graphc (the layout goal: <= 1.05)
    and to JAX."""
    cols = [n for n in (contenders or names) if n in names
            and any(n in r["results"].get(b, {}) for r in results for b in r["results"])]
    pairs = [("graphc", n) for n in vs]
    if "graphc-W.T" in cols:
        pairs += [("graphc-W.T", "graphc")] + [("graphc-W.T", n) for n in vs if n == "jax"]
    short = {"graphc-W.T": "W.T"}
    lines = ["| batch | threads | " + " | ".join(f"{c} ms" for c in cols) + " | "
             + " | ".join(f"{short.get(a, a)} / {n}" for a, n in pairs) + " |",
             "|" + "---:|" * (len(cols) + len(pairs) + 2)]
    for b in sorted({b for r in results for b in r["results"]}, key=int):
        for r in results:
            res = r["results"].get(b, {})

            def ms(n):
                return res.get(n, {}).get(field)
            cells = [f"{ms(c):.3f}" if ms(c) else "–" for c in cols]

            def ratio(a, n):
                return f"{ms(a) / ms(n):.2f}" if ms(n) and ms(a) else "–"
            lines.append(f"| {b} | {r['threads']} | " + " | ".join(cells) + " | "
                         + " | ".join(ratio(a, n) for a, n in pairs) + " |")
    return "\n".join(lines)


def steady_table(results, names):
    """Back-to-back steps (no pauses between them): medians of the steady blocks."""
    return table(results, names, "steady_ms", ("graphc", "graphc-W.T", "numpy", "torch", "jax"),
                 ("jax", "numpy"))


def fastest_table(results, names):
    """Back-to-back steps: the fastest steady block of each contender."""
    return table(results, names, "steady_min_ms",
                 ("graphc", "graphc-W.T", "numpy", "torch", "jax"), ("jax", "numpy"))


def _versions():
    import numpy as np
    import llvmlite
    parts = [f"Python {platform.python_version()}", f"numpy {np.__version__}",
             f"llvmlite {llvmlite.__version__}"]
    for mod in ("torch", "jax"):
        try:
            m = __import__(mod)
            parts.append(f"{mod} {m.__version__}")
        except Exception:
            pass
    return ", ".join(parts)


NOTES = """\
How to read it (per-kernel cycle counts: `python bench/mlp_step.py --profile`):

- graphc's step is one native call of 24 kernels.  At batch 128 the five GEMM kernels --
  with the bias/ReLU/ReLU-mask epilogues and the SGD update fused into them -- take ~98% of
  the cycles at 234-248 GFLOP/s on one core (epilogues included), i.e. at the speed of the
  GEMM micro-kernel itself (bench/gemm.py): the 1-thread step is GEMM-bound.  Softmax
  cross-entropy, bias gradients and copies are < 3%.
- At batch 16 the GEMMs have M = 16 (forward, input gradients: 8x48 or 8x32 tiles,
  170-222 GFLOP/s) or K = 16 (weight gradients: `backends/llvm/codegen/smallk.py` computes them in
  4x64 register tiles and applies the SGD update to each tile, ~205-218 GFLOP/s with the
  update); the first layer's 1.6 MB of weights stream from L3 twice per step (they do not
  fit the 1 MB L2).  The 1-thread step runs at ~200 GFLOP/s (0.19-0.20 ms steady state),
  ~75-80% of one core's FMA ceiling (252-264 GFLOP/s: "GEMM" above, or a register-only
  FMA loop).  JAX's steady-state step is ~0.29-0.30 ms, so 0.5 x JAX (0.146-0.150 ms)
  would need the step's 38.5 MFLOP at 100% of that ceiling (0.146-0.153 ms) with no
  memory stall: the 1-thread batch-16 goal cannot be met on this machine.  The first
  table's medians are over rounds of 20 steps after 50 ms pauses, and the first step
  after a pause costs every contender 2-3x its steady time (caches and predictors
  cold), which is why they sit above the steady-state table.
- "first call/compile" of graphc is `compile_step` in the benchmark process: with the
  object code in the disk cache ~0.02-0.04 s (the cache is keyed by the graph's
  fingerprint, so nothing is lowered, and the ELF loader links the code without
  LLVM); higher when the process also builds the kernel library (first run after a
  change of the GEMM sources).  A new graph compiles in ~0.14-0.19 s
  (`bench/compile_time.py`).
- 2 threads: kernels are cut into fixed chunks claimed dynamically, with one
  synchronisation per dependency level (4 per step for this MLP).  This machine is shared:
  while another process keeps a core busy, every contender's 2-thread figures move a lot
  between runs; `graphc-adaptive` then runs calls on one thread when that measures faster.
"""


def update_docs(text):
    """This CPU's section of docs/benchmarks.md (other CPUs' MLP tables are kept)."""
    from docsection import update      # bench/, on sys.path when run as a script
    body = text.split("\n", 1)[1] if text.startswith("## ") else text
    return update("MLP training step", body)


def profile(batches, calls=200, layouts=("native",)):
    """Per-kernel cycles of the graphc step on one thread (minimum over calls)."""
    import numpy as np
    from kernel_ticks import kernel_ticks   # bench/, on sys.path when run as a script

    import graphc as gc
    import graphc.backends.llvm as L
    for batch, layout in ((b, lay) for b in batches for lay in layouts):
        params, x, y = _init(batch, layout=layout)
        loss = mlp_loss(layout)
        step = gc.compile_step(loss, params, gc.optim.SGD(LR), (x, y), backend="llvm", threads=1)
        fn = L.compile(step.graph, threads=1, profile=True)
        args = [*step._p_leaves, x, y, *step.opt_state.values()]
        rows, walls = kernel_ticks(fn, args, calls, skip=10)
        cyc = np.min(rows, axis=0)
        tot = cyc.sum()
        ghz = np.min(rows.sum(axis=1)) / min(walls) / 1e9   # rdtsc ticks per ns
        k_of = {k.name: k for k in fn.plan.kernels}
        gemms = {k.name: k.gemm for k in fn.plan.kernels if getattr(k, "gemm", None)}
        flops = {n: 2 * g.m * g.n * g.k for n, g in gemms.items()}
        print(f"batch {batch}, {layout} layout: {len(cyc)} kernels, {tot:.0f} rdtsc ticks "
              f"(min over calls; ~{ghz:.2f} GHz from the fastest call, "
              f"{min(walls) * 1e3:.3f} ms)")
        for (name, _, _), c in sorted(zip(fn.profile(), cyc), key=lambda t: -t[1])[:10]:
            g = gemms.get(name)
            extra = (f"  GEMM {g.m}x{g.k}x{g.n} {'nt'[g.trans_a]}{'nt'[g.trans_b]} "
                     f"{type(k_of[name]).__name__} {flops[name] / 1e6:.1f} MFLOP, "
                     f"{flops[name] / (c / ghz):.0f} GFLOP/s with its epilogue"
                     if name in flops else "")
            print(f"  {name:24s} {c:10.0f} {100 * c / tot:5.1f}%{extra}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--only", nargs="+", default=list(CONTENDERS))
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--update-docs", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="per-kernel cycles of graphc's step on one thread, then exit")
    ap.add_argument("--layouts", nargs="+", default=["native", "torch"],
                    choices=["native", "torch"], help="weight layouts --profile shows")
    args = ap.parse_args()
    if args.profile:
        profile(args.batches, layouts=args.layouts)
        return
    if args.worker:
        worker(args.threads[0], args.batches, args.rounds, args.per_round, args.only)
        return
    results = run_all(args.threads, args.batches, args.rounds, args.per_round, args.only)
    tab = table(results, args.only)
    compile_lines = []
    for r in results:
        for b, res in sorted(r["results"].items(), key=lambda kv: int(kv[0])):
            cs = ", ".join(f"{n} {v['compile_s']:.2f} s" for n, v in res.items()
                           if v.get("compile_s"))
            modes = ", ".join(f"{n} ran {v['mode']} thread(s)" for n, v in res.items()
                              if "mode" in v)
            if modes:
                cs += f"; adaptive choice at the end: {modes}"
            errs = ", ".join(f"{n}: {v['error']}" for n, v in res.items() if "error" in v)
            compile_lines.append(f"- batch {b}, {r['threads']} thread(s): first call/compile: "
                                 f"{cs}" + (f"; errors: {errs}" if errs else ""))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        from graphc.backends.llvm.native import jit
        cpu = jit.host_target().cpu
    except Exception:
        cpu = "?"
    text = (f"## MLP training step\n\nMeasured {now} on {platform.processor() or 'x86_64'}, "
            f"{os.cpu_count()} CPUs, LLVM target `{cpu}`; {_versions()}.\n\n"
            f"Command: `python bench/mlp_step.py --update-docs`\n\n"
            "MLP 784-512-256-10, float32, softmax cross-entropy, plain SGD (lr 0.01); one "
            "training step = forward + backward + update.  Median per-step time over "
            f"{args.rounds} alternating rounds of {args.per_round} steps; each thread "
            "count in its own processes (torch separately), restricted to that many CPUs "
            "(sched_setaffinity; "
            "numpy/OpenBLAS, torch and XLA told the same count), contenders in rotating "
            "order with 50 ms pauses so idle spinning threads do not steal the next one's "
            "cores.  Ratios < 1: graphc is faster.\n\n" + tab + "\n\n"
            "Steady state, the same processes right after the rounds: steps back to back "
            f"({STEADY_BLOCKS} blocks of {STEADY_STEPS} per contender, alternating; median "
            "block).  A pause costs every contender its caches and branch predictors "
            "(the first step after one takes 2-3x its steady time), so the rounds above "
            "sit higher:\n\n" + steady_table(results, args.only) + "\n\n"
            "Fastest steady block of each contender (the same blocks: on a guest whose "
            "host takes time away -- steal time -- a median includes it, the fastest block "
            "of 200 steps is the closest to what each step does undisturbed):\n\n"
            + fastest_table(results, args.only) + "\n\n"
            + "\n".join(compile_lines) + "\n\n" + NOTES)
    print(text)
    if args.update_docs:
        print(f"docs/benchmarks.md: wrote '{update_docs(text)}'")


if __name__ == "__main__":
    main()
