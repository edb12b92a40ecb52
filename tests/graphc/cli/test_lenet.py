"""``graphc train|dot|ir|memplan|bench lenet`` and LeNet on MNIST-format files."""
from __future__ import annotations

import re

import numpy as np

from tests.graphc.data.test_images import write_idx


def test_lenet_trains_on_idx_files(graphc, tmp_path):
    rng = np.random.default_rng(0)
    for part, n in (("train", 120), ("t10k", 40)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(y):          # a learnable pattern: a bar per class
            x[i, 2 + 2 * c:4 + 2 * c, 4:24] = 255
        x = np.clip(x + rng.integers(0, 40, x.shape), 0, 255).astype(np.uint8)
        write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", x, compress=True)
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", y, compress=True)
    r = graphc("train", "lenet", "--dataset", f"mnist:{tmp_path}", "--epochs", "3",
               "--progress", "lines")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert re.match(r"test accuracy [\d.]+% \(\d+/20\) -- lenet on mnist:", last), last


def test_lenet_graph_commands(graphc):
    r = graphc("ir", "lenet", "--graph", "forward", "--no-source")
    assert r.returncode == 0, r.stderr
    for op in ("im2col", "max_pool2d", "matmul"):
        assert op in r.stdout
    r = graphc("ir", "lenet", "--after", "optimizer", "--no-source")
    assert "col2im" in r.stdout and "max_pool2d_grad" in r.stdout
    r = graphc("dot", "lenet", "--graph", "backward")
    assert r.returncode == 0 and r.stdout.lstrip().startswith("digraph")
    r = graphc("memplan", "lenet")
    assert r.returncode == 0 and "lower bound" in r.stdout, r.stderr
    r = graphc("bench", "lenet", "--repeats", "2", "--steps", "2", "--vs", "numpy")
    assert r.returncode == 0 and "samples/s" in r.stdout, r.stderr


def test_lenet_rejects_non_image_data(graphc):
    r = graphc("train", "lenet", "--dataset", "digits")
    assert r.returncode != 0 and "lenet expects 28x28 images" in r.stderr


def test_lenet_defaults_augment_and_the_cli_overrides(graphc):
    from graphc.train import resolve
    _, cfg = resolve("lenet")
    assert cfg.augment == "shift:2" and cfg.lr_schedule == "cosine"
    _, cfg = resolve("lenet", augment="none")
    assert cfg.augment == "none"
    _, cfg = resolve("mlp")
    assert cfg.augment == "none"
    r = graphc("train", "mlp", "--augment", "rot:2", "--epochs", "1")
    assert r.returncode != 0 and "unknown augmentation" in r.stderr
