"""The collector pause around compiles restores the caller's setting, also on errors."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import graphc as gc_
from graphc.gcpause import gc_paused


@pytest.mark.parametrize("enabled", [True, False])
def test_restores_the_callers_setting(enabled):
    (gc.enable if enabled else gc.disable)()
    try:
        with gc_paused():
            assert not gc.isenabled()
            with gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled() == enabled
        with pytest.raises(ValueError):
            with gc_paused():
                raise ValueError("boom")
        assert gc.isenabled() == enabled
    finally:
        gc.enable()


def test_compile_step_leaves_the_collector_on():
    assert gc.isenabled()
    p = {"w": np.ones((3, 2), np.float32)}
    x = np.ones((4, 3), np.float32)
    step = gc_.compile_step(lambda p, x: gc_.sum(x @ p["w"]), p, gc_.optim.SGD(0.1), (x,),
                            backend="numpy")
    assert gc.isenabled()
    with pytest.raises(gc_.GraphcError):
        gc_.compile_step(lambda p, x: gc_.sum(x @ p["w"].T), p, gc_.optim.SGD(0.1), (x,),
                         backend="numpy")
    assert gc.isenabled() and step(x) == 24.0
