"""Every fact the LLVM backend needs about an op comes from the op's definition or from its
own lowering entry: a new op cannot be silently missed by a private table."""
from __future__ import annotations

import pytest

from graphc.backends.llvm.codegen.lowerings import LOWERINGS
from graphc.ir import all_ops, get_op


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_lowering_agrees_with_the_op_definition(name):
    op, lw = get_op(name), LOWERINGS[name]
    assert (lw.kind == "view") == (op.view is not None), \
        f"{name}: a view lowering exactly for ops with OpDef.view"
    if lw.kind == "elementwise":
        assert op.kind == "elementwise"
        assert lw.vector is not None, \
            f"{name}: elementwise lowerings must say whether emit works on vectors"
    if op.kind == "shape" and op.view is None:
        assert lw.kind == "copy", f"{name}: a shape op that is not a view must be a copy"


def test_custom_lowerings_name_their_modules_tables_exactly():
    # a custom op's code generator is imported on first use: the lowering table lists
    # each op under its module, and each module's KERNELS table has exactly those ops
    from graphc.backends.llvm.codegen import lowerings
    for module, ops in lowerings.CUSTOM_MODULES.items():
        table = lowerings.custom_kernels(module)
        assert set(table) == set(ops), module
        for op in ops:
            assert LOWERINGS[op].kind == "custom"
            assert all(callable(f) for f in table[op])
