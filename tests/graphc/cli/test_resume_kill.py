"""Kill ``graphc train`` mid-run (SIGKILL right after its first checkpoint appears),
resume with ``--resume``, and compare the final parameters, optimizer state and best
parameters with an uninterrupted run: bit-identical."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np

from graphc.train import checkpoint as ckpt
from graphc.train import list_checkpoints

ARGS = ["train", "mlp", "--dataset", "synth-cls:n=6000,d=32,classes=5", "--widths", "64,64",
        "--epochs", "3", "--batch-size", "32", "--backend", "numpy", "--patience", "0",
        "--checkpoint-steps", "40", "--progress", "lines"]


def graphc_cmd(*extra):
    return [sys.executable, "-m", "graphc", *ARGS, *map(str, extra)]


def final(directory):
    arrays, meta = ckpt.load(list_checkpoints(directory)[-1])
    return arrays, meta


def test_killed_run_resumes_to_identical_parameters(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    r = subprocess.run(graphc_cmd("--checkpoint-dir", ref_dir), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr

    proc = subprocess.Popen(graphc_cmd("--checkpoint-dir", run_dir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while not glob.glob(str(run_dir / "ckpt-*.npz")):
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline
            time.sleep(0.005)
        still_running = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert still_running and proc.returncode == -signal.SIGKILL
    _, meta = final(run_dir)
    assert not meta["finished"] and meta["epoch"] < 3        # really interrupted mid-run

    r = subprocess.run(graphc_cmd("--checkpoint-dir", run_dir, "--resume"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "test accuracy" in r.stdout

    ref, ref_meta = final(ref_dir)
    got, got_meta = final(run_dir)
    assert sorted(ref) == sorted(got)
    assert any(k.startswith("opt/") for k in ref) and any(k.startswith("best/") for k in ref)
    for k in ref:
        np.testing.assert_array_equal(ref[k], got[k], err_msg=k)
    assert (ref_meta["step"], ref_meta["epoch"]) == (got_meta["step"], got_meta["epoch"])
    assert [h["val_loss"] for h in ref_meta["history"]] == \
        [h["val_loss"] for h in got_meta["history"]]
