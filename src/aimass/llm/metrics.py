"""Generation metrics: ROUGE-L (F1 of the longest common subsequence of words) and exact match.

Words are lower-cased runs of letters and digits, as the ``rouge-score`` package tokenises English
(without its Porter stemmer).

>>> round(rouge_l(["the cat sat on the mat"], ["the cat is on the mat"]), 4)
0.8333
>>> rouge_l(["Hello!"], ["hello"]), exact_match([" Hello "], ["hello"])
(1.0, 1.0)
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row)."""
    if not a or not b:
        return 0
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_pair(prediction: str, reference: str) -> float:
    p, r = words(prediction), words(reference)
    common = lcs(p, r)
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 over pairs (0.0 for none)."""
    scores = [rouge_l_pair(p, r) for p, r in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to their reference, ignoring case and surrounding space."""
    same = [p.strip().lower() == r.strip().lower() for p, r in zip(predictions, references, strict=True)]
    return sum(same) / len(same) if same else 0.0
