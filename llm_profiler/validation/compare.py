"""validate(): predicted (the graph) against measured (the real transformers model), module by module."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .. import metrics as M
from ..profile import ModelProfile, check_shape
from .report import ValidationReport, ValidationRow

COMPARED: tuple[str, ...] = (*M.ARITHMETIC, M.MACS, M.ACT, M.PARAMS)


def predicted_by_module(model: ModelProfile, batch: int, seq: int, past: int) -> tuple[dict, dict]:
    """module -> metric -> count, and layer -> (label, cache elements)."""
    values = model.node_values(batch, seq, past)
    by_module: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    cache: dict[int, list] = {}
    for node in model.nodes:
        v = values[node.path]
        for metric in COMPARED:
            by_module[node.module][metric] += v[metric]
        if v[M.CACHE] or node.kind == "kv_cache":
            layer = node.layer if node.layer is not None else -1
            label, total = cache.get(layer, (node.path, 0))
            cache[layer] = [label, total + v[M.CACHE]]
    return by_module, cache


def compare(model: ModelProfile, measured: Any, batch: int, seq: int, past: int) -> tuple[list[ValidationRow], list[str]]:
    predicted, cache = predicted_by_module(model, batch, seq, past)
    rows: list[ValidationRow] = []
    modules = list(predicted) + [m for m in sorted(set(measured.counts) | set(measured.params)) if m not in predicted]
    for module in modules:
        got = dict(measured.counts.get(module, {}))
        got[M.PARAMS] = measured.params.get(module, 0)
        want = predicted.get(module, {})
        for metric in COMPARED:
            p, m = int(want.get(metric, 0)), int(got.get(metric, 0))
            if p or m:
                rows.append(ValidationRow(module=module, metric=metric, predicted=p, measured=m))
    for layer in sorted(set(cache) | set(measured.cache_by_layer)):
        label, p = cache.get(layer, (f"{model.graph.layer_prefix}{layer} (cache)", 0))
        m = measured.cache_by_layer.get(layer, 0)
        if p or m:
            rows.append(ValidationRow(module=label, metric=M.CACHE, predicted=int(p), measured=int(m)))
    unknown = [f"{mod or '(root)'}: {op} ({n} calls)" for (mod, op), n in sorted(measured.unknown_ops.items())]
    return rows, unknown


def validate(config: Any, batch: int, seq: int, past: int = 0, *, tiny: bool = False,
             as_family: str | None = None, model: Any = None) -> ValidationReport:
    """Run the reference model (full size on meta, or ``tiny`` on the CPU with real random weights) and
    compare every metric of every module with the graph. ``model`` reuses an already built reference."""
    import torch
    import transformers

    from .measure import measure
    from .reference import reference

    b, s, p = check_shape(batch, seq, past)
    ref = reference(config, tiny=tiny, as_family=as_family)
    profile = ref.profile
    measured = measure(ref.build() if model is None else model, b, s, p)
    rows, unknown = compare(profile, measured, b, s, p)
    return ValidationReport(
        model=ref.name, model_type=profile.spec.model_type, batch=b, seq=s, past=p,
        device=ref.device, tiny=tiny, transformers_version=transformers.__version__,
        torch_version=torch.__version__, rows=rows, unknown_ops=unknown,
        data_ops=[f"{kind}: {op} ({n} calls)" for (kind, op), n in sorted(measured.data_ops.items())],
    )
