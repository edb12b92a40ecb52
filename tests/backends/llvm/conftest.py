"""Fixtures shared by the LLVM backend's tests."""
from __future__ import annotations

import pytest

from graphc.backends.llvm.native import jit


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private, empty disk cache for the test, with the in-memory cache cleared before
    and after (so a hit is the disk's, and the next test starts clean)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(d))
    jit.clear_memory_cache()
    yield d
    jit.clear_memory_cache()
