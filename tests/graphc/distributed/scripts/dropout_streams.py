"""Run under mpiexec -n 2 (shared-memory reduction): both ranks feed the *same* shard, so
their gradients differ only through dropout's masks.  Prints one RESULT json line:
whether the two ranks' gradients differ after each step (each rank its own mask stream),
and the parameter digests of the same run twice (repeatable)."""
import hashlib
import json

import numpy as np

import graphc as gc
import graphc.distributed as dist


def loss(p, x, y):
    h = gc.nn.dropout(gc.relu(x @ p["w1"]), 0.5)
    return gc.nn.cross_entropy(h @ p["w2"], y)


def init():
    rng = np.random.default_rng(0)
    return {"w1": rng.normal(0, .3, (16, 32)).astype(np.float32),
            "w2": rng.normal(0, .3, (32, 4)).astype(np.float32)}


rng = np.random.default_rng(1)
X, Y = rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 4, 8)
digests, differ = [], []
for run in range(2):
    step = dist.data_parallel_step(loss, init(), gc.optim.SGD(0.1), (X, Y), reduce="shared",
                                   timeout=30, seed=11)
    for _ in range(3):
        step(X, Y)
        g0, g1 = (np.concatenate([v.ravel() for v in r.views])
                  for r in step._shared.sets[step._shared.current ^ 1])
        differ.append(not np.array_equal(g0, g1))
    digests.append(hashlib.sha256(b"".join(step.params[k].tobytes()
                                           for k in sorted(step.params))).hexdigest())
    assert step.check_replicas()
if dist.rank() == 0:
    print("RESULT " + json.dumps({"differ": differ, "digests": digests}), flush=True)
