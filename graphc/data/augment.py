"""Training-batch augmentation for image models: random shifts.

``--augment shift:N`` moves every training image by its own random (dy, dx), each in
[-N, N] pixels, filling the uncovered border with the nearest edge pixel (the bundled
digits and MNIST have background there).  It is applied to training batches only, on
the host, before the compiled step (which never changes); validation and test data are
never touched.  On LeNet with the 1,259 training images of ``digits28`` it is worth
about a point of test accuracy (96-97 % -> 98 % on the default split, measured with
graphc and with an equivalent PyTorch loop): with so few images a conv net overfits to
where the strokes sit.

Reproducible and resumable: the shifts of a batch come from a Generator seeded by
(a key drawn once per epoch from the batch sampler's seeded Generator, batch index), so
a run resumed from a checkpoint mid-epoch replays the same shifts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import GraphcError

AUGMENTS = ("none", "shift:N")


@dataclass(frozen=True)
class Shift:
    """Random integer shifts of at most ``pixels`` along each axis, edge-filled."""
    pixels: int
    image: tuple                 # (channels, height, width) of one row of features

    def __call__(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c, h, w = self.image
        n = len(X)
        imgs = X.reshape(n, c, h, w)
        dy, dx = rng.integers(-self.pixels, self.pixels + 1, size=(2, n))
        rows = np.clip(np.arange(h)[None, :] - dy[:, None], 0, h - 1)      # (n, h)
        cols = np.clip(np.arange(w)[None, :] - dx[:, None], 0, w - 1)      # (n, w)
        out = imgs[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
        return np.ascontiguousarray(out.reshape(n, c * h * w), dtype=X.dtype)


def image_shape(n_features: int, image=None) -> tuple:
    """The (C, H, W) of a row: the model's own, else a square one-channel image."""
    if image is not None:
        return tuple(int(d) for d in image)
    side = int(round(np.sqrt(n_features)))
    if side * side != n_features:
        raise GraphcError(f"--augment shift needs image rows; {n_features} features are "
                          "not a square one-channel image (the model declares no image "
                          "shape)")
    return (1, side, side)


def parse(spec: str) -> int:
    """The shift of ``spec`` ("none" -> 0, "shift:N" -> N); GraphcError otherwise."""
    text = str(spec).strip().lower()
    if text in ("none", "", "0"):
        return 0
    kind, _, arg = text.partition(":")
    try:
        pixels = int(arg)
    except ValueError:
        pixels = -1
    if kind != "shift" or pixels < 0:
        raise GraphcError(f"unknown augmentation {spec!r}: use one of {', '.join(AUGMENTS)} "
                          "(e.g. shift:2)")
    return pixels


def make(spec: str, n_features: int, image=None):
    """The batch transform of ``spec`` for rows of ``n_features`` (None: no augmentation)."""
    pixels = parse(spec)
    if pixels == 0:
        return None
    return Shift(pixels, image_shape(n_features, image))
