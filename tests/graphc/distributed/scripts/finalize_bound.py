"""Run under mpiexec -n 2: rank 1 stops itself (SIGSTOP) instead of finalizing, so rank
0's MPI_Finalize cannot complete its closing fence; ``comm.finalize`` must end rank 0
with its message and exit status after the deadline instead of hanging.  argv: the
deadline, and "finished" (the run's outputs are written), "failed", or "atexit" (no
explicit finalize: graphc's exit hook must do it, bounded)."""
import os
import signal
import sys

from graphc.distributed import comm as C

world = C.world()
world.Barrier()
if world.Get_rank() == 1:
    os.kill(os.getpid(), signal.SIGSTOP)
print("rank 0 finalizing", flush=True)
C.end_of_run(float(sys.argv[1]), finished=sys.argv[2] == "finished")
if sys.argv[2] != "atexit":          # "atexit": leave it to the exit hook
    C.finalize()
    print("rank 0 finalized", flush=True)
