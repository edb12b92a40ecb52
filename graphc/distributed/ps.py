"""Asynchronous data parallel: a parameter server (rank 0) and workers (ranks 1..N-1).

```
 worker k:  recv params (version v) -> compiled forward+backward on its shard -> send grads
 server:    for each gradient as it arrives: staleness = version - v; apply the compiled
            optimizer update; version += 1; send the new params back to that worker
```

Parameters and gradients each travel as one contiguous region (:class:`GradRegion`)
whose header carries the version, the loss and the worker's sampler position, so one
message each way per update.  ``staleness=K`` bounds how old a gradient may be: the
server holds a finished worker's next parameters back while releasing it could let a
slower worker's pending gradient become more than K versions stale (fast workers wait
for slow ones); ``None`` never waits.

Fault tolerance uses Open MPI's ULFM (``mpiexec --with-ft ulfm``): the server's
communicator returns errors instead of aborting, so a killed worker shows up as a failed
receive (``MPI_ERR_PROC_FAILED``), and a stuck one as a send or receive that passes
``comm_timeout``; the server drops it and goes on with the others, and (``respawn``)
starts a replacement with ``MPI_Comm_spawn`` that takes over the lost worker's data
shard and position.  The server never blocks on one worker: parameters go out as a
per-worker copy without waiting (a stopped worker cannot take a large message, and a
blocking send to it once held up every other worker until their own waits expired and
aborted the job).  A stuck worker that wakes up after it was dropped finds its gradient
answered with a stop and leaves cleanly.  Separate jobs joining through
``Open_port``/``Comm_connect`` were tried and do not work with this Open MPI build
outside one launcher (see docs/distributed.md).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from ..ir import GraphcError
from ..train.metrics import Evaluator, headline
from ..train.progress import JsonLog
from ..train.setup import backend_options
from . import comm as C
from .graphs import dropout_key, gradient_graph, rng_input_index, update_graph
from .region import GradRegion
from .sampler import ShardedSampler
from .trainer import RankZeroProgress

TAG_GRAD, TAG_PARAMS, TAG_BYE = 21, 22, 23
#: params header: version, stop, epoch, step, slot, slots
P_HDR = 6
#: grads header: loss, base version, epoch, step (position after this gradient)
G_HDR = 4


def _leaves(tree):
    from .. import pytree
    return pytree.flatten(tree)


class _Peer:
    """The server's view of one worker: where it is, what it is doing."""

    def __init__(self, slot, comm, rank, region, spawned=False):
        self.slot, self.comm, self.rank, self.region = slot, comm, rank, region
        self.spawned = spawned
        self.base = 0               # version its current gradient is computed from
        self.computing = False
        self.reqs: list = []
        self.out = None             # its copy of the parameters being sent (a GradRegion)
        self.sends: list = []
        self.send_since = 0.0
        self.since = time.perf_counter()
        self.position = (0, 0)      # its sampler's (epoch, step)
        self.updates = 0

    @property
    def name(self):
        return f"worker {self.rank}" + (f" (replacement for slot {self.slot})"
                                        if self.spawned else "")


class ParamServer:
    def __init__(self, prepared, opts, comm):
        MPI = C.mpi()
        self.MPI, self.p, self.cfg, self.opts = MPI, prepared, prepared.config, opts
        self.comm = comm
        comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.ft = C.ft_enabled()
        self.progress = RankZeroProgress(self.cfg.progress, 0)
        self.timeout = opts.get("comm_timeout") or C.DEFAULT_TIMEOUT
        self.staleness = opts.get("staleness")
        self.respawns_left = int(opts.get("respawn") or 0) if self.ft else 0
        leaves, self._td = _leaves(prepared.params)
        self.params = GradRegion([np.asarray(x) for x in leaves], extra=P_HDR)
        for v, x in zip(self.params.views, leaves):
            v[...] = x
        from .. import pytree
        self.tree = pytree.unflatten(self._td, self.params.views)
        self._names = pytree.paths(self._td)
        ptypes = [(x.shape, x.dtype, f"params.{n}") for x, n in zip(leaves, self._names)]
        opt = self.cfg.make_optimizer()
        self.update_graph, state_inputs = update_graph(ptypes, opt, 1)
        from ..backends import get_backend
        bopts = backend_options(self.cfg.backend, self.cfg.threads)
        self._update = get_backend(self.cfg.backend).compile(self.update_graph, **bopts)
        self.opt_state = opt.init_state(state_inputs)
        self.evaluate = Evaluator(prepared.model, self.cfg.backend, prepared.y_scaler,
                                  notice=self.progress.line, **bopts)
        n_workers = comm.Get_size() - 1
        self.n_slots = n_workers
        self.per_epoch = len(prepared.splits.train) // self.cfg.batch_size
        self.total = self.per_epoch * self.cfg.epochs
        self.peers = [_Peer(k, comm, k + 1, GradRegion([np.asarray(x) for x in leaves],
                                                       extra=G_HDR)) for k in range(n_workers)]
        self.version = 0
        self.staleness_seen: list[int] = []
        self.lost: list[str] = []
        #: workers dropped for silence, not death: their gradient, if it ever comes, is
        #: answered with a stop so they leave without ending the job
        self.zombies: list[_Peer] = []
        self.best = {n: np.array(v) for n, v in zip(self._names, self.params.views)}
        self.best_val, self.best_epoch = float("inf"), 0
        self.history: list = []

    # ---- messages -----------------------------------------------------------------------
    def _send_params(self, peer: _Peer, stop=False) -> bool:
        """Post the current parameters (a copy: updates go on meanwhile) to ``peer``
        without waiting; :meth:`_sent` drops it if they are not taken in time."""
        e, s = peer.position
        try:
            # the previous send is complete: the peer has answered it (or said goodbye)
            C.wait_all(peer.sends, f"sending parameters to {peer.name}", self.timeout,
                       self.comm)
            if peer.out is None:
                peer.out = GradRegion(self.params.views, extra=P_HDR)
            for mine, cur in zip(peer.out.views, self.params.views):
                mine[...] = cur
            peer.out.header[:] = (self.version, float(stop), e, s, peer.slot, self.n_slots)
            peer.sends = [peer.comm.Isend(b, dest=peer.rank, tag=TAG_PARAMS)
                          for b in peer.out.buffers]
            peer.send_since = time.perf_counter()
        except (self.MPI.Exception, C.CommTimeout) as e:
            self._drop(peer, f"sending parameters failed ({_brief(e)})")
            return False
        if not stop:
            peer.base, peer.computing, peer.since = self.version, True, time.perf_counter()
            peer.reqs = [peer.comm.Irecv(b, source=peer.rank, tag=TAG_GRAD)
                         for b in peer.region.buffers]
        return True

    def _sent(self, peer: _Peer) -> bool:
        """True when the parameters posted to ``peer`` are all taken; a peer that has not
        taken them within the timeout is dropped (stopped or stuck)."""
        try:
            if all(r.Test() for r in peer.sends):
                peer.sends = []
                return True
        except self.MPI.Exception as e:
            self._drop(peer, _brief(e))
            return False
        if time.perf_counter() - peer.send_since > self.timeout:
            self._drop(peer, f"parameters not taken for {self.timeout:g} s (stuck?)",
                       alive=True)
        return False

    def _poll(self, peer: _Peer) -> bool:
        """True when the peer's whole gradient has arrived."""
        if peer.sends and not self._sent(peer):
            return False
        try:
            done = all(r.Test() for r in peer.reqs)
        except self.MPI.Exception as e:
            self._drop(peer, _brief(e))
            return False
        if not done and time.perf_counter() - peer.since > self.timeout:
            self._drop(peer, f"no gradient for {self.timeout:g} s (stuck?)", alive=True)
        return done

    def _drop(self, peer: _Peer, why: str, alive: bool = False):
        """Go on without ``peer``.  ``alive``: it went silent rather than failed, so its
        pending messages stay posted -- if it wakes up, :meth:`_release_zombies` answers
        its gradient with a stop."""
        if peer not in self.peers:
            return
        self.peers.remove(peer)
        if alive and self.ft:
            self.zombies.append(peer)
        else:
            for r in peer.reqs:
                try:
                    r.Cancel()
                except self.MPI.Exception:
                    pass
        self.lost.append(f"{peer.name}: {why}")
        self.progress.line(f"server: lost {peer.name} at update {self.version} ({why}); "
                           f"going on with {len(self.peers)} worker(s)")
        if self.respawns_left > 0:
            self.respawns_left -= 1
            self._spawn(peer)
        elif not self.peers:
            raise C.DistributedError(f"every worker is lost ({'; '.join(self.lost)}); "
                                     "start the job with mpiexec --with-ft ulfm so the server "
                                     "can replace them (--respawn)")

    def _spawn(self, old: _Peer):
        MPI = self.MPI
        args = ["-m", "graphc", *sys.argv[1:]]
        try:
            inter = MPI.COMM_SELF.Spawn(sys.executable, args=args, maxprocs=1)
        except MPI.Exception as e:
            self.progress.line(f"server: could not spawn a replacement ({_brief(e)})")
            return
        inter.Set_errhandler(MPI.ERRORS_RETURN)
        peer = _Peer(old.slot, inter, 0, GradRegion(self.params.views, extra=G_HDR),
                     spawned=True)
        peer.position = old.position
        self.peers.append(peer)
        self.progress.line(f"server: spawned a replacement worker for slot {old.slot}")
        self._send_params(peer)

    def _release_zombies(self):
        """A dropped worker whose gradient arrives after all gets a stop (not parameters):
        it says goodbye and leaves without ending the job."""
        for z in list(self.zombies):
            try:
                if not (all(r.Test() for r in z.sends) and all(r.Test() for r in z.reqs)):
                    continue
                e, s = z.position
                z.out.header[:] = (self.version, 1.0, e, s, z.slot, self.n_slots)
                z.sends = [z.comm.Isend(b, dest=z.rank, tag=TAG_PARAMS) for b in z.out.buffers]
                z.bye = np.zeros(1)         # kept alive with the request
                z.reqs = [z.comm.Irecv(z.bye, source=z.rank, tag=TAG_BYE)]
            except self.MPI.Exception:      # it died after all: nothing to tell it
                self.zombies.remove(z)
                continue
            self.zombies.remove(z)
            self.progress.line(f"server: {z.name} woke up after it was dropped; told it "
                               "to stop")

    # ---- staleness ------------------------------------------------------------------------
    def _may_release(self, peer: _Peer) -> bool:
        """Releasing ``peer`` lets each computing worker see at most one more update from
        each of the others before it pushes; allow it only if that keeps every pending
        gradient within ``staleness`` versions."""
        if self.staleness is None:
            return True
        busy = [q for q in self.peers if q.computing and q is not peer]
        for q in busy:
            others = len(busy)              # the other busy ones, minus q, plus ``peer``
            if self.version - q.base + others > self.staleness:
                return False
        return True

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        log = JsonLog(self.cfg.json_log)
        if not self.ft:
            self.progress.line("server: note: started without mpiexec --with-ft ulfm, so a "
                               "lost worker ends the whole job")
        t0 = time.perf_counter()
        for peer in list(self.peers):
            self._send_params(peer)
        waiting: list[_Peer] = []
        t_epoch, loss_sum, busy = time.perf_counter(), 0.0, 0.0
        while self.version < self.total:
            progressed = False
            if self.zombies:
                self._release_zombies()
            for peer in list(self.peers):
                if peer.computing and self._poll(peer):
                    tb = time.perf_counter()
                    h = peer.region.header
                    self.staleness_seen.append(self.version - int(h[1]))
                    self._update(*self.params.views, *peer.region.views, *self.opt_state)
                    if self.version == 0:
                        t0 = time.perf_counter()      # rate from the first update on
                    self.version += 1
                    loss_sum += float(h[0])
                    peer.position = (int(h[2]), int(h[3]))
                    peer.computing, peer.updates = False, peer.updates + 1
                    waiting.append(peer)
                    busy += time.perf_counter() - tb
                    progressed = True
                    if self.version % self.per_epoch == 0:
                        stop = self._end_epoch(log, time.perf_counter() - t_epoch, loss_sum,
                                               busy)
                        t_epoch, loss_sum, busy = time.perf_counter(), 0.0, 0.0
                        if stop:
                            self.total = self.version
                    if self.version >= self.total:
                        break
            for peer in list(waiting):
                if self.version >= self.total:
                    break
                if peer in self.peers and self._may_release(peer):
                    waiting.remove(peer)
                    self._send_params(peer)
                    progressed = True
                elif peer not in self.peers:
                    waiting.remove(peer)
            if not progressed:
                time.sleep(2e-5)
        seconds = time.perf_counter() - t0
        self.respawns_left = 0
        self._stop_all()
        result = self._final_test(log, seconds)
        log.close()
        return result

    def _stop_all(self):
        """Tell every worker to stop (after taking in a gradient still under way) and wait
        for each one's goodbye: after it, no message is in flight to or from any worker,
        so MPI_Finalize needs no fence (:func:`comm.skip_finalize_fence`)."""
        for peer in list(self.peers):
            if peer.computing:
                while peer in self.peers and not self._poll(peer):
                    time.sleep(1e-4)
            if peer in self.peers:
                self._send_params(peer, stop=True)
        bye = np.zeros(1)
        for peer in list(self.peers):
            try:
                C.wait(peer.comm.Irecv(bye, source=peer.rank, tag=TAG_BYE),
                       f"the goodbye of {peer.name}", min(self.timeout, 10.0), self.comm)
                C.wait_all(peer.sends, f"the stop of {peer.name}", min(self.timeout, 10.0),
                           self.comm)
            except (self.MPI.Exception, C.CommTimeout) as e:
                self.progress.line(f"server: {peer.name} did not say goodbye ({_brief(e)})")
                continue
            if peer.spawned:
                peer.comm.Disconnect()

    def _end_epoch(self, log, seconds, loss_sum, busy) -> bool:
        cfg = self.cfg
        epoch = self.version // self.per_epoch
        st = np.array(self.staleness_seen[-self.per_epoch:])
        record = {"epoch": epoch, "step": self.version, "train_loss": loss_sum / self.per_epoch,
                  "updates_per_s": self.per_epoch / max(seconds, 1e-9),
                  "samples_per_s": self.per_epoch * cfg.batch_size / max(seconds, 1e-9),
                  "server_busy": busy / max(seconds, 1e-9),
                  "staleness_p50": float(np.percentile(st, 50)),
                  "staleness_p90": float(np.percentile(st, 90)),
                  "staleness_max": int(st.max()), "workers": len(self.peers)}
        record.update(self.evaluate(self.tree, self.p.splits.val, "val"))
        self.history.append(record)
        log.write("epoch", record)
        metric = (f"val_acc {100 * record['val_accuracy']:5.1f}%"
                  if "val_accuracy" in record else f"val_r2 {record['val_r2']:.3f}")
        self.progress.line(
            f"epoch {epoch:>3}/{cfg.epochs}  train_loss {record['train_loss']:.4f}  "
            f"val_loss {record['val_loss']:.4f}  {metric}  {record['updates_per_s']:,.0f} "
            f"updates/s  staleness p50 {record['staleness_p50']:g} p90 "
            f"{record['staleness_p90']:g} max {record['staleness_max']}  "
            f"({len(self.peers)} workers)")
        if record["val_loss"] < self.best_val - cfg.tol:
            self.best_val, self.best_epoch = record["val_loss"], epoch
            for n, v in zip(self._names, self.params.views):
                self.best[n][...] = v
            self._wait = 0
        else:
            self._wait = getattr(self, "_wait", 0) + 1
            if cfg.patience and self._wait >= cfg.patience:
                self.stop_reason = (f"early stop: validation loss did not improve by {cfg.tol} "
                                    f"for {cfg.patience} epochs")
                return True
        return False

    def _final_test(self, log, seconds) -> dict:
        from .. import pytree
        best_tree = pytree.unflatten(self._td, [self.best[n] for n in self._names])
        test = self.evaluate(best_tree, self.p.splits.test, "test")
        st = np.array(self.staleness_seen or [0])
        test.update(updates=self.version, best_epoch=self.best_epoch,
                    updates_per_s=self.version / max(seconds, 1e-9),
                    staleness={f"p{q}": float(np.percentile(st, q)) for q in (50, 90, 99)}
                    | {"max": int(st.max())}, lost_workers=self.lost,
                    stop_reason=getattr(self, "stop_reason",
                                        f"reached the maximum of {self.cfg.epochs} epochs"))
        log.write("test", test)
        self.progress.line(f"stopped: {test['stop_reason']}; {self.version} updates at "
                           f"{test['updates_per_s']:,.0f}/s, staleness p50 "
                           f"{test['staleness']['p50']:g} p90 {test['staleness']['p90']:g} "
                           f"p99 {test['staleness']['p99']:g} max {test['staleness']['max']}"
                           + (f"; lost {len(self.lost)} worker(s)" if self.lost else ""))
        self.progress.line(f"test set: loss {test['test_loss']:.4f}, {headline(test, 'test')} "
                           f"(best parameters, from epoch {self.best_epoch})")
        test["best_params"] = self.best
        return test


class Worker:
    """Pull parameters, compute the gradient of one batch of its shard, push it."""

    def __init__(self, prepared, opts, comm, server: int):
        MPI = C.mpi()
        self.MPI, self.comm, self.server = MPI, comm, server
        comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.cfg, self.p = prepared.config, prepared
        self.timeout = opts.get("comm_timeout") or C.DEFAULT_TIMEOUT
        leaves, td = _leaves(prepared.params)
        self.params = GradRegion([np.asarray(x) for x in leaves], extra=P_HDR)
        from .. import pytree
        tree = pytree.unflatten(td, self.params.views)
        tr = prepared.splits.train
        b = self.cfg.batch_size
        bopts = backend_options(self.cfg.backend, self.cfg.threads)
        _, self.graph = gradient_graph(prepared.model.loss, tree, (tr.X[:b], tr.y[:b]), {})
        from ..backends import get_backend
        self._grad = get_backend(self.cfg.backend).compile(self.graph, **bopts)
        self._rng_at = rng_input_index(self.graph)      # dropout: None without
        self._rng = np.zeros(2, np.int64)
        self.grads = GradRegion([np.asarray(x) for x in leaves], extra=G_HDR)
        self.sampler = None
        self.comm_seconds = 0.0

    def _recv_params(self) -> bool:
        """Wait for the next parameters.  The server may hold this worker back (bounded
        staleness) until it has dropped a stuck peer -- up to one timeout after that
        peer's last message -- so the wait here is longer than the server's worst case:
        two timeouts and a margin, else one stuck worker would time out the others."""
        t0 = time.perf_counter()
        reqs = [self.comm.Irecv(b, source=self.server, tag=TAG_PARAMS)
                for b in self.params.buffers]
        C.wait_all(reqs, "waiting for parameters from the server", 2 * self.timeout + 5,
                   self.comm)
        self.comm_seconds += time.perf_counter() - t0
        return self.params.header[1] == 0

    def run(self) -> int:
        tr = self.p.splits.train
        steps = 0
        while self._recv_params():
            version, _, epoch, step, slot, slots = (int(x) for x in self.params.header)
            if self.sampler is None:
                self.sampler = ShardedSampler(len(tr), self.cfg.batch_size * slots, slot,
                                              slots, self.cfg.seed)
            idx = self.sampler.indices(epoch, step)
            rng = ()
            if self._rng_at is not None:        # the slot's stream, at its batch's position
                rng = (dropout_key(self._rng, 0,      # seed 0: the one-process trainer's
                                   epoch * self.sampler.per_epoch + step, slot),)
            step += 1
            if step == self.sampler.per_epoch:
                epoch, step = epoch + 1, 0
            (loss,) = self._grad(*self.params.views, tr.X[idx], tr.y[idx], *rng,
                                 *self.grads.views)
            self.grads.header[:] = (loss, version, epoch, step)
            t0 = time.perf_counter()
            reqs = [self.comm.Isend(b, dest=self.server, tag=TAG_GRAD)
                    for b in self.grads.buffers]
            C.wait_all(reqs, "sending a gradient to the server", self.timeout, self.comm)
            self.comm_seconds += time.perf_counter() - t0
            steps += 1
        # stopped: the goodbye tells the server this worker has all it will receive
        C.wait(self.comm.Isend(np.ones(1), dest=self.server, tag=TAG_BYE),
               "saying goodbye to the server", self.timeout, self.comm)
        return steps


def _brief(e) -> str:
    s = e.Get_error_string() if hasattr(e, "Get_error_string") else str(e)
    return s.split(":")[0] if s else type(e).__name__


def run_async(prepared, opts, comm) -> dict:
    if comm.Get_size() < 2:
        raise GraphcError("--distributed async needs at least 2 ranks (a parameter server "
                          "and a worker): mpiexec --with-ft ulfm -n 3 graphc train ...")
    if comm.Get_rank() == 0:
        result = ParamServer(prepared, opts, comm).run()
    else:
        _work(Worker(prepared, opts, comm, 0))
        result = {}
    _after_stop()
    return result


def run_spawned_worker(prepared, opts) -> int:
    parent = C.parent_comm()
    _work(Worker(prepared, opts, parent, 0))
    parent.Disconnect()
    _after_stop()
    return 0


def _work(worker: Worker) -> None:
    """Run a worker.  Under ULFM a worker whose exchange with the server timed out
    leaves the job rather than aborting it (MPI_Abort ends every process, even there):
    the server has dropped it, or is itself gone, which the job's status then shows."""
    try:
        worker.run()
    except C.CommTimeout as e:
        if not C.ft_enabled():
            raise
        print(f"graphc train: {e}; this worker leaves the job (the server goes on "
              "without it)", file=sys.stderr, flush=True)


def _after_stop():
    """Every rank, after the stop handshake: with ULFM (where a rank may have been
    killed), let MPI_Finalize skip the closing fence that a dead process can leave
    incomplete for ever (see :func:`comm.skip_finalize_fence`)."""
    if C.ft_enabled():
        C.skip_finalize_fence()
