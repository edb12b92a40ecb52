"""The gradient region: every parameter's gradient in one contiguous buffer.

The compiled gradient step writes each gradient into its view of this buffer (the views
are graph inputs it updates in place), so the all-reduce is one MPI call over one
array -- or a few calls over bucket slices -- never one per parameter.  Each view
starts on a 64-byte boundary (the backend's vector alignment); the padding between
views stays zero, so reducing it is harmless.  ``extra`` elements at the end (one by
default) carry a small header: the rank's loss, so the global mean loss rides on the
same call; for the parameter server, version numbers and sampler positions.

Parameters of different float dtypes get one buffer per dtype (MPI reduces one type
per call); the usual all-float32 model has exactly one.
"""
from __future__ import annotations

import numpy as np

ALIGN = 64


def _aligned(n: int, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + n * dtype.itemsize].view(dtype)


class GradRegion:
    def __init__(self, params: list[np.ndarray], extra: int = 1):
        by_dtype: dict = {}
        for i, p in enumerate(params):
            by_dtype.setdefault(p.dtype, []).append(i)
        self.buffers: list[np.ndarray] = []
        self.views: list[np.ndarray | None] = [None] * len(params)
        self._spans: list[list[tuple[int, int]]] = []   # per buffer: (start, stop) per view
        for b, (dtype, idx) in enumerate(by_dtype.items()):
            per = ALIGN // dtype.itemsize
            offs, top = [], 0
            for i in idx:
                offs.append(top)
                top += -(-max(params[i].size, 1) // per) * per
            buf = _aligned(top + (extra if b == 0 else 0), dtype)
            spans = []
            for i, o in zip(idx, offs):
                self.views[i] = buf[o:o + params[i].size].reshape(params[i].shape)
                spans.append((o, o + params[i].size))
            self.buffers.append(buf)
            self._spans.append(spans)
        self.header = self.buffers[0][self.buffers[0].size - extra:]
        self.loss_slot = self.header[:1]

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers)

    def buckets(self, n: int) -> list[np.ndarray]:
        """The buffers cut into about ``n`` slices of similar size at view boundaries,
        last parameters first (their gradients are the first the backward pass finishes,
        the order PyTorch DDP reduces in)."""
        n = max(1, int(n))
        out = []
        for buf, spans in zip(self.buffers, self._spans):
            target = buf.size / n
            cuts = [buf.size]
            for start, _ in reversed(spans[1:]):
                if len(cuts) == n:
                    break
                if cuts[-1] - start >= target:
                    cuts.append(start)
            cuts.append(0)
            out += [buf[lo:hi] for hi, lo in zip(cuts, cuts[1:])]
        return out
