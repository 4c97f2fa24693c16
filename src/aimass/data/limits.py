"""Size limits with a default, an environment override and a per-call override.

>>> limit("AIMASS_EXAMPLE_LIMIT", 10, None)
10
>>> limit("AIMASS_EXAMPLE_LIMIT", 10, 3)
3
"""

from __future__ import annotations

import os

from aimass.errors import ConfigError

MIB = 2**20


def limit(env: str, default: int | float, given: int | float | None, *, param: str = "limit") -> int | float:
    """The limit in force: ``given`` when set, else the environment variable ``env``, else ``default``.

    Args:
        env: Name of the environment variable that overrides the default.
        default: The built-in default.
        given: A value passed by the caller (wins over the environment).
        param: The caller's parameter name, for the error message.

    Returns:
        A positive number.

    Raises:
        ConfigError: The value (given or from the environment) is not a positive number.
    """
    if given is not None:
        return _positive(given, param, f"Pass a positive number as {param}, or leave it out.")
    raw = os.environ.get(env, "").strip()
    return _positive(raw, env, f"Set {env} to a positive number, or unset it.") if raw else default


def _positive(value, name: str, hint: str) -> int | float:
    try:
        number = float(str(value).replace("_", ""))
    except ValueError:
        number = -1.0
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{name} must be a positive number. Got {value!r} instead.", hint=hint)
    return int(number) if number.is_integer() else number


def megapixels(pixels: int | float) -> str:
    """``40000000`` as ``'40.0 MP'``; below 0.1 MP as a pixel count (``'1,000 pixels'``)."""
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{int(pixels):,} pixels"


def mebibytes(size: int | float) -> str:
    """``52428800`` as ``'50.0 MiB'``; below 0.1 MiB as a byte count (``'2,048 bytes'``)."""
    return f"{size / MIB:.1f} MiB" if size >= MIB / 10 else f"{int(size):,} bytes"
