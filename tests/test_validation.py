"""Validation: every formula against the real transformers computation, node by node, metric by metric.

Every bundled preset whose family is registered is built at full size on the meta device and run at three
shapes (a prefill, an odd shape after a cached prefix, a decode step); every family also runs at tiny
dimensions with real random weights on the CPU. Each (node, metric) must agree exactly, and so must every
layer's cache and its growth over the forward.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler import metrics as M  # noqa: E402
from llm_profiler.config import list_presets, load_config  # noqa: E402
from llm_profiler.families import build_spec, supported_model_types  # noqa: E402
from llm_profiler.profile import ModelProfile  # noqa: E402
from llm_profiler.validation import ValidationReport, validate  # noqa: E402
from llm_profiler.validation.aten import classify  # noqa: E402
from llm_profiler.validation.compare import compare  # noqa: E402
from llm_profiler.validation.measure import measure  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402

pytestmark = pytest.mark.validation

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
STATIC_ONLY = {"chatglm"}  # no modeling code in transformers: validated against its published total only


def _validated_presets() -> list[str]:
    supported = set(supported_model_types()) - STATIC_ONLY
    out = []
    for preset in list_presets():
        cfg = load_config(preset.hub_id)
        try:
            family, spec = build_spec(cfg.data, cfg.name)
        except Exception:  # a family not registered yet is skipped, not validated
            continue
        if spec.model_type in supported or cfg.model_type in supported:
            out.append(preset.hub_id)
    return out


PRESETS = _validated_presets()


def _assert_exact(report: ValidationReport) -> None:
    assert report.ok, report.table()
    assert report.rows, "nothing was compared"


@pytest.mark.parametrize("hub_id", PRESETS)
def test_full_size_on_meta(hub_id: str) -> None:
    model = reference(hub_id).build()
    for shape in SHAPES:
        _assert_exact(validate(hub_id, *shape, model=model))


@pytest.mark.parametrize("hub_id", PRESETS)
def test_tiny_on_cpu(hub_id: str) -> None:
    for shape in SHAPES:
        _assert_exact(validate(hub_id, *shape, tiny=True))


def test_report_names_a_wrong_formula() -> None:
    """Patch one node's count by one: validation must fail and name that node and metric."""
    cfg = load_config("llama-3.2-1b")
    family, spec = build_spec(cfg.data, cfg.name)
    graph = family.graph(spec)
    target = "model.layers.3.self_attn.k_proj"
    nodes = tuple(replace(n, counts=n.counts + {M.MULT: 1}) if n.path == target else n for n in graph.nodes)
    wrong = ModelProfile(family, replace(graph, nodes=nodes))
    measured = measure(reference(cfg).build(), 2, 3, 1)
    rows, unknown, unattributed = compare(wrong, measured, 2, 3, 1)
    bad = [r for r in rows if not r.ok]
    assert [(r.node, r.module, r.metric, r.diff) for r in bad] == [(target, target, "mult", 1)]
    assert not unknown and not unattributed


def test_report_is_plain_data() -> None:
    report = validate("llama-3.2-1b", 1, 2, 0, tiny=True)
    again = ValidationReport.model_validate_json(report.model_dump_json())
    assert again == report and again.ok
    data = json.loads(report.model_dump_json())
    assert data["schema_version"] == 2
    assert (data["rows"][0]["node"], data["rows"][0]["module"]) == ("model.embed_tokens", "model.embed_tokens")
    assert data["unattributed_ops"] == []
    assert any("view" in op for op in report.data_ops)  # ops without arithmetic are listed as such


def test_unknown_ops_are_reported() -> None:
    assert classify(torch.ops.aten.mm.default) == "compute"
    assert classify(torch.ops.aten.view.default) == "view"
    assert classify(torch.ops.aten.cat.default) == "move"
    assert classify(torch.ops.aten._fft_r2c.default) == "unknown"


def test_macs_equal_flop_counter_mode() -> None:
    """Our macs are torch FlopCounterMode's total / 2 on the eager transformers model."""
    from torch.utils.flop_counter import FlopCounterMode

    from llm_profiler import profile

    model = reference("llama-2-7b").build()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=torch.zeros(16, 200, dtype=torch.long, device="meta"), use_cache=True)
    assert counter.get_total_flops() // 2 == profile("llama-2-7b", 16, 200).total("macs", "model") == 21_310_419_763_200
