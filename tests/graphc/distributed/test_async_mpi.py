"""The asynchronous parameter server across real MPI ranks: it trains, a kill -9'd worker
is dropped (and replaced) while training completes, staleness is bounded."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

from .conftest import Job, mpiexec
from .test_restart_mpi import _rank_pid


def _job(tmp_path, *extra, model="mlp"):
    cmd = [mpiexec(), "--with-ft", "ulfm", "--oversubscribe", "-n", "3", sys.executable, "-m",
           "graphc", "train", model, "--distributed", "async", "--batch-size", "32",
           "--progress", "lines", "--comm-timeout", "20", "--json",
           str(tmp_path / "log.json"), *extra]
    return Job(cmd)


def _records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "log.json").read_text().splitlines()]


def test_async_trains_with_bounded_staleness(tmp_path):
    with _job(tmp_path, "--epochs", "3", "--staleness", "1") as job:
        out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-3000:]
    test = _records(tmp_path)[-1]
    assert test["event"] == "test" and test["test_accuracy"] > 0.9, test
    assert test["staleness"]["max"] <= 1 and test["updates"] == 3 * (1257 // 32)
    assert "async data parallel on 3 ranks" in out.splitlines()[-1]


DROPOUT_MODEL = """
import graphc as gc


def net(n_features, n_classes):
    return gc.nn.Sequential(gc.nn.Linear(n_features, 64), gc.nn.ReLU(), gc.nn.Dropout(0.2),
                            gc.nn.Linear(64, n_classes))
"""


def test_async_trains_a_model_with_dropout(tmp_path):
    """Each worker draws its slot's dropout stream (docs/distributed.md); the server's
    evaluation runs without dropout."""
    (tmp_path / "dropmodel.py").write_text(DROPOUT_MODEL)
    with _job(tmp_path, "--epochs", "3", model=str(tmp_path / "dropmodel.py") + ":net") as job:
        out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-3000:]
    test = _records(tmp_path)[-1]
    assert test["event"] == "test" and test["test_accuracy"] > 0.85, test
    assert test["updates"] == 3 * (1257 // 32) and not test["lost_workers"]


def _signal_worker_after_an_epoch(job, tmp_path, sig) -> int:
    """Send ``sig`` to rank 2 once the server has logged an epoch; its pid."""
    deadline = time.time() + 90
    while time.time() < deadline and job.poll() is None:
        log = tmp_path / "log.json"
        if log.exists() and log.read_text().count('"epoch"') >= 1:
            pid = _rank_pid(job.pid, 2)
            if pid:
                os.kill(pid, sig)
                return pid
        time.sleep(0.02)
    raise AssertionError(f"the run ended before the worker could get signal {sig}")


def test_killed_worker_does_not_stop_training(tmp_path):
    with _job(tmp_path, "--epochs", "6", "--batch-size", "16") as job:
        _signal_worker_after_an_epoch(job, tmp_path, signal.SIGKILL)
        # before the finalize fix, 2 runs in 40 (Zen 5; 1 in 3 on Zen 3) hung here in
        # MPI_Finalize after the kill
        out, err = job.communicate(timeout=150)
    assert job.returncode == 0, err[-3000:]
    assert "server: lost worker 2" in out and "spawned a replacement" in out, out[-3000:]
    test = _records(tmp_path)[-1]
    assert test["updates"] == 6 * (1257 // 16) and test["test_accuracy"] > 0.9
    assert len(test["lost_workers"]) == 1


def test_stopped_worker_is_dropped_and_training_completes(tmp_path):
    """A worker that is alive but stuck (SIGSTOP, longer than --comm-timeout): the
    server, which never blocks on one worker, drops it and goes on; the other worker,
    held back at most until then, does not time out; the stopped one, resumed, leaves
    without ending the job.  (Before: the server's blocking send to the stopped worker
    ran out the other worker's wait too, and its MPI_Abort ended the whole job.)"""
    with _job(tmp_path, "--epochs", "8", "--batch-size", "16", "--comm-timeout", "4",
              "--respawn", "0", "--staleness", "1") as job:
        stopped = _signal_worker_after_an_epoch(job, tmp_path, signal.SIGSTOP)
        time.sleep(7)
        os.kill(stopped, signal.SIGCONT)
        out, err = job.communicate(timeout=150)
    assert job.returncode == 0, (out[-2000:], err[-3000:])
    assert "server: lost worker 2" in out, out[-3000:]
    test = _records(tmp_path)[-1]
    assert test["event"] == "test" and test["updates"] == 8 * (1257 // 16), test
    assert test["test_accuracy"] > 0.9 and len(test["lost_workers"]) == 1
