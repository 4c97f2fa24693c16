"""Parse time budgets such as ``"5m"``, ``"90s"``, ``"1h"`` or ``120``."""

from __future__ import annotations

import re

from aimass.errors import ConfigError

_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def seconds(value: str | float | int | None) -> float | None:
    """Seconds in a budget; ``None`` means no limit."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"The time budget must look like '90s', '5m' or '1h'. Got {value!r} instead.",
            hint="Pass --time-budget 5m (minutes), 300s (seconds) or 1h.",
        )
    return float(match.group(1)) * _UNITS[match.group(2) or ""]
