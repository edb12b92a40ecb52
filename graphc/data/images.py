"""Image datasets for the conv nets: the bundled digits at 28x28, and MNIST-format IDX files.

* ``digits28`` -- scikit-learn's 1,797 8x8 digits (UCI, Alpaydin & Kaynak 1998) resized to
  28x28 by bilinear interpolation (half-pixel centres, PyTorch's ``align_corners=False``)
  and scaled to [0, 1]: MNIST's image size from data that ships with scikit-learn.  They
  are upsampled 8x8 images, not MNIST.
* ``mnist:DIR`` -- the standard IDX files of MNIST / Fashion-MNIST in DIR
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``), pixels scaled to [0, 1].  The
  training and t10k files are pooled and split by graphc's seeded stratified split like
  every dataset (the val/test fractions apply), not the official 60k/10k split.

Images are flattened to rows of H·W features (``Dataset`` is 2-d); models reshape them.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from ..ir import GraphcError
from .dataset import Dataset


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """(n, h, w) -> (n, height, width), bilinear with half-pixel centres (as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``)."""
    n, h, w = images.shape

    def axis(out, size):
        src = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, size - 1)
        return i0, i1, src - i0
    y0, y1, wy = axis(height, h)
    x0, x1, wx = axis(width, w)
    img = images.astype(np.float64)
    top = img[:, y0][:, :, x0] * (1 - wx) + img[:, y0][:, :, x1] * wx
    bot = img[:, y1][:, :, x0] * (1 - wx) + img[:, y1][:, :, x1] * wx
    return top * (1 - wy)[:, None] + bot * wy[:, None]


def digits28() -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    imgs = resize_bilinear(d.images / 16.0, 28, 28)
    return Dataset(imgs.reshape(len(imgs), -1), d.target.astype(np.int32), "digits28",
                   "classification", "UCI ML hand-written digits (Alpaydin & Kaynak 1998) via "
                   "scikit-learn, 8x8 resized to 28x28 (bilinear)")


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """One IDX file (optionally gzip-compressed) as an array of its dims."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise GraphcError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise GraphcError(f"{path} is not an IDX file (bad magic number)")
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    want = 4 + 4 * nd + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != want:
        raise GraphcError(f"{path}: {len(raw)} bytes, but its header {tuple(dims)} of "
                          f"{dtype} needs {want}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * nd).reshape(dims)


def _find(directory, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    alt = stem.replace("-idx", ".idx")      # some mirrors name them train-images.idx3-ubyte
    for name in (alt, alt + ".gz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    return None


def mnist(directory: str) -> Dataset:
    """MNIST-format IDX files in ``directory`` (see the module docstring)."""
    if not os.path.isdir(directory):
        raise GraphcError(f"mnist:{directory}: not a directory")
    xs, ys = [], []
    for part in ("train", "t10k"):
        ip = _find(directory, f"{part}-images-idx3-ubyte")
        lp = _find(directory, f"{part}-labels-idx1-ubyte")
        if ip is None and lp is None and part == "t10k":
            continue                      # a training set alone is enough
        if ip is None or lp is None:
            raise GraphcError(f"mnist:{directory}: missing {part}-images-idx3-ubyte[.gz] "
                              f"or {part}-labels-idx1-ubyte[.gz]")
        x, y = read_idx(ip), read_idx(lp)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise GraphcError(f"mnist:{directory}: {part} images {x.shape} and labels "
                              f"{y.shape} do not match (need (n, h, w) and (n,))")
        xs.append(x.reshape(len(x), -1).astype(np.float32) / 255.0)
        ys.append(y.astype(np.int32))
    if len({x.shape[1] for x in xs}) != 1:
        raise GraphcError(f"mnist:{directory}: train and t10k images differ in size")
    return Dataset(np.concatenate(xs), np.concatenate(ys), f"mnist:{directory}",
                   "classification", f"IDX files in {directory}")
