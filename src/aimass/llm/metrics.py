"""Generation metrics: ROUGE-L (F1 of the longest common subsequence of words) and exact match.

Words are case-folded runs of Unicode letters and digits (with the combining marks that follow a
letter: Devanagari vowel signs, Arabic vowel points, a decomposed accent), after NFKC normalisation
(full-width ``ＧＤＰ`` is ``gdp``, a decomposed ``é`` the composed one). On ASCII text that is exactly
how the ``rouge-score`` package tokenises English (without its Porter stemmer), so English figures
are rouge-score's; that tokeniser keeps only ``[a-z0-9]`` and scored identical Russian, Greek or
Arabic answers 0, and split ``naïve`` into ``na`` and ``ve``. Scripts written without spaces between
words count each character as a word: Chinese, Japanese kana and Thai, as Chinese ROUGE is usually
computed; Korean, written with spaces, counts runs of Hangul like any other letters.

>>> round(rouge_l(["the cat sat on the mat"], ["the cat is on the mat"]), 4)
0.8333
>>> rouge_l(["Hello!"], ["hello"]), exact_match([" Hello "], ["hello"])
(1.0, 1.0)
>>> words("2024年GDP增长")
['2024', '年', 'gdp', '增', '长']
>>> round(rouge_l(["今天天气很好"], ["今天天气不错"]), 4)
0.6667
>>> words("Привет, мир! naïve Straße"), rouge_l(["Ελλάδα"], ["ΕΛΛΆΔΑ"])
(['привет', 'мир', 'naïve', 'strasse'], 1.0)
"""

from __future__ import annotations

import re
import unicodedata

# one word each: CJK ideographs (with extensions A to H and the compatibility block), hiragana,
# katakana (and its phonetic extensions), half-width katakana, Thai
_CHARACTER = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f\u0e00-\u0e7f]"
)


def words(text: str) -> list[str]:
    """The case-folded words of ``text`` ROUGE-L compares (see the module's docstring).

    A character loop rather than one regular expression: Python's ``re`` has no class for
    combining marks, and ``[^\\W_]+`` alone cut ``नमस्ते`` at each vowel sign."""
    found, word = [], ""
    for char in unicodedata.normalize("NFKC", text).casefold():
        if _CHARACTER.match(char):
            found += [word, char] if word else [char]
            word = ""
        elif char.isalnum() or (word and unicodedata.category(char).startswith("M")):
            word += char
        elif word:
            found.append(word)
            word = ""
    return [*found, word] if word else found


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
    """Share of predictions equal to their reference, ignoring case (Unicode case folding: ``STRASSE``
    is ``Straße``) and surrounding space."""
    same = [_folded(p) == _folded(r) for p, r in zip(predictions, references, strict=True)]
    return sum(same) / len(same) if same else 0.0


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()
