"""Suite-wide options: the differential fuzzer's budget (see tests/fuzz); the GEMM tuner
off for the whole session (``GRAPHC_TUNE=0``, inherited by subprocesses): tests use the
table's defaults and never time anything, except the tuner's own tests."""
import os

os.environ["GRAPHC_TUNE"] = "0"


def pytest_addoption(parser):
    g = parser.getgroup("graphc fuzzer")
    g.addoption("--fuzz", type=int, default=0, metavar="N",
                help="run N more differential-fuzzer programs beyond the fixed CI set "
                     "(also GRAPHC_FUZZ=N)")
    g.addoption("--fuzz-start", type=int, default=None, metavar="SEED",
                help="first seed of the extra programs (default: after the CI set)")
    g.addoption("--fuzz-seed", type=int, action="append", default=[], metavar="SEED",
                help="run only this program seed (repeatable): reproduce a report")
    g.addoption("--fuzz-transform", default=None,
                help="with --fuzz-seed: the transformation to run (default: the seed's own)")
