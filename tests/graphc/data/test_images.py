"""Image datasets: digits resized to 28x28, MNIST IDX files (plain and gzip), their errors."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

import graphc as gc
from graphc.data import load_dataset
from graphc.data.images import read_idx, resize_bilinear


def write_idx(path, array, compress=False):
    """An IDX file as the MNIST distribution writes them (big-endian dims)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    raw = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def test_resize_bilinear_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    imgs = rng.random((3, 8, 8))
    want = torch.nn.functional.interpolate(torch.tensor(imgs)[:, None], size=(28, 28),
                                           mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(resize_bilinear(imgs, 28, 28), want.numpy(), atol=1e-12)


def test_digits28_is_the_bundled_digits_at_28x28():
    ds = load_dataset("digits28")
    assert ds.X.shape == (1797, 784) and ds.X.dtype == np.float32
    assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0 and ds.n_classes == 10
    assert "28x28 (bilinear)" in ds.source


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_mnist_idx_directory(tmp_path, compress):
    rng = np.random.default_rng(1)
    sfx = ".gz" if compress else ""
    xs = {p: rng.integers(0, 256, (n, 28, 28)).astype(np.uint8) for p, n in
          (("train", 30), ("t10k", 12))}
    for p, x in xs.items():
        write_idx(tmp_path / f"{p}-images-idx3-ubyte{sfx}", x, compress)
        write_idx(tmp_path / f"{p}-labels-idx1-ubyte{sfx}",
                  (np.arange(len(x)) % 10).astype(np.uint8), compress)
    ds = load_dataset(f"mnist:{tmp_path}")
    assert ds.X.shape == (42, 784) and ds.task == "classification"
    np.testing.assert_allclose(ds.X[:30], xs["train"].reshape(30, -1) / 255.0, rtol=1e-6)
    assert list(ds.y[:12]) == list(range(10)) + [0, 1]
    np.testing.assert_array_equal(read_idx(str(tmp_path / f"t10k-images-idx3-ubyte{sfx}")),
                                  xs["t10k"])


def test_mnist_errors_name_the_problem(tmp_path):
    with pytest.raises(gc.GraphcError, match="not a directory"):
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    with pytest.raises(gc.GraphcError, match="missing train-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(gc.GraphcError, match="bytes, but its header"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04")
    with pytest.raises(gc.GraphcError, match="not an IDX file"):
        load_dataset(f"mnist:{tmp_path}")
