"""``graphc cache info`` / ``graphc cache clear`` as a user runs them, eviction under a
small ``GRAPHC_CACHE_MAX_MB`` across processes, and the one-line messages."""
from __future__ import annotations

import json
import os


def _gco(d):
    return [p for p in d.iterdir() if p.suffix == ".gco"] if d.exists() else []


def test_cache_info_clear_and_cap(graphc, tmp_path):
    d = tmp_path / "cache"
    env = {"GRAPHC_CACHE_DIR": str(d)}
    r = graphc("cache", "info", env_extra=env)
    assert r.returncode == 0, r.stderr
    assert str(d) in r.stdout and "not created yet" in r.stdout and not d.exists()
    r = graphc("train", "logreg", "--epochs", "1", env_extra=env)
    assert r.returncode == 0, r.stderr
    n = len(_gco(d))
    assert n > 0
    r = graphc("cache", "info", env_extra=env)
    assert f"entries     {n} compiled objects" in r.stdout and "512.0 MiB cap" in r.stdout
    info = json.loads(graphc("cache", "info", "--json", env_extra=env).stdout)
    assert info["entries"] == n and info["enabled"]
    cap = info["bytes"] / 2 / 2**20
    r = graphc("train", "mlp", "--epochs", "1",
               env_extra={**env, "GRAPHC_CACHE_MAX_MB": str(cap)})
    assert r.returncode == 0, r.stderr
    after = json.loads(graphc("cache", "info", "--json", env_extra=env).stdout)
    biggest = max(p.stat().st_size for p in _gco(d))
    assert after["bytes"] <= max(cap * 2**20, biggest + 8192) + 8192
    r = graphc("cache", "clear", env_extra=env)
    assert r.returncode == 0 and r.stdout.startswith("removed ")
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
    assert len(warn) == 1 and warn[0].startswith("graphc: not using the compile cache")
    assert "mode 0777" in warn[0] and "Warning" not in r.stderr
    assert os.stat(d).st_mode & 0o777 == 0o777 and list(d.iterdir()) == []
    r = graphc("cache", "clear", env_extra={"GRAPHC_CACHE_DIR": str(d)})
    assert r.returncode == 1 and "not clearing" in r.stderr


def test_bad_cap_is_one_line_and_no_fallback(graphc, tmp_path):
    r = graphc("train", "logreg", "--epochs", "1",
               env_extra={"GRAPHC_CACHE_DIR": str(tmp_path / "c"),
                          "GRAPHC_CACHE_MAX_MB": "lots"})
    assert r.returncode == 1 and "GRAPHC_CACHE_MAX_MB='lots'" in r.stderr
    assert "Traceback" not in r.stderr and "numpy backend" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
