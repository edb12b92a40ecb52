"""Synchronous data parallel throughput: MLP 784-512-256-10, global batch 256, SGD, float32.

Configurations, each in its own processes (thread pools are fixed at start):

* ``1 rank x 1 thread``  -- ``gc.compile_step`` at batch 256 (the fused single-process step);
* ``1 rank x 2 threads`` -- the same with ``GRAPHC_NUM_THREADS=2``;
* ``2 ranks x 1 thread, buckets B`` -- ``mpiexec -n 2``, ``data_parallel_step`` at batch 128
  per rank, the gradients all-reduced in B calls.

The configurations alternate in rounds (noise on a shared machine hits all alike); each
run times blocks of steps after a warm-up, the figure is the median block, and ratios are
taken within one invocation.  Communication time per step is the all-reduce wait on rank 0
(it includes waiting for the slower rank).

    python bench/distributed.py [--rounds 3] [--steps 30] [--update-docs]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (784, 512, 256, 10)
GLOBAL_BATCH = 256


def _model():
    import numpy as np

    import graphc as gc

    def loss(p, x, y):
        h = x
        for i in range(len(SIZES) - 1):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < len(SIZES) - 2:
                h = gc.relu(h)
        return gc.nn.cross_entropy(h, y)
    rng = np.random.default_rng(0)
    params = {}
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
        params[f"w{i}"] = rng.normal(0, (2 / a) ** 0.5, (a, b)).astype(np.float32)
        params[f"b{i}"] = np.zeros(b, np.float32)
    X = rng.normal(size=(4096, SIZES[0])).astype(np.float32)
    Y = rng.integers(0, SIZES[-1], 4096)
    return loss, params, X, Y


def child(steps: int, blocks: int, buckets: int):
    """One configuration; prints a JSON line on rank 0."""
    import graphc as gc
    import graphc.distributed as dist
    loss, params, X, Y = _model()
    world, rank = dist.world_size(), dist.rank()
    b = GLOBAL_BATCH // world
    opt = gc.optim.SGD(0.01)
    if world == 1:
        step = gc.compile_step(loss, params, opt, (X[:b], Y[:b]))
    else:
        step = dist.data_parallel_step(loss, params, opt, (X[:b], Y[:b]), buckets=buckets)
    sampler = dist.ShardedSampler(len(X), GLOBAL_BATCH, rank, world, seed=0)
    per = sampler.per_epoch
    k = 0

    def one():
        nonlocal k
        idx = sampler.indices(k // per, k % per)
        k += 1
        step(X[idx], Y[idx])
    for _ in range(10):
        one()
    rates, comms = [], []
    for _ in range(blocks):
        c0 = step.totals["comm"] if world > 1 else 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        dt = time.perf_counter() - t0
        rates.append(steps * GLOBAL_BATCH / dt)
        comms.append(((step.totals["comm"] - c0) if world > 1 else 0.0) / steps)
    if rank == 0:
        print("RESULT " + json.dumps({"samples_per_s": statistics.median(rates),
                                      "comm_ms": 1e3 * statistics.median(comms)}), flush=True)


def _run(ranks, threads, buckets, steps, blocks):
    env = dict(os.environ, GRAPHC_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    me = [sys.executable, __file__, "--child", str(steps), str(blocks), str(buckets)]
    if ranks > 1:
        mpiexec = Path(sys.executable).with_name("mpiexec")
        me = [str(mpiexec), "--oversubscribe", "--bind-to", "none", "-n", str(ranks)] + me
    out = subprocess.run(me, capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{me} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[0][7:])


CONFIGS = [("1 rank x 1 thread", 1, 1, 1), ("1 rank x 2 threads", 1, 2, 1),
           ("2 ranks x 1 thread, 1 bucket", 2, 1, 1), ("2 ranks x 1 thread, 4 buckets", 2, 1, 4)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--child", nargs=3, type=int)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    res: dict = {name: [] for name, *_ in CONFIGS}
    for r in range(args.rounds):
        for name, ranks, threads, buckets in CONFIGS:
            res[name].append(_run(ranks, threads, buckets, args.steps, args.blocks))
            print(f"round {r + 1}: {name}: {res[name][-1]}", file=sys.stderr, flush=True)
    base = statistics.median(x["samples_per_s"] for x in res[CONFIGS[0][0]])
    two = statistics.median(x["samples_per_s"] for x in res[CONFIGS[1][0]])
    print("| configuration | samples/s (median) | vs 1 rank x 1 thread | vs 1 rank x 2 threads "
          "| all-reduce wait ms/step |")
    print("|---|---:|---:|---:|---:|")
    for name, ranks, *_ in CONFIGS:
        sps = statistics.median(x["samples_per_s"] for x in res[name])
        comm = statistics.median(x["comm_ms"] for x in res[name])
        print(f"| {name} | {sps:,.0f} | {sps / base:.2f} | {sps / two:.2f} | "
              f"{comm:.2f} |" if ranks > 1 else
              f"| {name} | {sps:,.0f} | {sps / base:.2f} | {sps / two:.2f} | — |")


if __name__ == "__main__":
    main()
