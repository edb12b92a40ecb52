"""The MPI tests' :class:`Job` bound: a job that does not end is killed -- with every
process of its session, also those in process groups of their own (as Open MPI starts
its ranks) -- and the test fails saying what was left, never a hang."""
from __future__ import annotations

import sys
import time

import pytest

from .conftest import Job, _session_pids

GRANDCHILD = "import os, time; os.setpgid(0, 0); print('child', os.getpid(), flush=True); " \
             "time.sleep(300)"
PARENT = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', %r]); "
          "time.sleep(300)" % GRANDCHILD)


def _started(job):
    for _ in range(1200):                   # a minute at most: the two have started
        if len(_session_pids(job.pid)) >= 2:
            return
        time.sleep(0.05)
    job.kill()
    pytest.fail("the test's processes did not start")


def test_a_job_past_its_timeout_is_killed_with_its_whole_session():
    job = Job([sys.executable, "-c", PARENT])
    _started(job)
    with pytest.raises(pytest.fail.Exception) as e:
        job.communicate(timeout=0.5)
    msg = str(e.value)
    assert "did not end within 0.5 s; killed its session (2 processes)" in msg, msg
    assert "os.setpgid" in msg
    assert _session_pids(job.pid) == []


def test_leaving_the_with_block_kills_what_is_left():
    with Job([sys.executable, "-c", PARENT]) as job:
        _started(job)
    assert job.poll() is not None and _session_pids(job.pid) == []
