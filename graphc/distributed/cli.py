"""The command-line side: ``graphc train MODEL --distributed sync|async`` (run on every
rank by ``mpiexec``) and ``graphc launch`` (the restart wrapper around ``mpiexec``)."""
from __future__ import annotations

import sys
import time

from ..ir import GraphcError
from . import comm as C


def run_train(args, overrides: dict) -> int:
    """Train on this rank, then finalize MPI with a deadline (``--comm-timeout``, at least
    ``FINALIZE_FLOOR``): a rank whose MPI_Finalize hangs says so and exits (``FINALIZE_TIMEOUT_EXIT`` after a
    finished run, its outputs written) -- never a process that does not end."""
    C.end_of_run(timeout=max(args.comm_timeout or C.DEFAULT_TIMEOUT, C.FINALIZE_FLOOR))
    rc = _train(args, overrides)
    if rc == 0:
        C.end_of_run(finished=True)
        C.finalize()
    return rc


def _train(args, overrides: dict) -> int:
    from ..train import prepare, resolve
    t0 = time.perf_counter()
    mode = args.distributed
    spec, cfg = resolve(args.model, **overrides)
    if cfg.lr_schedule != "constant" or cfg.warmup:
        raise GraphcError("--lr-schedule and --warmup are not supported with --distributed yet "
                          "(its step keeps a constant learning rate); drop them")
    if cfg.augment != "none":
        raise GraphcError(f"--augment {cfg.augment} is not supported with --distributed yet "
                          "(its sharded sampler feeds the batches as they are); add "
                          "--augment none")
    if args.save:                       # before any work: a run must not end unsaveable
        from ..train.modelfile import check_save_path
        check_save_path(args.save, avoid=[cfg.dataset, cfg.json_log, cfg.plot])
    opts = {"buckets": args.buckets, "reduce": args.reduce, "comm_timeout": args.comm_timeout,
            "staleness": args.staleness, "respawn": args.respawn}
    if mode == "async" and C.parent_comm() is not None:       # a respawned worker
        from .ps import run_spawned_worker
        return run_spawned_worker(prepare(spec, cfg), opts)
    comm = C.world()
    prepared = prepare(spec, cfg)
    try:
        if mode == "sync":
            from .trainer import SyncTrainer
            result = SyncTrainer(prepared, opts, comm).run()
        else:
            from .ps import run_async
            result = run_async(prepared, opts, comm)
    except C.CommTimeout as e:
        print(f"graphc train: error: {e}", file=sys.stderr, flush=True)
        C.abort(1, comm)             # peers may be blocked in a collective: end the job
        return 1
    if comm.Get_rank() != 0:
        return 0
    if args.save:
        from .. import pytree
        from ..train.modelfile import save_model
        best = result["best_params"]
        _, td = pytree.flatten(prepared.params)
        tree = pytree.unflatten(td, [best[k] for k in pytree.paths(td)])
        save_model(args.save, prepared, tree,
                   {k: v for k, v in result.items() if k != "best_params"},
                   {"distributed": mode, "ranks": comm.Get_size()})
    from ..train.metrics import headline
    ranks = comm.Get_size()
    print(f"test {headline(result, 'test')} -- {spec.name} on {cfg.dataset}, {mode} data "
          f"parallel on {ranks} rank{'s' * (ranks != 1)}, {result['updates']} updates, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return 0


def run_launch(args) -> int:
    """Run ``mpiexec -n N python -m graphc CMD...``; when the job fails (a rank died or
    timed out), run it again with ``--resume`` up to ``--max-restarts`` times."""
    import shlex
    import subprocess
    rest = list(args.rest)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise GraphcError("graphc launch: give the command to run, e.g. graphc launch -n 2 "
                          "-- train mlp --distributed sync --checkpoint-dir ckpt")
    if "--checkpoint-dir" not in rest and args.max_restarts:
        raise GraphcError("graphc launch: --max-restarts needs the command's "
                          "--checkpoint-dir (restarts resume from its last checkpoint)")
    base = shlex.split(args.mpiexec) + ["-n", str(args.np), sys.executable, "-m", "graphc"]
    attempt = 0
    while True:
        cmd = base + rest + (["--resume"] if attempt and "--resume" not in rest else [])
        print(f"graphc launch: {'restart ' + str(attempt) + ': ' if attempt else ''}"
              f"{shlex.join(cmd)}", file=sys.stderr, flush=True)
        rc = subprocess.call(cmd)
        if rc == 0:
            return 0
        if rc == C.FINALIZE_TIMEOUT_EXIT:     # finished; only MPI's shutdown hung
            print(f"graphc launch: the job finished, but MPI_Finalize did not return in "
                  f"time on some rank (exit {rc}); its outputs are written, not restarting",
                  file=sys.stderr, flush=True)
            return rc
        if attempt >= args.max_restarts:
            print(f"graphc launch: the job failed (exit {rc}) and {attempt} restart(s) are "
                  "used up", file=sys.stderr, flush=True)
            return rc if rc > 0 else 1
        attempt += 1
        print(f"graphc launch: the job failed (exit {rc}); restarting from the last "
              f"checkpoint ({attempt}/{args.max_restarts})", file=sys.stderr, flush=True)
