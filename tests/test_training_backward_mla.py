"""Backward of multi-head latent attention (deepseek_v3, glm4_moe_lite): exact per node against autograd
(training/backward_mla.py), tiny on the CPU and DeepSeek-V3 at full size on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_profiler import profile_model
from llm_profiler.ops import Counts
from llm_profiler.training import backward as tb
from llm_profiler.training.backward_mla import MLA_TYPES

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import validate_backward  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
MODELS = [
    "deepseek-v3",  # q_lora, interleaved rope, sigmoid grouped router + correction bias, shared expert
    str(CONFIGS / "transformers--Glm4MoeLiteConfig-defaults.json"),  # glm4_moe_lite: the same MLA code
]


def _failures(report) -> str:  # type: ignore[no-untyped-def]
    return report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, 2, 3) for m in MODELS] + [(m, 1, 5) for m in MODELS])
def test_mla_backward_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    report = validate_backward(model, batch, seq, tiny=True)
    assert report.ok, _failures(report)
    assert report.model_type in MLA_TYPES and report.model_type in tb.VALIDATED_MODEL_TYPES


def test_deepseek_v3_backward_exact_full_size_meta() -> None:
    """DeepSeek-V3 at B=1, S=5 (T=5): h 7168, H 128, q_lora 1536, kv_lora 512, dn 128, dr 64, dv 128, 256
    experts top-8, 61 layers (3 dense). The measured (autograd) counts equal the derivations."""
    report = validate_backward("deepseek-v3", 1, 5, tiny=False)
    assert report.ok, _failures(report)
    got = {(r.node, r.metric): r.measured for r in report.rows}
    t, H, dr, kr, qr, h = 5, 128, 64, 512, 1536, 7168
    a = "model.layers.3.self_attn"
    # interleaved rope over q (H heads) and the shared key (1 head), pairs = T*(H+1)*dr/2 = 20,640: the four
    # table muls back (4 MULT per pair) and the sub's neg (1 ADD per pair)
    pairs = t * (H + 1) * dr // 2
    assert (got[(f"{a}:rope", "mult")], got[(f"{a}:rope", "add")]) == (4 * pairs, pairs) == (82_560, 20_640)
    # kv_a_proj_with_mqa (h -> kr + dr): grad x T*h*(kr+dr-1) ADD, grad W (kr+dr)*h*(T-1) ADD, plus the
    # accumulations: the latent read twice by kv_a_layernorm (T*kr) and k_rot twice by rope's slices (2*T*dr)
    assert got[(f"{a}.kv_a_proj_with_mqa", "add")] == (
        t * h * (kr + dr - 1) + (kr + dr) * h * (t - 1) + t * kr + 2 * t * dr)
    # q_a_proj (h -> qr), read twice by q_a_layernorm: T*qr more ADD
    assert got[(f"{a}.q_a_proj", "add")] == t * h * (qr - 1) + qr * h * (t - 1) + t * qr
    # scores: the plain rule (no GQA) plus the shared rope key's expand summed over the H heads: (H-1)*T*dr
    model = profile_model("deepseek-v3")
    scores = next(n for n in model.nodes if n.path == f"{a}:scores")
    plain = tb.node_backward(scores)
    assert got[(f"{a}:scores", "add")] - int(Counts(plain)["add"](1, 5, 0)) == (H - 1) * t * dr == 40_640
