"""A batch input file is read within bounds: an oversized line is refused before it is read
whole, an oversized file before any line is."""

from __future__ import annotations

import pytest

from aimass.serve import batch_files
from aimass.serve.openai_errors import OpenAIError


def test_a_batch_file_is_read_within_its_bounds(tmp_path, monkeypatch):
    path = tmp_path / "input.jsonl"
    path.write_text('{"custom_id": "' + "x" * (2 << 20) + '"}\n')
    with pytest.raises(OpenAIError, match="Line 1 is over 1,052,672 characters") as refused:
        batch_files.check(path)
    assert refused.value.http_status == 400 and refused.value.code == "too_large"
    monkeypatch.setattr(batch_files, "MAX_FILE_BYTES", 1024)
    with pytest.raises(OpenAIError, match="A batch input file is at most"):
        batch_files.check(path)
