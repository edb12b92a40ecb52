"""Memory-planning benchmark: the figures recorded in docs/benchmarks.md ("## Memory").

    python bench/memplan.py            # everything (PyTorch's peak too when torch is installed)
    python bench/memplan.py --quick    # skip the 10,000-node planning timings

1. The MLP 784-512-256-10 training step at batch 128 (SGD momentum): naive, planned,
   lower bound and saved-activation bytes, with the original order and after the
   memory-aware schedule.
2. Remat on a deep MLP (10 linear layers of 256, batch 64 and 512): budget = half the
   saved-activation bytes; saved bytes before/after, extra FLOPs, arena.
3. Planning time of graphs of about 10,000 nodes (a 440-layer MLP step and a random
   graph): median of 5 runs of plan_memory.
4. PyTorch's peak memory for the same MLP step (the CPU allocator keeps no peak counter,
   so: the profiler's per-op allocations and frees replayed in time order).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphc as gc                                       # noqa: E402
from graphc.ir import Emitter, Graph   # noqa: E402
from graphc.passes.memory import CONTIGUOUS_VIEWS, STRIDED_VIEWS, plan_memory  # noqa: E402
from graphc.passes.memreport import memory_report         # noqa: E402
from graphc.passes.schedule import schedule_for_memory    # noqa: E402
from graphc.step import build_step_graph                  # noqa: E402


def mib(n):
    return f"{n / 2**20:.3f} MiB"


def mlp(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        params[f"W{i:03d}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        params[f"b{i:03d}"] = np.zeros(b, np.float32)
    n = len(sizes) - 1

    def loss(p, x, y):
        h = x
        for i in range(n):
            h = h @ p[f"W{i:03d}"] + p[f"b{i:03d}"]
            if i < n - 1:
                h = gc.relu(h)
        return gc.nn.cross_entropy(h, y)

    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return loss, params, x, y


def step_of(sizes, batch, **options):
    loss, params, x, y = mlp(sizes, batch)
    return gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x, y),
                           backend="numpy", **options)


def figures(rep):
    return (f"naive {rep.naive_bytes:,d}  planned {rep.planned_bytes:,d}  bound "
            f"{rep.lower_bound_bytes:,d}  (planned/bound {rep.planned_bytes / rep.lower_bound_bytes:.3f})"
            f"  saved {rep.saved_activation_bytes:,d}  persistent {rep.persistent_bytes:,d}")


def mlp_figures(plot=None):
    print("## MLP 784-512-256-10, batch 128, SGD momentum")
    for sched in (False, True):
        s = step_of((784, 512, 256, 10), 128, schedule=sched)
        rep = s.memory_report()
        print(f"  schedule={sched!s:<5} {len(s.graph.nodes)} nodes: {figures(rep)}")
        strided = CONTIGUOUS_VIEWS + STRIDED_VIEWS
        g = schedule_for_memory(s.graph, views=strided) if sched else s.graph
        rs = memory_report(g, views=strided)
        print(f"    with broadcast/transpose as strided views: {figures(rs)}")
        if sched:
            print(f"  schedule candidates (lower bound): {s.memory_info['schedule']}")
            if plot:
                rep.plot(plot)
                print(f"  plot: {plot}")
    return s


def remat_figures():
    print("## remat: deep MLP 128-(256 x 9)-10, budget = 1/2 of the saved activations")
    sizes = (128,) + (256,) * 9 + (10,)
    for batch in (64, 512):
        s0 = step_of(sizes, batch)
        s1 = step_of(sizes, batch, memory_budget=0.5)
        r = s1.memory_info["remat"]
        a0, a1 = s0.memory_report(), s1.memory_report()
        loss, params, x, y = mlp(sizes, batch)
        same = s0(x, y) == s1(x, y) and all(
            np.array_equal(s0.params[k], s1.params[k]) for k in s0.params)
        print(f"  batch {batch}: {r}")
        print(f"    arena {a0.planned_bytes:,d} -> {a1.planned_bytes:,d} B; identical params "
              f"after a step: {same}")
        sa = step_of(sizes, batch, remat="auto")
        print(f"    remat='auto': {sa.memory_info['remat']}")


def deep_step_graph(layers, width=32, batch=8):
    loss, params, x, y = mlp((width,) * layers + (10,), batch)
    stages, _, _ = build_step_graph(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x, y))
    return list(stages.values())[-1]


def random_graph(n, seed=0):
    rng = np.random.default_rng(seed)
    g = Graph("random10k")
    E = Emitter(g)
    vals = [g.add_input((64, 64), np.float32, f"in{i}", "param") for i in range(8)]
    while len(g.nodes) < n:
        r = rng.random()
        E.role = "forward" if len(g.nodes) < n // 2 else "backward"
        a = vals[-1 - int(rng.integers(0, min(len(vals), 40)))]
        b = vals[int(rng.integers(0, len(vals)))]
        if r < 0.1:
            v = E.matmul(a, b)
        elif r < 0.6:
            v = E.add(a, b)
        elif r < 0.8:
            v = E.tanh(a)
        else:
            v = E.mul(a, b)
        vals.append(v)
    g.set_outputs([vals[-1]])
    return g


def timing(graph, label):
    times = []
    for _ in range(5):
        t = time.perf_counter()
        plan = plan_memory(graph)
        times.append(time.perf_counter() - t)
    print(f"  {label}: {len(graph.nodes):,d} nodes, plan_memory median "
          f"{statistics.median(times) * 1e3:.0f} ms (min {min(times) * 1e3:.0f} ms); arena "
          f"{plan.arena_bytes:,d} B = {plan.arena_bytes / max(plan.lower_bound_bytes, 1):.3f} x bound; "
          f"strategies {plan.strategies}")


def planning_time():
    print("## planning time")
    t = time.perf_counter()
    g = deep_step_graph(440)
    print(f"  (built a {len(g.nodes):,d}-node step graph in {time.perf_counter() - t:.1f} s)")
    timing(g, "440-layer MLP step")
    timing(random_graph(10_000), "random graph")


def torch_peak():
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        print("## PyTorch: not installed (pip install torch==2.13.0)")
        return
    print(f"## PyTorch {torch.__version__}: the same step, eager, CPU")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(128, 784)
    y = torch.randint(0, 10, (128,))

    def one_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    one_step()                      # the momentum buffers exist from here on
    one_step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        one_step()
    # The CPU allocator has no peak counter: replay the profiler's per-op allocations
    # (at the op's start) and frees (at its end) in time order.
    items = []
    for e in prof.events():
        m = e.self_cpu_memory_usage
        if m > 0:
            items.append((e.time_range.start, m))
        elif m < 0:
            items.append((e.time_range.end, m))
    cur = peak = 0
    for _, m in sorted(items):
        cur += m
        peak = max(peak, cur)
    params = sum(p.numel() * 4 for p in model.parameters())
    print(f"  peak bytes allocated during the step (activations, gradients, temporaries; "
          f"params and momentum live outside): {peak:,d} B ({mib(peak)}); still held after "
          f"it: {cur:,d} B (the .grad tensors; params {params:,d} B)")


def llvm_figures():
    """The arena the LLVM backend really allocates for the MLP step (fusion on): the
    memory planner over its kernels, one after another (1 thread) or by dependency level
    (2 threads: a level's kernels run concurrently, so their buffers never share bytes)."""
    print("## MLP 784-512-256-10, batch 128, SGD momentum: LLVM backend (fused)")
    loss, params, x, y = mlp((784, 512, 256, 10), 128)
    for threads in (1, 2):
        step = gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x, y),
                               threads=threads)
        naive = gc.compile_step(loss, params, gc.optim.SGD(0.1, momentum=0.9), (x, y),
                                threads=threads, plan="naive")
        rep = step.memory_report()
        assert rep.planned_bytes == step._run.arena_bytes
        print(f"  {threads} thread(s): {figures(rep)}; backend arena {step._run.arena_bytes:,d}"
              f" B, plan='naive' arena {naive._run.arena_bytes:,d} B")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--plot", default=None, help="write the MLP step's timeline PNG here")
    args = ap.parse_args()
    mlp_figures(args.plot)
    llvm_figures()
    remat_figures()
    if not args.quick:
        planning_time()
    torch_peak()


if __name__ == "__main__":
    main()
