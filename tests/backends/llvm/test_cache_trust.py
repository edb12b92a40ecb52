"""The disk compile cache trusts only what it must (issue 15, item 6).

* an entry not owned by the user, writable by group/others or a symlink is a miss: not
  loaded, and replaced by the recompiled (private) entry;
* a GRAPHC_CACHE_DIR that is group/world-writable or not the user's is never chmod-ed:
  the disk cache is off for the process, with one warning;
* a malformed object with a valid checksum, another program's objects under a graph's
  key, another machine's object or metadata that does not parse is a miss (recompiled,
  right numbers), never a crash;
* concurrent writers: every reader sees one whole entry or another, never a mixture.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm.native import cachedir, diskcache, elfload, jit, kernellib, target

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 65534                       # "nobody"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(d))
    monkeypatch.delenv("GRAPHC_CACHE_MAX_MB", raising=False)
    jit.clear_memory_cache()
    cachedir.reset_warnings()
    yield d
    jit.clear_memory_cache()
    cachedir.reset_warnings()


def _compile(scale=2.0):
    """A small graph compiled and called three times (its key depends on ``scale``)."""
    f = gc.jit(lambda x: gc.tanh(x) * scale + 1.0)
    for i in range(3):
        x = np.linspace(-1, 1, 7).astype(np.float32) * (i + 1)
        np.testing.assert_allclose(f(x), np.tanh(x) * scale + 1.0, rtol=1e-6)
    return f


def _entries(d):
    return sorted(p for p in d.iterdir() if p.suffix == ".gco")


def _key(p) -> str:
    return p.read_bytes()[14:46].hex()          # the header's key digest


def _objects(p):
    return diskcache.split_objects(diskcache.read_entry(str(p), _key(p)))


# ---- entries ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_entries_writable_by_others_are_not_loaded(cache, mode):
    _compile()
    entries = _entries(cache)
    assert entries
    for p in entries:
        os.chmod(p, mode)
    jit.clear_memory_cache()
    before = dict(jit.STATS)
    _compile()
    assert jit.STATS["disk_hits"] == before["disk_hits"]          # nothing loaded
    assert jit.STATS["disk_rejects"] > before["disk_rejects"]
    assert jit.STATS["codegen"] > before["codegen"]
    for p in _entries(cache):                                     # replaced, private
        assert os.stat(p).st_mode & 0o077 == 0
    jit.clear_memory_cache()
    hits = jit.STATS["disk_hits"]
    _compile()
    assert jit.STATS["disk_hits"] > hits                          # and used again


def test_untrusted_says_why_for_another_owner_and_for_write_bits():
    st = os.stat_result((0o100600, 0, 0, 1, os.geteuid() + 1, 0, 10, 0, 0, 0))
    assert "belongs to uid" in cachedir.untrusted(st)
    st = os.stat_result((0o100620, 0, 0, 1, os.geteuid(), 0, 10, 0, 0, 0))
    assert "writable by group (mode 0620)" in cachedir.untrusted(st)
    st = os.stat_result((0o100644, 0, 0, 1, os.geteuid(), 0, 10, 0, 0, 0))
    assert cachedir.untrusted(st) is None


@pytest.mark.skipif(not IS_ROOT, reason="giving a file to another user needs root")
def test_entries_of_another_owner_are_not_loaded(cache):
    _compile()
    for p in _entries(cache):
        os.chown(p, OTHER_UID, OTHER_UID)
        assert cachedir.read_trusted(str(p)) is None
    jit.clear_memory_cache()
    hits, codegens = jit.STATS["disk_hits"], jit.STATS["codegen"]
    _compile()
    assert jit.STATS["disk_hits"] == hits and jit.STATS["codegen"] > codegens
    assert all(os.stat(p).st_uid == os.geteuid() for p in _entries(cache))


def test_a_symlinked_entry_is_not_followed(cache, tmp_path):
    _compile()
    (p,) = [p for p in _entries(cache)][:1]
    elsewhere = tmp_path / "elsewhere.gco"
    elsewhere.write_bytes(p.read_bytes())
    os.chmod(elsewhere, 0o600)
    p.unlink()
    p.symlink_to(elsewhere)
    assert cachedir.read_trusted(str(p)) is None
    jit.clear_memory_cache()
    _compile()
    assert not p.is_symlink() and elsewhere.exists()              # replaced, not written through


def test_an_untrusted_target_memo_is_not_used(cache, monkeypatch):
    monkeypatch.setattr(target, "_TARGET", None)
    jit.host_target()                                              # writes the memo
    (memo,) = cache.glob("target-*.json")
    d = json.loads(memo.read_text())
    d["cpu"], d["features"] = "bogus-cpu", "+imaginary"
    memo.write_text(json.dumps(d))
    os.chmod(memo, 0o666)
    monkeypatch.setattr(target, "_TARGET", None)
    t = jit.host_target()
    assert t.cpu != "bogus-cpu"
    os.chmod(memo, 0o600)                                          # rewritten if still ours
    assert "bogus" not in memo.read_text()


# ---- the directory --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o722])
def test_a_cache_dir_others_can_write_disables_the_cache_and_is_not_chmodded(cache, mode):
    cache.mkdir(mode=0o700)
    os.chmod(cache, mode)
    with pytest.warns(cachedir.CacheWarning, match="writable by") as rec:
        _compile()
        _compile(3.0)
    assert len([w for w in rec if w.category is cachedir.CacheWarning]) == 1  # once
    assert f"mode {mode & 0o7777:04o}" in str(rec[0].message)
    assert os.stat(cache).st_mode & 0o7777 == mode                # left as it was
    assert list(cache.iterdir()) == []                            # nothing written or read
    assert cachedir.cache_dir() is None


def test_a_readable_cache_dir_of_yours_is_used_and_not_chmodded(cache):
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cachedir.CacheWarning)
        _compile()
    assert os.stat(cache).st_mode & 0o777 == 0o755
    assert _entries(cache)


@pytest.mark.skipif(not IS_ROOT, reason="giving a directory to another user needs root")
def test_a_cache_dir_of_another_user_disables_the_cache(cache):
    cache.mkdir(mode=0o700)
    os.chown(cache, OTHER_UID, OTHER_UID)
    with pytest.warns(cachedir.CacheWarning, match=f"belongs to uid {OTHER_UID}"):
        _compile()
    st = os.stat(cache)
    assert st.st_uid == OTHER_UID and st.st_mode & 0o777 == 0o700
    assert list(cache.iterdir()) == []


def test_a_cache_dir_graphc_creates_is_private(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error", cachedir.CacheWarning)
        _compile()
    assert os.stat(cache).st_mode & 0o777 == 0o700


def test_a_cache_dir_that_is_a_file_disables_the_cache(cache):
    cache.write_text("not a directory")
    with pytest.warns(cachedir.CacheWarning, match="not a directory"):
        _compile()
    assert cache.read_text() == "not a directory"


# ---- malformed and foreign objects ----------------------------------------------------------------
def _mutations(obj: bytes) -> dict:
    """Objects that keep a valid ELF magic (and, written back, a valid checksum) but lie
    about their layout or are another machine's: one per kind of lie."""
    ehdr, shdr = elfload._EHDR, elfload._SHDR
    fields = list(ehdr.unpack_from(obj))
    out = {"truncated": obj[:len(obj) // 2], "garbage": obj[:64] + b"\xff" * 512}
    f = list(fields)
    f[13] = 999                                                   # shstrndx
    out["shstrndx"] = ehdr.pack(*f) + obj[ehdr.size:]
    f = list(fields)
    f[2] = elfload.EM_AARCH64 if elfload._host_machine() != elfload.EM_AARCH64 else 62
    out["machine"] = ehdr.pack(*f) + obj[ehdr.size:]
    shoff, shnum, shstrndx = fields[6], fields[12], fields[13]
    seen = set()
    str_off, str_size = shdr.unpack_from(obj, shoff + shstrndx * shdr.size)[4:6]
    for i in range(shnum):
        sh = list(shdr.unpack_from(obj, shoff + i * shdr.size))
        typ = sh[1]
        end = obj.find(b"\0", str_off + sh[0])
        name = obj[str_off + sh[0]:end].decode()
        if name == ".eh_frame" and sh[5] >= 8 and "eh_frame" not in seen:
            seen.add("eh_frame")                                  # the first record's length
            b = bytearray(obj)
            b[sh[4]:sh[4] + 4] = (sh[5] * 4).to_bytes(4, "little")
            out["eh_frame-length"] = bytes(b)
        if typ not in (elfload.SHT_PROGBITS, elfload.SHT_SYMTAB, elfload.SHT_RELA) or not sh[5]:
            continue
        edits = [("offset", 4, 1 << 40), ("size", 5, 1 << 40)]
        if typ in (elfload.SHT_SYMTAB, elfload.SHT_RELA):
            edits.append(("link", 6, 9999))                       # the names / the symbols
        if typ == elfload.SHT_RELA:
            edits.append(("info", 7, 9999))                       # the section relocated
        for field, idx, value in edits:
            if (typ, field) in seen:
                continue
            seen.add((typ, field))
            bad = list(sh)
            bad[idx] = value
            b = bytearray(obj)
            shdr.pack_into(b, shoff + i * shdr.size, *bad)
            out[f"type{typ}-{field}"] = bytes(b)
        if typ == elfload.SHT_RELA and ("rela", "symbol") not in seen:
            seen.add(("rela", "symbol"))                          # a symbol index past the table
            b = bytearray(obj)
            r_off, r_info, addend = elfload._RELA.unpack_from(obj, sh[4])
            elfload._RELA.pack_into(b, sh[4], r_off, (0xFFFFFF << 32) | (r_info & 0xFFFFFFFF),
                                    addend)
            out["rela-symbol"] = bytes(b)
    return out


def test_malformed_objects_are_refused_by_the_loader_and_the_validator(cache):
    _compile()
    objs, _ = _objects(max(_entries(cache), key=lambda p: p.stat().st_size))
    elfload.LoadedCode(objs, jit.SYMBOLS.get)                     # the real ones load
    elfload.validate(objs)
    muts = _mutations(objs[0])
    assert {"truncated", "machine", "rela-symbol", "type4-info", "type2-link"} <= set(muts)
    for name, bad in muts.items():
        for check in (lambda o: elfload.LoadedCode(o, jit.SYMBOLS.get), elfload.validate):
            if name == "machine" and check is not elfload.validate:
                with pytest.raises(elfload.Unsupported):          # the loader: use MCJIT...
                    check([bad] + objs[1:])
                continue
            with pytest.raises(elfload.Malformed):                # ...which never gets it
                check([bad] + objs[1:])
                raise AssertionError(f"{name} was accepted")


def test_an_unwind_table_whose_records_run_past_it_is_refused():
    """graphc's kernels are nounwind (no .eh_frame); objects with unwind tables are
    those of test_elfload."""
    from tests.backends.llvm.test_elfload import _objects as with_unwind_tables
    objs = with_unwind_tables()
    elfload.LoadedCode(objs)
    bad = {n: o for i, obj in enumerate(objs)
           for n, o in _mutations(obj).items() if n == "eh_frame-length"
           for o in [objs[:i] + [o] + objs[i + 1:]]}
    assert bad
    for objects in bad.values():
        for check in (elfload.LoadedCode, elfload.validate):
            with pytest.raises(elfload.Malformed, match="unwind"):
                check(objects)


def test_malformed_entries_with_a_valid_checksum_are_a_miss(tmp_path):
    """In a fresh process (a crash kills only that one): each damaged entry is
    recompiled and gives the right numbers, with the ELF loader and with MCJIT."""
    script = textwrap.dedent("""
        import os
        import numpy as np
        import graphc as gc
        from graphc.backends.llvm.native import diskcache, jit
        from tests.backends.llvm.test_cache_trust import _mutations
        d = os.environ["GRAPHC_CACHE_DIR"]
        def run():
            f = gc.jit(lambda x: gc.tanh(x) * 2.0 + 1.0)
            for i in range(3):
                x = np.linspace(-1, 1, 7).astype(np.float32) * (i + 1)
                np.testing.assert_allclose(f(x), np.tanh(x) * 2.0 + 1.0, rtol=1e-6)
        run()
        (p,) = [os.path.join(d, n) for n in os.listdir(d) if n.endswith(".gco")]
        key = open(p, "rb").read()[14:46].hex()
        objs, meta = diskcache.split_objects(diskcache.read_entry(p, key))
        n = 0
        for name, bad in _mutations(objs[0]).items():
            diskcache.write_entry(p, key, diskcache.join_objects([bad] + objs[1:], meta))
            jit.clear_memory_cache()
            rejects, hits = jit.STATS["disk_rejects"], jit.STATS["disk_hits"]
            run()
            assert jit.STATS["disk_rejects"] == rejects + 1, name
            assert jit.STATS["disk_hits"] == hits, name
            n += 1
        jit.clear_memory_cache()
        run()
        assert jit.STATS["disk_hits"] == 1        # the last recompile rewrote a good entry
        print("ok", n)
    """)
    for loader in ("1", "0"):
        env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path / f"c{loader}"),
                   GRAPHC_ELF_LOADER=loader, PYTHONPATH=ROOT)
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=600, cwd=ROOT)
        assert r.returncode == 0, (loader, r.returncode, r.stderr[-3000:])
        assert r.stdout.startswith("ok") and int(r.stdout.split()[1]) >= 8, r.stdout


def test_another_programs_objects_under_a_graphs_key_are_a_miss(cache):
    """Well-formed objects (valid checksum) without the graph's entry point: recompiled,
    not called at address 0 and not a KeyError."""
    _compile()
    (graph_entry,) = _entries(cache)
    other = jit.compile_module('define i32 @not_graphc() {\n  ret i32 1\n}\n')
    foreign = [p for p in _entries(cache) if _key(p) == other.key][0]
    objs, _ = _objects(foreign)
    _, meta = _objects(graph_entry)
    diskcache.write_entry(str(graph_entry), _key(graph_entry), diskcache.join_objects(objs, meta))
    jit.clear_memory_cache()
    rejects = jit.STATS["disk_rejects"]
    _compile()
    assert jit.STATS["disk_rejects"] == rejects + 1


@pytest.mark.parametrize("meta", ["none", "drivers"])
def test_a_library_entry_without_the_drivers_is_a_miss(cache, monkeypatch, meta):
    # the library's entry names its drivers in its meta (a hit imports no code
    # generator): objects without them, or an entry without that list, are a miss
    from graphc.backends.llvm.codegen.gemm import default_spec
    spec = default_spec("float32")
    monkeypatch.setattr(kernellib, "_LOADED", {})
    kernellib.load(spec)
    key = kernellib.library_key(kernellib.family(spec), jit.host_target())
    path = cache / f"{key[:40]}.gco"
    _, good_meta = _objects(path)
    assert kernellib._driver_names(good_meta) == [s.name for s in kernellib._specs(
        kernellib.family(spec))]
    other = jit.compile_module('define i32 @not_a_gemm() {\n  ret i32 1\n}\n')
    objs, _ = _objects([p for p in _entries(cache) if _key(p) == other.key][0])
    diskcache.write_entry(str(path), key, diskcache.join_objects(
        objs, good_meta if meta == "drivers" else None))
    monkeypatch.setattr(kernellib, "_LOADED", {})
    jit.clear_memory_cache()
    rejects = jit.STATS["disk_rejects"]
    cm = kernellib.load(spec)[0]
    assert cm.source == "compiled" and jit.STATS["disk_rejects"] == rejects + 1
    a = np.random.default_rng(0).standard_normal((33, 40)).astype(np.float32)
    f = gc.jit(lambda x, y: x @ y)
    for _ in range(3):
        np.testing.assert_allclose(f(a, a.T), a @ a.T, rtol=1e-4, atol=1e-4)


_GEMM_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import graphc as gc
    from graphc.backends.llvm.native import jit
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 70)).astype(np.float32)
    f = gc.jit(lambda x, y: gc.relu(x @ y))
    for i in range(3):
        b = rng.standard_normal((70, 45)).astype(np.float32)
        np.testing.assert_allclose(f(a, b), np.maximum(a @ b, 0), rtol=1e-4, atol=1e-4)
    print(json.dumps(jit.STATS))
""")


def _gemm_run(env):
    r = subprocess.run([sys.executable, "-c", _GEMM_SCRIPT], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("libs,loader", [([], "1"), ([], "0"), ("nonsense", "1"),
                                         ([["float32", "x", 1, 1, 1]], "1")])
def test_a_graph_whose_library_is_not_named_is_a_miss_not_a_segfault(tmp_path, libs, loader):
    """A graph entry whose metadata does not name (or garbles) the kernel library its
    objects call: in a fresh process the library is not loaded first, so the calls
    cannot be resolved -- a miss, recompiled; never code calling address 0."""
    d = tmp_path / "c"
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(d), GRAPHC_ELF_LOADER=loader)
    assert _gemm_run(env)["codegen"] >= 1
    damaged = 0
    for p in _entries(d):
        objs, meta = _objects(p)
        if meta and json.loads(meta).get("libs"):
            m = json.loads(meta)
            m["libs"] = libs
            diskcache.write_entry(str(p), _key(p),
                                  diskcache.join_objects(objs, json.dumps(m).encode()))
            damaged += 1
    assert damaged == 1
    stats = _gemm_run(env)
    assert stats["disk_rejects"] == 1 and stats["codegen"] == 1
    stats = _gemm_run(env)                      # rewritten: a plain hit again
    assert stats["disk_rejects"] == 0 and stats["codegen"] == 0


# ---- concurrent writers ---------------------------------------------------------------------------
def test_concurrent_writers_of_one_entry_never_show_a_mixture(tmp_path):
    d = tmp_path / "c"
    d.mkdir(mode=0o700)
    key = hashlib.sha256(b"k").hexdigest()
    path = diskcache.entry_path(str(d), key)
    payloads = [bytes([i]) * (200_000 + i) for i in range(4)]
    blobs = set()
    for pl in payloads:
        diskcache.write_entry(path, key, pl)
        blobs.add(open(path, "rb").read())
    stop, seen, bad = threading.Event(), [], []

    def writer(pl):
        for _ in range(40):
            diskcache.write_entry(path, key, pl)

    def reader():
        while not stop.is_set():
            b = open(path, "rb").read()
            seen.append(1)
            if b not in blobs:
                bad.append(len(b))
            if diskcache.read_entry(path, key) not in payloads:
                bad.append("read_entry")
    threads = [threading.Thread(target=writer, args=(pl,)) for pl in payloads]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert seen and not bad
    assert [n for n in os.listdir(d) if n.startswith(".tmp-")] == []


def test_processes_compiling_the_same_graph_at_once(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        import graphc as gc
        f = gc.jit(lambda x: gc.sum(gc.tanh(x @ x.T) * 3.0, axis=1))
        for i in range(3):
            x = np.random.default_rng(i).standard_normal((24, 40)).astype(np.float32)
            np.testing.assert_allclose(f(x), (np.tanh(x @ x.T) * 3.0).sum(1), rtol=1e-4,
                                       atol=1e-4)
        print("ok")
    """)
    d = tmp_path / "shared"
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(d))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    names = os.listdir(d)
    assert not [n for n in names if n.startswith(".tmp-")]
    gco = [d / n for n in names if n.endswith(".gco")]
    assert gco and all(diskcache.read_entry(str(p), _key(p)) is not None for p in gco)
    r = subprocess.run([sys.executable, "-c", script + textwrap.dedent("""
        from graphc.backends.llvm.native import jit
        assert jit.STATS["codegen"] == 0 and jit.STATS["disk_rejects"] == 0, jit.STATS
    """)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
