"""Run under mpiexec -n N: the same data-parallel run twice (two steps in one job), then
once with the other gradient reduction (shared window vs MPI_Allreduce), and, on rank 0,
one rank x the global batch with gc.compile_step; prints one RESULT json line.

argv: optimizer (sgd|adam), buckets, reduce (auto|allreduce|shared|sharded; sharded is
compared with shared, the others with allreduce)."""
import hashlib
import json
import sys

import numpy as np

import graphc as gc
import graphc.distributed as dist


def loss(p, x, y):
    h = gc.relu(x @ p["w1"] + p["b1"])
    return gc.nn.cross_entropy(h @ p["w2"] + p["b2"], y)


def init():
    rng = np.random.default_rng(0)
    return {"w1": rng.normal(0, .1, (64, 48)).astype(np.float32),
            "b1": np.zeros(48, np.float32),
            "w2": rng.normal(0, .1, (48, 10)).astype(np.float32),
            "b2": np.zeros(10, np.float32)}


def digest(params):
    return hashlib.sha256(b"".join(params[k].tobytes() for k in sorted(params))).hexdigest()


opt = sys.argv[1] if len(sys.argv) > 1 else "sgd"
buckets = int(sys.argv[2]) if len(sys.argv) > 2 else 1
reduce = sys.argv[3] if len(sys.argv) > 3 else "auto"
make = (lambda: gc.optim.SGD(0.05, momentum=0.9)) if opt == "sgd" else \
    (lambda: gc.optim.Adam(1e-2))
rng = np.random.default_rng(1)
X = rng.normal(size=(384, 64)).astype(np.float32)
Y = rng.integers(0, 10, 384)
B, rank, world = 96, dist.rank(), dist.world_size()
losses, digests, modes = [], [], []
other = {"allreduce": "shared", "sharded": "shared"}.get(reduce, "allreduce")
for run, mode in enumerate([reduce, reduce, other]):
    s = dist.ShardedSampler(len(X), B, rank, world, seed=3)
    step = dist.data_parallel_step(loss, init(), make(), (X[:B // world], Y[:B // world]),
                                   buckets=buckets, timeout=30, reduce=mode)
    ls = [step(X[i], Y[i]) for e in range(2) for i in s.epoch(e)]
    losses.append(ls)
    digests.append(digest(step.params))
    modes.append(step.reduce)
    replicas = step.check_replicas()
    if run == 0:
        first = step
step = first
if rank == 0:
    ref = gc.compile_step(loss, init(), make(), (X[:B], Y[:B]))
    s1 = dist.ShardedSampler(len(X), B, 0, 1, seed=3)
    ref_losses = [ref(X[i], Y[i]) for e in range(2) for i in s1.epoch(e)]
    diff = max(float(np.max(np.abs(step.params[k] - ref.params[k]))) for k in ref.params)
    scale = max(float(np.max(np.abs(ref.params[k]))) for k in ref.params)
    print("RESULT " + json.dumps({
        "world": world, "digests": digests, "modes": modes, "replicas": replicas, "max_diff": diff,
        "scale": scale, "losses": losses[0], "ref_losses": ref_losses,
        "bit_identical_to_ref": digest(step.params) == digest(ref.params),
        "comm_s": step.totals["comm"], "steps": step.steps}), flush=True)
