"""The end of an MPI run is bounded: a rank whose MPI_Finalize cannot complete (a peer
stopped, or Open MPI's closing fence lost to a dead process) says so and exits with
``FINALIZE_TIMEOUT_EXIT``; ``graphc launch`` does not restart a job that only that."""
from __future__ import annotations

import pytest

from graphc.distributed import comm as C

from .conftest import SCRIPTS, run_mpi


@pytest.mark.parametrize("state,code,note", [
    ("finished", C.FINALIZE_TIMEOUT_EXIT, " after its run finished (its outputs are written)"),
    ("failed", 1, ""), ("atexit", 1, "")])
def test_a_finalize_that_cannot_complete_ends_with_its_own_status(state, code, note):
    p = run_mpi(2, [SCRIPTS / "finalize_bound.py", 1, state], timeout=60, check=False)
    assert "rank 0 finalizing" in p.stdout and "rank 0 finalized" not in p.stdout
    assert (f"rank 0: MPI_Finalize did not return within 1 s{note}; ending this process "
            f"(exit {code})") in p.stderr, p.stderr
    assert p.returncode == code, p.stderr


def test_finalize_outside_mpiexec_is_a_no_op():
    C.finalize()
