"""How an exported text script reads ``--file``: one source, written into each ``predict.py`` that
takes one (see :func:`aimass.standalone.script`)."""

from __future__ import annotations

import json
from pathlib import Path


def read_texts(path: str) -> list[str]:
    """A JSON list of strings, or one text per non-empty line."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SystemExit(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise SystemExit(f"{path}: {exc.strerror}") from None
    if path.endswith(".json"):
        texts = json.loads(content)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SystemExit(f"{path}: expected a JSON list of strings")
        return texts
    return [line for line in content.splitlines() if line.strip()]


def checked(texts: list[str]) -> list[str]:
    """``texts`` as the server takes them: an empty text, or one that is not valid Unicode (a
    command-line argument in another encoding), stops with its position, as the server's 422 does.

    >>> checked(["fine", "also fine"])
    ['fine', 'also fine']
    """
    for i, text in enumerate(texts):
        if not text.strip():
            raise SystemExit(f"text {i + 1} is empty: give each text some words")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise SystemExit(f"text {i + 1} is not UTF-8 (set your terminal to UTF-8)") from None
    return texts
