"""The differential fuzzer: random programs on the LLVM backend against the numpy oracle.

CI runs the fixed seeds ``range(CI_PROGRAMS)`` (every transformation with every LLVM
configuration -- fusion on/off, planned/naive arena, 1/2/3 threads -- float32 and float64,
each compiled function called three times with fresh inputs).  A developer runs more with
``pytest tests/fuzz --fuzz N`` (or ``GRAPHC_FUZZ=N``), and reproduces a report with
``--fuzz-seed S [--fuzz-transform T]``; a failure prints the program and its IR.
"""
from __future__ import annotations

import os

import pytest

from .oracle import CONFIGS, TRANSFORMS, case, run_case

CI_PROGRAMS = 240         # 4 x (5 transforms x 12 configurations)


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


def test_rotation_covers_every_transform_with_every_config():
    seen = {(case(s)[1], case(s)[2]) for s in range(CI_PROGRAMS)}
    assert seen == {(t, c) for t in TRANSFORMS for c in CONFIGS}
