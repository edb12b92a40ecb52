"""``graphc cache info`` / ``graphc cache clear`` as a user runs them, and eviction under a
small ``GRAPHC_CACHE_MAX_MB`` across processes (issue 14, item 4)."""
from __future__ import annotations

import os


def _gco(d):
    return [p for p in d.iterdir() if p.suffix == ".gco"] if d.exists() else []


def test_cache_info_clear_and_cap(graphc, tmp_path):
    d = tmp_path / "cache"
    env = {"GRAPHC_CACHE_DIR": str(d)}
    r = graphc("cache", "info", env_extra=env)
    assert r.returncode == 0, r.stderr
    assert str(d) in r.stdout and "entries     0" in r.stdout
    r = graphc("train", "logreg", "--epochs", "1", env_extra=env)
    assert r.returncode == 0, r.stderr
    n = len(_gco(d))
    assert n > 0
    r = graphc("cache", "info", env_extra=env)
    assert f"entries     {n}" in r.stdout and ("MiB" in r.stdout or "KiB" in r.stdout)
    total = sum(p.stat().st_size for p in _gco(d))
    # a cap below what one run writes: the cache is cut back to at most 80 % of it
    cap_mb = total / 3 / 2**20
    r = graphc("train", "mlp", "--epochs", "1", env_extra={**env,
                                                             "GRAPHC_CACHE_MAX_MB": str(cap_mb)})
    assert r.returncode == 0, r.stderr
    after = sum(p.stat().st_size for p in _gco(d))
    biggest = max(p.stat().st_size for p in _gco(d))
    assert after <= cap_mb * 2**20 + biggest
    r = graphc("cache", "clear", env_extra=env)
    assert r.returncode == 0 and "removed" in r.stdout
    assert _gco(d) == []
    r = graphc("cache", "info", env_extra={"GRAPHC_CACHE_DIR": "off"})
    assert r.returncode == 0 and "off" in r.stdout


def test_untrusted_cache_dir_one_warning_line(graphc, tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    r = graphc("train", "logreg", "--epochs", "1", env_extra={"GRAPHC_CACHE_DIR": str(d)})
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "cache" in ln]
    assert len(warn) == 1 and warn[0].startswith("graphc: ") and "writable" in warn[0]
    assert os.stat(d).st_mode & 0o777 == 0o777 and _gco(d) == []


def test_bad_cap_is_one_line(graphc, tmp_path):
    r = graphc("train", "logreg", "--epochs", "1",
               env_extra={"GRAPHC_CACHE_DIR": str(tmp_path / "c"),
                          "GRAPHC_CACHE_MAX_MB": "lots"})
    assert r.returncode == 1 and "GRAPHC_CACHE_MAX_MB=lots" in r.stderr
    assert "Traceback" not in r.stderr and "numpy backend" not in r.stderr
