"""conv2d alone: graphc (LLVM) vs torch.nn.functional.conv2d, forward and forward+backward.

Shapes (float32, NCHW, weights (out, in, kh, kw), bias):

* ``lenet1`` -- LeNet-5's first conv: 64×1×28×28, 6@5×5, padding 2;
* ``lenet2`` -- its second: 64×6×14×14, 16@5×5;
* ``wide``   -- 32×64×32×32, 64@3×3, padding 1 (a VGG/ResNet-style layer).

``fwd`` is ``y = conv2d(x, w, b)``; ``fwd+bwd`` computes ``y`` and the gradients of
``sum(y * gy)`` in x, w and b (graphc: one ``gc.jit`` of ``value_and_grad``, which
keeps the forward product; torch: ``conv2d`` then ``y.backward(gy)`` with fresh leaves).
Each thread count runs in its own process pinned to that many CPUs; graphc and torch
alternate in rounds; figures are medians of per-call times, ratios within one run.

    python bench/conv2d.py [--threads 1 2] [--rounds 9] [--shapes lenet1 lenet2 wide]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = {   # name: (N, C, H, W, O, k, padding)
    "lenet1": (64, 1, 28, 28, 6, 5, 2),
    "lenet2": (64, 6, 14, 14, 16, 5, 0),
    "wide": (32, 64, 32, 32, 64, 3, 1),
}


def data(shape, seed=0):
    import numpy as np
    n, c, h, w, o, k, p = SHAPES[shape]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((o, c, k, k)) / (c * k * k) ** 0.5).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
    gy = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    return x, wt, b, gy, p


def graphc_fns(shape):
    import graphc as gc
    x, w, b, gy, p = data(shape)

    def conv(x, w, b):
        return gc.nn.conv2d(x, w, b, padding=p)

    def loss(x, w, b, gy):
        return gc.sum(conv(x, w, b) * gy)
    fwd = gc.jit(conv)
    vg = gc.value_and_grad(loss, argnums=(0, 1, 2))
    fb = gc.jit(lambda x, w, b, gy: (conv(x, w, b), vg(x, w, b, gy)[1]))
    return {"fwd": lambda: fwd(x, w, b), "fwd+bwd": lambda: fb(x, w, b, gy)}


def torch_fns(shape, threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    x, w, b, gy, p = (v if isinstance(v, int) else torch.from_numpy(v) for v in data(shape))

    def fwd():
        with torch.no_grad():
            return F.conv2d(x, w, b, padding=p)

    def fb():
        xl, wl, bl = (t.detach().requires_grad_() for t in (x, w, b))
        y = F.conv2d(xl, wl, bl, padding=p)
        y.backward(gy)
        return y, xl.grad, wl.grad, bl.grad
    return {"fwd": fwd, "fwd+bwd": fb}


def check(shape, g, t):
    """graphc's results equal torch's (to float32 rounding of the sums)."""
    import numpy as np
    for mode in ("fwd", "fwd+bwd"):
        a = g[mode]()
        want = t[mode]()
        a = [a] if mode == "fwd" else [a[0], *a[1]]
        want = [want] if mode == "fwd" else list(want)
        for got, ref in zip(a, want):
            ref = ref.detach().numpy()
            scale = max(1.0, float(np.abs(ref).max()))
            err = float(np.abs(np.asarray(got) - ref).max()) / scale
            if err > 1e-4:
                raise SystemExit(f"{shape} {mode}: graphc differs from torch by {err:.2e}")


def worker(threads, rounds, shapes):
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > threads:
            os.sched_setaffinity(0, set(cpus[:threads]))
    out = {}
    for shape in shapes:
        fns = {"graphc": graphc_fns(shape)}
        try:
            fns["torch"] = torch_fns(shape, threads)
            check(shape, fns["graphc"], fns["torch"])
        except ImportError:
            pass
        for mode in ("fwd", "fwd+bwd"):
            calls = {name: f[mode] for name, f in fns.items()}
            for fn in calls.values():
                for _ in range(3):
                    fn()
            # calls per round: about 20 ms of the slower contender
            t0 = time.perf_counter()
            for fn in calls.values():
                fn()
            per = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-6)))
            times = {n: [] for n in calls}
            order = list(calls)
            for r in range(rounds):
                for name in order[r % len(order):] + order[:r % len(order)]:
                    t0 = time.perf_counter()
                    for _ in range(per):
                        calls[name]()
                    times[name].append((time.perf_counter() - t0) / per)
                    time.sleep(0.01)
            out[f"{shape} {mode}"] = {n: 1e3 * statistics.median(v) for n, v in times.items()}
    print("RESULT " + json.dumps(out))


def env_for(threads):
    env = dict(os.environ)
    env["GRAPHC_NUM_THREADS"] = str(threads)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.threads[0], args.rounds, args.shapes)
        return
    print("| case | threads | graphc ms | torch ms | graphc / torch |")
    print("|---|---:|---:|---:|---:|")
    for t in args.threads:
        cmd = [sys.executable, __file__, "--worker", "--threads", str(t), "--rounds",
               str(args.rounds), "--shapes", *args.shapes]
        proc = subprocess.run(cmd, env=env_for(t), capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"worker for {t} threads failed")
        for case, r in json.loads(line[-1][7:]).items():
            g, tt = r.get("graphc"), r.get("torch")
            ratio = f"{g / tt:.2f}" if g and tt else "–"
            print(f"| {case} | {t} | {g:.3f} | {tt:.3f} | {ratio} |" if tt else
                  f"| {case} | {t} | {g:.3f} | – | – |")


if __name__ == "__main__":
    main()
