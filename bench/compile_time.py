"""Compile time of a training step -- the MLP 784-512-256-10 (batch 128, SGD; issue 10),
``--model lenet`` (LeNet-5, batch 64; issue 11) or ``--model transformer`` (the char-LM
of issue 12) -- graphc's LLVM backend vs JAX ``jit``, medians over fresh processes,
ratios from the same run.

Scenarios (each graph made unseen by a loss scale no earlier compile used: a constant of the
graph, so it changes the module and its keys; the learning rate itself is a runtime
input of the step, so a new learning rate alone is not a new graph):

* ``first ever``     -- a fresh process and an empty ``GRAPHC_CACHE_DIR``: the one-time
  build of the GEMM kernel library (``backends/llvm/native/kernellib.py``) is included;
* ``new graph, fresh process`` -- kernel library on disk, graph never seen (one constant
  changed: it shares most kernels with the graph compiled before it);
* ``new layer widths, fresh process`` -- a graph of new hidden widths (MLP: 16 wider
  layers; transformer: model dim + 32, MLP hidden + 64): its kernels of new shapes are
  compiled, only those whose code is unchanged (the loss over the logits) are shared;
* ``new graph, warm library`` -- the same process compiled another graph before (the
  library is in memory): what every further model / shape / constant costs;
* ``disk hit, fresh process`` -- the graph's object code is in the disk cache;
* ``disk hit, in process`` -- the same, memory cache cleared, backend already imported.

A kernel compiled for one graph is kept on disk by its code (the per-kernel object
cache, ``jit.find_kernels``): a "new graph" that differs from a cached one by one
constant compiles only the kernels that constant is in, plus its entry function; the
"new layer widths" row is the graph that shares (almost) nothing.  Each phase line
reports how many kernels were compiled and how many linked from the cache.  The GEMM tuner's one-time cost (once per CPU: ``graphc tune``)
is measured once, on its own row, and its choice is copied into every empty cache
directory, so no other row includes it (``--no-tune``: ``GRAPHC_TUNE=0``, the table's
default tile).

Times are of ``gc.compile_step(...)`` (tracing, autodiff, fusion, planning, IR, LLVM or
cache) after ``import graphc``; a fresh process also pays the first-use imports of the
backend (llvmlite).  JAX (MLP): ``jax.jit(update).lower(...).compile()`` of the same
step after ``import jax`` (first compile in a fresh process; then new learning rates in
the same process).  LeNet and transformer: both sides include the first step -- graphc
``compile_step`` + one call, JAX the first call of the jitted step (trace, compile,
run) as ``bench/lenet_step.py`` and ``bench/transformer_step.py`` build it.  Byte-compiled Python (``.pyc``) is allowed for every process (in a
private ``PYTHONPYCACHEPREFIX``), as in a normal installation.

    python bench/compile_time.py [--model mlp|lenet|transformer] [--reps 5] [--update-docs]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
BATCH = 128


def _lr(i: int) -> float:
    # unique per measurement (and per run: the nanosecond clock), never a cache hit
    return 0.01 * (1.0 + ((time.time_ns() // 1000 + 7919 * i) % 1_000_000) * 1e-7)


# ---- workers (one fresh process each) --------------------------------------------------------
def _problem(model, scale, grow=0):
    """(loss, params, batch, first step?) of ``model``, the loss scaled by ``scale``
    (a constant of the graph: a new scale is a new graph); ``grow`` > 0: wider hidden
    layers (new shapes: new kernels)."""
    import graphc as gc
    if model == "mlp":
        import mlp_step
        sizes = mlp_step.SIZES
        if grow:
            mlp_step.SIZES = (sizes[0], sizes[1] + 16 * grow, sizes[2] + 16 * grow,
                              sizes[3])
        try:
            params, x, y = mlp_step._init(BATCH)
        finally:
            mlp_step.SIZES = sizes

        def loss(p, x, y):
            h = gc.relu(x @ p["w0"] + p["b0"])
            h = gc.relu(h @ p["w1"] + p["b1"])
            return gc.nn.cross_entropy(h @ p["w2"] + p["b2"], y) * (scale / 0.01)
        return loss, params, (x, y), False
    if model == "lenet":
        import lenet_step
        params, x, y = lenet_step.init()
        base = lenet_step.graphc_loss(gc)
    else:
        import transformer_step as ts
        if grow:
            from graphc.lm import CharTransformer, LMConfig
            import numpy as np
            m = CharTransformer(LMConfig(vocab=ts.V, context=ts.T, dim=ts.D + 32 * grow,
                                         heads=ts.H, layers=ts.LAYERS,
                                         hidden=ts.HID + 64 * grow))
            params = m.init(0)
            rng = np.random.default_rng(1)
            x = rng.integers(0, ts.V, (ts.B, ts.T)).astype(np.int32)
            y = rng.integers(0, ts.V, (ts.B, ts.T)).astype(np.int32)
        else:
            m, params, x, y = ts._setup()
        base = m.loss

    def loss(p, x, y):
        return base(p, x, y) * (scale / 0.01)
    return loss, params, (x, y), True


def _graphc_compile(model, lr, grow=0):
    import graphc as gc
    from graphc.backends.llvm.native import jit
    loss, params, batch, first = _problem(model, lr, grow)
    s0 = dict(jit.STATS)
    t0 = time.perf_counter()
    step = gc.compile_step(loss, params, gc.optim.SGD(0.01 if model != "mlp" else lr),
                           batch, backend="llvm")
    if first:
        step(*batch)
    dt = time.perf_counter() - t0
    info = {k: v for k, v in step._run.compile_info.items()}
    info["kernels"] = {k: jit.STATS.get(k, 0) - s0.get(k, 0)
                       for k in ("kernels_compiled", "kernel_hits")}
    return dt, info


def _lib_stats():
    from graphc.backends.llvm.native import kernellib
    return dict(kernellib.STATS)


def worker_graphc(mode, model, lrs):
    import graphc  # noqa: F401  (timed scenarios start after this import)
    out = {"mode": mode, "runs": []}
    for lr in lrs:
        if mode == "hit-inproc":
            from graphc.backends.llvm.native import jit
            jit.clear_memory_cache()
        dt, info = _graphc_compile(model, lr, 1 if mode == "shape" else 0)
        out["runs"].append({"seconds": dt, "info": info, "lib": _lib_stats()})
    print("RESULT " + json.dumps(out))


def worker_tune():
    """The GEMM tuner's one-time search into this process's empty cache directory."""
    from graphc.backends.llvm.runtime import tuner
    t0 = time.perf_counter()
    tuner.ensure_tuned()
    print("RESULT " + json.dumps({"mode": "tune", "runs": [
        {"seconds": time.perf_counter() - t0}]}))


def worker_jax(model, lrs):
    if model != "mlp":      # the first call of the peer benchmark's jitted step
        import lenet_step
        import transformer_step
        make = (lenet_step if model == "lenet" else transformer_step).make_jax
        out = make(os.cpu_count() or 1)
        print("RESULT " + json.dumps({"mode": "jax", "runs": [{"seconds": out[1]}]}))
        return
    import jax
    import jax.numpy as jnp
    from mlp_step import _init
    p, x, y = _init(BATCH)
    params = {k: jnp.asarray(v) for k, v in p.items()}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss(p, x, y):
        h = jax.nn.relu(x @ p["w0"] + p["b0"])
        h = jax.nn.relu(h @ p["w1"] + p["b1"])
        z = h @ p["w2"] + p["b2"]
        logp = jax.nn.log_softmax(z)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    runs = []
    for lr in lrs:
        def update(p, x, y, lr=lr):
            l, g = jax.value_and_grad(loss)(p, x, y)
            return l, jax.tree_util.tree_map(lambda w, d: w - lr * d, p, g)
        t0 = time.perf_counter()
        jax.jit(update, donate_argnums=0).lower(params, xj, yj).compile()
        runs.append({"seconds": time.perf_counter() - t0})
    print("RESULT " + json.dumps({"mode": "jax", "runs": runs}))


# ---- driver ----------------------------------------------------------------------------------
def _run(args, env):
    r = subprocess.run([sys.executable, __file__, "--worker", *args], env=env,
                       capture_output=True, text=True, cwd=ROOT)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {args} failed:\n{r.stdout}\n{r.stderr}")


def measure(reps: int, inproc: int = 5, library: bool = True, model: str = "mlp",
            tune: bool = True):
    pyc = tempfile.mkdtemp(prefix="graphc-pyc-")
    env = dict(os.environ)
    if not library:
        env["GRAPHC_KERNEL_LIBRARY"] = "0"
    if not tune:
        env["GRAPHC_TUNE"] = "0"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pyc
    res = {k: [] for k in ("tune", "first", "new-fresh", "shape-fresh", "new-warm",
                           "hit-fresh", "hit-inproc", "jax-fresh", "jax-warm")}
    phases = {k: [] for k in ("first", "new-fresh", "shape-fresh", "new-warm", "hit-fresh")}
    i = 0
    tuned = tempfile.mkdtemp(prefix="graphc-tune-")
    try:
        if tune and env.get("GRAPHC_TUNE", "auto") not in ("0", "off"):
            # the tuner once (its own row); its choice is copied into every empty cache
            env["GRAPHC_CACHE_DIR"] = tuned
            res["tune"].append(_run(["tune"], env)["runs"][0]["seconds"])

        def fresh_dir():
            d = tempfile.mkdtemp(prefix="graphc-cache-")
            for name in os.listdir(tuned):
                if name.startswith("tune-"):
                    shutil.copy2(os.path.join(tuned, name), d)
            return d
        # warm the .pyc cache (untimed)
        d = fresh_dir()
        env["GRAPHC_CACHE_DIR"] = d
        _run(["graphc", "first", model, str(_lr(i))], env)
        have_jax = True
        try:
            _run(["jax", model, str(_lr(i))], env)
        except RuntimeError:
            have_jax = False
        shutil.rmtree(d, ignore_errors=True)
        warm = 1 + inproc if model == "mlp" else 1     # JAX in-process: MLP only
        for rep in range(reps):
            d = fresh_dir()
            env["GRAPHC_CACHE_DIR"] = d
            try:
                i += 1
                lr_first = _lr(i)
                r = _run(["graphc", "first", model, str(lr_first)], env)["runs"][0]
                res["first"].append(r["seconds"])
                phases["first"].append(r)
                lrs = [_lr(i + 100 + k) for k in range(1 + inproc)]
                r = _run(["graphc", "new", model, *map(str, lrs)], env)["runs"]
                res["new-fresh"].append(r[0]["seconds"])
                phases["new-fresh"].append(r[0])
                res["new-warm"] += [x["seconds"] for x in r[1:]]
                phases["new-warm"] += r[1:]
                r = _run(["graphc", "shape", model, str(_lr(i + 300))], env)["runs"][0]
                res["shape-fresh"].append(r["seconds"])
                phases["shape-fresh"].append(r)
                r = _run(["graphc", "hit", model, str(lr_first)], env)["runs"][0]
                res["hit-fresh"].append(r["seconds"])
                phases["hit-fresh"].append(r)
                r = _run(["graphc", "hit-inproc", model, *[str(lr_first)] * (1 + inproc)],
                         env)
                res["hit-inproc"] += [x["seconds"] for x in r["runs"][1:]]
                if have_jax:
                    r = _run(["jax", model, *map(str, [_lr(i + 200 + k) for k in range(warm)])],
                             env)["runs"]
                    res["jax-fresh"].append(r[0]["seconds"])
                    res["jax-warm"] += [x["seconds"] for x in r[1:]]
            finally:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(pyc, ignore_errors=True)
        shutil.rmtree(tuned, ignore_errors=True)
    return res, phases


LABELS = [
    ("tune", "GEMM tuner, once per CPU (not in any other row)", None),
    ("first", "first ever compile on this machine (empty cache but the tuner's choice; "
     "builds the kernel library)", "jax-fresh"),
    ("new-fresh", "new graph (one constant changed), fresh process (kernel library and "
     "shared kernels from disk)", "jax-fresh"),
    ("shape-fresh", "new layer widths, fresh process (kernels of new shapes compiled)",
     "jax-fresh"),
    ("new-warm", "new graph, warm kernel library (same process)", "jax-warm"),
    ("hit-fresh", "disk cache hit, fresh process", "jax-fresh"),
    ("hit-inproc", "disk cache hit, same process (memory cache cleared)", "jax-warm"),
]


def _phase_medians(runs):
    keys = sorted({k for r in runs for k, v in r["info"].items() if isinstance(v, float)})
    return {k: statistics.median(r["info"].get(k, 0.0) for r in runs) for k in keys}


def table(res, phases, reps):
    med = {k: statistics.median(v) if v else None for k, v in res.items()}
    lines = ["| scenario | graphc s | JAX s (same situation) | graphc / JAX | n |",
             "|---|---|---|---|---|"]
    for key, label, jkey in LABELS:
        if not res[key]:
            continue
        g, j = med[key], (med[jkey] if jkey else None)
        ratio = f"{g / j:.2f}" if (g and j) else "–"
        jtxt = f"{j:.3f}" if j else "–"
        lines.append(f"| {label} | {g:.3f} | {jtxt} | {ratio} | {len(res[key])} |")
    lines.append("")
    jf = f"{med['jax-fresh']:.3f} s" if med["jax-fresh"] else "–"
    jw = f"{med['jax-warm']:.3f} s" if med["jax-warm"] else "–"
    lines.append(f"JAX: first jit compile in a fresh process {jf}, a new step in the same "
                 f"process {jw}.")
    lines.append("")
    lines.append("Median phases in seconds (`compile_info`: `key` = graph key; "
                 "`lower_seconds` = fusion + plan + Python IR build; `ir_build` = printing the "
                 "modules; then LLVM or the cache):")
    lines.append("")
    for key, label in (("first", "first ever"), ("new-fresh", "new graph, fresh process"),
                       ("shape-fresh", "new layer widths, fresh process"),
                       ("new-warm", "new graph, warm library"),
                       ("hit-fresh", "disk hit, fresh process")):
        if phases[key]:
            pm = _phase_medians(phases[key])
            lib = statistics.median(r["lib"]["seconds"] for r in phases[key])
            parts = ", ".join(f"{k} {v:.4f}" for k, v in pm.items() if v >= 0.0005)
            kc = [r["info"].get("kernels", {}) for r in phases[key]]
            kern = ""
            if kc and kc[0]:
                kern = (f"; kernels compiled {statistics.median(k.get('kernels_compiled', 0) for k in kc):g}"
                        f", linked from the cache {statistics.median(k.get('kernel_hits', 0) for k in kc):g}")
            lines.append(f"- {label}: {parts}; kernel library (build or load) {lib:.4f}{kern}")
    return "\n".join(lines)


NOTES = """
Notes:
- "New graph" means a graph in no cache: each measurement scales the loss by a constant
  never used before (part of the graph's fingerprint); its kernels whose code that
  constant does not change are linked from the per-kernel object cache, the others
  compiled.  "New layer widths" is a graph whose kernels have new shapes (nothing but
  the loss over the logits shared).  The kernel library
  (`backends/llvm/native/kernellib.py`) holds the shape-generic GEMM code, built once per
  machine (dtype, tile family, target, llvmlite version, source digest) and loaded from
  the disk cache by every later process; the "first ever" row pays its build on top of
  the graph's own compile.
- A new graph's kernels are compiled as one module part per core, concurrently (own
  LLVM context and thread per part): `llvm` is the wall time of all parts, `optimise`
  and `codegen` the slowest part's.  On a loaded machine the parts share a core and
  `llvm` approaches their sum.
- A cache hit is found by the graph's fingerprint before lowering (no fusion, planning
  or IR), and its object code is linked by graphc's ELF loader without importing
  `llvmlite.binding`; what remains is tracing, autodiff, the memory-schedule pass and
  reading the entry (see docs/llvm-backend.md, "Compile time and caches").
- Issue 3's targets: "under 0.2 s cold" (a new graph) and "0.05 s from the disk cache".
"""


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import llvmlite
    import llvmlite.binding as llvm
    return f"{cpu} (`{llvm.get_host_cpu_name()}`), {os.cpu_count()} cores, Python " \
           f"{platform.python_version()}, llvmlite {llvmlite.__version__}, load average " \
           f"{open('/proc/loadavg').read().split()[0]} at the end"


def update_docs(text):
    """Append ``text`` to docs/benchmarks.md (never replacing an earlier table)."""
    path = ROOT / "docs" / "benchmarks.md"
    path.write_text(path.read_text().rstrip() + "\n\n" + text + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="fresh-process repetitions")
    ap.add_argument("--inproc", type=int, default=5, help="compiles per warm process")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--no-library", action="store_true",
                    help="GRAPHC_KERNEL_LIBRARY=0: GEMMs compiled into every graph (before)")
    ap.add_argument("--model", choices=("mlp", "lenet", "transformer"), default="mlp")
    ap.add_argument("--no-tune", action="store_true",
                    help="GRAPHC_TUNE=0 (the table's tile; no tuner row)")
    ap.add_argument("--update-docs", action="store_true",
                    help="append the table to docs/benchmarks.md (older tables are kept)")
    a = ap.parse_args()
    if a.worker:
        kind, *rest = a.worker
        if kind == "jax":
            worker_jax(rest[0], [float(x) for x in rest[1:]])
        elif kind == "tune":
            worker_tune()
        else:
            worker_graphc(rest[0], rest[1], [float(x) for x in rest[2:]])
        return
    print(f"load average {open('/proc/loadavg').read().split()[0]}", file=sys.stderr)
    res, phases = measure(a.reps, a.inproc, not a.no_library, a.model, not a.no_tune)
    tab = table(res, phases, a.reps)
    cmd = "python bench/compile_time.py" + (f" --model {a.model}" if a.model != "mlp" else "") \
        + (f" --reps {a.reps}" if a.reps != 5 else "") \
        + (f" --inproc {a.inproc}" if a.inproc != 5 else "") \
        + (" --no-library" if a.no_library else "") + (" --no-tune" if a.no_tune else "")
    what = {"mlp": "MLP 784-512-256-10 training step, batch 128, SGD: `gc.compile_step` with "
                   "the LLVM backend vs `jax.jit(...).lower().compile()`",
            "lenet": "LeNet-5 training step, batch 64, SGD: `gc.compile_step` + the first "
                     "step vs JAX's first call of the jitted step",
            "transformer": "char-LM transformer step (issue 12's benchmark model), SGD: "
                           "`gc.compile_step` + the first step vs JAX's first call"}[a.model]
    text = (f"### Compile time, {a.model}\n\n{what}; medians "
            f"({datetime.date.today().isoformat()}, {_machine()}; `{cmd}`).\n\n{tab}\n"
            + (NOTES if not a.no_library else ""))
    print(text)
    if a.update_docs:
        update_docs(text)


if __name__ == "__main__":
    main()
