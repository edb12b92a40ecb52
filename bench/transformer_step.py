"""Char-LM transformer training step: graphc (LLVM) vs PyTorch eager, torch SDPA,
torch.compile, JAX jit -- the architecture of issue 12.

Vocab 65, learned token and position embeddings, 2 pre-LN blocks (d 128, 4 heads of 32,
causal attention with a fused qkv Linear 128->384 and an output projection, MLP
128-512-128 with tanh-GELU, LayerNorm eps 1e-5), final LN, untied head 128->65 with
bias, cross-entropy over 16x64 positions, plain SGD lr 0.01, float32.  Every contender
starts from graphc's initial parameters and runs the same batch; the first losses are
compared as a check that they compute the same step.

* ``graphc``        -- ``gc.compile_step(model.loss, ..., threads=T)`` (graphc.lm's model);
* ``torch``         -- eager, attention written out (matmul, mask, softmax, matmul);
* ``torch-sdpa``    -- eager with ``F.scaled_dot_product_attention(is_causal=True)``;
* ``torch.compile`` -- ``torch.compile(fullgraph=True)`` of the functional step
                       (``torch.func.grad_and_value`` + SGD), SDPA attention;
* ``jax``           -- ``jax.jit`` of the step (value_and_grad + SGD), donated params.

Each thread count runs in its own process (pinned to T CPUs; torch, XLA and OpenBLAS
told T threads); contenders alternate in rounds, the figure is the median per-step
time; ratios are within one run.  The machine is shared: read figures as medians of a
noisy box.  torch and jax are optional (``pip install -e .[bench]``).

    python bench/transformer_step.py [--threads 1 2] [--rounds 7] [--update-docs]
    python bench/transformer_step.py --profile      # per-kernel cycles, 1 thread
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B, T, V, D, H, HID, LAYERS, LR = 16, 64, 65, 128, 4, 512, 2, 0.01


def _setup():
    import numpy as np
    from graphc.lm import CharTransformer, LMConfig
    model = CharTransformer(LMConfig(vocab=V, context=T, dim=D, heads=H, layers=LAYERS,
                                     hidden=HID))
    params = model.init(0)
    rng = np.random.default_rng(1)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    return model, params, x, y


# ---- graphc -------------------------------------------------------------------------------------
def make_graphc(threads, **options):
    import graphc as gc
    model, params, x, y = _setup()
    t0 = time.perf_counter()
    st = gc.compile_step(model.loss, params, gc.optim.SGD(LR), (x, y), threads=threads,
                         **options)
    first = st(x, y)
    return (lambda: st(x, y)), time.perf_counter() - t0, first


# ---- torch ----------------------------------------------------------------------------------------
def _torch_params(torch):
    _, params, x, y = _setup()
    import numpy as np

    def conv(p):
        return {k: conv(v) if isinstance(v, dict) else
                torch.tensor(np.array(v), requires_grad=True) for k, v in p.items()}
    return conv(params), torch.tensor(x).long(), torch.tensor(y).long()


def _torch_loss(torch, P, ids, tgt, sdpa):
    F = torch.nn.functional
    x = P["tok"]["weight"][ids] + P["pos"]["weight"][:T]
    for i in range(LAYERS):
        p = P[f"h{i}"]
        h = F.layer_norm(x, (D,), p["ln1"]["weight"], p["ln1"]["bias"], 1e-5)
        qkv = (h @ p["attn"]["qkv"]["w"] + p["attn"]["qkv"]["b"]).view(B, T, 3, H, D // H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if sdpa:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D // H))
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            a = torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v
        a = a.transpose(1, 2).reshape(B, T, D)
        x = x + a @ p["attn"]["proj"]["w"] + p["attn"]["proj"]["b"]
        h = F.layer_norm(x, (D,), p["ln2"]["weight"], p["ln2"]["bias"], 1e-5)
        h = F.gelu(h @ p["mlp"]["fc"]["w"] + p["mlp"]["fc"]["b"], approximate="tanh")
        x = x + h @ p["mlp"]["out"]["w"] + p["mlp"]["out"]["b"]
    x = F.layer_norm(x, (D,), P["ln_f"]["weight"], P["ln_f"]["bias"], 1e-5)
    logits = x @ P["head"]["w"] + P["head"]["b"]
    return F.cross_entropy(logits.reshape(B * T, V), tgt.reshape(B * T))


def _leaves(P):
    return [w for v in P.values() for w in (_leaves(v) if isinstance(v, dict) else [v])]


def _make_torch(threads, sdpa):
    import torch
    torch.set_num_threads(threads)
    P, ids, tgt = _torch_params(torch)
    ws = _leaves(P)

    def step():
        loss = _torch_loss(torch, P, ids, tgt, sdpa)
        loss.backward()
        with torch.no_grad():
            for w in ws:
                w -= LR * w.grad
                w.grad = None
        return float(loss)
    t0 = time.perf_counter()
    first = step()
    return step, time.perf_counter() - t0, first


def make_torch(threads):
    return _make_torch(threads, False)


def make_torch_sdpa(threads):
    return _make_torch(threads, True)


def make_torch_compile(threads):
    import torch
    torch.set_num_threads(threads)
    P, ids, tgt = _torch_params(torch)
    P = torch.utils._pytree.tree_map(lambda t: t.detach(), P)

    def loss_fn(P, ids, tgt):
        return _torch_loss(torch, P, ids, tgt, True)

    @torch.compile(fullgraph=True)
    def update(P, ids, tgt):
        g, loss = torch.func.grad_and_value(loss_fn)(P, ids, tgt)
        return torch.utils._pytree.tree_map(lambda w, d: w - LR * d, P, g), loss
    state = [P]

    def step():
        state[0], loss = update(state[0], ids, tgt)
        return float(loss)
    t0 = time.perf_counter()
    first = step()
    return step, time.perf_counter() - t0, first


# ---- jax --------------------------------------------------------------------------------------------
def make_jax(threads):
    import jax
    import jax.numpy as jnp
    _, params, x, y = _setup()
    P = jax.tree_util.tree_map(jnp.asarray, params)
    ids, tgt = jnp.asarray(x), jnp.asarray(y)
    mask = jnp.tril(jnp.ones((T, T), bool))

    def ln(x, p):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * p["weight"] + p["bias"]

    def loss(P, ids, tgt):
        x = P["tok"]["weight"][ids] + P["pos"]["weight"][:T]
        for i in range(LAYERS):
            p = P[f"h{i}"]
            h = ln(x, p["ln1"])
            qkv = (h @ p["attn"]["qkv"]["w"] + p["attn"]["qkv"]["b"]).reshape(
                B, T, 3, H, D // H).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            s = (q @ k.swapaxes(-1, -2)) / math.sqrt(D // H)
            a = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), -1) @ v
            a = a.transpose(0, 2, 1, 3).reshape(B, T, D)
            x = x + a @ p["attn"]["proj"]["w"] + p["attn"]["proj"]["b"]
            h = jax.nn.gelu(ln(x, p["ln2"]) @ p["mlp"]["fc"]["w"] + p["mlp"]["fc"]["b"],
                            approximate=True)
            x = x + h @ p["mlp"]["out"]["w"] + p["mlp"]["out"]["b"]
        logits = ln(x, P["ln_f"]) @ P["head"]["w"] + P["head"]["b"]
        logp = jax.nn.log_softmax(logits.reshape(B * T, V))
        return -jnp.mean(jnp.take_along_axis(logp, tgt.reshape(B * T, 1), 1))

    def update(P, ids, tgt):
        lv, g = jax.value_and_grad(loss)(P, ids, tgt)
        return lv, jax.tree_util.tree_map(lambda w, d: w - LR * d, P, g)
    update = jax.jit(update, donate_argnums=0)
    state = [P]

    def step():
        lv, state[0] = update(state[0], ids, tgt)
        return float(lv)
    t0 = time.perf_counter()
    first = step()
    return step, time.perf_counter() - t0, first


CONTENDERS = {"graphc": make_graphc, "torch": make_torch, "torch-sdpa": make_torch_sdpa,
              "torch.compile": make_torch_compile, "jax": make_jax}


def _available(name):
    import importlib.util
    mod = {"torch": "torch", "torch-sdpa": "torch", "torch.compile": "torch",
           "jax": "jax"}.get(name)
    return mod is None or importlib.util.find_spec(mod) is not None


def worker(threads, rounds, per_round, names):
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > threads:
            os.sched_setaffinity(0, set(cpus[:threads]))
    fns, out = {}, {"threads": threads, "results": {}}
    for name in names:
        if not _available(name):
            continue
        try:
            fn, compile_s, first = CONTENDERS[name](threads)
        except Exception as e:      # an optional contender that breaks is reported
            out["results"][name] = {"error": repr(e)[:300]}
            continue
        for _ in range(3):
            fn()
        fns[name] = fn
        out["results"][name] = {"compile_s": compile_s, "first_loss": first}
    order = list(fns)
    times = {n: [] for n in order}
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            for _ in range(per_round):
                fns[name]()
            times[name].append((time.perf_counter() - t0) / per_round)
            time.sleep(0.05)
    for name, ts in times.items():
        ts.sort()
        out["results"][name].update(median_ms=1e3 * ts[len(ts) // 2], min_ms=1e3 * ts[0])
    print("RESULT " + json.dumps(out))


def _env_for(threads):
    env = dict(os.environ)
    env["GRAPHC_NUM_THREADS"] = str(threads)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    flags = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        if threads == 1 else ""
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + flags).strip()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cpu_name():
    try:
        from llvmlite import binding as llvm
        llvm.initialize_native_target()
        return llvm.get_host_cpu_name()
    except Exception:
        return platform.processor() or "unknown"


def table(runs) -> str:
    lines = ["| threads | contender | step ms (median) | × graphc | compile / first call s | first loss |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        res = run["results"]
        g = res.get("graphc", {}).get("median_ms")
        for name, r in res.items():
            if "error" in r:
                lines.append(f"| {run['threads']} | {name} | error: {r['error'][:60]} | | | |")
                continue
            ratio = f"{r['median_ms'] / g:.2f}" if g else ""
            lines.append(f"| {run['threads']} | {name} | {r['median_ms']:.1f} | {ratio} | "
                         f"{r['compile_s']:.2f} | {r['first_loss']:.5f} |")
    return "\n".join(lines)


def profile(calls=60, top=25):
    """Per-kernel rdtsc ticks of the graphc step on one thread (minimum over calls),
    grouped by kind (GEMM / loop / custom / copy) and listed heaviest first."""
    import numpy as np
    from kernel_ticks import kernel_ticks   # bench/, on sys.path when run as a script

    import graphc as gc
    import graphc.backends.llvm as L
    model, params, x, y = _setup()
    st = gc.compile_step(model.loss, params, gc.optim.SGD(LR), (x, y), threads=1)
    fn = L.compile(st.graph, threads=1, profile=True, fuse=False)
    args = [*st._p_leaves, x, y, *st.opt_state.values()]
    rows, walls = kernel_ticks(fn, args, calls)
    cyc = np.min(rows, axis=0)
    tot = cyc.sum()
    ghz = np.min(rows.sum(axis=1)) / min(walls) / 1e9
    kinds = {}
    ks = fn.plan.kernels
    for k, c in zip(ks, cyc):
        kinds[type(k).__name__] = kinds.get(type(k).__name__, 0) + c
    print(f"CPU {cpu_name()}: {len(cyc)} kernels, {tot:.0f} rdtsc ticks (min per kernel over "
          f"calls; ~{ghz:.2f} GHz from the fastest call, {min(walls) * 1e3:.2f} ms)")
    print("  by kind: " + ", ".join(f"{n} {100 * c / tot:.1f}%" for n, c in
                                    sorted(kinds.items(), key=lambda t: -t[1])))
    for k, c in sorted(zip(ks, cyc), key=lambda t: -t[1])[:top]:
        g = getattr(k, "gemm", None)
        extra = ""
        if g is not None:
            nb = int(np.prod(g.c.shape[:-2])) if g.c is not None else 1
            fl = 2 * g.m * g.n * g.k * nb
            extra = (f"  GEMM {nb}x {g.m}x{g.k}x{g.n} {'nt'[g.trans_a]}{'nt'[g.trans_b]} "
                     f"{fl / (c / ghz):.0f} GFLOP/s")
        ops = ",".join(n.op for n in k.graph_nodes())[:70]
        print(f"  {k.name[:28]:28s} {type(k).__name__[:10]:10s} {tuple(k.shape)!s:18s} "
              f"{c:9.0f} {100 * c / tot:5.1f}%  {ops}{extra}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--only", nargs="+", default=list(CONTENDERS))
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--update-docs", action="store_true",
                    help="append the table to docs/benchmarks.md")
    ap.add_argument("--profile", action="store_true",
                    help="per-kernel cycles of graphc's step on one thread, then exit")
    a = ap.parse_args(argv)
    if a.profile:
        profile()
        return
    if a.worker:
        worker(a.worker, a.rounds, a.per_round, a.only)
        return
    runs = []
    for t in a.threads:
        p = subprocess.run([sys.executable, __file__, "--worker", str(t), "--rounds",
                            str(a.rounds), "--per-round", str(a.per_round), "--only",
                            *a.only], capture_output=True, text=True, env=_env_for(t))
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            sys.exit(f"worker {t} failed:\n{p.stderr[-3000:]}")
        runs.append(json.loads(line[-1][7:]))
    head = (f"{datetime.date.today()}, CPU {cpu_name()} ({os.cpu_count()} cores, shared), "
            f"medians of {a.rounds} rounds x {a.per_round} steps")
    text = head + "\n\n" + table(runs)
    print(text)
    if a.update_docs:
        with open(ROOT / "docs" / "benchmarks.md", "a") as f:
            f.write("\n## Transformer char-LM step (bench/transformer_step.py)\n\n"
                    + text + "\n")


if __name__ == "__main__":
    main()
