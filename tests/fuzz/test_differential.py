"""The differential fuzzer: random programs on the LLVM backend against the numpy oracle.

CI runs the fixed seeds ``range(CI_PROGRAMS)`` (every transformation with every LLVM
configuration -- fusion on/off, planned/naive arena, 1/2/3 threads -- float32 and float64,
each compiled function called three times with fresh inputs).  A developer runs more with
``pytest tests/fuzz --fuzz N`` (or ``GRAPHC_FUZZ=N``), and reproduces a report with
``--fuzz-seed S [--fuzz-transform T]``; a failure prints the program and its IR.
Seeds beyond the CI set that once failed stay in :data:`REGRESSIONS`.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from .oracle import CONFIGS, TRANSFORMS, Mismatch, case, compare, run_case

CI_PROGRAMS = 240         # 4 x (5 transforms x 12 configurations)
#: seeds beyond the CI set that once failed, run in CI too: (seed, transformation, why)
REGRESSIONS = ((31269, "step", "sdpa_grad: one key (S = 1), dq noise through Adam"),
               (240049, "step", "layer norm of a scaled row: gradient noise through AdamW "
                                "(within the oracle's own float32 error)"),
               (80094, "step", "sdpa_grad: causal L = S = 1, dq noise through Adam"),
               (21259, "step", "the comparison: NaN on both sides after divergence"),
               (151887, "jvp", "max_pool2d_select, one-lane vector row: LLVM x86 "
                               "miscompiled the tap shuffles (AVX-512)"),
               (241869, "step", "im2col rows of three outputs: a forced vectorization "
                                "LLVM refused (a warning on stderr)"),
               (242026, "value_and_grad", "attention rows over two keys, float64: a "
                                          "forced reassociation LLVM refused"),
               (284196, "value_and_grad", "layer norm of two equal values: the gradient is "
                                          "rounding noise times 1/sqrt(eps), the oracle's "
                                          "own float32 error"),
               (287293, "grad_of_grad", "2nd derivative of a layer norm over a rank-one "
                                        "product: one input rounding moves it by 0.005"))


def _seeds(config):
    only = config.getoption("--fuzz-seed")
    if only:
        return [(s, config.getoption("--fuzz-transform")) for s in only]
    extra = config.getoption("--fuzz") or int(os.environ.get("GRAPHC_FUZZ", "0") or 0)
    start = config.getoption("--fuzz-start")
    start = CI_PROGRAMS if start is None else start
    return [(s, None) for s in range(CI_PROGRAMS)] + [(s, None)
                                                       for s in range(start, start + extra)]


def pytest_generate_tests(metafunc):
    if "fuzz_case" in metafunc.fixturenames:
        seeds = _seeds(metafunc.config)
        metafunc.parametrize("fuzz_case", seeds, ids=[f"seed{s}" + (f"-{t}" if t else "")
                                                      for s, t in seeds])


def test_program_matches_numpy_oracle(fuzz_case):
    seed, transform = fuzz_case
    prog, transform, config = case(seed, transform)
    run_case(prog, transform, config)


@pytest.mark.parametrize("seed, transform, why", REGRESSIONS,
                         ids=[f"seed{s}-{t}" for s, t, _ in REGRESSIONS])
def test_regression(seed, transform, why):
    prog, transform, config = case(seed, transform)
    run_case(prog, transform, config)


def test_rotation_covers_every_transform_with_every_config():
    seen = {(case(s)[1], case(s)[2]) for s in range(CI_PROGRAMS)}
    assert seen == {(t, c) for t in TRANSFORMS for c in CONFIGS}


@pytest.mark.parametrize("got, ok", [([np.nan, 1.0, np.inf], True),
                                     ([1.0, 1.0, np.inf], False),
                                     ([np.inf, 1.0, np.inf], False),
                                     ([np.nan, 1.0, -np.inf], False),
                                     ([np.nan, np.nan, np.inf], False),
                                     ([np.nan, 1.5, np.inf], False)])
def test_compare_matches_nan_with_nan_only(got, ok):
    """The oracle's comparison: NaN where the oracle has NaN is a match (seed 21259's
    diverged step: NaN on both sides); NaN against a finite value or an infinity, or an
    infinity of the other sign, is a mismatch."""
    ref = np.array([np.nan, 1.0, np.inf], np.float32)
    for dtype in (np.float32, np.float64):
        call = lambda: compare("t", [np.array(got, dtype)], [ref.astype(dtype)],  # noqa: E731
                               dtype, lambda: "")
        if ok:
            call()
        else:
            with pytest.raises(Mismatch):
                call()


@pytest.mark.parametrize("got, ok", [([1.0, 2.015], True),      # inside element 1's noise
                                     ([1.0, 2.03], False),      # beyond 2x of it
                                     ([1.002, 2.0], False)])    # element 0 carries none
def test_rounding_slack_is_per_element_and_bounded(got, ok):
    """After a failed strict step comparison the allowance grows only by
    ``ROUNDING_SLACK`` times the oracle's own float32 error per element (its distance
    from the same step in float64): an element the oracle computes exactly gets none."""
    from .oracle import ROUNDING_SLACK
    ref = np.array([1.0, 2.0], np.float32)
    wide = np.array([1.0, 2.01])
    slack = [ROUNDING_SLACK * np.abs(ref.astype(np.float64) - wide)]
    call = lambda: compare("t", [np.array(got, np.float32)], [ref], np.float32,  # noqa: E731
                           lambda: "", slack)
    if ok:
        call()
    else:
        with pytest.raises(Mismatch):
            call()


def test_nudged_inputs_measure_the_condition_per_element():
    """The second allowance (seed 287293): how far one float32 rounding of the inputs
    moves the float64 result.  ``x * 1e4 - 1e4`` near ``x = 1`` is ill-conditioned (a
    nudge moves it by ~6e-4), ``x * 2`` is not (~2e-7); an element the nudge cannot move
    (``x = 0``) gets no allowance at all."""
    import graphc as gc
    from .oracle import NUDGES, ROUNDING_SLACK, _in_float64, _nudged, _rounding_slack

    def fn(a, b):
        return a * 1e4 - 1e4, b * 2.0

    a = np.array([1.0, 1.0001], np.float32)
    b = np.array([1.0, 0.0], np.float32)
    ref = [np.asarray(r) for r in gc.jit(fn, backend="numpy")(a, b)]
    wide = _in_float64(fn, [a, b])
    nudged = [_in_float64(fn, _nudged([a, b], s)) for s in range(NUDGES)]
    sa, sb = _rounding_slack(ref, wide, nudged)
    assert np.all(sa >= ROUNDING_SLACK * 1e4 * 2.0 ** -24 * 0.99)
    assert np.all(sa <= ROUNDING_SLACK * (1e4 * 2.0 ** -23 + 1e-3))
    assert 0 < sb[0] <= ROUNDING_SLACK * 2 * 2.0 ** -24 * 1.01 and sb[1] == 0.0
