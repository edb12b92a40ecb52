"""Synchronous data parallel: every rank a replica, gradients all-reduced every step.

One step on each rank:

1. the compiled gradient graph runs forward + backward on the rank's shard of the global
   batch and writes every gradient into the one contiguous :class:`GradRegion`;
2. the region (with the rank's loss in its last element) is summed over all ranks in
   place: one ``MPI_Allreduce`` (or ``buckets`` of them) under a :class:`Watchdog`
   deadline -- or, when every rank is on one machine (``reduce="shared"``, the
   default there), not moved at all: the regions are slots of one shared-memory MPI
   window (:mod:`.shared`), a barrier makes them visible, and
3. the compiled update graph applies ``optimizer`` to the mean gradient (summing the
   N slots itself in the shared case) -- the same numbers on every rank, so the
   replicas stay identical without ever exchanging parameters (they are broadcast from
   rank 0 once, at construction).

Deterministic: the backend is (fixed chunks per thread) and so is Open MPI's choice of
reduction algorithm for a given rank count and message size, so the same run twice
gives bit-identical parameters.  N ranks x batch B/N equals 1 rank x batch B up to the
order of the float sums over the batch (each rank sums its B/N rows, then MPI adds the
N partial sums) and the ``1/N`` scaling (exact for powers of two).
"""
from __future__ import annotations

import os
import time

import numpy as np

from .. import pytree
from ..gcpause import gc_paused
from ..ir import ArgumentError, GraphcError
from ..step import _own_param
from . import comm as C
from .graphs import dropout_key, gradient_graph, rng_input_index, update_graph
from .region import GradRegion

REDUCE_MODES = ("auto", "allreduce", "shared", "sharded")
#: what ``reduce="auto"`` takes when every rank is on one machine (docs/benchmarks.md)
AUTO_ON_ONE_NODE = "sharded"


class DataParallelStep:
    """``step(*shard) -> float`` global mean loss; ``compile_step``'s interface.

    ``example_batch`` is one rank's shard (global batch / world size rows).  Extra
    attributes: ``rank``, ``world``, ``grads`` (this rank's :class:`GradRegion`),
    ``reduce`` (``"allreduce"``, ``"shared"`` or ``"local"`` for one rank),
    ``timings`` (seconds of the last step: ``compute``, ``comm``, ``update``) and
    ``totals`` (sums over all steps), ``update_graph``.

    ``seed``: dropout's seed, as ``compile_step(seed=)``.  Each rank draws its masks from
    its own stream of it (:func:`.graphs.dropout_key`): distinct per rank and step,
    repeatable; rank 0's stream is the one-process step's.

    ``reduce``: ``"allreduce"`` sums the gradient region with ``MPI_Allreduce``
    (``buckets`` calls); ``"shared"`` keeps every rank's region in one node-shared MPI
    window and sums inside the update (single machine only); ``"auto"`` takes
    ``"shared"`` when all ranks share a machine and ``buckets`` is 1, else
    ``"allreduce"``.  ``None`` (default): ``$GRAPHC_SYNC_REDUCE``, else ``"auto"`` --
    the environment forces a path without touching the code (``allreduce`` to compare,
    or where a shared window misbehaves).
    """

    def __init__(self, loss_fn, params, optimizer, example_batch, comm=None, buckets=1,
                 timeout=None, backend="llvm", broadcast=True, reduce=None, seed=0,
                 **options):
        self.comm = comm if comm is not None else C.world()
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = C.DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self.reduce = self._reduce_mode(reduce, buckets)
        example_batch = tuple(example_batch)
        p_leaves, self._p_tree = pytree.flatten(params)
        names = pytree.paths(self._p_tree, "params")
        self._p_leaves = [_own_param(x, n) for x, n in zip(p_leaves, names)]
        self.params = pytree.unflatten(self._p_tree, self._p_leaves)
        self._check_same_model(names)
        self.optimizer = optimizer
        self.reduce = self._sharded_or_not(self.reduce, reduce)
        if broadcast and self.world > 1 and self.reduce != "sharded":
            for i, p in enumerate(self._p_leaves):
                C.bcast_array(p, 0, self.comm, f"broadcast of parameter {names[i]}",
                              self.timeout)
        self.optimizer, self.backend, self.options = optimizer, backend, dict(options)
        opts = dict(options)
        with gc_paused():
            self.stages, self.graph = gradient_graph(loss_fn, self.params, example_batch,
                                                     opts)
            n_p = len(self._p_leaves)
            ptypes = [(v.shape, v.dtype, v.name) for v in self.graph.inputs[:n_p]]
            parts = self.world if self.reduce == "shared" else 1
            self.update_graph, state_inputs = update_graph(ptypes, optimizer, self.world,
                                                           parts)
            if self.reduce == "sharded":
                self._layout_sharded(ptypes, state_inputs)   # its own update graph
            from ..backends import get_backend
            be = get_backend(backend)
            self._grad_run = be.compile(self.graph, **opts)
            self._update_run = be.compile(self.update_graph, **opts)
        self.forward_graph = self.stages["forward"]
        self.seed = int(seed)
        self._rng_at = rng_input_index(self.graph)     # None: no random ops
        self._rng = np.zeros(2, np.int64)
        n_b = len(pytree.flatten(list(example_batch))[0])
        if self._rng_at not in (None, n_p + n_b):
            raise GraphcError(f"data_parallel_step: the dropout key is input {self._rng_at} "
                              f"of the gradient graph, expected {n_p + n_b} (after the batch)")
        self._state_names = [v.name for v in state_inputs]
        self.opt_state = dict(zip(self._state_names, optimizer.init_state(state_inputs)))
        self._b_tree = pytree.flatten(list(example_batch))[1]
        self._shared = self._win = None
        if self.reduce == "sharded":
            self._share_window(state_inputs)
        elif self.reduce == "shared":
            from .shared import SharedGrads
            self._shared = SharedGrads(self.comm, self._p_leaves)
            self.grads = self._shared.mine
        else:
            self.grads = GradRegion(self._p_leaves)
            self.set_buckets(buckets)
        self.steps = 0
        self.timings = {"compute": 0.0, "comm": 0.0, "update": 0.0}
        self.totals = dict(self.timings)
        self._watchdog = C.Watchdog(self.rank) if self.world > 1 else None

    def _check_same_model(self, names):
        """Every rank must build the same model: compare a signature of the parameters."""
        if self.world == 1:
            return
        sig = [(n, p.shape, str(p.dtype)) for n, p in zip(names, self._p_leaves)]
        sigs = self.comm.allgather(sig)
        for r, s in enumerate(sigs):
            if s != sigs[0]:
                raise C.DistributedError(f"rank {r}'s parameters {s} differ from rank 0's "
                                         f"{sigs[0]}: every rank must build the same model")

    def _reduce_mode(self, reduce, buckets) -> str:
        """The gradient sum: ``reduce`` (None: ``$GRAPHC_SYNC_REDUCE``, else "auto")."""
        if reduce is None:
            reduce = os.environ.get("GRAPHC_SYNC_REDUCE", "") or "auto"
        if reduce not in REDUCE_MODES:
            raise ArgumentError(f"reduce must be one of {', '.join(REDUCE_MODES)}, "
                                f"got {reduce!r}")
        if self.world == 1:
            return "local"
        if reduce == "allreduce" or (reduce == "auto" and int(buckets) > 1):
            return "allreduce"               # buckets are all-reduce calls: asked for
        from .shared import single_node
        one = single_node(self.comm)         # collective: every rank decides alike
        if reduce in ("shared", "sharded") and not one:
            raise C.DistributedError(f"reduce={reduce!r} needs every rank on one machine; "
                                     "use reduce='allreduce' across machines")
        if not one:
            return "allreduce"
        return AUTO_ON_ONE_NODE if reduce == "auto" else reduce

    def _sharded_or_not(self, mode: str, asked) -> str:
        """``mode``, or "shared" when the sharded update does not apply to this
        optimizer and model (an error when "sharded" was asked for by name)."""
        if mode != "sharded":
            return mode
        from .sharded import shardable
        why = shardable(self._p_leaves, self.optimizer, self.world)
        if not why:
            return mode
        if (asked or os.environ.get("GRAPHC_SYNC_REDUCE", "")) == "sharded":
            raise ArgumentError(f"reduce='sharded' does not apply: {why}; use "
                                f"reduce='shared'")
        return "shared"

    def _layout_sharded(self, ptypes, state_inputs):
        """The sharded update's graph: flat shards of the window's buffers in place of the
        parameters (the optimizer rules are elementwise), every rank's gradient shard,
        the state shards; and the map from its state inputs to the window's regions."""
        from .sharded import shard_bounds
        bufs = GradRegion(self._p_leaves, 0).buffers
        flat = []
        for b, buf in enumerate(bufs):
            lo, hi = shard_bounds(buf.size, buf.itemsize, self.world)[self.rank]
            flat.append(((hi - lo,), buf.dtype, f"shard{b}"))
        self.update_graph, flat_states = update_graph(flat, self.optimizer, self.world,
                                                      self.world)
        kinds: list[str] = []
        self._flat_states = []                 # per state input: (kind index, buffer) or None
        for v in flat_states:
            head, _, tail = v.name.rpartition(".")
            if tail.startswith("shard") and tail[5:].isdigit() and v.shape != ():
                kind = head[len("opt."):]
                if kind not in kinds:
                    kinds.append(kind)
                self._flat_states.append((kinds.index(kind), int(tail[5:]), v))
            else:
                self._flat_states.append((None, None, v))
        self._kinds = kinds
        self._pnames = [n for _, _, n in ptypes]

    def _share_window(self, state_inputs):
        """Parameters, per-element optimizer state and gradient slots in one node-shared
        window (:mod:`.sharded`); ``params`` and ``opt_state`` become views of it."""
        from .sharded import ShardedWindow
        win = self._win = ShardedWindow(self.comm, self._p_leaves, len(self._kinds))
        self._p_leaves = list(win.params.views)
        self.params = pytree.unflatten(self._p_tree, self._p_leaves)
        in_win = {f"opt.{k}.{n}": win.states[i].views[j]
                  for i, k in enumerate(self._kinds) for j, n in enumerate(self._pnames)}
        private = {}
        for name, init in list(self.opt_state.items()):
            if name in in_win:
                if self.rank == 0:
                    in_win[name][...] = init
                self.opt_state[name] = in_win[name]
            else:
                private[name] = init            # lr, step count: the same on every rank
        win.exchange()
        flat_inputs = list(win.shard(win.params))
        for r in range(self.world):
            flat_inputs += win.shard(win.slots[r])
        for kind, b, v in self._flat_states:
            flat_inputs.append(private[v.name] if kind is None
                               else win.shard(win.states[kind])[b])
        self._flat_inputs = flat_inputs
        self.grads = win.mine

    def broadcast_from_root(self, arrays, what="broadcast"):
        """Make every rank's ``arrays`` (parameters, optimizer state) equal rank 0's, after
        rank 0 wrote them (a checkpoint restored): private arrays are broadcast, arrays
        in the sharded window -- one copy for all ranks -- only need a barrier."""
        if self.world == 1:
            return
        for a in arrays:
            if self._win is None or not self._win.holds(a):
                C.bcast_array(a, 0, self.comm, what, self.timeout)
        if self._win is not None:
            self._watchdog.arm(what, self.timeout)
            self._win.exchange()
            self._watchdog.disarm()

    def set_buckets(self, n: int):
        """All-reduce in about ``n`` slices (last layers first) instead of one call
        (``reduce="allreduce"`` only: the shared window moves nothing)."""
        if int(n) < 1:
            raise ArgumentError(f"buckets must be >= 1, got {n}")
        if self._shared is not None:
            raise ArgumentError("buckets apply to reduce='allreduce'; this step sums "
                                "through the shared-memory window")
        self.buckets = self.grads.buckets(int(n))

    def __call__(self, *batch):
        b_leaves, tree = pytree.flatten(list(batch))
        if tree != self._b_tree:
            raise ArgumentError(f"step: batch structure {tree} differs from the example's "
                                f"{self._b_tree}")
        if self._win is not None:
            return self._sharded_step(b_leaves)
        t0 = time.perf_counter()
        sh = self._shared
        if sh is not None:
            self.grads = sh.mine            # this step's set of slots (they alternate)
        rng = ()
        if self._rng_at is not None:
            rng = (dropout_key(self._rng, self.seed, self.steps, self.rank),)
        (loss,) = self._grad_run(*self._p_leaves, *b_leaves, *rng, *self.grads.views)
        self.grads.loss_slot[0] = loss
        t1 = time.perf_counter()
        if sh is not None:
            self._watchdog.arm(f"gradient exchange (shared-memory barrier) of step "
                               f"{self.steps + 1}", self.timeout)
            sh.exchange()
            self._watchdog.disarm()
            total, grads = sh.loss_sum(), sh.views()
        elif self.world > 1:
            MPI = C.mpi()
            self._watchdog.arm(f"gradient all-reduce of step {self.steps + 1}", self.timeout)
            for b in self.buckets:
                self.comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)
            self._watchdog.disarm()
            total, grads = float(self.grads.loss_slot[0]), self.grads.views
        else:
            total, grads = float(self.grads.loss_slot[0]), self.grads.views
        t2 = time.perf_counter()
        self._update_run(*self._p_leaves, *grads, *self.opt_state.values())
        t3 = time.perf_counter()
        if sh is not None:
            sh.flip()
        self._account(t1 - t0, t2 - t1, t3 - t2)
        return total / self.world

    def _account(self, compute, comm, update):
        self.steps += 1
        self.timings = {"compute": compute, "comm": comm, "update": update}
        for k, v in self.timings.items():
            self.totals[k] += v

    def _sharded_step(self, b_leaves):
        """One step of ``reduce="sharded"`` (:mod:`.sharded`): gradients into this rank's
        slot, barrier, this rank's shard of the update, barrier."""
        win, dog = self._win, self._watchdog
        t0 = time.perf_counter()
        rng = ()
        if self._rng_at is not None:
            rng = (dropout_key(self._rng, self.seed, self.steps, self.rank),)
        mine = win.mine
        (loss,) = self._grad_run(*self._p_leaves, *b_leaves, *rng, *mine.views)
        mine.loss_slot[0] = loss
        t1 = time.perf_counter()
        dog.arm(f"gradient exchange (shared-memory barrier) of step {self.steps + 1}",
                self.timeout)
        win.exchange()
        dog.disarm()
        total = win.loss_sum()
        t2 = time.perf_counter()
        self._update_run(*self._flat_inputs)
        t3 = time.perf_counter()
        dog.arm(f"parameter exchange (shared-memory barrier) of step {self.steps + 1}",
                self.timeout)
        win.exchange()
        dog.disarm()
        t4 = time.perf_counter()
        self._account(t1 - t0, (t2 - t1) + (t4 - t3), t3 - t2)
        return total / self.world

    def memory_report(self, **options):
        """The gradient graph's memory plan (as ``CompiledStep.memory_report``)."""
        native = getattr(self._grad_run, "memory_report", None)
        rep = native() if native is not None and not options else None
        if rep is not None:
            return rep
        from ..passes import memory
        return memory.memory_report(self.graph, **options)

    def check_replicas(self) -> bool:
        """True when every rank holds bit-identical parameters (a debugging aid: one small
        all-gather of a checksum per parameter)."""
        import hashlib
        sums = [hashlib.sha256(p.tobytes()).hexdigest() for p in self._p_leaves]
        return all(s == sums for s in self.comm.allgather(sums))


def data_parallel_step(loss_fn, params, optimizer, example_batch, **options
                       ) -> DataParallelStep:
    """``compile_step`` for synchronous data parallel: run it on every rank of an MPI
    job with the rank's shard of each global batch.  Options: ``comm`` (default
    COMM_WORLD), ``reduce`` (``"auto"``, ``"allreduce"`` or ``"shared"``: see
    :class:`DataParallelStep`), ``buckets`` (all-reduce calls per step, default 1), ``timeout``
    (seconds before a stuck peer ends the job with a clear message), ``backend`` and the
    backend/memory options of ``compile_step``."""
    if not isinstance(example_batch, (tuple, list)):
        raise GraphcError("data_parallel_step: example_batch must be a tuple of arrays "
                          "(one rank's shard)")
    return DataParallelStep(loss_fn, params, optimizer, example_batch, **options)


def local_params(step) -> dict:
    """``{path: array}`` of a step's live parameters (copies)."""
    leaves, td = pytree.flatten(step.params)
    return {k: np.array(v) for k, v in zip(pytree.paths(td), leaves)}
