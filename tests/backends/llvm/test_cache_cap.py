"""The disk compile cache stays under GRAPHC_CACHE_MAX_MB, evicting the least recently
used entries (issue 14, item 4); the running sum in ``.usage`` spares a scan per write."""
from __future__ import annotations

import hashlib
import os

import pytest

import graphc as gc
from graphc.backends.llvm.native import cachedir, diskcache


@pytest.fixture
def d(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(d))
    monkeypatch.delenv("GRAPHC_CACHE_MAX_MB", raising=False)
    return d


def _key(i):
    return hashlib.sha256(str(i).encode()).hexdigest()


def _write(d, i, size=30_000):
    path = diskcache.entry_path(str(d), _key(i))
    diskcache.write_entry(path, _key(i), os.urandom(size))
    os.utime(path, (1_000_000 + i, 1_000_000 + i))       # used long ago, in order
    return path


def _left(d):
    return {int(i) for i in range(100) if os.path.exists(diskcache.entry_path(str(d), _key(i)))}


def test_least_recently_used_entries_are_evicted_under_the_cap(d, monkeypatch):
    first = _write(d, 0)
    b = cachedir.disk_bytes(os.stat(first))
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", str(10.5 * b / 2**20))
    for i in range(1, 8):
        _write(d, i)
    for i in (0, 1):                                      # used again: now the most recent
        assert diskcache.read_entry(diskcache.entry_path(str(d), _key(i)), _key(i))
    for i in (8, 9):
        _write(d, i)
    assert _left(d) == set(range(10))                     # 10 entries fit
    (d / "notes.txt").write_text("mine")
    _write(d, 10)                                         # 11 do not: down to 80 % (8)
    assert _left(d) == {0, 1, 5, 6, 7, 8, 9, 10}
    assert (d / "notes.txt").exists()                     # not graphc's: never touched
    assert cachedir.info()["bytes"] <= 10.5 * b


def test_a_cap_below_one_entry_keeps_the_entry_just_written(d, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", "0.001")
    for i in range(3):
        _write(d, i)
    assert _left(d) == {2}


def test_the_running_sum_spares_scans_and_is_corrected(d, monkeypatch):
    scans = []
    real = cachedir.scan
    monkeypatch.setattr(cachedir, "scan", lambda p: scans.append(p) or real(p))
    for i in range(20):
        _write(d, i)
    assert len(scans) == 1                                # the first write only
    for i in range(5):
        os.unlink(diskcache.entry_path(str(d), _key(i)))  # removed behind graphc's back
    monkeypatch.setattr(cachedir, "RESCAN_WRITES", 3)
    for i in range(20, 23):
        _write(d, i)
    assert len(scans) == 2
    (d / cachedir.USAGE_FILE).write_text("garbage")      # a sum that does not parse: rescan
    _write(d, 23)
    assert len(scans) == 3
    assert cachedir._read_usage(str(d))["bytes"] == sum(b for _, b, _ in real(str(d)))


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "nan", "inf", "10MB"])
def test_a_bad_cap_is_a_config_error_naming_the_variable(d, monkeypatch, bad):
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", bad)
    with pytest.raises(gc.ConfigError, match=f"GRAPHC_CACHE_MAX_MB='{bad}'"):
        cachedir.cache_dir()
    with pytest.raises(gc.GraphcError, match="megabytes"):
        cachedir.max_bytes()


def test_default_cap(d):
    assert cachedir.max_bytes() == cachedir.DEFAULT_MAX_MB * 2**20


def test_info_and_clear(d, monkeypatch):
    for i in range(3):
        _write(d, i)
    stale = d / ".tmp-crashed"
    stale.write_bytes(b"x")
    os.utime(stale, (1, 1))
    (d / "notes.txt").write_text("mine")
    info = cachedir.info()
    assert info["directory"] == str(d) and info["enabled"] and info["entries"] == 3
    assert not stale.exists()                             # a crashed writer's, removed
    removed, freed = cachedir.clear()
    assert removed == 3 and freed == info["bytes"]
    assert _left(d) == set() and (d / "notes.txt").exists()
    os.chmod(d, 0o777)
    assert "writable by group and others" in cachedir.info()["reason"]
    with pytest.raises(gc.ConfigError, match="not clearing"):
        cachedir.clear()
    assert os.stat(d).st_mode & 0o777 == 0o777
