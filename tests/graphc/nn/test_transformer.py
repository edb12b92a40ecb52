"""Transformer functions: gather/embedding, layer norm, gelu, attention, dropout, batched
matmul -- finite differences to second order, the LLVM backend (1 and 2 threads) against
the numpy oracle, PyTorch's values and gradients when torch is installed, and the
properties dropout's counter-based generator promises."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

RNG = np.random.default_rng(0)


def normal(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


IDX = np.array([[0, 2, 2], [3, 1, 0]])

FNS = {
    "take0": (lambda x: gc.take(x, IDX, axis=0), (4, 3)),
    "take1-uint8": (lambda x: gc.take(x, IDX.astype(np.uint8), axis=1), (2, 4, 3)),
    "getitem": (lambda x: x[IDX.astype(np.int32)] * x[IDX.astype(np.int32)], (4, 3)),
    "getitem-axis1": (lambda x: x[:, np.array([1, 1, 0])], (2, 4)),
    "embedding": (lambda t: gc.nn.embedding(IDX, t), (4, 5)),
    "layer_norm": (lambda x: gc.nn.layer_norm(x * 3 + 5), (3, 6)),
    "layer_norm-affine": (lambda x: gc.nn.layer_norm(x, x[0] + 1.0, x[1]), (3, 6)),
    "gelu": (lambda x: gc.nn.gelu(x), (3, 4)),
    "gelu-tanh": (lambda x: gc.nn.gelu(x, approximate="tanh"), (3, 4)),
    "erf": (lambda x: gc.erf(x * 2), (3, 4)),
    "attention": (lambda q: gc.nn.scaled_dot_product_attention(q, q * 2, q + 1), (2, 5, 4)),
    "attention-causal": (lambda q: gc.nn.scaled_dot_product_attention(
        q, gc.tanh(q), q * q, is_causal=True), (2, 2, 5, 4)),
    "dropout": (lambda x: gc.nn.dropout(x, 0.3), (5, 6)),
    "bmm-broadcast": (lambda x: x @ gc.tanh(x[0]), (3, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(FNS))
def test_second_order_finite_differences(name):
    fn, shape = FNS[name]
    gc.check_grads(lambda x: gc.sum(gc.tanh(fn(x))), (normal(*shape),), order=2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(FNS))
def test_llvm_matches_numpy(name, threads):
    fn, shape = FNS[name]
    x = normal(*shape, dtype=np.float32)
    f = lambda x: gc.sum(gc.tanh(fn(x)) * gc.tanh(fn(x)))  # noqa: E731
    ref = gc.jit(gc.value_and_grad(f), backend="numpy")(x)
    got = gc.jit(gc.value_and_grad(f), threads=threads)
    for _ in range(2):
        v, g = got(x)
        np.testing.assert_allclose(v, ref[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g, ref[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_big_gather_and_scatter_split_over_threads(threads):
    table = normal(300, 128, dtype=np.float32)
    ids = RNG.integers(0, 300, (16, 64))
    ids[0, :10] = 7                         # repeats: the scatter-add must sum them
    f = gc.value_and_grad(lambda t: gc.sum(gc.nn.embedding(ids, t) ** 2))
    ref = gc.jit(f, backend="numpy")(table)
    got = gc.jit(f, threads=threads)(table)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-5)


def test_erf_float32_within_a_few_ulp():
    from scipy.special import erf
    x = np.concatenate([np.linspace(-6, 6, 200001), [0.0, -0.0, 1e-30, -1e-20, np.inf,
                                                      -np.inf]]).astype(np.float32)
    got = gc.jit(gc.erf)(x).astype(np.float64)
    ref = erf(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp) < 4
    assert np.isnan(gc.jit(gc.erf)(np.array([np.nan], np.float32)))[0]


def test_layer_norm_is_stable_in_float32():
    """|mean| >> std: E[x^2] - E[x]^2 would cancel to garbage in float32."""
    x = (1e4 + normal(4, 256)).astype(np.float32)
    ref = (x.astype(np.float64) - x.astype(np.float64).mean(-1, keepdims=True)) \
        / np.sqrt(x.astype(np.float64).var(-1, keepdims=True) + 1e-5)
    got = gc.jit(gc.nn.layer_norm)(x)
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_out_of_range_index_is_an_error_naming_value_and_position():
    with pytest.raises(gc.GraphcError, match=r"index 4 at position \(1, 0\)"):
        gc.take(np.zeros((4, 2)), np.array([[0, 1], [4, 0]]))
    with pytest.raises(gc.GraphcError, match=r"index -1 at position \(1,\)"):
        gc.jit(lambda x: gc.take(x, np.array([0, -1])))(np.zeros((4, 2), np.float32))
    ids = np.array([0, 5])
    for backend in ("numpy", "llvm"):      # indices as data: checked before the run
        f = gc.jit(lambda t, i: gc.nn.embedding(i, t), backend=backend)
        f(np.zeros((4, 2), np.float32), np.array([0, 3]))
        with pytest.raises(gc.GraphcError, match=r"take: label 5 at position \(1,\)"):
            f(np.zeros((4, 2), np.float32), ids)


def test_bad_arguments_name_the_op():
    with pytest.raises(gc.GraphcError, match="take: indices must be integers"):
        gc.jit(lambda x: gc.take(x, np.array([0.5])))(np.zeros(3, np.float32))
    with pytest.raises(gc.GraphcError, match="layer_norm: weight"):
        gc.jit(lambda x: gc.nn.layer_norm(x, np.ones(3, np.float32)))(np.zeros((2, 4), np.float32))
    with pytest.raises(gc.GraphcError, match="gelu: approximate"):
        gc.nn.gelu(np.zeros(2), approximate="erf")
    with pytest.raises(gc.GraphcError, match="dropout: p must be"):
        gc.nn.dropout(np.zeros(2), 1.5)
    with pytest.raises(gc.GraphcError, match="scaled_dot_product_attention"):
        gc.nn.scaled_dot_product_attention(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 4)))


# ---- dropout's generator ---------------------------------------------------------------------
def _dropout_step(seed, backend="llvm", threads=1, **kw):
    w = np.ones((64, 64), np.float32)
    x = np.ones((8, 64), np.float32)

    def loss(p, x):
        return gc.sum(gc.nn.dropout(x @ p["w"], 0.5) ** 2)
    st = gc.compile_step(loss, {"w": w}, gc.optim.SGD(1e-3), (x,), seed=seed,
                         backend=backend, threads=threads, **kw) if backend == "llvm" else \
        gc.compile_step(loss, {"w": w}, gc.optim.SGD(1e-3), (x,), seed=seed, backend=backend)
    losses = [st(x) for _ in range(3)]
    return losses, st.params["w"].copy()


def test_dropout_new_mask_every_step_reproducible_any_threads():
    l1, w1 = _dropout_step(3)
    assert len(set(np.round(l1, 3))) == 3                   # a different mask every step
    l2, w2 = _dropout_step(3, threads=2)
    assert l1 == l2 and np.array_equal(w1, w2)              # thread count changes nothing
    l3, w3 = _dropout_step(3, backend="numpy")
    np.testing.assert_allclose(l1, l3, rtol=1e-5)          # bit-level generator agreement
    l4, _ = _dropout_step(4)
    assert l4 != l1
    l5, w5 = _dropout_step(3, memory_budget=0.3)            # rematerialised: same masks
    np.testing.assert_allclose(l1, l5, rtol=1e-6)
    np.testing.assert_allclose(w1, w5, rtol=1e-6)


def test_dropout_backward_uses_the_forward_mask():
    x = normal(50, 40)
    y, vjp_x = gc.jit(gc.value_and_grad(lambda x: gc.sum(gc.nn.dropout(x, 0.4))),
                      backend="numpy")(x)
    kept = vjp_x != 0
    assert 0.45 < kept.mean() < 0.75
    np.testing.assert_allclose(vjp_x[kept], 1 / 0.6)
    np.testing.assert_allclose(y, (x * vjp_x).sum())


def test_philox_matches_reference_vectors():
    """Philox4x32-10 known-answer tests (Random123's kat_vectors)."""
    from graphc.ir.ops import random as ph
    # counter 0, key 0 -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8
    c = ph.philox_bits(0, 0, 0, 1)
    assert [hex(int(v[0])) for v in c] == ["0x6627e8d5", "0xe169c58d", "0xbc57ac4c",
                                           "0x9b00dbd8"]


def test_dropout_eval_and_p0_are_identity():
    x = normal(3, 4)
    assert gc.nn.dropout(x, 0.5, training=False) is x
    np.testing.assert_array_equal(gc.jit(lambda x: gc.nn.dropout(x, 0.0))(x), x)


# ---- against PyTorch -----------------------------------------------------------------------
def test_against_pytorch_values_and_gradients():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = normal(2, 3, 5, 8)
    w, b = normal(8), normal(8)
    table = normal(10, 8)
    ids = RNG.integers(0, 10, (2, 5))

    def ours(x, w, b, table):
        h = gc.nn.layer_norm(x, w, b) + gc.nn.embedding(ids, table)[:, None]
        h = gc.nn.gelu(h) + gc.nn.gelu(h, approximate="tanh")
        a = gc.nn.scaled_dot_product_attention(h, h * 0.5, h + 1.0, is_causal=True)
        return gc.sum(gc.tanh(a @ gc.swapaxes(h, -1, -2)))

    def theirs(x, w, b, table):
        h = F.layer_norm(x, (8,), w, b, eps=1e-5) + F.embedding(torch.tensor(ids), table)[:, None]
        h = F.gelu(h) + F.gelu(h, approximate="tanh")
        a = F.scaled_dot_product_attention(h, h * 0.5, h + 1.0, is_causal=True)
        return torch.tanh(a @ h.transpose(-1, -2)).sum()
    args = (x, w, b, table)
    v, g = gc.value_and_grad(ours, argnums=(0, 1, 2, 3))(*args)
    ts = [torch.tensor(a, requires_grad=True) for a in args]
    tv = theirs(*ts)
    tv.backward()
    np.testing.assert_allclose(v, tv.item(), rtol=1e-10)
    for a, t in zip(g, ts):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-8, atol=1e-10)
