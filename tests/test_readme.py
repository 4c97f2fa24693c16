"""The README's Python blocks run as written, so the README cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_the_two_commands():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first.strip().splitlines()]
    assert commands == ["make quickstart", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


# The blocks run in order in one interpreter, each in a fresh namespace, as a user pastes them
# into one session (one torch import instead of one per block); later blocks use what earlier
# ones stored (the "reviews" model, reviews.csv).
RUNNER = """
import json, sys, traceback
for number, block in enumerate(json.load(open(sys.argv[1])), 1):
    try:
        exec(compile(block, f"README block {number}", "exec"), {"__name__": "__main__"})
    except BaseException:
        print(f"README block {number} failed:", block, traceback.format_exc(), sep="\\n", file=sys.stderr)
        sys.exit(1)
"""


def test_readme_python_blocks_run(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 2
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    env = {**os.environ, "AIMASS_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, "blocks.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
