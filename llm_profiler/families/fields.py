"""Reading fields out of a raw config dict, with errors that name the field and say what to do."""

from __future__ import annotations

import builtins
from typing import Any

from ..errors import ConfigError

_MISSING: Any = object()
# The graph holds one set of nodes per layer, so a layer count is bounded: real models have at most a few
# hundred, and a corrupt value (1e30) would otherwise hang the profiler instead of failing.
MAX_LAYERS = 10_000
MAX_INT = 2**63 - 1  # a dimension no tensor can have is corrupt data, and would print as 4300+ digits
_LAYER_COUNT_FIELDS = frozenset({"num_hidden_layers", "n_layer", "num_layers", "n_layers"})


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
        if abs(value) > MAX_INT:
            raise ConfigError(f"{self.model_type} config field {key!r} must be < 2**63 (an int64 tensor size), "
                              f"got a {value.bit_length()}-bit number")
        if value < minimum:
            raise ConfigError(f"{self.model_type} config field {key!r} must be >= {minimum}, got {value}")
        if key in _LAYER_COUNT_FIELDS and value > MAX_LAYERS:
            raise ConfigError(f"{self.model_type} config field {key!r} must be <= {MAX_LAYERS}, got {value}")
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

    def raw(self, *names: builtins.str, default: Any = None) -> Any:
        value = self._find(names)[1]
        return default if value is _MISSING else value

    def attention_heads(self, hidden: builtins.int, *, kv_default: builtins.int | None = None,
                        head_dim_default: builtins.int | None = None) -> tuple[builtins.int, builtins.int, builtins.int]:
        """(heads, kv_heads, head_dim) of a Llama-style config.

        ``num_key_value_heads`` defaults to ``kv_default`` (or to the heads: multi-head attention) and must
        divide the heads; ``head_dim`` is explicit when given, else ``head_dim_default``, else hidden / heads
        (which must then divide).
        """
        heads = self.int("num_attention_heads")
        kv_heads = self.int("num_key_value_heads", default=heads if kv_default is None else kv_default)
        if self.has("head_dim"):
            head_dim = self.int("head_dim")
        elif head_dim_default is not None:
            head_dim = head_dim_default
        else:
            self.divisible(hidden, heads, "hidden_size must be a multiple of num_attention_heads when head_dim is absent")
            head_dim = hidden // heads
        self.divisible(heads, kv_heads, "num_attention_heads must be a multiple of num_key_value_heads")
        return heads, kv_heads, head_dim

    def layer_types(self, layers: builtins.int, allowed: tuple[builtins.str, ...] = ("full_attention", "sliding_attention"),
                    name: builtins.str = "layer_types") -> tuple[builtins.str, ...] | None:
        """A per-layer list of layer kinds (``layer_types``, ``layers_block_type`` ...): None when absent,
        else ``layers`` entries each in ``allowed`` (an error naming the field otherwise)."""
        given = self.raw(name)
        if given is None:
            return None
        if not isinstance(given, list) or len(given) != layers or any(t not in allowed for t in given):
            raise ConfigError(
                f"{self.model_type} config field {name!r} must list {layers} entries, each one of "
                + " / ".join(repr(a) for a in allowed)
            )
        return tuple(given)

    def divisible(self, numerator: builtins.int, denominator: builtins.int, what: builtins.str) -> None:
        if numerator % denominator:
            raise ConfigError(f"{self.model_type} config: {what} ({numerator} is not a multiple of {denominator})")
