"""Layers: Linear, Sequential, MLP and activations as Modules (see module.py for why
they take ``params`` explicitly)."""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ..ir import GraphcError
from ..ir.ops.window import pair
from . import init as initializers
from .conv import avg_pool2d, conv2d, flatten, max_pool2d
from .module import Module


class Linear(Module):
    """y = x @ w + b with w of shape (in, out); He init by default (ReLU nets), Glorot
    available (``init="glorot"``) for tanh/sigmoid nets and linear models."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init="he", dtype=np.float32):
        super().__init__()
        if int(in_features) <= 0 or int(out_features) <= 0:
            raise GraphcError(f"Linear: sizes must be positive, got ({in_features}, "
                              f"{out_features})")
        self._in, self._out, self.bias = int(in_features), int(out_features), bias
        self.weight_init, self.dtype = initializers.get(init), np.dtype(dtype)

    def init_own(self, rng):
        p = {"w": self.weight_init(rng, (self._in, self._out), self.dtype)}
        if self.bias:
            p["b"] = np.zeros(self._out, self.dtype)
        return p

    def forward(self, params, x):
        y = F.matmul(x, params["w"])
        return F.add(y, params["b"]) if self.bias else y

    in_features = property(lambda self: self._in)
    out_features = property(lambda self: self._out)

    def __repr__(self):
        return f"Linear({self._in}, {self._out}, bias={self.bias})"


class _Activation(Module):
    fn = staticmethod(lambda x: x)

    def forward(self, params, x):
        return type(self).fn(x)


class ReLU(_Activation):
    fn = staticmethod(F.relu)


class Tanh(_Activation):
    fn = staticmethod(F.tanh)


class Sigmoid(_Activation):
    fn = staticmethod(F.sigmoid)


ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class Sequential(Module):
    """Layers applied in order; parameters keyed by position (``"0"``, ``"2"``, ...)."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise GraphcError(f"Sequential: item {i} is a {type(layer).__name__}, "
                                  "not a gc.nn.Module")
            setattr(self, str(i), layer)
        self.layers = list(layers)

    def forward(self, params, x):
        for i, layer in enumerate(self.layers):
            x = layer(params.get(str(i), {}), x)
        return x

    @property
    def in_features(self):
        for layer in self.layers:
            if layer.in_features is not None:
                return layer.in_features
        return None

    @property
    def out_features(self):
        for layer in reversed(self.layers):
            if layer.out_features is not None:
                return layer.out_features
        return None

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]


def MLP(widths, activation="relu", init=None) -> Sequential:
    """``MLP([64, 128, 64, 10])``: Linear layers with an activation between them."""
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise GraphcError(f"MLP needs at least an input and an output width, got {widths}")
    if activation not in ACTIVATIONS:
        raise GraphcError(f"unknown activation {activation!r}; choose one of "
                          f"{sorted(ACTIVATIONS)}")
    init = init or ("he" if activation == "relu" else "glorot")
    layers: list[Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(Linear(a, b, init=init))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return Sequential(*layers)


class Conv2d(Module):
    """``gc.nn.conv2d`` as a layer, PyTorch's layout: w (out, in/groups, kh, kw), b (out,).
    He-normal init over fan_in = in/groups·kh·kw (ReLU nets); zero bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=0, dilation=1, groups=1, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.groups = int(groups)
        if self.in_channels <= 0 or self.out_channels <= 0 or self.groups <= 0 or \
                self.in_channels % self.groups or self.out_channels % self.groups:
            raise GraphcError(f"Conv2d: channels ({in_channels}, {out_channels}) must be "
                              f"positive and divisible by groups={groups}")
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.bias, self.dtype = bias, np.dtype(dtype)

    def init_own(self, rng):
        kh, kw = self.kernel_size
        cin = self.in_channels // self.groups
        shape = (self.out_channels, cin, kh, kw)
        p = {"w": (rng.standard_normal(shape) * np.sqrt(2.0 / (cin * kh * kw)))
             .astype(self.dtype)}
        if self.bias:
            p["b"] = np.zeros(self.out_channels, self.dtype)
        return p

    def forward(self, params, x):
        return conv2d(x, params["w"], params.get("b"), self.stride, self.padding,
                      self.dilation, self.groups)

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding})")


class _Pool(Module):
    fn = staticmethod(max_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, params, x):
        return type(self).fn(x, self.kernel_size, self.stride, self.padding)

    def __repr__(self):
        return (f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding})")


class MaxPool2d(_Pool):
    fn = staticmethod(max_pool2d)


class AvgPool2d(_Pool):
    fn = staticmethod(avg_pool2d)


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` (default: all but the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, params, x):
        return flatten(x, self.start_dim, self.end_dim)
