"""The seed API: ``get_model_config`` and ``get_profile(kwargs, attr, scope)``, printing in the seed's format."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import metrics as M
from .checks import check_as_family
from .config import ModelConfig, load_config
from .errors import QueryError, ShapeError
from .hardware.dtypes import get_dtype, tensor_bytes
from .profile import Profile, profile_model
from .report.units import engineering, human_bytes
from .scopes import LM_HEAD, TRANSFORMER


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


def number(value: int, exact: bool = False) -> str:
    """A count in the seed's notation, ``3.16  (10^12)`` (engineering: the power is a multiple of 3), or the
    exact integer with ``exact``."""
    if exact or value == 0:
        return str(value)
    mantissa, power = engineering(value)
    return f"{mantissa}  (10^{power})"


def value_line(metric: str, value: int, exact: bool = False, suffix: str = "", width: int = 12) -> str:
    """One line of the seed's summary: ``    MULT:       3.16  (10^12)`` (label padded to ``width``, 12 as in
    the seed, and always followed by at least one space)."""
    label = M.LABELS[metric] + ":"
    line = f"    {label:<{max(width, len(label) + 1)}}" + number(value, exact)
    return f"{line}   {suffix}" if suffix else line


def bytes_text(numel: int, dtype: str, exact: bool = False) -> str:
    """``= 104.86 MB in bf16``: the bytes of ``numel`` elements stored in ``dtype``."""
    size = tensor_bytes(dtype, numel)
    return f"= {size} bytes in {get_dtype(dtype).name}" if exact else f"= {human_bytes(size)} in {get_dtype(dtype).name}"


def summary_metrics(prof: Profile, scope: str, metrics: Iterable[str] = M.SUMMARY) -> list[str]:
    """The metrics of a summary: ``metrics``, plus ``active_params`` right after ``params`` where the scope
    holds routed experts (active differs from total) and it was not asked for already."""
    names = [M.canonical(m) for m in metrics]
    if M.PARAMS in names and M.ACTIVE_PARAMS not in names and (
            prof.total(M.ACTIVE_PARAMS, scope) != prof.total(M.PARAMS, scope)):
        names.insert(names.index(M.PARAMS) + 1, M.ACTIVE_PARAMS)
    return names


def scope_note(prof: Profile, scope: str, exact: bool = False, how: str = "scope 'model'") -> str | None:
    """What the default scope leaves out: for ``transformer``, the lm_head with its params and MACs."""
    if scope.lower() != TRANSFORMER:
        return None
    params, macs = prof.total(M.PARAMS, LM_HEAD), prof.total(M.MACS, LM_HEAD)
    tied = ", tied to the embedding (counted in embed)" if prof.spec.tie_word_embeddings and not params else ""
    return f"    leaves out: lm_head ({how} adds it): MACs {number(macs, exact)}; PARAMS {number(params, exact)}{tied}"


def summary_lines(prof: Profile, scope: str, values: Mapping[str, int], *, exact: bool = False,
                  act_dtype: str = "bf16", kv_dtype: str | None = None, how: str = "scope 'model'") -> list[str]:
    """The seed's summary of ``values`` in ``scope``: the header naming the scope, one line per metric (cache
    and activations with their bytes at ``kv_dtype`` / ``act_dtype``), what the scope leaves out, the notes."""
    dtypes = {M.CACHE: get_dtype(kv_dtype or act_dtype).name, M.ACT: get_dtype(act_dtype).name}
    lines = [header(scope, prof.batch, prof.seq, prof.past)]
    width = max([12, *(len(M.LABELS[m]) + 2 for m in values)])  # the seed's 12, wider for ACTIVE_PARAMS
    for metric, value in values.items():
        suffix = bytes_text(value, dtypes[metric], exact) if metric in dtypes else ""
        lines.append(value_line(metric, value, exact, suffix, width))
    left_out = scope_note(prof, scope, exact, how)
    if left_out:
        lines.append(left_out)
    lines += [f"    note: {text}" for text in prof.spec.notes]
    return lines


def _scope_name(scope: Any) -> str:
    if scope is None or (isinstance(scope, str) and not scope.strip()):
        return TRANSFORMER  # the seed's default
    if not isinstance(scope, str):
        from .scopes import valid_scopes_text

        raise QueryError(f"scope must be a string, got {scope!r}; valid: {valid_scopes_text()}")
    return scope.strip()


def get_profile(kwargs: Mapping[str, Any], attr: str, scope: str | None = None, *, quiet: bool = False,
                exact: bool = False) -> int:
    """The exact count of ``attr`` (add, mult, div, sqrt, exp, cmp, flops, macs, params, active_params, cache,
    act) in ``scope`` (transformer by default; model, attn, mlp, norm, embed, lm_head, layers.N, a path or
    glob), printed in the seed's format (``MULT:       3.16  (10^12)``; the exact integer with ``exact``)
    unless ``quiet``. The returned value is always the exact integer."""
    prof, _ = profile_from_kwargs(kwargs)
    metric = M.canonical(attr)
    scope_name = _scope_name(scope)
    value = prof.total(metric, scope_name)  # named scopes are case-insensitive
    if not quiet:
        print(header(scope_name, prof.batch, prof.seq, prof.past))
        print(value_line(metric, value, exact))
    return value


def print_summary(kwargs: Mapping[str, Any], scope: str | None = None,
                  metrics: Iterable[str] = M.SUMMARY, *, exact: bool = False, act_dtype: str = "bf16",
                  kv_dtype: str | None = None) -> dict[str, int]:
    """Print (and return) the seed's summary of every metric for ``scope`` (transformer by default): counts in
    the seed's notation (exact integers with ``exact``), active params too for MoE models, the bytes of the
    KV cache and activations at ``kv_dtype`` (default: ``act_dtype``) and ``act_dtype`` (default bf16), and
    what the default scope leaves out (the lm_head)."""
    prof, _ = profile_from_kwargs(kwargs)
    scope_name = _scope_name(scope)
    values = prof.summary(scope_name, summary_metrics(prof, scope_name, metrics))
    print("\n".join(summary_lines(prof, scope_name, values, exact=exact, act_dtype=act_dtype, kv_dtype=kv_dtype)))
    return values
