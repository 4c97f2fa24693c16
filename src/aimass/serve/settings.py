"""Serving settings as a typed schema: what ``POST /v1/services`` and ``Engine.deploy`` accept.

Each field is checked before anything is deployed, so a bad value is a 422 that names the field
and the old version keeps serving. Values are strict: ``"abc"``, ``true`` or ``-1`` for a number
are refused, not coerced.

>>> ServingSettings.model_validate({"max_batch_size": 8, "timeout_s": 2.5}).max_batch_size
8
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimass.errors import ConfigError


class ServingSettings(BaseModel):
    """Per-version overrides of the server's batching and backend settings (all optional)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    max_batch_size: int | None = Field(None, ge=1, le=1024, description="most inputs per forward pass")
    max_wait_ms: float | None = Field(None, ge=0, le=1000, description="longest wait to fill a batch")
    max_queue: int | None = Field(
        None, ge=1, le=1_000_000, description="requests waiting per version at most (a memory bound)"
    )
    timeout_s: float | None = Field(None, gt=0, le=3600, description="seconds per request before 504")
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] | None = None
    workers: Literal["process", "thread"] | None = Field(None, description="where ONNX forward passes run")
    decode_threads: int | None = Field(
        None, ge=0, le=256, description="threads decoding inputs (0: one a core)"
    )

    def overrides(self) -> dict:
        """Only the settings that were given."""
        return self.model_dump(exclude_none=True)


def check_settings(values: dict | None) -> dict:
    """``values`` checked against :class:`ServingSettings`: the given overrides, or a
    :class:`~aimass.errors.ConfigError` naming each bad field and its allowed range."""
    if not values:
        return {}
    if not isinstance(values, dict):
        raise ConfigError("Serving settings must be an object.", hint='e.g. {"max_batch_size": 16}')
    try:
        return ServingSettings.model_validate(values).overrides()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        allowed = ", ".join(ServingSettings.model_fields)
        raise ConfigError(f"Invalid serving settings: {problems}.", hint=f"Settings are {allowed}.") from None
