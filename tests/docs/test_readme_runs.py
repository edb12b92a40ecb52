"""The README's quick start runs as written (in a fresh interpreter)."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_quick_start_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    losses = [float(line) for line in res.stdout.splitlines() if re.fullmatch(r"[\d.]+", line)]
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert "planned arena" in res.stdout
