"""Tell Chinese text from the rest, for picking tokenizers and backbones."""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
LETTER = re.compile(r"[^\W\d_]")
SAMPLE_TEXTS = 1000
SAMPLE_CHARS = 200
ZH_SHARE = 0.3


def detect_language(texts: list[str]) -> str:
    """Return ``"zh"`` when a clear share of the letters are CJK characters, else ``"en"``.

    Looks at up to ``SAMPLE_TEXTS`` texts spread over the list, ``SAMPLE_CHARS``
    characters of each, so it stays fast on large datasets.

    Args:
        texts: The texts.

    Returns:
        ``"zh"`` or ``"en"``.
    """
    step = max(1, len(texts) // SAMPLE_TEXTS)
    sample = "\n".join(text[:SAMPLE_CHARS] for text in texts[::step])
    letters = len(LETTER.findall(sample))
    if not letters:
        return "en"
    return "zh" if len(CJK.findall(sample)) / letters >= ZH_SHARE else "en"
