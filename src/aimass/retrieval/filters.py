"""OpenAI's attribute filters and the limits on attributes and metadata.

A comparison (``eq``, ``ne``, ``gt``, ``gte``, ``lt``, ``lte``, ``in``, ``nin``) reads one attribute
of a chunk's file; ``and`` / ``or`` combine filters. A file without the attribute fails every
comparison, ``ne`` and ``nin`` included: nothing is selected because something was *not* set. A
boolean equals only a boolean (``true`` is not ``1``), as a number is ordered only against a number
and a string only against a string.

>>> matches({"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
...          {"type": "gte", "key": "year", "value": 2020}]}, {"lang": "en", "year": 2024})
True
>>> matches({"type": "ne", "key": "lang", "value": "en"}, {})
False
>>> matches({"type": "eq", "key": "confidential", "value": 1}, {"confidential": True})
False
"""

from __future__ import annotations

from aimass.errors import ConfigError

MAX_ATTRIBUTES, MAX_VALUE = 16, 512
COMPARE = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
MAX_DEPTH = 8


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_filter(spec, where: str = "filters", depth: int = 0) -> None:
    """ConfigError naming the first part of ``spec`` that is not an OpenAI filter (or that nests
    ``and`` / ``or`` deeper than :data:`MAX_DEPTH`)."""
    if spec is None:
        return
    if depth > MAX_DEPTH:
        raise ConfigError(f"Filters nest at most {MAX_DEPTH} deep.", where=where)
    if not isinstance(spec, dict):
        raise ConfigError("A filter is an object.", where=where)
    kind = spec.get("type")
    if kind in ("and", "or"):
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise ConfigError(f"An '{kind}' filter needs a non-empty list 'filters'.", where=where)
        for i, part in enumerate(parts):
            check_filter(part, f"{where}.filters[{i}]", depth + 1)
        return
    if kind not in COMPARE:
        raise ConfigError(
            f"Unknown filter type {kind!r}.",
            where=f"{where}.type",
            hint=f"Use and, or, {', '.join(COMPARE)}.",
        )
    if not isinstance(spec.get("key"), str) or not spec["key"]:
        raise ConfigError("A comparison filter needs a 'key' (an attribute's name).", where=f"{where}.key")
    value = spec.get("value")
    plain = (str, int, float, bool)
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(isinstance(v, plain) for v in value):
            raise ConfigError(f"'{kind}' compares with a list of values.", where=f"{where}.value")
    elif not isinstance(value, plain):
        raise ConfigError("'value' is a string, a number or a boolean.", where=f"{where}.value")


def matches(spec: dict | None, attrs: dict) -> bool:
    """Whether attributes ``attrs`` pass the filter; a missing attribute fails every comparison."""
    if spec is None:
        return True
    kind = spec["type"]
    if kind == "and":
        return all(matches(p, attrs) for p in spec["filters"])
    if kind == "or":
        return any(matches(p, attrs) for p in spec["filters"])
    if spec["key"] not in attrs:
        return False
    have, want = attrs[spec["key"]], spec["value"]
    if kind in ("in", "nin"):
        return any(_equal(have, v) for v in want) == (kind == "in")
    if kind in ("eq", "ne"):
        return _equal(have, want) == (kind == "eq")
    numbers = is_number(have) and is_number(want)
    if not numbers and not (isinstance(have, str) and isinstance(want, str)):
        return False
    return {"gt": have > want, "gte": have >= want, "lt": have < want, "lte": have <= want}[kind]


def _equal(have, want) -> bool:
    """``==``, but a boolean equals only a boolean (Python's ``True == 1`` is not a filter's)."""
    if isinstance(have, bool) or isinstance(want, bool):
        return isinstance(have, bool) and isinstance(want, bool) and have == want
    return have == want


def check_attributes(attributes: dict | None) -> dict:
    """A file's attributes: at most 16 keys of 64 characters; strings of at most 512, numbers or booleans."""
    attributes = attributes or {}
    if not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES:
        raise ConfigError(f"attributes is an object of at most {MAX_ATTRIBUTES} keys.", where="attributes")
    for key, value in attributes.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise ConfigError("An attribute's name has 1 to 64 characters.", where="attributes")
        if (
            isinstance(value, str)
            and len(value) > MAX_VALUE
            or not isinstance(value, str | int | float | bool)
        ):
            raise ConfigError(
                f"attributes.{key}: a number, true, false or a string of at most {MAX_VALUE} characters.",
                where=f"attributes.{key}",
            )
    return dict(attributes)


def check_metadata(metadata: dict | None) -> dict:
    """OpenAI's metadata: at most 16 string pairs, keys of 64 characters, values of 512."""
    metadata = metadata or {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_ATTRIBUTES:
        raise ConfigError(f"metadata is an object of at most {MAX_ATTRIBUTES} pairs.", where="metadata")
    for key, value in metadata.items():
        if (
            not isinstance(key, str)
            or not 0 < len(key) <= 64
            or not isinstance(value, str)
            or len(value) > 512
        ):
            raise ConfigError(
                "metadata keys are strings of 1 to 64 characters, values strings of at most 512.",
                where=f"metadata.{key}",
            )
    return dict(metadata)
