"""Data parallel training over MPI (mpi4py): synchronous all-reduce and an asynchronous
parameter server.  See docs/distributed.md.

Run under ``mpiexec -n N python script.py`` (or ``mpiexec -n N graphc train MODEL
--distributed sync|async``).  mpi4py is imported on first use, so importing this package
costs nothing and works without MPI installed.

    import graphc.distributed as dist
    step = dist.data_parallel_step(loss, params, gc.optim.SGD(0.1), (x_shard, y_shard))
    sampler = dist.ShardedSampler(len(X), global_batch=256, rank=dist.rank(),
                                  world=dist.world_size(), seed=0)
    for idx in sampler.epoch(0):
        loss = step(X[idx], y[idx])          # the global mean loss, on every rank
"""
from __future__ import annotations

from .comm import CommTimeout, DistributedError, available, under_mpiexec
from .data import open_arrays
from .sampler import ShardedSampler
from .sync import DataParallelStep, data_parallel_step


def rank() -> int:
    """This process's rank in COMM_WORLD (0 in a process not started by mpiexec)."""
    from .comm import world
    return world().Get_rank()


def world_size() -> int:
    """Ranks in COMM_WORLD (1 without MPI)."""
    from .comm import world
    return world().Get_size()


def is_main() -> bool:
    """True on the rank that prints progress and writes files (rank 0)."""
    return rank() == 0


__all__ = ["CommTimeout", "DataParallelStep", "DistributedError", "ShardedSampler",
           "available", "data_parallel_step", "is_main", "open_arrays", "rank",
           "world_size"]
