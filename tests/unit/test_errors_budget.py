"""Time budgets and the error tree."""

from __future__ import annotations

import pytest

from aimass import budget, errors
from aimass.errors import AimassError, ConfigError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        (120, 120.0),
        (2.5, 2.5),
        ("45", 45.0),
        (" 10 min ", 600.0),
        ("0.5h", 1800.0),
        (None, None),
    ],
)
def test_seconds(value, expected):
    result = budget.seconds(value)
    assert result == expected
    assert result is None or isinstance(result, float)


@pytest.mark.parametrize("value", ["", "abc", "-5m", "0s", "0", "5d", "m", "5 m s", "1e3s"])
def test_seconds_rejects_bad_budgets(value):
    with pytest.raises(ConfigError) as info:
        budget.seconds(value)
    assert repr(value) in info.value.message
    assert info.value.hint and "5m" in info.value.hint


SUBCLASSES = [
    errors.DataError,
    errors.TooLargeError,
    errors.ConfigError,
    errors.NotFoundError,
    errors.NotFittedError,
    errors.PermissionDenied,
    errors.VersionError,
    errors.Unauthenticated,
    errors.TooManyRequests,
    errors.QuotaExceeded,
    errors.Unavailable,
    errors.DeadlineExceeded,
    errors.IntegrityError,
    errors.JobError,
    errors.InUseError,
    errors.InsufficientStorage,
]


def test_subclasses_have_distinct_stable_codes():
    codes = {cls.__name__: cls.code for cls in [AimassError, *SUBCLASSES]}
    assert codes == {
        "AimassError": "aimass_error",
        "DataError": "data_error",
        "TooLargeError": "too_large",
        "ConfigError": "config_error",
        "NotFoundError": "not_found",
        "NotFittedError": "not_fitted",
        "PermissionDenied": "permission_denied",
        "VersionError": "version_error",
        "Unauthenticated": "unauthenticated",
        "TooManyRequests": "too_many_requests",
        "QuotaExceeded": "insufficient_quota",
        "Unavailable": "unavailable",
        "DeadlineExceeded": "timeout",
        "IntegrityError": "integrity_error",
        "JobError": "job_error",
        "InUseError": "in_use",
        "InsufficientStorage": "insufficient_storage",
    }
    assert len(set(codes.values())) == len(codes)
    for cls in SUBCLASSES:
        assert issubclass(cls, AimassError)
        assert 400 <= cls.http_status < 600


def test_every_subclass_in_module_is_covered():
    found = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, AimassError) and obj is not AimassError
    }
    assert found == set(SUBCLASSES)


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_to_dict_and_str(cls):
    err = cls("Something is off", where="file.csv:3", hint="Do this instead.")
    assert err.to_dict() == {
        "code": cls.code,
        "message": "Something is off",
        "where": "file.csv:3",
        "hint": "Do this instead.",
    }
    text = str(err)
    assert "Something is off" in text and "file.csv:3" in text
    assert "Do this instead." in text
    assert text == "file.csv:3: Something is off\nHint: Do this instead."
    assert err.args == (text,)


def test_without_hint_or_where():
    err = errors.DataError("plain")
    assert str(err) == "plain"
    assert err.to_dict() == {"code": "data_error", "message": "plain", "where": None, "hint": None}


def test_caught_as_base_class():
    with pytest.raises(AimassError) as info:
        raise errors.NotFoundError("gone", hint="look elsewhere")
    assert info.value.code == "not_found"
    assert "look elsewhere" in str(info.value)
