"""Backward of multi-head latent attention (deepseek_v3, glm4_moe_lite, deepseek_v2, and with DSA deepseek_v32,
glm_moe_dsa): exact per node against autograd
(training/backward_mla.py), tiny on the CPU and DeepSeek-V3 at full size on the meta device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import profile_model
from llm_profiler.ops import Counts
from llm_profiler.training import backward as tb
from llm_profiler.training.backward_mla import MLA_TYPES

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import validate_backward  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
# DeepSeek-V2-Lite's config.json, as tests/test_family_deepseek_chatglm.py holds it (the source is named there)
V2_LITE: dict[str, Any] = {
    "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 10944,
    "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2,
    "norm_topk_prob": False, "num_attention_heads": 16, "num_experts_per_tok": 6, "num_hidden_layers": 27,
    "num_key_value_heads": 16, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06, "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
    "tie_word_embeddings": False, "topk_group": 1, "topk_method": "greedy", "v_head_dim": 128, "vocab_size": 102400,
}
V3 = json.loads((Path(__file__).parent.parent / "llm_profiler/presets/deepseek-ai--DeepSeek-V3.json").read_text())
MODELS: list[Any] = [
    "deepseek-v3",  # q_lora, interleaved rope, sigmoid grouped router + correction bias, shared expert
    str(CONFIGS / "transformers--Glm4MoeLiteConfig-defaults.json"),  # glm4_moe_lite: the same MLA code
    V2_LITE,  # deepseek_v2: no q_lora (q_proj), complex rope, softmax greedy router
    {**V2_LITE, "topk_method": "group_limited_greedy", "n_group": 8, "topk_group": 3, "q_lora_rank": 1536},
    {**V3, "rope_interleave": False},  # deepseek_v3 with rotate_half rope (x * cos, rotate_half's two slices)
    # minicpm3: MLA with rotate_half rope, dense MLPs, scaled embedding / residuals / final hidden states
    str(CONFIGS / "transformers--MiniCPM3Config-defaults.json"),
    {**json.loads((CONFIGS / "transformers--MiniCPM3Config-defaults.json").read_text()), "q_lora_rank": None},
    str(CONFIGS / "deepseek-ai--DeepSeek-V3.2.json"),  # deepseek_v32: MLA + DSA indexer (tiny index_topk 4)
    str(CONFIGS / "transformers--GlmMoeDsaConfig-defaults.json"),  # glm_moe_dsa
]
DSA = MODELS[-2:]


def _failures(report) -> str:  # type: ignore[no-untyped-def]
    return report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, 2, 3) for m in MODELS] + [(m, 1, 5) for m in MODELS],
                         ids=[f"{i % len(MODELS)}-{b}x{s}" for i, (b, s) in enumerate([(2, 3)] * len(MODELS)
                                                                                     + [(1, 5)] * len(MODELS))])
def test_mla_backward_exact_per_node_tiny(model: Any, batch: int, seq: int) -> None:
    report = validate_backward(model, batch, seq, tiny=True)
    assert report.ok, _failures(report)
    assert report.model_type in MLA_TYPES and report.model_type in tb.VALIDATED_MODEL_TYPES


@pytest.mark.parametrize("model", DSA)
def test_dsa_backward_exact_past_index_topk(model: str) -> None:
    """S = 9 > the tiny index_topk of 4: the indexer's top-k binds; its scores and top-k send no gradient back
    (only indices leave it), so its nodes have no backward and its projections' weights get none."""
    report = validate_backward(model, 1, 9, tiny=True)
    assert report.ok, _failures(report)
    assert not [r for r in report.rows if ".indexer" in r.node and r.measured]


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


def test_minicpm3_backward_exact_full_size_meta() -> None:
    report = validate_backward(str(CONFIGS / "transformers--MiniCPM3Config-defaults.json"), 1, 5, tiny=False)
    assert report.ok, _failures(report)
