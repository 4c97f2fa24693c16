"""Wildcard patterns compiled once into the cheapest test that decides them.

>>> match = compile_any(["aimass:project/nlp/*", "aimass:project/cv/model/a"])
>>> bool(match("aimass:project/nlp/model/x")), bool(match("aimass:project/cv/model/b"))
(True, False)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from aimass.access.catalog import wildcard_regex


def _always(_text: str) -> bool:
    return True


def compile_any(patterns: Iterable[str]) -> Callable[[str], object]:
    """One callable, truthy when its argument fully matches any of ``patterns`` (case-sensitive):
    a set lookup when none has a wildcard, one alternation regex otherwise."""
    patterns = tuple(dict.fromkeys(patterns))
    if "*" in patterns:
        return _always
    if not any("*" in p or "?" in p for p in patterns):
        return frozenset(patterns).__contains__
    regex = "|".join(f"(?:{wildcard_regex(p)})" for p in patterns)
    return re.compile(regex, re.DOTALL).fullmatch
