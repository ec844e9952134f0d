"""Backward of granite_swa and granitemoe_swa (the post-attention sink scale, training/backward_sinks.py): exact
per node against autograd, tiny on the CPU at (2, 3) and (1, 5) (past the tiny window of 4), with the sink
scale's numbers derived beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_profiler.formula import Formula
from llm_profiler.training import backward as tb
from llm_profiler.training.backward_sinks import SINK_TYPES, sink_scale_backward

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import validate_backward  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
GRANITE_SWA = str(CONFIGS / "transformers--GraniteSWAConfig-defaults.json")
GRANITEMOE_SWA = str(CONFIGS / "transformers--GraniteMoeSWAConfig-defaults.json")
SHARED = {**json.loads(Path(GRANITEMOE_SWA).read_text()), "shared_intermediate_size": 1024}
MODELS = [GRANITE_SWA, GRANITEMOE_SWA]


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, 2, 3) for m in MODELS] + [(m, 1, 5) for m in MODELS])
def test_sinks_backward_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    report = validate_backward(model, batch, seq, tiny=True)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])
    assert report.model_type in tb.VALIDATED_MODEL_TYPES


def test_shared_mlp_backward_exact() -> None:
    report = validate_backward(SHARED, 1, 5, tiny=True)
    assert report.ok, report.summary_line()


def test_sink_types_are_what_is_tested() -> None:
    assert {reference(m, tiny=True).profile.spec.model_type for m in MODELS} == SINK_TYPES


def test_sink_scale_backward_values() -> None:
    """The tiny granite_swa at B=2, S=3 (layer 0, full: K = 3 keys): R = B*H*S = 2*4*3 = 24 rows, D = 16,
    H = 4 sinks."""
    profile = reference(GRANITE_SWA, tiny=True).profile
    node = profile.graph.node("model.layers.0.self_attn:sink_scale")
    values = {k: Formula.of(v)(2, 3, 0) for k, v in sink_scale_backward(node).items()}
    R, K, D, H, T = 24, 3, 16, 4, 6
    # g * s and g * o (2*R*D), sigmoid_backward (2R), logsumexp's grad * exp(..) (R*K)
    assert values["mult"] == 2 * R * D + 2 * R + R * K  # = 888
    # the sum over D (R*(D-1)), sigmoid_backward (R), -g (R), the sinks summed over B*S (H*(T-1)), logsumexp's sub
    assert values["add"] == R * (D - 1) + R + R + H * (T - 1) + R * K  # = 500
    assert values["exp"] == R * K  # = 72
    assert values["act"] == 2 * R * D + 3 * R + H + 3 * R * K  # = 1060


@pytest.mark.parametrize("model", MODELS)
def test_sinks_backward_exact_full_size_meta(model: str) -> None:
    report = validate_backward(model, 1, 5, tiny=False)  # the config class defaults, on meta
    assert report.ok, report.summary_line()
