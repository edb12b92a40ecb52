"""The passes' memo in the disk cache (``native/passmemo.py``): the memory-schedule search's
answer is kept by the graph's structure, salted with the sources, read back under the disk
cache's rules; a damaged or foreign entry is a miss."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.backends.llvm.native.passmemo import SUFFIX, PassMemo


def _entries(d):
    return sorted(p for p in d.iterdir() if p.name.endswith(SUFFIX)) if d.exists() else []


def test_round_trip_and_salt(cache_dir):
    memo = PassMemo("sources-a")
    assert memo.get("k") is None
    memo.put("k", {"chosen": "list", "list": 12})
    assert memo.get("k") == {"chosen": "list", "list": 12}
    assert PassMemo("sources-b").get("k") is None       # other sources: another key
    assert memo.get("other") is None


def test_damaged_entries_are_misses(cache_dir):
    memo = PassMemo("s")
    memo.put("k", {"chosen": "list"})
    (path,) = _entries(cache_dir)
    blob = bytearray(path.read_bytes())
    blob[-2] ^= 0xFF                                    # payload no longer matches
    path.write_bytes(bytes(blob))
    assert memo.get("k") is None


def test_no_memo_without_a_disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "off")
    memo = PassMemo("s")
    memo.put("k", {"chosen": "list"})
    assert memo.get("k") is None


def _problem(scale):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((12, 8)).astype(np.float32),
              "v": rng.standard_normal((8, 3)).astype(np.float32)}
    x = rng.standard_normal((6, 12)).astype(np.float32)
    y = rng.integers(0, 3, 6).astype(np.int32)

    def loss(p, x, y):
        return gc.nn.cross_entropy(gc.relu(x @ p["w"]) @ p["v"], y) * scale
    return loss, params, (x, y)


def _step(scale, backend="llvm"):
    loss, params, xy = _problem(scale)
    return gc.compile_step(loss, params, gc.optim.SGD(0.1), xy, backend=backend), xy


def test_a_new_constant_reuses_the_search(cache_dir):
    s1, xy = _step(2.0)
    assert len(_entries(cache_dir)) == 1
    s2, _ = _step(3.0)                                  # a new graph, the same structure
    assert len(_entries(cache_dir)) == 1
    assert s2.memory_info["schedule"] == s1.memory_info["schedule"]
    assert [n.output.name for n in s2.graph.nodes] == [n.output.name for n in s1.graph.nodes]
    ref, _ = _step(3.0, backend="numpy")                # and it trains like the oracle
    for _ in range(3):
        assert np.allclose(s2(*xy), ref(*xy), rtol=1e-5, atol=1e-6)
