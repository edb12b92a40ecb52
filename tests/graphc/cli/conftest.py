import os
import subprocess
import sys

import pytest


def run_graphc(*args, timeout=180, cwd=None, env_extra=None):
    """Run ``python -m graphc ARGS`` the way a user would; returns CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "graphc", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


@pytest.fixture
def graphc():
    return run_graphc
