"""The asynchronous parameter server across real MPI ranks: it trains, a kill -9'd worker
is dropped (and replaced) while training completes, staleness is bounded."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from .conftest import mpi_env, mpiexec
from .test_restart_mpi import _rank_pid


def _job(tmp_path, *extra):
    cmd = [mpiexec(), "--with-ft", "ulfm", "--oversubscribe", "-n", "3", sys.executable, "-m",
           "graphc", "train", "mlp", "--distributed", "async", "--batch-size", "32",
           "--progress", "lines", "--comm-timeout", "20", "--json",
           str(tmp_path / "log.json"), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=mpi_env())


def _records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "log.json").read_text().splitlines()]


def test_async_trains_with_bounded_staleness(tmp_path):
    job = _job(tmp_path, "--epochs", "3", "--staleness", "1")
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-3000:]
    test = _records(tmp_path)[-1]
    assert test["event"] == "test" and test["test_accuracy"] > 0.9, test
    assert test["staleness"]["max"] <= 1 and test["updates"] == 3 * (1257 // 32)
    assert "async data parallel on 3 ranks" in out.splitlines()[-1]


def test_killed_worker_does_not_stop_training(tmp_path):
    job = _job(tmp_path, "--epochs", "6", "--batch-size", "16")
    killed, deadline = None, time.time() + 90
    while time.time() < deadline and job.poll() is None:
        log = tmp_path / "log.json"
        if log.exists() and log.read_text().count('"epoch"') >= 1:
            killed = _rank_pid(job.pid, 2)
            if killed:
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.02)
    assert killed, "the run ended before the worker could be killed"
    out, err = job.communicate(timeout=150)
    assert job.returncode == 0, err[-3000:]
    assert "server: lost worker 2" in out and "spawned a replacement" in out, out[-3000:]
    test = _records(tmp_path)[-1]
    assert test["updates"] == 6 * (1257 // 16) and test["test_accuracy"] > 0.9
    assert len(test["lost_workers"]) == 1
