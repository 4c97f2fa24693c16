"""One exception tree for aimass: every error has a stable code and a hint.

>>> from aimass.errors import DataError
>>> err = DataError("Column 'text' is empty", where="reviews.csv:12", hint="Fill it in or drop the row.")
>>> err.code
'data_error'
"""

from __future__ import annotations


class AimassError(Exception):
    """Base class. ``code`` is stable (for scripts and HTTP bodies); ``hint`` says how to fix it."""

    code = "aimass_error"
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None):
        self.message = message
        self.hint = hint
        self.where = where
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}\nHint: {self.hint}" if self.hint else text

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "where": self.where, "hint": self.hint}


class DataError(AimassError):
    """The user's data cannot be used as given (bad rows, one class, unreadable file)."""

    code = "data_error"
    http_status = 422


class TooLargeError(DataError):
    """An image or archive is over a size limit (pixels, bytes, members or compression ratio)."""

    code = "too_large"
    http_status = 413


class InsufficientStorage(AimassError):
    """The disk holding ``AIMASS_HOME`` is (nearly) full: what was sent is not kept."""

    code = "insufficient_storage"
    http_status = 507


class ConfigError(AimassError):
    """A parameter or setting is invalid."""

    code = "config_error"
    http_status = 422


class NotFoundError(AimassError):
    """A dataset, model, version, task or backbone does not exist."""

    code = "not_found"
    http_status = 404


class NotFittedError(AimassError):
    """``predict``/``evaluate``/``save`` was called before ``fit``."""

    code = "not_fitted"
    http_status = 409


class PermissionDenied(AimassError):
    """The caller is not allowed to do this."""

    code = "permission_denied"
    http_status = 403


class InUseError(AimassError):
    """The resource is in use (a version a service serves, or an alias points at) and cannot be
    removed until that use ends."""

    code = "in_use"
    http_status = 409


class VersionError(AimassError):
    """A stored artifact was written by an incompatible aimass version."""

    code = "version_error"
    http_status = 409


class Unauthenticated(AimassError):
    """No API key, or a key that is unknown or revoked."""

    code = "unauthenticated"
    http_status = 401


class TooManyRequests(AimassError):
    """A queue is full or a key's rate limit is spent; ``retry_after`` says when to try again."""

    code = "too_many_requests"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class QuotaExceeded(AimassError):
    """A key used every item its quota grants in this period; ``retry_after``: seconds to the reset."""

    code = "insufficient_quota"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class Unavailable(AimassError):
    """The service is not ready (loading, draining, or its worker restarted)."""

    code = "unavailable"
    http_status = 503


class DeadlineExceeded(AimassError):
    """A request took longer than its timeout."""

    code = "timeout"
    http_status = 504


class IntegrityError(AimassError):
    """A stored artifact does not match its recorded sha256 (truncated, torn or altered)."""

    code = "integrity_error"
    http_status = 500


class JobError(AimassError):
    """A job cannot be submitted, cancelled or retried as asked. ``code`` names the exact check
    that failed (``code_dir_not_found``, ``entry_not_python``, ...) and stays stable."""

    code = "job_error"
    http_status = 422

    def __init__(self, message: str, *, code: str | None = None, **kwargs):
        if code:
            self.code = code
        super().__init__(message, **kwargs)


def backbone_unreadable(name: str, where: str, err: OSError) -> ConfigError:
    """The error for a backbone that cannot be read: a folder without safetensors weights (aimass
    never unpickles a ``pytorch_model.bin``), or a Hub model not downloaded yet without a network."""
    return ConfigError(
        f"Backbone {name!r} cannot be loaded from {str(where)[:200]}: {str(err)[:300]}",
        hint="A model folder needs config.json, its tokenizer and model.safetensors (aimass never loads "
        "pickled weights: save it with save_pretrained(), which writes safetensors); an hf: model "
        "needs a network the first time.",
    )
