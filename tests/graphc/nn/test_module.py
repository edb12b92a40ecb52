"""gc.nn layers: functional Modules with seeded initialisers that trace and differentiate."""
import numpy as np
import pytest

import graphc as gc
from graphc import nn


def test_init_is_a_pure_function_of_the_seed():
    m = nn.MLP([5, 7, 3])
    a, b, c = m.init(0), m.init(0), m.init(1)
    for k in ("0", "2"):
        np.testing.assert_array_equal(a[k]["w"], b[k]["w"])
        assert not np.array_equal(a[k]["w"], c[k]["w"])
    assert set(a) == {"0", "2"} and a["0"]["w"].shape == (5, 7) and a["2"]["b"].shape == (3,)
    assert nn.num_params(a) == 5 * 7 + 7 + 7 * 3 + 3


def test_initialiser_scales():
    rng = np.random.default_rng(0)
    w = nn.init.he_normal(rng, (1000, 500))
    assert abs(w.std() - np.sqrt(2 / 1000)) < 2e-3
    g = nn.init.glorot_uniform(rng, (300, 100))
    assert np.abs(g).max() <= np.sqrt(6 / 400) + 1e-7
    assert w.dtype == np.float32


def test_sequential_forward_matches_numpy_and_traces():
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2, init="glorot"), nn.Sigmoid())
    p = m.init(3)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    ref = 1 / (1 + np.exp(-(np.tanh(x @ p["0"]["w"] + p["0"]["b"]) @ p["2"]["w"] + p["2"]["b"])))
    np.testing.assert_allclose(m(p, x), ref, rtol=1e-5)
    np.testing.assert_allclose(gc.jit(m, backend="numpy")(p, x), ref, rtol=1e-5)
    assert (m.in_features, m.out_features) == (4, 2)
    g = gc.grad(lambda p, x: gc.sum(m(p, x)))(p, x)
    assert g["0"]["w"].shape == (4, 6) and np.abs(g["0"]["w"]).sum() > 0


def test_custom_module_registers_submodules_in_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(3, 4)
            self.act = nn.ReLU()
            self.dec = nn.Linear(4, 2)

        def forward(self, p, x):
            return self.dec(p["dec"], self.act({}, self.enc(p["enc"], x)))

    net = Net()
    p = net.init(0)
    assert list(p) == ["enc", "dec"]
    assert net(p, np.ones((2, 3), np.float32)).shape == (2, 2)


def test_bad_layer_arguments_are_graphc_errors():
    with pytest.raises(gc.GraphcError):
        nn.Linear(0, 3)
    with pytest.raises(gc.GraphcError, match="not a gc.nn.Module"):
        nn.Sequential(nn.Linear(2, 2), lambda x: x)
    with pytest.raises(gc.GraphcError, match="unknown initialiser"):
        nn.Linear(2, 2, init="nope")
