"""Per-kernel object cache: a kernel compiled for one graph (in any process) is linked,
not compiled, into every later graph with the same kernel code; only the missing
kernels are compiled.  Corrupt or foreign entries are misses; results are bit-identical
to a compile that shares nothing."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends.llvm.native import diskcache, jit


def _step(scale=1.0, width=24, seed=0):
    """An MLP step; ``scale`` (a graph constant) changes only the loss kernels,
    ``width`` every kernel's shapes."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((40, width)).astype(np.float32) * 0.2,
              "b": np.zeros(width, np.float32),
              "v": rng.standard_normal((width, 1200)).astype(np.float32) * 0.1}
    x = rng.standard_normal((16, 40)).astype(np.float32)

    def loss(p, x):
        h = gc.relu(x @ p["w"] + p["b"])
        z = h @ p["v"]
        return gc.sum(gc.tanh(z) * z) * scale
    return gc.compile_step(loss, params, gc.optim.SGD(0.05, momentum=0.9), (x,),
                           backend="numpy"), x


def _run(fn, step, x, n=3):
    args = [np.array(a) for a in (*step._p_leaves, x, *step.opt_state.values())]
    outs = [[np.array(o) for o in fn(*args)] for _ in range(n)]
    return outs, args


def _compile(step, threads=2):
    s0 = dict(jit.STATS)
    fn = llvm_backend.compile(step.graph, threads=threads)
    return fn, {k: jit.STATS[k] - s0[k] for k in ("kernels_compiled", "kernel_hits")}


def _same(a, b):
    for x, y in zip(a[0], b[0]):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    for u, v in zip(a[1], b[1]):
        np.testing.assert_array_equal(u, v)


def test_second_graph_compiles_only_its_new_kernels(cache_dir, monkeypatch):
    s1, x = _step(1.0)
    f1, c1 = _compile(s1)
    assert c1["kernels_compiled"] > 0 and c1["kernel_hits"] == 0
    jit.clear_memory_cache()        # from disk, as in a new process
    s2, _ = _step(2.0)              # another graph, most kernels the same code
    f2, c2 = _compile(s2)
    assert f2.compile_info["source"] == "compiled"
    assert c2["kernel_hits"] > 0
    assert c2["kernels_compiled"] < c1["kernels_compiled"]
    s3, x3 = _step(1.0, width=40)   # new shapes: kernels of its own
    f3, c3 = _compile(s3)
    assert c3["kernels_compiled"] > 0
    got2, got3 = _run(f2, s2, x), _run(f3, s3, x3)
    _run(f1, s1, x)
    # bit for bit what a compile sharing nothing computes
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "off")
    jit.clear_memory_cache()
    r2, n2 = _compile(s2)
    assert n2["kernel_hits"] == 0
    r3, _ = _compile(s3)
    _same(got2, _run(r2, s2, x))
    _same(got3, _run(r3, s3, x3))


def test_kernels_shared_in_memory_without_disk_cache(monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "off")
    jit.clear_memory_cache()
    s1, x = _step(1.0, seed=3)
    f1, c1 = _compile(s1, threads=1)
    s2, _ = _step(3.0, seed=3)
    f2, c2 = _compile(s2, threads=1)
    assert c2["kernel_hits"] > 0 and c2["kernels_compiled"] < c1["kernels_compiled"]
    a, b = _run(f1, s1, x), _run(f2, s2, x)
    # the loss scale 3 vs 1: the same parameters move differently, but both run
    assert np.isfinite(a[0][-1][0]).all() and np.isfinite(b[0][-1][0]).all()
    jit.clear_memory_cache()


def _kernel_entries(d, before):
    return sorted(set(os.listdir(d)) - before)


@pytest.mark.parametrize("damage", ["flip", "truncate", "index"])
def test_corrupt_kernel_entries_are_misses(cache_dir, monkeypatch, damage):
    s1, x = _step(1.0, seed=1)
    _compile(s1)
    jit.clear_memory_cache()
    # damage every per-kernel entry (index and object); graph entries untouched would
    # be hits of their own graph only, a new graph reads the kernel entries
    names = [n for n in os.listdir(cache_dir) if n.endswith((".gco", ".gck"))]
    for n in names:
        p = cache_dir / n
        data = bytearray(p.read_bytes())
        if damage == "flip":
            data[-1] ^= 0xFF
        elif damage == "truncate":
            data = data[:len(data) // 2]
        else:                       # a valid-looking entry under another key
            data[20] ^= 0x01
        p.write_bytes(bytes(data))
        os.chmod(p, 0o600)
    rejects = jit.STATS["disk_rejects"]
    s2, _ = _step(2.0, seed=1)
    f2, c2 = _compile(s2)
    assert c2["kernel_hits"] == 0 and c2["kernels_compiled"] > 0
    assert jit.STATS["disk_rejects"] > rejects
    got = _run(f2, s2, x)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "off")
    jit.clear_memory_cache()
    ref, _ = _compile(s2)
    _same(got, _run(ref, s2, x))


def test_foreign_object_for_a_kernel_is_a_miss(cache_dir):
    """An index entry pointing at a well-formed entry that is not an object (another
    program's payload) is a miss, never loaded."""
    s1, x = _step(1.0, seed=2)
    _compile(s1, threads=1)
    jit.clear_memory_cache()
    junk = diskcache.join_objects([b"\x7fELF" + b"\0" * 60])
    digest = hashlib.sha256(junk).hexdigest()
    diskcache.write_entry(diskcache.entry_path(str(cache_dir), digest), digest, junk)
    # repoint every index entry (32-byte payloads) at the junk
    for n in os.listdir(cache_dir):
        p = str(cache_dir / n)
        key = n[:-4]  # noqa: F841
        payload = None
        try:
            blob = open(p, "rb").read()
            if len(blob) == diskcache._HEADER.size + 32:
                payload = blob
        except OSError:
            pass
        if payload is not None and n.endswith(diskcache.KERNEL_SUFFIX):
            hdr = diskcache._HEADER.unpack_from(payload)
            k = hdr[2].hex()
            assert k.startswith(key)
            diskcache.write_entry(p, k, bytes.fromhex(digest))
    s2, _ = _step(2.0, seed=2)
    f2, c2 = _compile(s2, threads=1)
    assert c2["kernel_hits"] == 0
    _run(f2, s2, x)


def test_new_process_links_kernels_compiled_by_another(cache_dir):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np
        from test_kernel_cache import _step, _compile, _run
        s, x = _step(float(sys.argv[1]))
        f, c = _compile(s)
        out, _ = _run(f, s, x)
        print(c["kernels_compiled"], c["kernel_hits"], float(out[-1][0].reshape(-1)[0]).hex())
    """)
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache_dir), GRAPHC_TUNE="0")

    def run(scale):
        r = subprocess.run([sys.executable, "-c", code, str(scale)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        compiled, hits, loss = r.stdout.split()
        return int(compiled), int(hits), loss
    c1, h1, _ = run(1.0)
    c2, h2, loss2 = run(2.0)
    assert h1 == 0 and c1 > 0
    assert h2 > 0 and c2 < c1
    env["GRAPHC_CACHE_DIR"] = "off"
    assert run(2.0)[2] == loss2
