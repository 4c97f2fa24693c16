"""``aimass export`` as a user runs it: ``-o/--output`` as ``--out``, and no onnxruntime log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import shared_backbones

from aimass import api


def test_export_takes_output_and_prints_no_quantizer_logging(small_model, tmp_path, monkeypatch):
    home = shared_backbones(tmp_path / "home")
    monkeypatch.setenv("AIMASS_HOME", str(home))
    ref = api.register(small_model, "news-export-cli").ref
    out = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, "-m", "aimass", "export", ref, "-o", str(out)],
        env={**os.environ, "AIMASS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "export.json").read_text())["ref"] == ref
    assert "WARNING:root" not in result.stderr and "quantization" not in result.stderr.lower()
    # the folder's own script refuses what the server refuses, in a line, never a traceback
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café au lait\n".encode("latin-1"))
    for args, says in (([""], "text 1 is empty"), (["--file", str(latin)], "not UTF-8 text")):
        ran = subprocess.run(
            [sys.executable, str(out / "predict.py"), *args], capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 1 and says in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
