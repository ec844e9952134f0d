"""The explorer's JSON API: one request (model, device, phase, shape, dtypes) in, the views' data out.

Every part is built by the same functions as the CLI's ``--json`` output, so a test can compare them:

- ``profile``  = ``llm-profiler profile MODEL -b B -s S -p P --json`` (``ProfileResult``, scope transformer)
- ``layers``   = ``llm-profiler profile MODEL -b B -s S -p P --per-layer --json`` (``PerLayerResult``)
- ``roofline`` = ``llm-profiler roofline MODEL --device D --phase PH -b B -s S -p P -n N --lm-head L
  --weight-dtype W --act-dtype A --kv-dtype K --nodes 1 --json`` (``PhaseReport``, a point per node
  for prefill and decode)
- ``memory``   = ``llm_profiler.memory.memory_usage(MODEL, B, S, context, D, ...)`` (``MemoryUsage``)
- ``formula``  = ``llm-profiler export MODEL --metric M --scope SC`` (text)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import metrics as M
from ..checks import check_dtype_name, check_int, check_new_tokens, short
from ..engines import get_engine
from ..errors import ConfigError, LimitError, QueryError, ShapeError
from ..phases import DECODE, GENERATE, LM_HEAD_ALL, PHASES, PREFILL, Phase, check_lm_head
from ..scopes import TRANSFORMER

UPLOAD_PREFIX = "upload:"
MAX_UPLOAD_BYTES = 1_000_000  # a config.json is a few KB; a 1 MB body is refused before it is parsed
MAX_UPLOADS = 64  # uploaded configs kept in memory (least recently used dropped first)
MAX_TEXT = 200  # characters of one query value


@dataclass(frozen=True)
class ViewRequest:
    """One state of the explorer: the same fields as the page's query string (``?model=...&batch=...``)."""

    model: str = "llama-3.1-8b"
    device: str = "A100-80GB"
    phase: str = PREFILL
    batch: int = 1
    seq: int = 2048
    past: int = 0
    new_tokens: int = 128
    lm_head: str = LM_HEAD_ALL
    engine: str = "vllm"  # the execution profile of the roofline and memory views (llm_profiler.engines)
    weight_dtype: str = "bf16"
    act_dtype: str = "bf16"
    kv_dtype: str | None = None
    metric: str = M.FLOPS  # the stacked bars and the formula
    scope: str = TRANSFORMER  # the formula

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ViewRequest:
        """Parse query values (strings); each error names its field and what is allowed."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in query.items():
            if key not in known:
                continue  # the page keeps its own keys (the open view) in the same query string
            if not isinstance(raw, str) or len(raw) > MAX_TEXT:
                raise QueryError(f"{key}: at most {MAX_TEXT} characters, got {short(raw)}")
            text = raw.strip()
            if key in ("batch", "seq", "past", "new_tokens"):
                try:
                    number = int(text)
                except ValueError:
                    raise ShapeError(f"{key} must be an integer, got {short(text)}") from None
                values[key] = check_int(number, key, minimum=0 if key == "past" else 1, error=ShapeError)
            elif key == "kv_dtype" and text in ("", "default"):
                values[key] = None
            else:
                values[key] = text
        request = cls(**values)
        request.check()
        return request

    def check(self) -> None:
        if not self.model:
            raise ConfigError("model: give a preset alias, a hub id or an uploaded config (upload:<id>)")
        if self.phase not in PHASES:
            raise QueryError(f"phase must be one of {', '.join(PHASES)}, got {short(self.phase)}")
        check_lm_head(self.lm_head)
        get_engine(self.engine)  # a QueryError that lists the engines
        if self.phase == GENERATE:
            check_new_tokens(self.new_tokens, "new_tokens")
        for name in ("weight_dtype", "act_dtype", "kv_dtype"):
            value = getattr(self, name)
            if value is not None:
                check_dtype_name(value, name)
        M.canonical(self.metric)

    def query(self) -> dict[str, str]:
        """The query-string form (what the page puts in its URL)."""
        return {k: str(v) for k, v in asdict(self).items() if v is not None}

    def phase_obj(self) -> Phase:
        if self.phase == DECODE:
            return Phase.decode(self.batch, self.past, self.seq, self.lm_head)
        if self.phase == GENERATE:
            return Phase.generate(self.batch, self.seq, self.new_tokens, self.past, self.lm_head)
        return Phase.prefill(self.batch, self.seq, self.past, self.lm_head)

    @property
    def context(self) -> int:
        """Tokens in the KV cache after the phase's last forward (what the memory view holds)."""
        if self.phase == GENERATE:  # N tokens come from a prefill and N - 1 decode forwards
            return self.past + self.seq + self.new_tokens - 1
        return self.past + self.seq


class Uploads:
    """Configs uploaded through the page, kept in memory by content hash (``upload:<hash>``)."""

    def __init__(self, limit: int = MAX_UPLOADS) -> None:
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def add(self, body: bytes) -> str:
        if len(body) > MAX_UPLOAD_BYTES:
            raise LimitError(f"config.json upload is {len(body):,} bytes; at most {MAX_UPLOAD_BYTES:,}")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"the uploaded config.json is not valid JSON: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
            raise ConfigError("the uploaded config.json must be a JSON object with a 'model_type' string")
        key = UPLOAD_PREFIX + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> dict[str, Any]:
        with self._lock:
            data = self._items.get(key)
        if data is None:
            raise ConfigError(f"model {short(key)}: no such upload on this server (uploads live in the server's "
                              "memory: upload the config.json again)")
        return data


def _source(model: str, uploads: Uploads | None) -> Any:
    if model.startswith(UPLOAD_PREFIX):
        if uploads is None:
            raise ConfigError(f"model {short(model)}: uploads only exist on a running `llm-profiler ui` server")
        from ..config import ModelConfig

        return ModelConfig(name=model, origin="dict", data=uploads.get(model))
    return model


def model_profile(request: ViewRequest, uploads: Uploads | None = None) -> Any:
    from ..profile import profile_model

    return profile_model(_source(request.model, uploads))


def profile_json(request: ViewRequest, uploads: Uploads | None = None) -> dict[str, Any]:
    """= ``profile MODEL --batch B --seq S --past P --json``."""
    from ..api import summary_metrics

    prof = model_profile(request, uploads).at(request.batch, request.seq, request.past)
    result = prof.result(TRANSFORMER, summary_metrics(prof, TRANSFORMER, M.SUMMARY))
    return result.model_dump(mode="json")


def layers_json(request: ViewRequest, uploads: Uploads | None = None) -> dict[str, Any]:
    """= ``profile MODEL --batch B --seq S --past P --per-layer --json``."""
    from ..report.export import per_layer_result

    prof = model_profile(request, uploads).at(request.batch, request.seq, request.past)
    return per_layer_result(prof, list(M.SUMMARY)).model_dump(mode="json")


def _settings(request: ViewRequest) -> Any:
    from ..perf import settings

    return settings(request.device, request.weight_dtype, request.act_dtype, request.kv_dtype)


def roofline_json(request: ViewRequest, uploads: Uploads | None = None) -> dict[str, Any]:
    """= ``roofline MODEL --device D --phase PH ... --nodes 1 --json`` (every node for prefill and decode)."""
    from ..perf import phase_report

    st = _settings(request)
    report = phase_report(model_profile(request, uploads), request.phase_obj(), st,
                          nodes=request.phase != GENERATE, engine=request.engine)
    out = report.model_dump(mode="json")
    return out


def device_json(request: ViewRequest) -> dict[str, Any]:
    """The roofs the chart draws: peak FLOP/s at the compute dtype and the memory bandwidth (efficiency 1)."""
    st = _settings(request)
    return {"name": st.device.name, "peak_flops": st.peak, "bandwidth": st.bandwidth,
            "compute_dtype": st.compute_dtype, "memory_bytes": st.device.memory_bytes}


def memory_json(request: ViewRequest, uploads: Uploads | None = None) -> dict[str, Any]:
    """= ``memory_usage(MODEL, B, S, context, D, weight_dtype=..., act_dtype=..., kv_dtype=..., lm_head=...)``;
    the context is past + seq (+ new_tokens - 1 for generate)."""
    from ..memory import memory_usage

    usage = memory_usage(model_profile(request, uploads), request.batch, request.seq, request.context,
                         request.device, weight_dtype=request.weight_dtype, act_dtype=request.act_dtype,
                         kv_dtype=request.kv_dtype, lm_head=request.lm_head, engine=request.engine)
    return usage.model_dump(mode="json")


def formula_text(request: ViewRequest, uploads: Uploads | None = None) -> str:
    """= ``export MODEL --metric M --scope SC`` (text: the expression and its terms by powers of S)."""
    from ..report.export import export_expr

    model = model_profile(request, uploads)
    metric = M.canonical(request.metric)
    return export_expr(model.expr(metric, request.scope), "text", metric=metric, scope=request.scope,
                       model=model.spec.name)


def view_json(request: ViewRequest, uploads: Uploads | None = None, *, formula: bool = True) -> dict[str, Any]:
    """Everything one state of the page shows, in one answer (one fetch per slider move)."""
    out: dict[str, Any] = {
        "request": request.query(),
        "profile": profile_json(request, uploads),
        "layers": layers_json(request, uploads),
        "roofline": roofline_json(request, uploads),
        "device": device_json(request),
        "memory": memory_json(request, uploads),
    }
    if formula:
        out["formula"] = formula_text(request, uploads)
    return out


def meta_json() -> dict[str, Any]:
    """The choices of the controls: presets (and variants), devices, phases, dtypes, metrics, scopes."""
    from ..config import list_presets
    from ..config.presets import list_variants
    from ..hardware import list_devices

    return {
        "presets": [{"alias": p.alias, "hub_id": p.hub_id} for p in list_presets()],
        "variants": [{"alias": p.alias, "hub_id": p.hub_id, "variant_of": p.variant_of} for p in list_variants()],
        "devices": list_devices(),
        "phases": list(PHASES),
        "engines": ["vllm", "hf-sdpa", "hf-eager"],
        "dtypes": ["fp32", "bf16", "fp16", "fp8", "int8", "int4"],
        "metrics": list(M.ALL),
        "labels": dict(M.LABELS),
        "scopes": [TRANSFORMER, "model", "attn", "mlp", "norm", "embed", "lm_head"],
        "defaults": ViewRequest().query(),
    }


__all__ = ["MAX_UPLOAD_BYTES", "UPLOAD_PREFIX", "Uploads", "ViewRequest", "device_json", "formula_text",
           "layers_json", "memory_json", "meta_json", "profile_json", "roofline_json", "view_json"]
