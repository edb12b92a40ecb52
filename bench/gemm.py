"""GEMM benchmark: graphc's JIT kernels vs numpy.matmul (OpenBLAS), same run, same data.

For each shape and thread count it prints GFLOP/s (from the median time per call, and
from the fastest call: on a guest with steal time a median includes time the host took
away, the fastest call is what the kernel does) for

* ``graphc``      — one JIT GEMM per ctypes call with cached pointers (``GemmPlan``);
* ``graphc/step`` — the same kernel called R times inside one native call, i.e. without
                    the ~0.5 µs ctypes overhead, as it runs inside a compiled step;
* ``numpy``       — ``np.matmul(a, b, out=c)`` (transposes as views: OpenBLAS gets flags),
                    limited to the same thread count with threadpoolctl,

and the ratios graphc/numpy (> 1: graphc is faster).  Shapes are written
``M×K×N`` (C = op(A)·op(B), op(A) M×K, op(B) K×N).  Timings alternate between the
contenders in rounds with pauses, because OpenBLAS's threads keep spinning after a
call and would otherwise steal the second core from whoever runs next.

Run (unsetting the OpenBLAS tuning variables this machine exports, for a fair numpy):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm.py [--update-docs]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# (label, M, K, N, trans_a, trans_b)
CASES = [
    ("512³", 512, 512, 512, False, False),
    ("MLP fc1 fwd  X·W1", 128, 784, 512, False, False),
    ("MLP fc2 fwd  H·W2", 128, 512, 256, False, False),
    ("MLP fc1 dW   Xᵀ·dH", 784, 128, 512, True, False),
    ("MLP fc2 dW   Hᵀ·dO", 512, 128, 256, True, False),
    ("MLP fc2 dX   dO·W2ᵀ", 128, 256, 512, False, True),
    ("MLP fc1 dX   dH·W1ᵀ", 128, 512, 784, False, True),
    ("64³", 64, 64, 64, False, False),
]


def _per_call(fn, calls: int) -> tuple:
    """(median, fastest) seconds per call of ``fn`` over ``calls`` calls."""
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), float(np.min(ts))


def _median_per_call(fn, calls: int) -> float:
    return _per_call(fn, calls)[0]


def _step_runner(plan, reps: int):
    """A native job running the plan's GEMM ``reps`` times in one call."""
    from llvmlite import ir

    from graphc.backends.llvm.codegen import gemm_parallel as GP
    from graphc.backends.llvm.native import jit
    from graphc.backends.llvm.runtime import parallel

    spec = plan.spec
    module = ir.Module(name="bench_" + spec.name)
    module.triple = jit.host_target().triple
    entry = GP.emit_gemm_entry(module, spec)
    fn = ir.Function(module, parallel.JOB_TYPE, "bench_repeat")
    tid, nth, argv, bar = fn.args
    i64 = ir.IntType(64)
    blocks = [fn.append_basic_block(n) for n in ("entry", "loop", "out")]
    b = ir.IRBuilder(blocks[0])
    b.branch(blocks[1])
    b.position_at_end(blocks[1])
    i = b.phi(i64)
    i.add_incoming(i64(0), blocks[0])
    b.call(entry, [tid, nth, argv, bar])
    nxt = b.add(i, i64(1))
    i.add_incoming(nxt, blocks[1])
    b.cbranch(b.icmp_signed("<", nxt, i64(reps)), blocks[1], blocks[2])
    b.position_at_end(blocks[2])
    b.ret_void()
    cm = jit.compile_module(module)
    launcher = parallel.Launcher(cm.get_function_address("bench_repeat"), plan.threads)
    run = launcher.bind(plan.argv.ctypes.data)
    run._keep = cm  # keep the engine alive with the callable
    return run


def fma_ceiling(threads: int) -> float:
    """GFLOP/s of a register-only loop of independent FMAs of the widest vectors on
    ``threads`` threads: the ceiling the GEMM is measured against."""
    from llvmlite import ir

    from graphc.backends.llvm.codegen import gemm as G
    from graphc.backends.llvm.native import jit
    from graphc.backends.llvm.runtime import parallel

    spec = G.default_spec("float32")
    vt = ir.VectorType(ir.FloatType(), spec.vw)
    module = ir.Module(name="bench_fma_peak")
    module.triple = jit.host_target().triple
    fma = ir.Function(module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{spec.vw}f32")
    fn = ir.Function(module, parallel.JOB_TYPE, "fma_peak")
    tid, nth, argv, _bar = fn.args
    i64 = ir.IntType(64)
    entry, loop, out = (fn.append_basic_block(n) for n in ("entry", "loop", "out"))
    b = ir.IRBuilder(entry)
    iters = b.load(argv, typ=i64)
    x = ir.Constant(vt, [1.0000001] * spec.vw)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(i64(0), entry)
    # 24 independent chains on AVX-512 (32 zmm); 12 on AVX2 (16 ymm: 24 would spill)
    nacc = 24 if spec.vw * 4 == 64 else 12
    accs = [b.phi(vt) for _ in range(nacc)]
    new = [b.call(fma, [acc, x, x]) for acc in accs]
    for acc, v in zip(accs, new):
        acc.add_incoming(ir.Constant(vt, [float(j) for j in range(spec.vw)]), entry)
        acc.add_incoming(v, loop)
    nxt = b.add(i, i64(1))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("<", nxt, iters), loop, out)
    b.position_at_end(out)
    total = new[0]
    for v in new[1:]:
        total = b.fadd(total, v)
    slot = b.gep(argv, [b.add(tid, i64(1))], source_etype=i64)
    b.store(b.extract_element(total, ir.IntType(32)(0)), slot)  # keeps the loop alive
    b.ret_void()
    cm = jit.compile_module(module)
    iters = 100_000  # ~0.3 ms per call: short calls, many of them, the fastest one
    argv = np.zeros(1 + threads, np.int64)
    argv[0] = iters
    run = parallel.Launcher(cm.get_function_address("fma_peak"), threads).bind(argv.ctypes.data)
    run()
    t = _per_call(run, 51)[1]
    return threads * iters * nacc * spec.vw * 2 / t / 1e9


def measure(case, threads: int, rounds: int, seconds: float):
    from threadpoolctl import threadpool_limits

    from graphc.backends.llvm.runtime import gemmcall

    label, m, k, n, ta, tb = case
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c_g = np.empty((m, n), np.float32)
    c_n = np.empty((m, n), np.float32)
    av, bv = (a.T if ta else a), (b.T if tb else b)
    plan = gemmcall.GemmPlan(a, b, c_g, ta, tb, threads=threads)
    flops = 2.0 * m * n * k

    # calls per block: about `seconds` of work at ~200 GFLOP/s per thread
    calls = int(min(20000, max(20, seconds * 2e11 * threads / flops)))
    with threadpool_limits(limits=threads):
        np.matmul(av, bv, out=c_n)
        plan()
        # ~0.3 ms per native call: long calls get preempted on a shared, loaded machine
        reps = int(min(1000, max(1, 3e-4 / _median_per_call(plan.run, 20))))
        step = _step_runner(plan, reps)
        step()
        if not np.allclose(c_g, c_n, rtol=1e-3, atol=1e-3 * np.abs(c_n).max()):
            raise AssertionError(f"{label}: graphc result differs from numpy")
        t_g, t_s, t_n = [], [], []
        for _ in range(rounds):
            t_g.append(_per_call(plan.run, calls))
            time.sleep(0.05)
            t_s.append(np.array(_per_call(step, max(5, calls // reps))) / reps)
            time.sleep(0.05)
            t_n.append(_per_call(lambda: np.matmul(av, bv, out=c_n), calls))
            time.sleep(0.25)  # let OpenBLAS's spinning threads go to sleep
    tg, ts, tn = (float(np.median([t[0] for t in x])) for x in (t_g, t_s, t_n))
    bs, bn = (float(min(t[1] for t in x)) for x in (t_s, t_n))
    return dict(label=label, shape=f"{m}×{k}×{n}", threads=threads,
                used=plan.threads, gf_graphc=flops / tg / 1e9, gf_step=flops / ts / 1e9,
                gf_numpy=flops / tn / 1e9, ratio=tn / tg, ratio_step=tn / ts,
                best_step=flops / bs / 1e9, best_numpy=flops / bn / 1e9,
                us_graphc=tg * 1e6, us_numpy=tn * 1e6,
                tile=f"{plan.spec.mr}x{plan.spec.nv}v")


def table(rows, ceilings) -> str:
    out = ["| shape (M×K×N) | op | tile | threads | graphc GFLOP/s | graphc/step GFLOP/s | "
           "numpy GFLOP/s | ratio | ratio (step) | step % of FMA peak | best call: step / "
           "numpy GFLOP/s | best step % of FMA peak |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        thr = f"{r['threads']}" + ("" if r["used"] == r["threads"] else f" (uses {r['used']})")
        out.append(f"| {r['shape']} | {r['label']} | {r['tile']} | {thr} | {r['gf_graphc']:.0f} | "
                   f"{r['gf_step']:.0f} | {r['gf_numpy']:.0f} | {r['ratio']:.2f} | "
                   f"{r['ratio_step']:.2f} | {100 * r['peak']:.0f}% | "
                   f"{r['best_step']:.0f} / {r['best_numpy']:.0f} | "
                   f"{100 * r['best_peak']:.0f}% |")
    out.append("")
    out.append("FMA ceiling (register-only loop of independent FMAs, same run): " + ", ".join(
        f"{t} thread{'s' if t > 1 else ''}: {c:.0f} GFLOP/s" for t, c in ceilings.items()) + ".")
    return "\n".join(out)


def machine() -> str:
    from graphc.backends.llvm.native import jit
    import llvmlite
    t = jit.host_target()
    try:
        import threadpoolctl
        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # pragma: no cover
        blas = []
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, LLVM target `{t.cpu}`; Python "
            f"{platform.python_version()}, numpy {np.__version__} ({', '.join(blas) or '?'}), "
            f"llvmlite {llvmlite.__version__}")


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


def update_docs(text: str) -> str:
    """This CPU's section of docs/benchmarks.md (other CPUs' GEMM tables are kept)."""
    from docsection import update      # bench/, on sys.path when run as a script
    return update("GEMM", text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.05, help="target time per block")
    ap.add_argument("--update-docs", action="store_true",
                    help="write this CPU's '## GEMM on <CPU>, <date>' section of "
                         "docs/benchmarks.md (other CPUs' sections are kept)")
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="do not re-run without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)
    tuned = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    if tuned and not args.keep_openblas_env:
        env = {k: v for k, v in os.environ.items() if k not in tuned}
        print(f"(re-running without {', '.join(tuned)} for a fair numpy)", flush=True)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    load_start = _loadavg()
    from graphc.backends.llvm.native import tuning
    from graphc.backends.llvm.runtime import tuner
    tuner.ensure_tuned()
    chosen = (f"GEMM variant {tuning.choice().label} ({tuning.source()}; table default "
              f"{tuning.family_default().label}; each row on the tile a compiled step "
              "would give that shape)")
    print(chosen, flush=True)
    rows, ceilings = [], {}
    for threads in [int(t) for t in args.threads.split(",")]:
        ceilings[threads] = max(fma_ceiling(threads) for _ in range(3))
        print(f"FMA ceiling, {threads} thread(s): {ceilings[threads]:.0f} GFLOP/s", flush=True)
        for case in CASES:
            r = measure(case, threads, args.rounds, args.seconds)
            ceiling = ceilings[r["used"]] if r["used"] in ceilings else \
                fma_ceiling(r["used"])
            r["peak"], r["best_peak"] = r["gf_step"] / ceiling, r["best_step"] / ceiling
            rows.append(r)
            print(f"{r['shape']:>13} {r['label']:<20} {r['tile']} T={threads} graphc {r['gf_graphc']:6.0f} "
                  f"step {r['gf_step']:6.0f} numpy {r['gf_numpy']:6.0f} GFLOP/s  "
                  f"ratio {r['ratio']:.2f} (step {r['ratio_step']:.2f}); best call step "
                  f"{r['best_step']:.0f} numpy {r['best_numpy']:.0f}", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{x:.2f}" for x in (load_start, _loadavg()))
    text = (f"Measured {stamp} on {machine()}; load average (1 min) at start / end: "
            f"{load} (the machine is shared: figures are noisy, ratios come from one run); "
            f"{chosen}.\n\n"
            "Command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm.py "
            "--update-docs`\n\n"
            "float32, C = op(A)·op(B), shapes M×K×N; medians of per-call times over "
            f"{args.rounds} alternating rounds, and the fastest call of all rounds (*best "
            "call*: what the kernel does when the host takes nothing away; the FMA ceiling "
            "is its loop's fastest call too, so % of peak from medians is conservative).  *graphc*: one JIT kernel per ctypes call "
            "(pointers cached); *graphc/step*: the same kernel repeated inside one native "
            "call (no ctypes overhead, as inside a compiled training step); *numpy*: "
            "`np.matmul(..., out=)` limited to the same thread count (threadpoolctl).  "
            "Ratio = numpy time / graphc time (> 1: graphc faster).  graphc splits a "
            "GEMM as a compiled step does (`codegen.gemm_parallel.partition`: up to 4 chunks per "
            f"thread, one per {2 * 2**17 / 1e6:.2f} MFLOP at most; the tile is the step's "
            "for that split), thread t running chunks t, t+T, ...\n\n"
            + table(rows, ceilings) + "\n")
    print()
    print(text)
    if args.update_docs:
        print(f"docs/benchmarks.md: wrote '{update_docs(text)}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
