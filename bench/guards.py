"""What graphc's bad-input guards cost on the MLP 784-512-256-10 training step (batch 128,
LLVM backend): ``check_finite=True`` (one fused max|x| reduction per gradient, every
update a ``where``) and the label range check before each call (a min and a max over
the batch's labels), against the same step without them -- interleaved rounds, medians,
ratios from the same run (the machine is shared and noisy).

    python bench/guards.py [--steps 200] [--rounds 7] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _make(check_finite, sgd_momentum, threads):
    import graphc as gc
    from mlp_step import _init
    params, x, y = _init(128)

    def loss(p, x, y):
        h = gc.relu(x @ p["w0"] + p["b0"])
        h = gc.relu(h @ p["w1"] + p["b1"])
        return gc.nn.cross_entropy(h @ p["w2"] + p["b2"], y)
    opt = gc.optim.SGD(0.01, momentum=sgd_momentum)
    step = gc.compile_step(loss, params, opt, (x, y), backend="llvm",
                           check_finite=check_finite, threads=threads)
    return step, x, y


def _time(step, x, y, n):
    t0 = time.perf_counter()
    for _ in range(n):
        step(x, y)
    return (time.perf_counter() - t0) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    import llvmlite.binding as llvm

    from graphc.backends.llvm import parallel
    threads = parallel.num_threads(a.threads)
    print(f"CPU {llvm.get_host_cpu_name()}, {threads} thread(s), {a.steps} steps x "
          f"{a.rounds} rounds, medians")
    for mom in (0.0, 0.9):
        plain, guarded = _make(False, mom, threads), _make(True, mom, threads)
        ts = {"plain": [], "check_finite": []}
        for s in (plain, guarded):
            _time(*s, 20)                                   # warm up
        for _ in range(a.rounds):
            ts["plain"].append(_time(*plain, a.steps))
            ts["check_finite"].append(_time(*guarded, a.steps))
        m0, m1 = (statistics.median(ts[k]) for k in ("plain", "check_finite"))
        ratios = [b / p for p, b in zip(ts["plain"], ts["check_finite"])]
        print(f"SGD(momentum={mom}): plain {m0 * 1e3:.3f} ms/step, check_finite "
              f"{m1 * 1e3:.3f} ms/step, ratio (median of rounds) "
              f"{statistics.median(ratios):.3f}")
    import numpy as np

    from graphc.ir.ops.checks import check_range
    y = np.random.default_rng(0).integers(0, 10, 128)
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        check_range(y, 10, "cross_entropy")
    print(f"label range check, 128 labels: {(time.perf_counter() - t0) / n * 1e6:.1f} µs "
          "per call")


if __name__ == "__main__":
    main()
