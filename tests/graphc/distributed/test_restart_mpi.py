"""Fault tolerance of sync training: SIGKILL a rank mid-run; ``graphc launch
--max-restarts`` restarts the job from rank 0's last checkpoint and the final parameters
are bit-identical to an uninterrupted run."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .conftest import Job, mpiexec


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env and \
                b"train" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def _launch(ckpt, restarts=0):
    cmd = [sys.executable, "-m", "graphc", "launch", "-n", "2", "--max-restarts",
           str(restarts), "--mpiexec", f"{mpiexec()} --oversubscribe", "--", "train", "mlp",
           "--distributed", "sync", "--epochs", "4", "--batch-size", "32", "--patience", "0",
           "--checkpoint-dir", str(ckpt), "--checkpoint-steps", "5", "--progress", "lines",
           "--comm-timeout", "20"]
    return Job(cmd)


def _final(ckpt) -> dict:
    (last,) = sorted(Path(ckpt).glob("ckpt-*.npz"))[-1:]
    with np.load(last) as z:
        return {k: z[k] for k in z.files if k.startswith(("param/", "opt/"))}


def test_sigkill_a_rank_and_restart_ends_bit_identical(tmp_path):
    with _launch(tmp_path / "ref") as ref:
        out, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err[-2000:]
    assert "test accuracy" in out.splitlines()[-1]

    with _launch(tmp_path / "killed", restarts=2) as job:
        killed = None
        deadline = time.time() + 90
        while time.time() < deadline and job.poll() is None:
            if list((tmp_path / "killed").glob("ckpt-*.npz")):
                killed = _rank_pid(job.pid, 1)
                if killed:
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.01)
        assert killed, "no rank to kill: the run ended before its first checkpoint?"
        out, err = job.communicate(timeout=150)
    assert job.returncode == 0, err[-3000:]
    assert "restarting from the last checkpoint (1/2)" in err, err[-3000:]
    assert "resumed from" in out
    a, b = _final(tmp_path / "ref"), _final(tmp_path / "killed")
    assert a.keys() == b.keys() and any(k.startswith("opt/") for k in a)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
