"""Random-shift augmentation of training batches (graphc/data/augment.py)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.data import Batches, augment


def test_shift_moves_each_image_by_its_own_offset_edge_filled():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 2 * 5 * 7)).astype(np.float32)
    t = augment.make("shift:2", X.shape[1], image=(2, 5, 7))
    out = t(X, np.random.default_rng(3))
    dy, dx = np.random.default_rng(3).integers(-2, 3, size=(2, 6))
    imgs, got = X.reshape(6, 2, 5, 7), out.reshape(6, 2, 5, 7)
    assert out.dtype == X.dtype and out.shape == X.shape
    for i in range(6):
        pad = np.pad(imgs[i], ((0, 0), (2, 2), (2, 2)), mode="edge")
        want = pad[:, 2 - dy[i]:2 - dy[i] + 5, 2 - dx[i]:2 - dx[i] + 7]
        np.testing.assert_array_equal(got[i], want)
    assert not np.array_equal(out, X)


def test_none_and_bad_specs():
    assert augment.make("none", 784) is None
    assert augment.make("shift:0", 784) is None
    for bad in ("shift", "shift:-1", "rotate:3", "shift:x"):
        with pytest.raises(gc.GraphcError, match="unknown augmentation"):
            augment.parse(bad)
    with pytest.raises(gc.GraphcError, match="not a square one-channel image"):
        augment.make("shift:1", 30)
    assert augment.make("shift:1", 64).image == (1, 8, 8)


def test_batches_replay_the_same_shifts_from_a_resumed_epoch():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 16)).astype(np.float32), np.arange(40) % 4
    t = augment.make("shift:1", 16)

    def run(start):
        b = Batches(X, y, 8, seed=5, transform=t)
        return list(b.epoch(start))
    full, resumed = run(0), run(2)
    for (xa, ya), (xb, yb) in zip(full[2:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    plain = list(Batches(X, y, 8, seed=5).epoch())
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plain, full))   # same order
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(plain, full))
