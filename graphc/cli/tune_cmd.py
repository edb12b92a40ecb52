"""``graphc tune``: (re)time the GEMM kernel candidates on this CPU, print each one's
GFLOP/s and the choice, and keep the choice in the disk cache for later processes
(``backends/llvm/native/tuning.py`` says where and how it is used;
``backends/llvm/runtime/tuner.py`` what is searched and how it is timed)."""
from __future__ import annotations

import json


def run(args) -> int:
    from ..backends.llvm.native import jit, tuning
    from ..backends.llvm.runtime import tuner
    t = jit.host_target()
    if args.show:
        c = tuning.choice()
        print(f"CPU {t.cpu}: GEMM {c.label} ({tuning.source()}; "
              f"table default {tuning.family_default().label}; GRAPHC_TUNE={tuning.mode()})")
        return 0
    res = tuner.tune(budget=args.budget, progress=not args.quiet)
    path = tuning.write_cached(res.best, res.table(), res.seconds)
    tuning.set_choice(res.best, "tuned")
    if args.json:
        print(json.dumps({"cpu": t.cpu, "choice": res.best.label, "seconds": res.seconds,
                          "cache": path, "candidates": res.table()}, indent=1))
        return 0
    labels = [s[0] for s in tuner.SHAPES]
    print(f"CPU {t.cpu}, 1 thread, GFLOP/s (best of repeated calls), score = geometric mean")
    print(f"{'candidate':<18}" + "".join(f"{x:>10}" for x in labels) + f"{'score':>8}")
    for c, g, s in sorted(res.results, key=lambda r: -r[2]):
        mark = "  <- chosen" if c == res.best else ""
        print(f"{c.label:<18}" + "".join(f"{g[x]:10.1f}" for x in labels) + f"{s:8.1f}{mark}")
    where = path or "not kept (disk cache off or unusable: GRAPHC_CACHE_DIR)"
    print(f"chose {res.best.label} in {res.seconds:.1f} s; cache: {where}")
    return 0
