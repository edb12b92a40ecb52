"""Op facts declared on definitions (OpDef.view, OpDef.identity) and the sets derived
from them: passes and backends read these, never their own op lists."""
from __future__ import annotations

import pytest

from graphc.ir import all_ops, identity_ops, register, view_ops
from graphc.ir.registry import VIEW_KINDS
from graphc.passes import fusion, liveness, memory


def test_view_kinds_of_the_builtin_views():
    assert view_ops("reshape") == {"reshape"}
    assert view_ops("permute") == {"transpose"}
    assert view_ops("broadcast") == {"broadcast_to"}
    assert view_ops("window") == {"slice"}
    assert identity_ops() == {"stop_gradient"}


def test_passes_derive_their_view_sets_from_the_registry():
    assert fusion.VIEW_OPS == view_ops()
    assert set(liveness.VIEW_OPS) == view_ops() | identity_ops()
    assert set(memory.CONTIGUOUS_VIEWS) == view_ops("reshape") | identity_ops()
    assert set(memory.STRIDED_VIEWS) == view_ops("permute", "broadcast")


def test_view_is_declared_only_on_shape_ops():
    for name, op in all_ops().items():
        assert op.view is None or (op.kind == "shape" and op.view in VIEW_KINDS), name
        assert not op.identity or op.kind == "elementwise", name


def test_register_refuses_a_bad_view_kind():
    with pytest.raises(ValueError, match="view"):
        register("_probe_bad_view", "elementwise", lambda a, x: x, view="reshape")
    assert "_probe_bad_view" not in all_ops()
