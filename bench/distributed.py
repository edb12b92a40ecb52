"""Synchronous data parallel throughput: MLP 784-512-256-10, global batch 256, SGD, float32.

Configurations, each in its own processes (thread pools are fixed at start):

* ``1x1``  -- ``gc.compile_step`` at batch 256 on 1 thread (the fused single-process step);
* ``1x2``  -- the same with ``GRAPHC_NUM_THREADS=2``;
* ``2x1 shared`` -- ``mpiexec -n 2``, ``data_parallel_step`` at batch 128 per rank, the
  gradients summed through a node-shared MPI window inside the update (the default on
  one machine);
* ``2x1 sharded`` -- the same with the parameters and optimizer state in the window too,
  each rank summing and updating its half (reduce-scatter + all-gather in place, two
  barriers a step);
* ``2x1 allreduce`` -- the same with one in-place ``MPI_Allreduce`` per step
  (``2x1 allreduce4``: four bucket calls);
* ``2x1-indep`` -- two independent processes, no MPI and nothing shared: each a
  ``gc.compile_step`` at batch 128 on 1 thread, timed together (a start line in a
  scratch directory), samples/s summed: what two cores give the same work when the
  exchange costs nothing -- the ceiling of any ``2x1`` row on this machine (clock,
  caches and memory shared by two busy cores), against which ``1x1`` x 1.8 is judged;
* ``1x1-dp128`` -- one process, no MPI: ``data_parallel_step`` at batch 128 (one rank's
  share), for its phases: the gradient graph at half the batch and the separate update
  pass, the two costs a 2-rank step adds to half of a 1x1 step.  Its samples/s counts
  128 rows a step; ``bound`` = 256 / (grad graph + update) is what 2 ranks would reach
  if the exchange cost nothing (its update reads one gradient set; the 2-rank update
  reads two).

The configurations alternate in rounds (noise on a shared machine hits all alike); each
run times blocks of steps after a warm-up and reports its median block.  Two summaries:
the median over rounds of each configuration's samples/s, and the median over rounds of
the *same-round* ratio to ``1x1`` and ``1x2`` (less sensitive to load that comes and
goes between rounds); then each phased row's per-phase minima (what a step costs when
nothing preempts it).  For the 2-rank rows, rank 0's median per-step phases: gradient
graph, communication (all-reduce, or the shared window's two barriers: mostly waiting
for the slower rank) and update.  The load average is printed before and after.

    python bench/distributed.py [--rounds 5] [--steps 30] [--only 1x1 2x1-shared]
                                [--bind none|core] [--mca "--mca btl self,sm"]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
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


def _cpu_timed(fn, into: list):
    """``fn`` recording each call's CPU time of the calling thread (``time.thread_time``:
    what the call cost when it ran, without the time other processes held the core)."""
    def timed(*args):
        c0 = time.thread_time()
        out = fn(*args)
        into.append(time.thread_time() - c0)
        return out
    return timed


def child(steps: int, blocks: int, buckets: int, reduce: str):
    """One configuration; prints a JSON line on rank 0."""
    import graphc as gc
    import graphc.distributed as dist
    loss, params, X, Y = _model()
    world, rank = dist.world_size(), dist.rank()
    half = reduce == "half"                 # 1x1-dp128: one rank's share, no MPI
    indep = reduce.startswith("indep:")     # 2x1-indep: half the batch, beside a twin
    b = GLOBAL_BATCH // (2 if half or indep else world)
    opt = gc.optim.SGD(0.01)
    if half:
        step = dist.data_parallel_step(loss, params, opt, (X[:b], Y[:b]))
    elif world == 1:
        step = gc.compile_step(loss, params, opt, (X[:b], Y[:b]))
    else:
        step = dist.data_parallel_step(loss, params, opt, (X[:b], Y[:b]), buckets=buckets,
                                       reduce=reduce)
    sampler = dist.ShardedSampler(len(X), GLOBAL_BATCH, rank, 2 if half or indep else world,
                                  seed=0)
    per = sampler.per_epoch
    k = 0
    phases: dict = {"compute": [], "comm": [], "update": [], "step": []}
    cpu: dict = {"step": [], "compute": [], "update": []}   # this thread's CPU seconds
    if hasattr(step, "_grad_run"):          # the native calls' CPU time (not the barriers')
        step._grad_run = _cpu_timed(step._grad_run, cpu["compute"])
        step._update_run = _cpu_timed(step._update_run, cpu["update"])

    def one():
        nonlocal k
        idx = sampler.indices(k // per, k % per)
        k += 1
        c0, t0 = time.thread_time(), time.perf_counter()
        step(X[idx], Y[idx])
        phases["step"].append(time.perf_counter() - t0)
        cpu["step"].append(time.thread_time() - c0)
        if world > 1 or half:
            for name, v in step.timings.items():
                phases[name].append(v)
    for _ in range(10):
        one()
    for v in list(phases.values()) + list(cpu.values()):
        v.clear()
    if indep:                               # start timing when the twin is ready too
        _, where, me = reduce.split(":")
        Path(where, f"ready{me}").touch()
        while len(list(Path(where).glob("ready*"))) < 2:
            time.sleep(1e-3)
    rates = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        rates.append(steps * b * world / (time.perf_counter() - t0))
    if rank == 0:
        out = {"samples_per_s": statistics.median(rates),
               "step_min_ms": 1e3 * min(phases.pop("step"))}
        out.update({f"cpu_{k}_ms": 1e3 * statistics.median(v) for k, v in cpu.items() if v})
        if world > 1 or half:
            out.update({f"{k}_ms": 1e3 * statistics.median(v) for k, v in phases.items()})
            out.update({f"{k}_min_ms": 1e3 * min(v) for k, v in phases.items()})
            out["reduce"] = step.reduce
        print("RESULT " + json.dumps(out), flush=True)


def phases_child(modes: list[str], reps: int, steps: int):
    """One 2-rank job holding one step per reduce mode, run in alternating blocks of
    ``steps`` steps (load that comes and goes hits every mode alike); rank 0 prints per
    mode the min / p10 / median of the step's wall time and of each phase."""
    import numpy as np

    import graphc as gc
    import graphc.distributed as dist
    loss, params0, X, Y = _model()
    world, rank = dist.world_size(), dist.rank()
    b = GLOBAL_BATCH // world
    steps_by = {}
    for m in modes:
        params = {k: np.array(v) for k, v in params0.items()}
        steps_by[m] = dist.data_parallel_step(loss, params, gc.optim.SGD(0.01),
                                              (X[:b], Y[:b]), reduce=m)
    sampler = dist.ShardedSampler(len(X), GLOBAL_BATCH, rank, world, seed=0)
    per = sampler.per_epoch
    rec = {m: {"total": [], "compute": [], "comm": [], "update": []} for m in modes}
    for rep in range(reps + 1):
        for m in modes:
            st = steps_by[m]
            for i in range(steps):
                idx = sampler.indices(0, (rep * steps + i) % per)
                t0 = time.perf_counter()
                st(X[idx], Y[idx])
                t = time.perf_counter() - t0
                if rep:                     # rep 0 warms up
                    rec[m]["total"].append(t)
                    for k, v in st.timings.items():
                        rec[m][k].append(v)
    if rank == 0:
        out = {}
        for m in modes:
            out[m] = {k: [1e3 * float(np.min(v)), 1e3 * float(np.percentile(v, 10)),
                          1e3 * float(np.median(v))] for k, v in rec[m].items()}
            out[m]["reduce"] = steps_by[m].reduce
        print("RESULT " + json.dumps(out), flush=True)


def run_phases(modes, reps, steps, bind, mca):
    env = dict(os.environ, GRAPHC_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpiexec = Path(sys.executable).with_name("mpiexec")
    me = [str(mpiexec), "--oversubscribe", "--bind-to", bind, *shlex.split(mca), "-n", "2",
          sys.executable, __file__, "--phases-child", str(reps), str(steps), *modes]
    out = subprocess.run(me, capture_output=True, text=True, env=env, timeout=1200)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{me} failed:\n{out.stdout}\n{out.stderr}")
    res = json.loads(lines[0][7:])
    print(f"2 ranks x 1 thread, one job, modes alternating in blocks of {steps} steps, "
          f"{reps} blocks each; ms: min / p10 / median")
    print("| reduce | step | gradient graph | comm (barriers) | update |")
    print("|---|---:|---:|---:|---:|")
    for m in modes:
        r = res[m]
        print(f"| {r['reduce']} | " + " | ".join(
            " / ".join(f"{x:.3f}" for x in r[k]) for k in ("total", "compute", "comm",
                                                              "update")) + " |")


def _run(ranks, threads, buckets, reduce, steps, blocks, bind, mca):
    env = dict(os.environ, GRAPHC_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if reduce == "indep":
        return _run_twins(env, steps, blocks)
    me = [sys.executable, __file__, "--child", str(steps), str(blocks), str(buckets), reduce]
    if ranks > 1:
        mpiexec = Path(sys.executable).with_name("mpiexec")
        me = [str(mpiexec), "--oversubscribe", "--bind-to", bind, *shlex.split(mca),
              "-n", str(ranks)] + me
    out = subprocess.run(me, capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{me} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[0][7:])


def _run_twins(env, steps, blocks):
    """Two independent 1-thread processes at batch 128, timed together: summed rates."""
    import tempfile
    with tempfile.TemporaryDirectory() as where:
        procs = [subprocess.Popen([sys.executable, __file__, "--child", str(steps),
                                   str(blocks), "1", f"indep:{where}:{i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for i in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
    res = []
    for (out, err), p in zip(outs, procs):
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not lines:
            raise SystemExit(f"2x1-indep child failed:\n{out}\n{err}")
        res.append(json.loads(lines[0][7:]))
    return {"samples_per_s": sum(r["samples_per_s"] for r in res),
            "step_min_ms": max(r["step_min_ms"] for r in res)}


# name: (ranks, threads, buckets, reduce)
CONFIGS = {"1x1": (1, 1, 1, "auto"), "1x2": (1, 2, 1, "auto"),
           "2x1-shared": (2, 1, 1, "shared"), "2x1-sharded": (2, 1, 1, "sharded"),
           "2x1-allreduce": (2, 1, 1, "allreduce"),
           "2x1-allreduce4": (2, 1, 4, "allreduce"), "1x1-dp128": (1, 1, 1, "half"),
           "2x1-indep": (1, 1, 1, "indep")}
DEFAULT = ["1x1", "1x2", "2x1-shared", "2x1-sharded", "2x1-allreduce", "1x1-dp128",
           "2x1-indep"]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=5, help="timed blocks per run")
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), default=DEFAULT,
                    help="configurations (1x1 and 1x2 are the baselines of the ratios)")
    ap.add_argument("--bind", default="none", help="mpiexec --bind-to (none, core)")
    ap.add_argument("--mca", default="", help="extra mpiexec arguments, e.g. "
                    "\"--mca btl self,sm\"")
    ap.add_argument("--phases", nargs="+", metavar="REDUCE",
                    help="instead: one 2-rank job with these reduce modes (shared, sharded, "
                    "allreduce) alternating in blocks of --steps, --rounds x --blocks "
                    "blocks each: per-step and per-phase min / p10 / median")
    ap.add_argument("--child", nargs=4)
    ap.add_argument("--phases-child", nargs="+")
    args = ap.parse_args()
    if args.phases_child:
        reps, steps, *modes = args.phases_child
        return phases_child(modes, int(reps), int(steps))
    if args.child:
        s, b, k, reduce = args.child
        return child(int(s), int(b), int(k), reduce)
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    print(f"CPU {llvm.get_host_cpu_name()}, {os.cpu_count()} cores; load average "
          f"{_load()} at start; --bind-to {args.bind} {args.mca}".rstrip(), flush=True)
    if args.phases:
        run_phases(args.phases, args.rounds * args.blocks, args.steps, args.bind, args.mca)
        print(f"load average {_load()} at the end")
        return
    res: dict = {name: [] for name in args.only}
    for r in range(args.rounds):
        for name in args.only:
            res[name].append(_run(*CONFIGS[name], args.steps, args.blocks, args.bind,
                                  args.mca))
            print(f"round {r + 1}: {name}: {json.dumps(res[name][-1])} (load {_load()})",
                  file=sys.stderr, flush=True)
    print(f"load average {_load()} at the end")

    def ratio(name, base):
        if base not in res:
            return "—"
        xs = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(res[name], res[base])]
        return f"{statistics.median(xs):.2f}"
    print("| configuration | samples/s (median) | same-round × 1x1 | same-round × 1x2 "
          "| grad graph ms | comm ms | update ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.only:
        sps = statistics.median(x["samples_per_s"] for x in res[name])
        ph = ["—"] * 3
        if CONFIGS[name][0] > 1 or CONFIGS[name][3] == "half":
            ph = [f"{statistics.median(x[k + '_ms'] for x in res[name]):.2f}"
                  for k in ("compute", "comm", "update")]
        print(f"| {name} | {sps:,.0f} | {ratio(name, '1x1')} | {ratio(name, '1x2')} | "
              + " | ".join(ph) + " |")
    for name in args.only:                  # minima: what a step costs when nothing preempts it
        mins = {n: min(x["step_min_ms"] for x in res[n]) for n in res}
        rows = GLOBAL_BATCH // 2 if CONFIGS[name][3] == "half" else GLOBAL_BATCH
        line = f"{name}: step minimum over rounds {mins[name]:.3f} ms"
        for base in ("1x1", "1x2"):
            if base in mins and base != name:
                line += (f"; samples/s at the minima × {base} "
                         f"{rows / mins[name] / (GLOBAL_BATCH / mins[base]):.2f}")
        print(line)
        if "compute_min_ms" in res[name][0]:
            print(f"{name}: phase minima over rounds (ms): " + ", ".join(
                f"{k} {min(x[k + '_min_ms'] for x in res[name]):.3f}"
                for k in ("compute", "comm", "update")))
    if "1x1" in res:                        # load-robust: CPU time, not wall time
        base = statistics.median(x["cpu_step_ms"] for x in res["1x1"])
        print(f"CPU time (time.thread_time, medians over rounds of per-call medians): 1x1 "
              f"step {base:.3f} ms")
        for name in args.only:
            if "cpu_compute_ms" not in res[name][0]:
                continue
            c = statistics.median(x["cpu_compute_ms"] for x in res[name])
            u = statistics.median(x["cpu_update_ms"] for x in res[name])
            w = min(x["comm_min_ms"] for x in res[name])
            rows = GLOBAL_BATCH // 2 if CONFIGS[name][3] == "half" else GLOBAL_BATCH
            est = c + u + w
            print(f"{name}: gradient graph {c:.3f} + update {u:.3f} + comm minimum {w:.3f} "
                  f"= {est:.3f} ms a step; {rows} rows in that time vs 1x1's "
                  f"{GLOBAL_BATCH} in {base:.3f} ms: × 1x1 "
                  f"{(rows / est) / (GLOBAL_BATCH / base):.2f}")
    if "1x1-dp128" in res:
        bound = [GLOBAL_BATCH / (1e-3 * (x["compute_ms"] + x["update_ms"]))
                 for x in res["1x1-dp128"]]
        line = (f"1x1-dp128 bound (2 ranks if the exchange were free and the update read one "
                f"set): {statistics.median(bound):,.0f} samples/s")
        for base in ("1x1", "1x2"):
            if base in res:
                xs = [b / r["samples_per_s"] for b, r in zip(bound, res[base])]
                line += f"; × {base} {statistics.median(xs):.2f}"
        print(line)


if __name__ == "__main__":
    main()
