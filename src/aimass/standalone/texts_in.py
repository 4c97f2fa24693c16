"""How an exported text script reads ``--file``: one source, written into each ``predict.py`` that
takes one (see :func:`aimass.standalone.script`)."""

from __future__ import annotations

import json
from pathlib import Path


def read_texts(path: str) -> list[str]:
    """A JSON list of strings, or one text per non-empty line."""
    content = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        texts = json.loads(content)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SystemExit(f"{path}: expected a JSON list of strings")
        return texts
    return [line for line in content.splitlines() if line.strip()]
