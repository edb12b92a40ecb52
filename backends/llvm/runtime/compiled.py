"""The Python side of a compiled graph: argument checks, cached pointers, one native call.

A call checks each argument against the graph's input types (count, shape, dtype,
layout) and raises ``ArgumentError`` -- never passes a bad buffer to native code.
Read-only inputs of the wrong layout or a same-kind dtype are converted (copied);
inputs the graph updates in place (parameters, optimizer state) must be writeable,
C-contiguous arrays of the exact dtype that share memory with no other argument.
Addresses are cached per argument object (FACTS: ~1 µs to read ``arr.ctypes.data``,
0.3 µs for a whole call with cached ints), so a training loop that passes the same
parameter arrays every step pays only for the new batch.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np

from graphc.ir import ArgumentError, ShapeError
from graphc.ir.limits import too_big
from graphc.ir import dtypes as dt

from . import parallel

_SCALARS = (int, float, bool, np.generic)


def _aligned_empty(nbytes, align=64):
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes]


class _Adaptive:
    """Run with T threads or with 1, whichever is measured faster right now.

    Results are bit-identical either way (fixed chunks), so this is purely a speed
    decision: on a loaded machine a second thread that the OS does not schedule makes
    every call wait for it.  The first calls alternate; afterwards a block of ``probe``
    calls in every ``period`` tries the other choice (its first call is not counted:
    it pays for waking sleeping workers), and the choice changes only when the other
    median is clearly lower (T threads are preferred on a tie).
    """

    def __init__(self, threads, window=9, period=200, probe=5):
        self.threads, self.window, self.period, self.probe = threads, window, period, probe
        self.times = {threads: [], 1: []}
        self.mode = threads
        self.calls = 0

    def _other(self):
        return 1 if self.mode == self.threads else self.threads

    def run(self, runs):
        i = self.calls
        self.calls += 1
        warm = 2 * self.window + 2
        if i < warm:
            m, record = (self.threads if i % 2 == 0 else 1), i >= 2
        else:
            j = i % self.period
            m = self._other() if j < self.probe else self.mode
            record = j != 0
        t0 = time.perf_counter()
        runs[m]()
        dt = time.perf_counter() - t0
        if not record:
            return
        ts = self.times[m]
        ts.append(dt)
        if len(ts) > self.window:
            del ts[0]
        a, b = self.times[self.threads], self.times[1]
        if i + 1 >= warm and a and b:
            ma, mb = sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]
            if self.mode == self.threads and mb < 0.9 * ma:
                self.mode = 1
            elif self.mode == 1 and ma <= mb:
                self.mode = self.threads


@dataclass
class SlotInfo:
    """An argv slot: a graph input (``arg``), output (``out``) or large constant (``ext``)."""

    kind: str
    dtype: np.dtype
    size: int
    name: str
    slot: int
    value: np.ndarray | None = None

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize


@dataclass
class KernelInfo:
    name: str
    barrier: bool


class PlanSummary:
    """What running a compiled graph needs of its ``Plan`` (argv slots, kernel names,
    arena size) -- small enough to keep beside the object code in the disk cache, so
    a cache hit does not fuse, plan or build IR.  ``full()`` gives the whole plan (made
    again on demand for memory reports and tests)."""

    VERSION = 1

    def __init__(self, slots, kernels, arena_bytes, threads, full):
        self.slots, self.kernels = slots, kernels
        self.arena_bytes, self.threads = arena_bytes, threads
        self._full = full

    @classmethod
    def of(cls, plan):
        slots = [SlotInfo(st.kind, st.dtype, st.size, st.name, st.slot, st.value)
                 for st in plan.slots]
        kernels = [KernelInfo(k.name, bool(k.barrier)) for k in plan.kernels]
        return cls(slots, kernels, plan.arena_bytes, plan.threads, lambda: plan)

    def full(self):
        return self._full()

    def to_meta(self, extra: dict | None = None) -> bytes:
        return json.dumps({
            "version": self.VERSION, "threads": self.threads, "arena": self.arena_bytes,
            "slots": [[s.kind, s.dtype.str, s.size, s.name, s.slot] for s in self.slots],
            "kernels": [[k.name, k.barrier] for k in self.kernels], **(extra or {}),
        }).encode()

    @classmethod
    def from_meta(cls, meta: bytes, graph, full):
        """The summary stored by :meth:`to_meta` for ``graph`` (None if it does not fit:
        then the caller plans again).  Large constants are taken from ``graph``."""
        try:
            d = json.loads(meta)
            if d.get("version") != cls.VERSION:
                return None
            consts = {n.output.name: n.attrs["value"] for n in graph.nodes
                      if n.op == "constant"}
            slots = []
            for i, (kind, dtype, size, name, slot) in enumerate(d["slots"]):
                value = None
                if kind == "ext":
                    value = np.ascontiguousarray(consts[name])
                    if value.size != size:
                        return None
                if slot != i or kind not in ("arg", "out", "ext"):
                    return None
                slots.append(SlotInfo(kind, np.dtype(dtype), int(size), name, slot, value))
            # the graph's inputs and outputs must be exactly the arg and out slots
            args = [(s.dtype, s.size) for s in slots if s.kind == "arg"]
            outs = [(s.dtype, s.size) for s in slots if s.kind == "out"]
            if args != [(v.dtype, v.size) for v in graph.inputs] or \
                    outs != [(v.dtype, v.size) for v in graph.outputs]:
                return None
            kernels = [KernelInfo(str(n), bool(b)) for n, b in d["kernels"]]
            return cls(slots, kernels, int(d["arena"]), int(d["threads"]), full)
        except (ValueError, KeyError, TypeError):
            return None


class CompiledGraph:
    """``fn(*arrays) -> list of output arrays``; updates ``graph.updates`` in place."""

    def __init__(self, graph, plan, module, threads, compile_info=None, profile=False,
                 adaptive=False):
        """``plan``: the graph's ``Plan`` or a :class:`PlanSummary` of it."""
        if not isinstance(plan, PlanSummary):
            plan = PlanSummary.of(plan)
        self.graph, self.summary, self.module = graph, plan, module
        self.threads = threads
        self.compile_info = compile_info or {}
        self.n_in = len(graph.inputs)
        self._types = [(v.shape, v.dtype, v.name) for v in graph.inputs]
        targets = {a for a, _ in graph.updates}
        self._inplace = [v in targets for v in graph.inputs]
        nslots = len(plan.slots)
        why = too_big(plan.arena_bytes + sum(st.nbytes for st in plan.slots
                                             if st.kind == "out"))
        if why:
            raise ShapeError(f"{graph.name}: the compiled function's arena and outputs "
                             f"{why}; use smaller batches or shapes")
        # argv: slots..., arena, profile buffer, segment counters
        self.argv = np.zeros(nslots + 4, dtype=np.int64)
        self._prof = np.zeros(len(plan.kernels) + 1, np.int64) if profile else None
        if profile:
            self.argv[nslots + 1] = self._prof.ctypes.data
        self._counters = _aligned_empty(64 * (2 * len(plan.kernels) + 2)).view(np.int64)
        self.argv[nslots + 2] = self._counters.ctypes.data
        self._keep = [None] * nslots          # arrays whose addresses are in argv
        self._last = [None] * self.n_in       # the caller's objects (cache key)
        self.outputs = []
        for st in plan.slots:
            if st.kind == "out":
                buf = _aligned_empty(max(st.nbytes, 64)).view(st.dtype)[:st.size]
                self._keep[st.slot] = buf
                self.argv[st.slot] = buf.ctypes.data
                self.outputs.append(buf.reshape(graph.outputs[len(self.outputs)].shape))
            elif st.kind == "ext":
                buf = np.ascontiguousarray(st.value).reshape(-1)
                self._keep[st.slot] = buf
                self.argv[st.slot] = buf.ctypes.data
        self._out_shapes = [v.shape for v in graph.outputs]
        self.arena = _aligned_empty(max(plan.arena_bytes, 64))
        self.argv[nslots] = self.arena.ctypes.data
        addr = module.get_function_address("graphc_main")
        self._launcher = parallel.Launcher(addr, threads)
        self._runs = {threads: self._launcher.bind(self.argv.ctypes.data)}
        self.adaptive = None
        if threads > 1:
            self._runs[1] = parallel.Launcher(addr, 1).bind(self.argv.ctypes.data)
            if adaptive:
                self.adaptive = _Adaptive(threads)
        self._run = self._runs[threads]
        self._lock = threading.Lock()
        self._checked_alias = None
        self.guard = None     # guard(args) raises before the call (graphc.backends.guard)

    @property
    def plan(self):
        """The full ``Plan`` (planned again on first use after a disk-cache hit)."""
        return self.summary.full()

    @property
    def arena_bytes(self) -> int:
        """Bytes of the one arena this function allocated (and runs every call in)."""
        return self.summary.arena_bytes

    @property
    def memory_plan(self):
        """The ``MemoryPlan`` the arena follows (None when compiled with plan="naive")."""
        return self.plan.memory_plan

    def memory_report(self):
        """``MemoryReport`` of the arena this function really uses: the memory planner's
        plan over the fused graph and this backend's kernel levels (``planned_bytes ==
        arena_bytes``); None when compiled with plan="naive"."""
        if self.plan.memory_plan is None:
            return None
        from graphc.passes.memreport import memory_report
        from ..plan.timeline import kernel_timeline
        rep = memory_report(self.plan.graph, plan=self.plan.memory_plan)
        rep.kernel_axis = kernel_timeline(self.plan)   # the plot's x-axis: kernel order
        return rep

    def profile(self):
        """[(kernel name, barrier before it, cycles)] of the last call (``profile=True``)."""
        if self._prof is None:
            raise ValueError("compiled without profile=True")
        d = np.diff(self._prof)
        return [(k.name, k.barrier, int(c)) for k, c in zip(self.summary.kernels, d)]

    # ---- argument handling ---------------------------------------------------------------
    def _bind(self, i, a):
        shape, dtype, name = self._types[i]
        g = self.graph.name
        if isinstance(a, np.ndarray):
            arr = a
        elif isinstance(a, _SCALARS):
            if self._inplace[i]:
                raise ArgumentError(f"{g}: input %{name} is updated in place and must be a "
                                    f"numpy array of {dtype}{list(shape)}, got a scalar")
            arr = np.asarray(a)
        else:
            raise ArgumentError(f"{g}: input %{name} must be a numpy array of "
                                f"{dtype}{list(shape)}, got {type(a).__name__}")
        if arr.shape != shape:
            raise ArgumentError(f"{g}: input %{name} has shape {arr.shape}, expected {shape}")
        if arr.dtype != dtype:
            if self._inplace[i]:
                raise ArgumentError(f"{g}: input %{name} is updated in place and must have "
                                    f"dtype {dtype}, got {arr.dtype}")
            widened = dt.unsigned_to_signed(arr, dtype, f"{g}: input %{name}")
            if widened is not None:
                arr = widened
            elif not (arr.dtype.kind == dtype.kind
                      and np.can_cast(arr.dtype, dtype, "same_kind")):
                raise ArgumentError(f"{g}: input %{name} has dtype {arr.dtype}, "
                                    f"expected {dtype}")
            else:
                arr = arr.astype(dtype)
        good = arr.flags.c_contiguous and arr.flags.aligned
        if self._inplace[i]:
            if not (good and arr.flags.writeable):
                raise ArgumentError(f"{g}: input %{name} is updated in place and must be a "
                                    "writeable, C-contiguous, aligned array")
        elif not good:
            arr = np.ascontiguousarray(arr)
        self._keep[i] = arr
        self.argv[i] = arr.ctypes.data if arr.size else self.arena.ctypes.data
        # cache only when the caller's object is what we point at (no conversion)
        self._last[i] = a if arr is a else None
        return arr is a

    def _check_aliasing(self):
        ids = tuple(id(x) for x in self._keep[:self.n_in])
        if ids == self._checked_alias:
            return
        ins = self._keep[:self.n_in]
        for i, x in enumerate(ins):
            if not self._inplace[i]:
                continue
            for j, y in enumerate(ins):
                if i != j and np.may_share_memory(x, y):
                    raise ArgumentError(
                        f"{self.graph.name}: input %{self._types[i][2]} is updated in place "
                        f"and shares memory with input %{self._types[j][2]}")
        self._checked_alias = ids

    def __call__(self, *args):
        if len(args) != self.n_in:
            raise ArgumentError(f"{self.graph.name}: expected {self.n_in} inputs, "
                                f"got {len(args)}")
        if self.guard is not None:
            self.guard(args)
        with self._lock:
            last, types = self._last, self._types
            changed = False
            for i, a in enumerate(args):
                if a is last[i] and a.shape == types[i][0] and a.dtype == types[i][1]:
                    continue
                self._bind(i, a)
                changed = True
            if changed:
                self._check_aliasing()
            if self.threads > 1:
                self._counters.fill(0)
                if self.adaptive is not None:
                    self.adaptive.run(self._runs)
                else:
                    self._run()
            else:
                self._run()
            return [buf.copy() for buf in self.outputs]
