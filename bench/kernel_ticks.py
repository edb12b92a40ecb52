"""Per-kernel rdtsc ticks of a profiled compiled step, the way every bench's ``--profile``
reads them: the minimum over calls per kernel, which filters out the other processes of
a shared machine, plus each call's wall time (for the tick rate of the fastest call)."""
from __future__ import annotations

import time

import numpy as np


def kernel_ticks(fn, args, calls: int, skip: int = 5):
    """Run ``fn(*args)`` ``calls`` times; returns ``(rows, walls)``: per-kernel ticks of
    every call after the first ``skip`` (an array, calls × kernels) and each call's
    seconds."""
    rows, walls = [], []
    for i in range(calls):
        t0 = time.perf_counter()
        fn(*args)
        walls.append(time.perf_counter() - t0)
        if i >= skip:
            rows.append([c for _, _, c in fn.profile()])
    return np.array(rows), walls
