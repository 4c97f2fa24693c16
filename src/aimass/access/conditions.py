"""Condition operators: one table, each entry parses the policy's values once and tests a
context value against them.

Semantics (the same for every operator but ``Null``):

- several values for one key: the test holds if it holds for *any* value (OR); a negated operator
  (``StringNotEquals``, ``NotIpAddress``, ...) holds if the positive one holds for *none*;
- a key missing from the request context makes the condition **false**, for negated operators too
  (AWS makes ``StringNotEquals`` on a missing key true; aimass does not: a statement never applies
  because something was *not* sent). ``Null`` is the one test of presence:
  ``{"Null": {"aimass:KeyTag/team": "true"}}`` holds when the key is missing;
- a context value of the wrong type (``"abc"`` for a numeric test, a malformed IP address) is an
  evaluation error: :class:`EvalError`; the evaluator then treats a Deny as matching and an Allow
  as not granting.

>>> op = OPERATORS["NumericLessThan"]
>>> values = op.parse(["10"])
>>> op.test(3, values), op.test("12", values)
(True, False)
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aimass.access.catalog import wildcard_regex


class EvalError(Exception):
    """A context value cannot be compared the way the condition asks."""


@dataclass(frozen=True)
class Operator:
    name: str
    parse: Callable[[list], tuple]  # policy values -> compiled values (ValueError if bad)
    test: Callable[[object, tuple], bool]  # (context value, compiled values) -> bool


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    raise EvalError(f"{value!r} is not a string")


def _number(value) -> float:
    if isinstance(value, bool):
        raise EvalError(f"{value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EvalError(f"{value!r} is not a number") from None
    if math.isnan(number):
        raise EvalError("NaN is not a number")
    return number


def _date(value) -> float:
    """Seconds since the epoch from a datetime, epoch seconds or an ISO 8601 string (UTC if no zone)."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EvalError(f"{value!r} is not an ISO 8601 date") from None
    else:
        raise EvalError(f"{value!r} is not a date")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise EvalError(f"{value!r} is not true or false")


def _ip(value):
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise EvalError(f"{value!r} is not an IP address") from None


def _strict(convert):
    """A context-value converter used on policy values: an error there is a ValueError (bad policy)."""

    def parse(values: list) -> tuple:
        try:
            return tuple(convert(v) for v in values)
        except EvalError as exc:
            raise ValueError(str(exc)) from None

    return parse


def _like(values: list) -> tuple:
    return (re.compile("|".join(f"(?:{wildcard_regex(_text(v))})" for v in values), re.DOTALL),)


def _networks(values: list) -> tuple:
    try:
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in values)
    except ValueError as exc:
        raise ValueError(f"not an IP range: {exc}") from None


def _in_any(value, networks: tuple) -> bool:
    address = _ip(value)
    return any(address.version == n.version and address in n for n in networks)


def _not(test):
    return lambda value, values: not test(value, values)


def _compare(convert, check):
    return lambda value, values: any(check(convert(value), v) for v in values)


_EQ = _compare(_text, lambda a, b: a == b)
_EQ_CI = _compare(lambda v: _text(v).lower(), lambda a, b: a == b.lower())
_LIKE = lambda value, values: values[0].fullmatch(_text(value)) is not None  # noqa: E731
_BOOL = _compare(_bool, lambda a, b: a == b)
_NULL = _compare(_bool, lambda a, b: a == b)  # the value tested is "is the key missing"

OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("StringEquals", _strict(_text), _EQ),
        Operator("StringNotEquals", _strict(_text), _not(_EQ)),
        Operator("StringEqualsIgnoreCase", _strict(_text), _EQ_CI),
        Operator("StringNotEqualsIgnoreCase", _strict(_text), _not(_EQ_CI)),
        Operator("StringLike", _like, _LIKE),
        Operator("StringNotLike", _like, _not(_LIKE)),
        Operator("NumericEquals", _strict(_number), _compare(_number, lambda a, b: a == b)),
        Operator("NumericNotEquals", _strict(_number), _not(_compare(_number, lambda a, b: a == b))),
        Operator("NumericLessThan", _strict(_number), _compare(_number, lambda a, b: a < b)),
        Operator("NumericLessThanEquals", _strict(_number), _compare(_number, lambda a, b: a <= b)),
        Operator("NumericGreaterThan", _strict(_number), _compare(_number, lambda a, b: a > b)),
        Operator("NumericGreaterThanEquals", _strict(_number), _compare(_number, lambda a, b: a >= b)),
        Operator("DateEquals", _strict(_date), _compare(_date, lambda a, b: a == b)),
        Operator("DateNotEquals", _strict(_date), _not(_compare(_date, lambda a, b: a == b))),
        Operator("DateLessThan", _strict(_date), _compare(_date, lambda a, b: a < b)),
        Operator("DateLessThanEquals", _strict(_date), _compare(_date, lambda a, b: a <= b)),
        Operator("DateGreaterThan", _strict(_date), _compare(_date, lambda a, b: a > b)),
        Operator("DateGreaterThanEquals", _strict(_date), _compare(_date, lambda a, b: a >= b)),
        Operator("Bool", _strict(_bool), _BOOL),
        Operator("IpAddress", _networks, _in_any),
        Operator("NotIpAddress", _networks, _not(_in_any)),
        Operator("Null", _strict(_bool), _NULL),
    )
}
