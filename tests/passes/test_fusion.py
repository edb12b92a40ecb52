"""The fusion pass: groups are legal, the IR stays valid, numbers do not change."""
import numpy as np

import graphc as gc
from graphc.backends import numpy_backend
from graphc.ir import verify
from graphc.passes.fusion import fuse, fused_values, groups


def _mlp_graph():
    def loss(w, b, x):
        return gc.sum(gc.relu(x @ w + b))
    rng = np.random.default_rng(0)
    args = (rng.normal(size=(4, 5)), rng.normal(size=5), rng.normal(size=(3, 4)))
    return gc.trace(loss, *args), args


def test_bias_relu_epilogue_fuses_with_its_matmul_and_numbers_stay():
    graph, args = _mlp_graph()
    fused = verify(fuse(graph))
    (members,) = [m for m in groups(fused).values() if any(n.op == "matmul" for n in m)]
    assert [n.op for n in members][:1] == ["matmul"] and "relu" in [n.op for n in members]
    assert "group=" in str(fused)
    np.testing.assert_array_equal(numpy_backend.run(fused, list(args)),
                                  numpy_backend.run(graph, list(args)))


def test_a_matmul_never_reads_a_member_of_its_own_group():
    """Regression: t = -a; u = -t; u @ w + t fused u's chain into the matmul's epilogue
    group, so the GEMM read a value that was never stored."""
    def f(a, w):
        t = -a
        return (-t) @ w + t
    a, w = np.arange(9.0).reshape(3, 3), np.eye(3)
    fused = verify(fuse(gc.trace(f, a, w)))
    for members in groups(fused).values():
        mset = set(members)
        for n in members:
            if n.op == "matmul":
                assert not any(x.node in mset for x in n.inputs)
    mm = next(n for n in fused.nodes if n.op == "matmul")
    assert not any(x in fused_values(fused) for x in mm.inputs)
    np.testing.assert_allclose(gc.jit(f)(a, w), gc.jit(f, backend="numpy")(a, w))
