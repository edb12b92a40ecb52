"""Parameter initialisers (Glorot/Xavier, He/Kaiming, zeros), all driven by a seeded rng.

Every initialiser takes a ``numpy.random.Generator`` explicitly so that a model's initial
parameters are a pure function of its seed -- what makes runs, checkpoints and resume
comparisons reproducible.
"""
from __future__ import annotations

import numpy as np

from ..ir.limits import refuse_too_big


def _room(shape):
    """Refuse a parameter the machine cannot hold, before drawing it (the draws are
    float64: 8 bytes an element, whatever the parameter's dtype)."""
    n = 1
    for d in shape:
        n *= int(d)
    refuse_too_big(8 * n, f"initialising a parameter of shape {tuple(shape)}")


def _fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight laid out (in, out) as graphc's Linear uses it."""
    if len(shape) < 2:
        n = int(shape[0]) if shape else 1
        return n, n
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[0]) * receptive, int(shape[1]) * receptive


def glorot_uniform(rng, shape, dtype=np.float32):
    """U(-a, a), a = sqrt(6 / (fan_in + fan_out)): keeps activation variance for tanh/sigmoid."""
    _room(shape)
    fan_in, fan_out = _fans(shape)
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, shape).astype(dtype)


def glorot_normal(rng, shape, dtype=np.float32):
    _room(shape)
    fan_in, fan_out = _fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def he_normal(rng, shape, dtype=np.float32):
    """N(0, 2 / fan_in): keeps activation variance through ReLU layers."""
    _room(shape)
    fan_in, _ = _fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(rng, shape, dtype=np.float32):
    _room(shape)
    fan_in, _ = _fans(shape)
    a = np.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, shape).astype(dtype)


def zeros(rng, shape, dtype=np.float32):
    _room(shape)
    return np.zeros(shape, dtype)


INITIALIZERS = {"glorot": glorot_uniform, "glorot_uniform": glorot_uniform,
                "glorot_normal": glorot_normal, "xavier": glorot_uniform,
                "he": he_normal, "he_normal": he_normal, "he_uniform": he_uniform,
                "kaiming": he_normal, "zeros": zeros}


def get(name_or_fn):
    """An initialiser by name (``"glorot"``, ``"he"``, ...) or the callable itself."""
    if callable(name_or_fn):
        return name_or_fn
    from ..ir import GraphcError
    try:
        return INITIALIZERS[name_or_fn]
    except KeyError:
        raise GraphcError(f"unknown initialiser {name_or_fn!r}; choose one of "
                          f"{sorted(INITIALIZERS)}") from None


def as_rng(seed_or_rng) -> np.random.Generator:
    """Accept an int seed or an existing Generator (shared so layers draw in order)."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)
