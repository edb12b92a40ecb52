"""``graphc bench MODEL``: median time of the compiled training step and of its peers,
in the same process on the same batch, reported as ratios (machines are noisy; only
ratios measured together mean anything)."""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from .. import data as gdata
from ..ir import GraphcError
from ..train import compile_step
from . import peers
from .common import prepared_from_args
from .lm_cmd import LM_MODELS


def time_step(step, x, y, repeats: int, steps: int, warmup: int = 3) -> float:
    """Median seconds per call over ``repeats`` runs of ``steps`` calls each."""
    for _ in range(warmup):
        step(x, y)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def torch_layout(loss, params):
    """``(loss_t, params_t)``: the same model written the PyTorch way -- every 2-d weight
    leaf named ``w`` stored (out, in), a contiguous transposed copy, and read as
    ``x @ W.T`` (the loss transposes it back in the traced graph, so the compiled step
    sees ``matmul(x, transpose(W))``).  Same values, same training."""
    from .. import functions as F
    from .. import pytree

    leaves, td = pytree.flatten(params)
    names = pytree.paths(td)
    flip = [n.rsplit(".", 1)[-1] == "w" and getattr(x, "ndim", 0) == 2
            for n, x in zip(names, leaves)]
    params_t = pytree.unflatten(td, [np.ascontiguousarray(x.T) if f else x
                                     for x, f in zip(leaves, flip)])

    def loss_t(p, *batch):
        ls, _ = pytree.flatten(p)
        return loss(pytree.unflatten(td, [F.transpose(x) if f else x
                                          for x, f in zip(ls, flip)]), *batch)
    loss_t.__name__ = loss_t.__qualname__ = getattr(loss, "__name__", "loss") + "_wt"
    return loss_t, params_t


#: --layout: which weight layouts graphc's step is timed in
LAYOUTS = {"native": ("native",), "torch": ("torch",), "both": ("native", "torch")}
LAYOUT_LABEL = {"native": "x @ W", "torch": "x @ W.T"}


def run(args) -> int:
    wanted = [v.strip() for v in args.vs.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in peers.PEERS]
    if unknown:
        raise GraphcError(f"unknown peer(s) {', '.join(unknown)} for --vs; choose from "
                          f"{', '.join(peers.PEERS)}")
    p = prepared_from_args(args)
    cfg = p.config
    tr = p.splits.train
    x, y = next(gdata.Batches(tr.X, tr.y, cfg.batch_size, cfg.seed).epoch())
    init = {k: v for k, v in p.params.items()}
    import copy
    init = copy.deepcopy(init)                 # peers start from the same parameters
    layouts = LAYOUTS[getattr(args, "layout", None) or "native"]
    rows = []
    for lay in layouts:
        extra = {}
        if lay == "torch":
            loss_t, params_t = torch_layout(p.model.loss, copy.deepcopy(init))
            extra = {"loss": loss_t, "params": params_t}
        step, backend = compile_step(p, args.backend, args.threads,
                                     notice=lambda s: print(s, file=sys.stderr), **extra)
        label = f"graphc ({backend})" if len(layouts) == 1 and lay == "native" else \
            f"graphc ({backend}, {LAYOUT_LABEL[lay]})"
        rows.append((label, time_step(step, x, y, args.repeats, args.steps)))
    for name in wanted:
        try:
            if p.spec.name in LM_MODELS:
                raise peers.Unavailable("the transformer's peers (torch eager, SDPA, "
                                        "torch.compile, JAX) are in bench/transformer_step.py")
            maker = peers.PEERS[name]
            peer = (maker(p.model, init, cfg, args.threads) if name == "torch"
                    else maker(p.model, init, cfg))
            rows.append((name if name != "numpy" else "numpy (hand-written)",
                         time_step(peer, x, y, args.repeats, args.steps)))
        except peers.Unavailable as e:
            rows.append((name, None, str(e)))
    base = rows[0][1]
    print(f"bench {p.spec.name}: batch {cfg.batch_size}, {cfg.optimizer}, median of "
          f"{args.repeats} x {args.steps} steps")
    print(f"{'':24s} {'ms/step':>10s} {'samples/s':>12s} {'time/graphc':>12s}")
    for row in rows:
        if row[1] is None:
            print(f"{row[0]:24s} {'--':>10s} {'--':>12s} {'':>12s}  ({row[2]})")
            continue
        name, t = row
        print(f"{name:24s} {t * 1e3:10.4f} {cfg.batch_size / t:12,.0f} {t / base:11.2f}x")
    print("time/graphc: the row's time per step over graphc's (> 1: graphc is faster)")
    return 0
