"""Reading fields out of a raw config dict, with errors that name the field and say what to do."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

_MISSING: Any = object()


class Fields:
    """Typed access to a config dict; every lookup may list alias names (legacy keys of real configs)."""

    def __init__(self, data: dict[str, Any], model_type: str) -> None:
        self.data = data
        self.model_type = model_type

    def _find(self, names: tuple[str, ...]) -> tuple[str, Any]:
        for name in names:
            if name in self.data and self.data[name] is not None:
                return name, self.data[name]
        return names[0], _MISSING

    def _missing(self, names: tuple[str, ...]) -> ConfigError:
        also = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
        return ConfigError(
            f"{self.model_type} config is missing the field {names[0]!r}{also}; add it to the config.json"
        )

    def has(self, *names: str) -> bool:
        return self._find(names)[1] is not _MISSING

    def int(self, *names: str, default: Any = _MISSING, minimum: int = 1) -> int:
        key, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise self._missing(names)
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{self.model_type} config field {key!r} must be an integer, got {value!r} ({type(value).__name__})"
            )
        if value < minimum:
            raise ConfigError(f"{self.model_type} config field {key!r} must be >= {minimum}, got {value}")
        return value

    def bool(self, *names: str, default: Any = _MISSING) -> bool:
        key, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise self._missing(names)
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.model_type} config field {key!r} must be true or false, got {value!r}")
        return value

    def float(self, *names: str, default: Any = _MISSING) -> float:
        key, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise self._missing(names)
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.model_type} config field {key!r} must be a number, got {value!r}")
        return float(value)

    def str(self, *names: str, default: Any = _MISSING) -> str:
        key, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise self._missing(names)
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self.model_type} config field {key!r} must be a string, got {value!r}")
        return value

    def raw(self, *names: str, default: Any = None) -> Any:
        value = self._find(names)[1]
        return default if value is _MISSING else value

    def divisible(self, numerator: int, denominator: int, what: str) -> None:
        if numerator % denominator:
            raise ConfigError(f"{self.model_type} config: {what} ({numerator} is not a multiple of {denominator})")
