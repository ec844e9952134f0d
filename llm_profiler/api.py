"""The seed API: ``get_model_config`` and ``get_profile(kwargs, attr, scope)``, printing in the seed's format."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import metrics as M
from .checks import check_as_family
from .config import ModelConfig, load_config
from .errors import QueryError, ShapeError
from .profile import Profile, profile_model
from .report.units import exponent
from .scopes import TRANSFORMER


def get_model_config(model_id: Any, hf_token: str | None = None, revision: str | None = None) -> ModelConfig:
    """Load a config: a bundled preset (hub id or alias), a config.json path or folder, a dict, a
    ``transformers.PretrainedConfig``, or any hub id (fetches ``config.json`` only; token from the
    argument or ``HF_TOKEN``)."""
    return load_config(model_id, hf_token=hf_token, revision=revision)


def _unpack(kwargs: Mapping[str, Any]) -> tuple[Any, int, int, int]:
    if not isinstance(kwargs, Mapping):
        raise QueryError("kwargs must be a dict like {'model_config': cfg, 'input_shape': [B, S], 'past_length': P}")
    unknown = set(kwargs) - {"model_config", "input_shape", "past_length", "as_family"}
    if unknown:
        raise QueryError(f"unknown key(s) {sorted(unknown)} in kwargs; valid: model_config, input_shape, past_length")
    if "model_config" not in kwargs:
        raise QueryError("kwargs needs 'model_config' (a preset name, config.json path, dict or config object)")
    if kwargs["model_config"] is None:
        raise QueryError("kwargs 'model_config' is None: pass a preset name, config.json path, dict or config object")
    if "input_shape" not in kwargs:
        raise ShapeError("kwargs needs 'input_shape': [batch, sequence_length]")
    check_as_family(kwargs.get("as_family"), "kwargs 'as_family'")
    shape = kwargs["input_shape"]
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        raise ShapeError(f"input_shape must be [batch, sequence_length], got {shape!r}")
    shape = list(shape)
    if len(shape) != 2:
        raise ShapeError(f"input_shape must have two entries [batch, sequence_length], got {shape!r}")
    return kwargs["model_config"], shape[0], shape[1], kwargs.get("past_length", 0)


def profile_from_kwargs(kwargs: Mapping[str, Any]) -> tuple[Profile, str | None]:
    source, batch, seq, past = _unpack(kwargs)
    return profile_model(source, as_family=kwargs.get("as_family")).at(batch, seq, past), kwargs.get("as_family")


def header(scope: str, batch: int, seq: int, past: int) -> str:
    past_text = f" after {past} cached tokens" if past else ""
    return f"{scope} with input batchsize {batch} and sequence length {seq}{past_text}:"


def value_line(metric: str, value: int) -> str:
    return f"    {M.LABELS[metric] + ':':<12}{value}  (10^{exponent(value)})"


def _scope_name(scope: Any) -> str:
    if scope is None or (isinstance(scope, str) and not scope.strip()):
        return TRANSFORMER  # the seed's default
    if not isinstance(scope, str):
        from .scopes import valid_scopes_text

        raise QueryError(f"scope must be a string, got {scope!r}; valid: {valid_scopes_text()}")
    return scope.strip()


def get_profile(kwargs: Mapping[str, Any], attr: str, scope: str | None = None, *, quiet: bool = False) -> int:
    """The exact count of ``attr`` (add, mult, div, sqrt, exp, cmp, flops, macs, params, cache, act) in
    ``scope`` (transformer by default; model, attn, mlp, norm, embed, lm_head, layers.N, a path or glob),
    printed in the seed's format unless ``quiet``."""
    prof, _ = profile_from_kwargs(kwargs)
    metric = M.canonical(attr)
    scope_name = _scope_name(scope)
    value = prof.total(metric, scope_name)  # named scopes are case-insensitive
    if not quiet:
        print(header(scope_name, prof.batch, prof.seq, prof.past))
        print(value_line(metric, value))
    return value


def print_summary(kwargs: Mapping[str, Any], scope: str | None = None,
                  metrics: Iterable[str] = M.SUMMARY) -> dict[str, int]:
    """Print (and return) the seed's summary of every metric for ``scope``."""
    prof, _ = profile_from_kwargs(kwargs)
    scope_name = _scope_name(scope)
    values = prof.summary(scope_name, metrics)
    print(header(scope_name, prof.batch, prof.seq, prof.past))
    for metric, value in values.items():
        print(value_line(metric, value))
    for note in prof.spec.notes:
        print(f"    note: {note}")
    return values
