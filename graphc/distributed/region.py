"""The gradient region: every parameter's gradient in one contiguous buffer.

The compiled gradient step writes each gradient into its view of this buffer (the views
are graph inputs it updates in place), so the all-reduce is one MPI call over one
array -- or a few calls over bucket slices -- never one per parameter.  Each view
starts on a 64-byte boundary (the backend's vector alignment); the padding between
views stays zero, so reducing it is harmless.  ``extra`` elements at the end (one by
default) carry a small header: the rank's loss, so the global mean loss rides on the
same call; for the parameter server, version numbers and sampler positions.

Parameters of different float dtypes get one buffer per dtype (MPI reduces one type
per call); the usual all-float32 model has exactly one.  The buffers are carved out of
one block of bytes: by default a private one, or ``memory`` given by the caller -- a
slot of a node-shared MPI window, so that peers read this rank's gradients in place
(:mod:`.shared`).
"""
from __future__ import annotations

import numpy as np

ALIGN = 64


def _aligned(n: int, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + n * dtype.itemsize].view(dtype)


def _layout(params, extra):
    """[(dtype, [param index], [element offset], elements)] per buffer, in first-seen
    dtype order; the first buffer ends with ``extra`` header elements."""
    by_dtype: dict = {}
    for i, p in enumerate(params):
        by_dtype.setdefault(np.dtype(p.dtype), []).append(i)
    out = []
    for b, (dtype, idx) in enumerate(by_dtype.items()):
        per = ALIGN // dtype.itemsize
        offs, top = [], 0
        for i in idx:
            offs.append(top)
            top += -(-max(params[i].size, 1) // per) * per
        out.append((dtype, idx, offs, top + (extra if b == 0 else 0)))
    return out


def _round_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def region_nbytes(params, extra: int = 1) -> int:
    """Bytes of the block a :class:`GradRegion` of ``params`` carves its buffers from."""
    return sum(_round_up(n * d.itemsize) for d, _, _, n in _layout(params, extra))


class GradRegion:
    def __init__(self, params: list[np.ndarray], extra: int = 1,
                 memory: np.ndarray | None = None):
        layout = _layout(params, extra)
        need = sum(_round_up(n * d.itemsize) for d, _, _, n in layout)
        if memory is None:
            memory = _aligned(need, np.uint8)
        elif memory.dtype != np.uint8 or memory.size < need or memory.ctypes.data % ALIGN:
            raise ValueError(f"GradRegion: memory must be >= {need} bytes of uint8 aligned "
                             f"to {ALIGN}")
        self.memory = memory
        self.buffers: list[np.ndarray] = []
        self.views: list[np.ndarray | None] = [None] * len(params)
        self._spans: list[list[tuple[int, int]]] = []   # per buffer: (start, stop) per view
        at = 0
        for dtype, idx, offs, n in layout:
            buf = memory[at:at + n * dtype.itemsize].view(dtype)
            at += _round_up(n * dtype.itemsize)
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
