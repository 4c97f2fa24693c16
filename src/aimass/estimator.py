"""The one contract every aimass model follows (scikit-learn's estimator rules).

``__init__`` only stores its keyword arguments; ``fit`` validates and learns;
learned state ends with ``_``; ``get_params`` is what the registry records.

>>> from aimass.estimator import clone
>>> from aimass.tasks import get_task
>>> from aimass.tasks import DEFAULT_TASK
>>> model = get_task(DEFAULT_TASK).estimator(seed=1)
>>> clone(model).get_params()["seed"]
1
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

from aimass import budget
from aimass.errors import ConfigError, NotFittedError


class Estimator:
    """Base class: parameter bookkeeping and the fitted check. Subclasses add the rest."""

    task: ClassVar[str] = ""

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters exactly as given to ``__init__``."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> Estimator:
        unknown = set(params) - set(self.param_names())
        if unknown:
            raise ConfigError(
                f"Unknown parameter(s) {sorted(unknown)} for {type(self).__name__}",
                hint=f"Valid parameters: {', '.join(self.param_names())}",
            )
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def check_fitted(self) -> None:
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet.",
                hint="Call fit(data) first, or load a trained model with aimass.load('name').",
            )

    def fit(self, data, *args, **kwargs) -> Estimator:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, inputs):  # pragma: no cover - interface
        raise NotImplementedError

    def evaluate(self, data, *args, **kwargs) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> Estimator:  # pragma: no cover - interface
        raise NotImplementedError


def clone(estimator: Estimator) -> Estimator:
    """A new, unfitted estimator with the same parameters."""
    return type(estimator)(**estimator.get_params())


def parse_config(config_class, params: dict, owner: str):
    """``config_class(**params)`` with the time budget parsed; an invalid value is a ConfigError
    naming the parameter, what was wrong and what was given (sklearn style)."""
    params = dict(params, time_budget=budget.seconds(params.get("time_budget")))
    try:
        return config_class(**params)
    except Exception as exc:  # pydantic.ValidationError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ["?"], "msg": str(exc)}
        name = first["loc"][0]
        raise ConfigError(
            f"The '{name}' parameter of {owner} is invalid: {first['msg']}. "
            f"Got {params.get(name)!r} instead.",
            hint=f"See {owner}'s docstring or `aimass train --help` for valid values.",
        ) from None
