"""The GEMM tuner: time a small space of kernel variants on the host, keep the fastest.

What is searched (:func:`space`): the micro-kernel tile (MR rows × NV vectors, only
tiles whose accumulators, B vectors and broadcast fit the vector registers: 16 ymm on
AVX2, 32 zmm on AVX-512), the K block KC (how much of a B panel and of A's row block
must stay in L1/L2: L2 is 512 KiB per core on Zen 3, 1-2 MiB elsewhere), the B-panel
prefetch of few-row tiles, whether non-transposed B panels are copied contiguous and
whether a transposed A is packed into tile strips.
Thread partitioning is not searched (the fixed partition of :mod:`..plan.partition`
gives bitwise-identical results for any thread count).

How (a greedy staged search, as a beam search of width 1 over the knobs, the
knobs measured to matter most first): every tile at KC 256 with the table's prefetch,
then B-panel packing toggled (:func:`..codegen.gemm_pack.emit_pack_b`), then A packing
toggled (``GemmSpec.pack_a``), then the other KCs for the best, then prefetch toggled --
9 candidates, compiled one module each (the nn/tn/nt variants together) and timed on one
thread at 512³, the MLP 784-512 layer's forward, weight-gradient and input-gradient
products (batch 128), the 512-256 layer's weight gradient (a transposed A of 512
columns) and the first layer's batch-16 forward, each shape on the tile a compiled step would give
it with that candidate (:func:`..codegen.gemm.shape_spec`).  A candidate's score is the geometric mean of its
GFLOP/s; each shape's time is the *minimum* over repeated calls (other processes on a
shared machine only ever add time), and a stage's candidates are timed alternately in
:data:`ROUNDS` rounds.  (Figures of different stages come from different moments: on a
loaded machine the choice is only as good as the quiet the search found; so each later
stage times the best candidate so far again, alternating with its own, and a last
stage times the :data:`FINALISTS` best, and the runner-up tile's best, side by side
once more: :func:`finalists`.)  Every
candidate's result is checked against numpy first; a wrong one is never chosen.  The
search stops starting new candidates once ``budget`` seconds are spent (default
:data:`BUDGET`; the first candidate always runs).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..codegen import gemm as gemm_mod
from ..native import tuning
from ..native.tuning import TileChoice
from . import gemmcall

#: seconds the search may take (compiles included) before it stops starting candidates
BUDGET = 5.0
#: (label, M, K, N, trans_a, trans_b): what the score is measured on
SHAPES = (("512³", 512, 512, 512, False, False),
          ("fc1 fwd", 128, 784, 512, False, False),
          ("fc1 dW", 784, 128, 512, True, False),
          ("fc1 dX", 128, 512, 784, False, True),
          ("fc2 dW", 512, 128, 256, True, False),
          ("b16 fwd", 16, 784, 512, False, False))
KCS = (256, 128, 384)


def tiles(regs: int) -> list:
    """(MR, NV) candidates for ``regs`` vector registers (MR·NV + NV + 1 ≤ regs)."""
    if regs >= 32:
        cands = [(6, 4), (8, 3), (4, 4), (5, 4)]
    else:
        cands = [(6, 2), (5, 2), (4, 3), (8, 1)]
    return [(mr, nv) for mr, nv in cands if mr * nv + nv + 1 <= regs]


def space(t=None) -> list:
    """Every TileChoice the tuner may pick on target ``t`` (the tests check them all)."""
    base = tuning.family_default(t)
    regs = tuning.vector_registers(t)
    out = [TileChoice(mr, nv, kc, pf, pack, pack_a) for mr, nv in tiles(regs) for kc in KCS
           for pf in sorted({base.pf, 0}) for pack in (0, 1) for pack_a in (0, 1)]
    return out if base in out else [base] + out


@dataclass
class TuneResult:
    best: TileChoice
    seconds: float
    results: list = field(default_factory=list)   # [(choice, {label: GFLOP/s}, score)]

    def table(self) -> list:
        return [{"choice": c.label, "mr": c.mr, "nv": c.nv, "kc": c.kc, "pf": c.pf,
                 "pack": c.pack, "pack_a": c.pack_a,
                 "gflops": {k: round(v, 1) for k, v in g.items()}, "score": round(s, 1)}
                for c, g, s in self.results]


def specs_of(c: TileChoice, dtype="float32") -> list:
    return [gemm_mod.GemmSpec.of(c, dtype, ta, tb)
            for ta, tb in ((False, False), (True, False), (False, True), (True, True))]


class _Bench:
    """Operands of every shape, made once; a bound plan per (candidate, shape)."""

    def __init__(self, shapes, threads: int = 1):
        rng = np.random.default_rng(0)
        self.cases, self.threads, self.plans = [], threads, {}
        for label, m, k, n, ta, tb in shapes:
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
            ref = (a.T if ta else a) @ (b.T if tb else b)
            self.cases.append((label, a, b, ta, tb, ref, 2.0 * m * n * k))

    def prepare(self, c: TileChoice) -> bool:
        """Compile ``c`` (one module), bind its plans, check every shape against numpy."""
        specs = {(s.trans_a, s.trans_b): s for s in specs_of(c)}
        # each shape on the tile a compiled step would give it with this choice
        per_case = [gemm_mod.shape_spec(specs[(ta, tb)], ref.shape[0], ref.shape[1])
                    for _, _, _, ta, tb, ref, _ in self.cases]
        gemmcall.precompile(list(specs.values()) + per_case)
        plans = []
        for (label, a, b, ta, tb, ref, flops), spec in zip(self.cases, per_case):
            out = np.empty(ref.shape, np.float32)
            plan = gemmcall.GemmPlan(a, b, out, ta, tb, threads=self.threads, spec=spec)
            plan()
            if not np.allclose(out, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max())):
                return False
            plans.append((label, plan, flops))
        self.plans[c] = plans
        return True

    def time(self, c: TileChoice, slice_s: float, into: dict) -> None:
        """Best GFLOP/s per shape of ``c`` over ~``slice_s`` seconds each, merged into
        ``into`` (the best figure over all rounds is kept)."""
        for label, plan, flops in self.plans[c]:
            best, deadline, n = math.inf, time.perf_counter() + slice_s, 0
            while n < 3 or time.perf_counter() < deadline:
                t0 = time.perf_counter()
                plan.run()
                best = min(best, time.perf_counter() - t0)
                n += 1
            into[label] = max(into.get(label, 0.0), flops / best / 1e9)


def _score(g: dict) -> float:
    return math.exp(sum(math.log(v) for v in g.values()) / len(g))


#: rounds in which a stage's candidates are timed alternately (a burst of load from
#: another process then hits every candidate of the stage, not one)
ROUNDS = 3
#: how many of the best candidates a last stage times side by side again
FINALISTS = 3


def finalists(ranked: list) -> list:
    """The last stage's candidates (``ranked`` best first): the FINALISTS best, and the
    best of the runner-up tile if none of them has it.  The later stages vary the
    knobs of the first stage's winning tile only, so the best few are all that tile's
    variants, while a tile that lost the first stage by noise was timed in that stage
    alone (Zen 3 guest, session 11: 5x2v chosen over 4x3v that way, 74.6 to 78.5)."""
    top = list(ranked[:FINALISTS])
    tiles_in = {(c.mr, c.nv) for c in top}
    other = next((c for c in ranked if (c.mr, c.nv) not in tiles_in), None)
    return top + ([other] if other is not None else [])


def tune(budget: float | None = None, progress: bool = False, shapes=SHAPES,
         stream=None) -> TuneResult:
    """Search (see the module docstring); returns the best candidate and every figure."""
    budget = BUDGET if budget is None else float(budget)
    stream = stream or sys.stderr
    t0 = time.perf_counter()
    base = tuning.family_default()
    bench = _Bench(shapes)
    # per-shape, per-round timing slice: ~half the budget over ~9 candidates, the best
    # one's four re-timings and the final round of the finalists
    slice_s = max(0.001, 0.5 * budget / ((14 + FINALISTS) * ROUNDS * len(shapes)))
    results: dict = {}

    def stage(cands, again=()):
        incumbent = best() if results else None
        cands = [c for c in dict.fromkeys(cands) if c not in results]
        ok = []
        for c in cands:
            if (results or ok) and time.perf_counter() - t0 > budget:
                break               # (the first candidate always runs: a choice is made)
            if bench.prepare(c):
                ok.append(c)
            elif progress:
                print(f"graphc tune: {c.label}: WRONG RESULT, skipped", file=stream)
        # the best so far is timed again beside the stage's candidates (on a shared
        # machine figures from different moments are not comparable, these are); its
        # figures stay the best of all its timings, as each shape's is the fastest call
        timed = list(dict.fromkeys(
            ok + ([incumbent] if incumbent is not None and ok else []) + list(again)))
        figs = {c: dict(results.get(c, {})) for c in timed}
        for _ in range(ROUNDS):
            for c in timed:
                bench.time(c, slice_s, figs[c])
        results.update(figs)
        if progress and (ok or again):
            b = best()
            print(f"graphc tune: {len(results)} candidates, {time.perf_counter() - t0:.1f} s: "
                  + ", ".join(f"{c.label} {_score(figs[c]):.1f}" for c in ok or again)
                  + f" GFLOP/s; best {b.label}", file=stream, flush=True)

    def best():
        return max(results, key=lambda x: _score(results[x]))

    stage([TileChoice(mr, nv, KCS[0], base.pf, base.pack, base.pack_a)
           for mr, nv in tiles(tuning.vector_registers())] + [base])
    if results:
        stage([replace(best(), pack=1 - best().pack)])
        stage([replace(best(), pack_a=1 - best().pack_a)])
        stage([replace(best(), kc=kc) for kc in KCS[1:]])
        stage([replace(best(), pf=0 if best().pf else base.pf or 1)])
        # the incumbent was timed in every stage, a candidate it beat once only in its
        # own: the closest ones are timed side by side once more (Zen 3 guest, session
        # 11: packA lost its stage by noise and was never timed again)
        ranked = sorted(results, key=lambda x: -_score(results[x]))
        if len(ranked) > 1 and time.perf_counter() - t0 <= budget:
            stage([], again=finalists(ranked))
    chosen = best() if results else base
    res = TuneResult(chosen, time.perf_counter() - t0,
                     [(c, g, _score(g)) for c, g in results.items()])
    if progress:
        print(f"graphc tune: chose {chosen.label} in {res.seconds:.1f} s", file=stream,
              flush=True)
    return res


def ensure_tuned(budget: float | None = None) -> TileChoice:
    """:func:`.tuning.choice`, after tuning once for this CPU if ``GRAPHC_TUNE=auto``, the
    disk cache is usable and holds no choice yet (a few seconds, once per CPU; progress
    on stderr).  The backend calls it before a graph's first compile."""
    if not tuning.needs_tuning():
        return tuning.choice()
    with tuning.LOCK:
        if not tuning.needs_tuning():
            return tuning.choice()
        print("graphc: first use on this CPU: timing GEMM kernel candidates once "
              "(GRAPHC_TUNE=0 skips; `graphc tune` reruns)", file=sys.stderr, flush=True)
        res = tune(budget=budget, progress=True)
        tuning.write_cached(res.best, res.table(), res.seconds)
        tuning.set_choice(res.best, "tuned")
        return res.best
