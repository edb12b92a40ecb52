"""Remat on the transformer step (issue 12): the LLVM step's real arena and its time with
``memory_budget=0.5`` against none, 1 and 2 threads, same process.

The step is ``bench/transformer_step.py``'s (the char-LM benchmark architecture, SGD).
Arena: ``step.memory_report().planned_bytes`` of the compiled LLVM step (the bytes it
allocates); saved activations: the same report's ``saved_activation_bytes``.  Time: the
two steps alternate in rounds of ``--per-round`` calls (load that comes and goes hits
both alike); medians and minima of the per-call times, and the median of the same-round
ratios.  The goal: arena ratio <= 0.6 for <= 30 % more time.

    python bench/remat.py [--threads 1 2] [--rounds 9] [--per-round 5] [--budget 0.5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _steps(threads, budget):
    import graphc as gc
    from transformer_step import LR, _setup
    out = {}
    for name, opts in (("none", {}), (f"budget {budget}", {"memory_budget": budget})):
        model, params, x, y = _setup()
        st = gc.compile_step(model.loss, params, gc.optim.SGD(LR), (x, y), threads=threads,
                             **opts)
        first = st(x, y)
        out[name] = (st, x, y, first)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.5)
    args = ap.parse_args(argv)
    from transformer_step import cpu_name
    print(f"CPU {cpu_name()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "at start")
    print("| threads | arena, no remat | arena, budget | ratio | saved activations | "
          "first losses | step ms median (none / budget) | min | same-round time ratio |")
    print("|---:|---:|---:|---:|---|---|---|---|---:|")
    for t in args.threads:
        steps = _steps(t, args.budget)
        (n0, s0), (n1, s1) = steps.items()
        r0, r1 = s0[0].memory_report(), s1[0].memory_report()
        times = {n0: [], n1: []}
        ratios = []
        for _ in range(args.rounds):
            med = {}
            for name, (st, x, y, _) in steps.items():
                ts = []
                for _ in range(args.per_round):
                    t0 = time.perf_counter()
                    st(x, y)
                    ts.append(time.perf_counter() - t0)
                times[name] += ts
                med[name] = statistics.median(ts)
            ratios.append(med[n1] / med[n0])
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        mn = {k: 1e3 * min(v) for k, v in times.items()}
        print(f"| {t} | {r0.planned_bytes:,} B | {r1.planned_bytes:,} B | "
              f"{r1.planned_bytes / r0.planned_bytes:.3f} | "
              f"{r0.saved_activation_bytes / 1e6:.1f} -> {r1.saved_activation_bytes / 1e6:.1f} MB | "
              f"{s0[3]:.5f} / {s1[3]:.5f} | {med[n0]:.1f} / {med[n1]:.1f} | "
              f"{mn[n0]:.1f} / {mn[n1]:.1f} | {statistics.median(ratios):.2f} |", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
