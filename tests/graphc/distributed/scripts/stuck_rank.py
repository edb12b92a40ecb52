"""Run under mpiexec -n 2: rank 1 stops itself (SIGSTOP) before step 3; rank 0's watchdog
must end the job with a clear message instead of hanging."""
import os
import signal

import numpy as np

import graphc as gc
import graphc.distributed as dist


def loss(p, x):
    return gc.mean((x @ p["w"]) ** 2)


rank = dist.rank()
x = np.ones((4, 8), np.float32)
step = dist.data_parallel_step(loss, {"w": np.ones((8, 16), np.float32)}, gc.optim.SGD(0.01),
                               (x,), timeout=2)
print(f"rank {rank}: reduce {step.reduce}", flush=True)
for i in range(5):
    if rank == 1 and i == 2:
        os.kill(os.getpid(), signal.SIGSTOP)
    step(x)
print(f"rank {rank} finished", flush=True)
