"""graphc.distributed pieces that need no MPI: sampler, gradient region, memory maps,
the split step in a one-process job (LocalComm)."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

import graphc as gc
import graphc.distributed as dist
from graphc.distributed.region import ALIGN, GradRegion


def test_sampler_shards_make_the_global_batch_and_replay():
    one = dist.ShardedSampler(103, 12, 0, 1, seed=5)
    shards = [dist.ShardedSampler(103, 12, r, 3, seed=5) for r in range(3)]
    assert one.per_epoch == 8 and all(s.local_batch == 4 for s in shards)
    for e in (0, 1):
        for k in range(one.per_epoch):
            glob = one.indices(e, k)
            assert np.array_equal(np.concatenate([s.indices(e, k) for s in shards]), glob)
    assert not np.array_equal(one.order(0), one.order(1))       # reshuffled per epoch
    again = dist.ShardedSampler(103, 12, 1, 3, seed=5)
    assert np.array_equal(list(again.epoch(1, start=3))[0], shards[1].indices(1, 3))
    with pytest.raises(gc.GraphcError, match="multiple of the 5 ranks"):
        dist.ShardedSampler(100, 12, 0, 5)
    with pytest.raises(gc.GraphcError, match="larger than the 10 samples"):
        dist.ShardedSampler(10, 12, 0, 1)


def test_grad_region_is_contiguous_aligned_and_buckets_cover_it():
    params = [np.zeros((5, 3), np.float32), np.zeros(7, np.float32), np.zeros((2, 2)),
              np.zeros((40,), np.float32)]
    g = GradRegion(params)
    assert len(g.buffers) == 2              # float32 and float64
    for v, p in zip(g.views, params):
        assert v.shape == p.shape and v.dtype == p.dtype and v.ctypes.data % ALIGN == 0
        assert v.flags.c_contiguous and v.flags.writeable
    for i, v in enumerate(g.views):
        v[...] = i + 1
    for n in (1, 2, 3, 10):
        bs = g.buckets(n)
        assert sum(b.size for b in bs) == sum(b.size for b in g.buffers)
        f32 = [b for b in bs if b.dtype == np.float32]
        assert 1 <= len(f32) <= min(n, 3) and (len(f32) == 3) == (n == 10)
        assert np.shares_memory(f32[0], g.buffers[0][-1:])        # last layers first
    assert g.loss_slot.size == 1 and np.shares_memory(g.loss_slot, g.buffers[0])


def test_open_arrays_memory_maps_npz_members_and_npy(tmp_path):
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    y = np.arange(20, dtype=np.int64)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.save(tmp_path / "X.npy", X)
    a = dist.open_arrays(str(tmp_path / "d.npz"))
    assert isinstance(a["X"], np.memmap) and not a["X"].flags.writeable
    assert np.array_equal(a["X"], X) and np.array_equal(a["y"][[3, 1]], y[[3, 1]])
    b = dist.open_arrays(str(tmp_path / "X.npy"))
    assert isinstance(b["X"], np.memmap) and np.array_equal(b["X"], X)
    np.savez_compressed(tmp_path / "c.npz", X=X)
    with pytest.raises(gc.GraphcError, match="compressed and cannot be memory-mapped"):
        dist.open_arrays(str(tmp_path / "c.npz"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(gc.GraphcError, match="cannot memory-map"):
        dist.open_arrays(str(tmp_path / "bad.npz"))
    assert zipfile.is_zipfile(tmp_path / "d.npz")


def _loss(p, x, y):
    h = gc.tanh(x @ p["w1"] + p["b1"])
    return gc.nn.cross_entropy(h @ p["w2"], y)


def _params():
    rng = np.random.default_rng(2)
    return {"w1": rng.normal(0, .3, (12, 16)).astype(np.float32),
            "b1": np.zeros(16, np.float32), "w2": rng.normal(0, .3, (16, 4)).astype(np.float32)}


@pytest.mark.parametrize("opt", [lambda: gc.optim.SGD(0.1, momentum=0.9, weight_decay=1e-3),
                                 lambda: gc.optim.Adam(1e-2)])
def test_one_process_data_parallel_step_equals_compile_step(opt):
    """Gradient graph + update graph, one rank: bit-identical to the fused step."""
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(8, 12)).astype(np.float32), rng.integers(0, 4, 8)
    ref = gc.compile_step(_loss, _params(), opt(), (X, Y))
    dp = dist.data_parallel_step(_loss, _params(), opt(), (X, Y))
    assert dp.world == 1 and dist.world_size() == 1 and dist.rank() == 0
    for i in range(4):
        xb, yb = X[(np.arange(8) + i) % 8], Y[(np.arange(8) + i) % 8]
        assert dp(xb, yb) == ref(xb, yb)
    for k in ref.params:
        assert np.array_equal(dp.params[k], ref.params[k]), k
    assert dp.steps == 4 and dp.timings["comm"] >= 0 and dp.reduce == "local"
    assert dp.memory_report().planned_bytes > 0
    with pytest.raises(gc.GraphcError, match="batch structure"):
        dp(X)
    with pytest.raises(gc.GraphcError, match="reduce must be one of auto, allreduce, shared"):
        dist.data_parallel_step(_loss, _params(), opt(), (X, Y), reduce="ring")


def test_update_graph_sums_rank_slots_in_order():
    """parts=N: the update reads N gradient sets and adds them left to right."""
    from graphc.distributed.graphs import update_graph
    opt = gc.optim.SGD(1.0)
    g, st = update_graph([((3,), np.dtype(np.float32), "w")], opt, 2, parts=2)
    assert [v.name for v in g.inputs[:3]] == ["w", "grad0.w", "grad1.w"]
    w, a, b = np.ones(3, np.float32), np.float32([1, 2, 3]), np.float32([3, 2, 1])
    state = opt.init_state(st)
    fn = gc.backends.get_backend("llvm").compile(g)
    fn(w, a, b, *state)
    fn(w, a, b, *state)
    assert np.array_equal(w, np.float32(1) - 2 * (a + b) * np.float32(0.5))


def _cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "graphc", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_errors_without_mpiexec(tmp_path):
    r = _cli("launch", "-n", "2", "--max-restarts", "1", "--", "train", "mlp",
             "--distributed", "sync")
    assert r.returncode == 1 and "--max-restarts needs the command's --checkpoint-dir" \
        in r.stderr
    r = _cli("launch", "-n", "2")
    assert r.returncode == 1 and "give the command to run" in r.stderr
    r = _cli("train", "mlp", "--distributed", "async", "--epochs", "1")
    assert r.returncode == 1 and "needs at least 2 ranks" in r.stderr, r.stderr
    r = _cli("train", "transformer", "--distributed", "sync")
    assert r.returncode == 1 and "--distributed is not supported for transformer" \
        in r.stderr, r.stderr


def test_sync_cli_in_one_process_trains(tmp_path):
    """``--distributed sync`` outside mpiexec: a one-rank job (no MPI needed)."""
    r = _cli("train", "logreg", "--distributed", "sync", "--epochs", "2", "--progress",
             "lines", "--json", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert "sync data parallel on 1 rank," in r.stdout.splitlines()[-1]
    import json
    recs = [json.loads(x) for x in (tmp_path / "m.json").read_text().splitlines()]
    assert [x["event"] for x in recs] == ["epoch", "epoch", "test"]
    assert "comm_s_per_step" in recs[0] and recs[-1]["ranks"] == 1


def _dropout_loss(p, x, y):
    h = gc.nn.dropout(gc.relu(x @ p["w1"] + p["b1"]), 0.5)
    return gc.nn.cross_entropy(h @ p["w2"], y)


def test_one_process_data_parallel_dropout_equals_compile_step():
    """Dropout in a data-parallel step: fed a key every step; one rank draws the very
    masks of compile_step with the same seed (stream 0), bit for bit."""
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(8, 12)).astype(np.float32), rng.integers(0, 4, 8)
    for seed in (0, 5):
        ref = gc.compile_step(_dropout_loss, _params(), gc.optim.SGD(0.1), (X, Y), seed=seed)
        dp = dist.data_parallel_step(_dropout_loss, _params(), gc.optim.SGD(0.1), (X, Y),
                                     seed=seed)
        losses = [dp(X, Y) for _ in range(3)]
        assert losses == [ref(X, Y) for _ in range(3)]
        assert len(set(losses)) == 3            # a new mask every step
        for k in ref.params:
            assert np.array_equal(dp.params[k], ref.params[k]), k


def test_dropout_key_streams():
    from graphc.distributed.graphs import dropout_key
    k = np.zeros(2, np.int64)
    assert list(dropout_key(k, 7, 3, 0)) == [7, 3]          # stream 0: compile_step's key
    assert list(dropout_key(k, 7, 3, 2)) == [7, 3 + (2 << 32)]


def test_shard_bounds_cover_the_buffer_aligned_and_balanced():
    from graphc.distributed.sharded import shard_bounds
    for n, world in ((16 * 1000, 2), (16 * 1001, 3), (16 * 7, 7), (48, 2)):
        b = shard_bounds(n, 4, world)
        assert b[0][0] == 0 and b[-1][1] == n and len(b) == world
        assert all(hi == lo2 for (_, hi), (lo2, _) in zip(b, b[1:]))
        assert all(lo % 16 == 0 for lo, _ in b)
        sizes = [hi - lo for lo, hi in b]
        assert max(sizes) - min(sizes) <= 16


def test_shardable_needs_an_elementwise_update_and_room_for_every_rank():
    from graphc.distributed.sharded import shardable
    ps = list(_params().values())
    assert shardable(ps, gc.optim.SGD(0.1), 2) == ""
    assert "clip_grad_norm" in shardable(ps, gc.optim.SGD(0.1, clip_grad_norm=1.0), 2)
    assert "too small" in shardable([np.zeros(8, np.float32)], gc.optim.SGD(0.1), 2)


@pytest.mark.parametrize("opt", [lambda: gc.optim.SGD(0.1, momentum=0.9, nesterov=True,
                                                      weight_decay=1e-3),
                                 lambda: gc.optim.AdamW(1e-2)])
def test_sharded_update_on_flat_shards_equals_the_per_parameter_update(opt):
    """reduce='sharded' runs the optimizer on flat 1/N slices of the parameter region (the
    rules are elementwise): bit-identical to the per-parameter update of the same sums."""
    from graphc.distributed.graphs import update_graph
    from graphc.distributed.sharded import shard_bounds
    be = gc.backends.get_backend("llvm")
    ps = list(_params().values())
    rng = np.random.default_rng(5)
    regions = {k: GradRegion(ps, 0) for k in ("p", "g0", "g1", "s0", "s1")}
    for v, p in zip(regions["p"].views, ps):
        v[...] = p
    for k in ("g0", "g1"):
        for v in regions[k].views:
            v[...] = rng.normal(size=v.shape)
    ptypes = [(p.shape, p.dtype, f"params.{i}") for i, p in enumerate(ps)]
    g, st = update_graph(ptypes, opt(), 2, parts=2)
    ref = [np.array(v) for v in regions["p"].views]
    state = opt().init_state(st)
    fn = be.compile(g)
    for _ in range(3):
        fn(*ref, *[np.array(v) for v in regions["g0"].views],
           *[np.array(v) for v in regions["g1"].views], *state)
    (buf,) = regions["p"].buffers
    for r, (lo, hi) in enumerate(shard_bounds(buf.size, buf.itemsize, 2)):
        flat, fst = update_graph([((hi - lo,), buf.dtype, "shard0")], opt(), 2, parts=2)
        private = opt().init_state(fst)
        args = [regions[k].buffers[0][lo:hi] for k in ("p", "g0", "g1")]
        kinds = iter([regions["s0"].buffers[0][lo:hi], regions["s1"].buffers[0][lo:hi]])
        for v, init in zip(fst, private):
            args.append(next(kinds) if v.name.endswith(".shard0") else init)
        f = be.compile(flat)
        for _ in range(3):
            f(*args)
    for a, b in zip(regions["p"].views, ref):
        assert np.array_equal(a, b)
