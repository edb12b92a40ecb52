"""The bench peers compute the same training step as graphc (same losses step by step),
so ``graphc bench`` compares like with like."""
import copy

import numpy as np
import pytest

from graphc import data as D
from graphc.cli import peers
from graphc.train import compile_step, prepare, resolve


@pytest.mark.parametrize("model", ["mlp", "logreg", "svm", "linreg"])
@pytest.mark.parametrize("peer", ["numpy", "torch", "jax"])
def test_peer_losses_match_graphc(model, peer):
    spec, cfg = resolve(model, backend="numpy")
    p = prepare(spec, cfg)
    init = copy.deepcopy(p.params)
    tr = p.splits.train
    batches = list(D.Batches(tr.X, tr.y, cfg.batch_size, 0).epoch())[:4]
    step, _ = compile_step(p, "numpy")
    ref = [step(x, y) for x, y in batches]
    try:
        f = peers.PEERS[peer](p.model, init, cfg)
    except peers.Unavailable as e:
        pytest.skip(str(e))
    got = [f(x, y) for x, y in batches]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
