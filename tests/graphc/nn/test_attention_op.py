"""The fused attention ops (``sdpa``, ``sdpa_grad``): the same numbers as the composite
(matmul, mask, softmax, matmul) on the numpy oracle, derivatives of every order against
finite differences, the LLVM kernels (GEMM tiles and strided rows, several tiles, causal
or not) against numpy on 1 and 2 threads with identical bits, and PyTorch's values."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.backends.llvm as llvm_backend
from graphc.backends.llvm.plan.kernels import CustomKernel, GemmKernel
from graphc.nn.transformer import _composite

RNG = np.random.default_rng(3)


def normal(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def sdpa(causal):
    return lambda q, k, v: gc.nn.scaled_dot_product_attention(q, k, v, is_causal=causal)


def loss(attn, w):
    return lambda q, k, v: gc.sum(gc.tanh(attn(q, k, v)) * w)


# (q shape, k shape, v shape): heads, L != S, dv != d, several 64-row tiles
SHAPES = [((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4)),
          ((3, 7, 6), (3, 9, 6), (3, 9, 5)),
          ((2, 70, 8), (2, 70, 8), (2, 70, 8)),
          ((1, 130, 4), (1, 67, 4), (1, 67, 3))]


def _args(shapes, dtype=np.float64):
    return [normal(*s, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shapes", SHAPES[:2])
def test_op_matches_the_composite_and_second_order_fd(shapes, causal):
    q, k, v = _args(shapes)
    w = normal(*(shapes[0][:-1] + shapes[2][-1:]))
    f, fc = loss(sdpa(causal), w), loss(lambda q, k, v: _composite(q, k, v, causal), w)
    assert "sdpa" in {n.op for n in gc.trace(f, q, k, v).nodes}
    a = gc.value_and_grad(f, argnums=(0, 1, 2))(q, k, v)
    b = gc.value_and_grad(fc, argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
    gc.check_grads(f, (q, k, v), order=2)


def test_jvp_and_hessian_vector_products_match_the_composite():
    q, k, v = _args(SHAPES[0])
    t = _args(SHAPES[0])
    w = normal(*SHAPES[0][0])
    f, fc = loss(sdpa(True), w), loss(lambda q, k, v: _composite(q, k, v, True), w)
    for x, y in zip(gc.jvp(f, (q, k, v), tuple(t)), gc.jvp(fc, (q, k, v), tuple(t))):
        np.testing.assert_allclose(x, y, rtol=1e-10)

    def hvp(fn):
        return gc.jvp(gc.grad(fn, argnums=(0, 1, 2)), (q, k, v), tuple(t))[1]
    for x, y in zip(hvp(f), hvp(fc)):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shapes", SHAPES)
def test_llvm_kernels_match_numpy_and_threads_agree(shapes, causal, layout):
    q, k, v = _args(shapes, np.float32)
    w = normal(*(shapes[0][:-1] + shapes[2][-1:]), dtype=np.float32)
    if layout == "strided":      # q, k, v read through transposes (the row kernels)
        q, k, v = (np.ascontiguousarray(np.swapaxes(x, -1, -2)) for x in (q, k, v))
        base = loss(sdpa(causal), w)
        f = lambda q, k, v: base(*(gc.swapaxes(x, -1, -2) for x in (q, k, v)))  # noqa: E731
    else:
        f = loss(sdpa(causal), w)
    vg = gc.value_and_grad(f, argnums=(0, 1, 2))
    ref = gc.jit(vg, backend="numpy")(q, k, v)
    got = {}
    for threads in (1, 2):
        fn = gc.jit(vg, threads=threads)
        for _ in range(2):
            got[threads] = fn(q, k, v)
        np.testing.assert_allclose(got[threads][0], ref[0], rtol=1e-5, atol=1e-5)
        for x, y in zip(got[threads][1], ref[1]):
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)
    assert got[1][0] == got[2][0]
    for x, y in zip(got[1][1], got[2][1]):
        np.testing.assert_array_equal(x, y)


def test_float64_kernels_match_numpy():
    q, k, v = _args(SHAPES[2])
    w = normal(2, 70, 8)
    vg = gc.value_and_grad(loss(sdpa(True), w), argnums=(0, 1, 2))
    ref = gc.jit(vg, backend="numpy")(q, k, v)
    got = gc.jit(vg)(q, k, v)
    for x, y in zip(got[1], ref[1]):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)


def test_transformer_step_runs_attention_as_one_kernel_each_way():
    """In the char LM's step the attention is one sdpa and one sdpa_grad kernel per
    layer: no GEMM produces a (T, T) score matrix."""
    from graphc.lm import CharTransformer, LMConfig
    model = CharTransformer(LMConfig(vocab=11, context=16, dim=24, heads=2, layers=1,
                                     hidden=32))
    ids = RNG.integers(0, 11, (2, 16)).astype(np.int32)
    st = gc.compile_step(model.loss, model.init(0), gc.optim.SGD(0.1), (ids, ids),
                         backend="numpy")
    plan, _ = llvm_backend.lower(st.graph, threads=1)
    ops = [k.node.op for k in plan.kernels if isinstance(k, CustomKernel)]
    assert ops.count("sdpa") == 1 and ops.count("sdpa_grad") == 1
    assert not [k for k in plan.kernels if isinstance(k, GemmKernel)
                and k.gemm.node.output.shape[-2:] == (16, 16)]


def test_no_keys_is_a_shape_error():
    q = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(gc.GraphcError, match="no keys"):
        gc.jit(sdpa(False))(q, np.zeros((2, 0, 4), np.float32), np.zeros((2, 0, 4), np.float32))


def test_against_pytorch_sdpa_values_and_gradients():
    torch = pytest.importorskip("torch")
    for causal in (False, True):
        q, k, v = _args(SHAPES[1])
        w = normal(3, 7, 5)
        v_, g = gc.value_and_grad(loss(sdpa(causal), w), argnums=(0, 1, 2))(q, k, v)
        ts = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = torch.nn.functional.scaled_dot_product_attention(*ts, is_causal=causal)
        tl = (torch.tanh(out) * torch.tensor(w)).sum()
        tl.backward()
        np.testing.assert_allclose(v_, tl.item(), rtol=1e-10)
        for a, t in zip(g, ts):
            np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-8, atol=1e-10)


def _grads(f, args, backend, threads=1):
    vg = gc.value_and_grad(f, argnums=(0, 1, 2))
    fn = gc.jit(vg, backend=backend) if backend == "numpy" else gc.jit(vg, threads=threads)
    for _ in range(2):
        out = fn(*args)
    return [np.asarray(x) for x in out[1]]


# (q, k, v shapes, causal, rows whose softmax has one key): causal row 0 (one tile, several
# key tiles), one key (S = 1, causal or not), a single query and key
ONE_KEY = [(((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 3)), True, slice(0, 1)),
           (((1, 130, 4), (1, 130, 4), (1, 130, 4)), True, slice(0, 1)),
           (((3, 7, 6), (3, 1, 6), (3, 1, 5)), False, slice(None)),
           (((3, 7, 6), (3, 1, 6), (3, 1, 5)), True, slice(None)),
           (((4, 1, 8), (4, 1, 8), (4, 1, 8)), False, slice(None)),
           (((4, 1, 8), (4, 1, 8), (4, 1, 8)), True, slice(None))]


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes, causal, rows", ONE_KEY)
def test_rows_with_one_key_get_exactly_zero_q_and_k_gradients(shapes, causal, rows, dtype,
                                                               layout):
    """A row with a single key has softmax exactly 1 whatever q and k are: its dS is 0,
    so dq of that row and its part of dk are exactly 0 on every backend (rounding noise
    there, ~1e-7, became a whole Adam step: fuzz seeds 80094, 31269)."""
    q, k, v = _args(shapes, dtype)
    w = normal(*(shapes[0][:-1] + shapes[2][-1:]), dtype=dtype)
    f = loss(sdpa(causal), w)
    if layout == "strided":
        q, k, v = (np.ascontiguousarray(np.swapaxes(x, -1, -2)) for x in (q, k, v))
        f = lambda q, k, v, f=f: f(*(gc.swapaxes(x, -1, -2) for x in (q, k, v)))  # noqa: E731
    ax = -1 if layout == "strided" else -2
    for backend, threads in (("numpy", 1), ("llvm", 1), ("llvm", 2)):
        dq, dk, dv = _grads(f, (q, k, v), backend, threads)
        assert not np.swapaxes(dq, ax, -2)[..., rows, :].any(), (backend, threads)
        if shapes[1][-2] == 1:          # one key in all: no row moves k
            assert not dk.any(), (backend, threads)
        assert np.abs(dv).min() > 0


def test_a_row_whose_other_keys_underflow_gets_exactly_zero_gradients():
    """Scores 1e4 apart: exp underflows to 0 for all but one key, P is one-hot and the
    row's dq is exactly 0 (D = rowsum(P dP) = dP of that key, bit for bit)."""
    q = np.zeros((1, 3, 4), np.float32)
    q[0, 0, 0] = 200.0
    k = normal(1, 5, 4, dtype=np.float32)
    k[0, 2, 0] = 100.0
    v, w = normal(1, 5, 4, dtype=np.float32), normal(1, 3, 4, dtype=np.float32)
    f = loss(sdpa(False), w)
    for backend in ("numpy", "llvm"):
        dq, dk, dv = _grads(f, (q, k, v), backend)
        assert not dq[0, 0].any(), backend
        assert dq[0, 1:].any()


def test_row_kernels_take_any_key_length():
    """Strided operands (the row kernels) with keys far beyond one block: two blocks
    of stack scratch whatever S is (no key limit), the same numbers as numpy."""
    q, k, v = _args(((1, 3, 4), (1, 4099, 4), (1, 4099, 2)), np.float32)
    w = normal(1, 3, 2, dtype=np.float32)
    q, k, v = (np.ascontiguousarray(np.swapaxes(x, -1, -2)) for x in (q, k, v))
    base = loss(sdpa(False), w)
    f = lambda q, k, v: base(*(gc.swapaxes(x, -1, -2) for x in (q, k, v)))  # noqa: E731
    vg = gc.value_and_grad(f, argnums=(0, 1, 2))
    ref = gc.jit(vg, backend="numpy")(q, k, v)
    fn = gc.jit(vg)
    for _ in range(2):
        got = fn(q, k, v)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
    for x, y in zip(got[1], ref[1]):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6)
