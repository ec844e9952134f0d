"""Backward counts per node (llm_profiler.training.backward) against autograd (validation.backward)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_profiler import profile_model
from llm_profiler.training.backward import (
    LOSS,
    BackwardUnsupportedError,
    backward_counts,
    rms_norm_backward,
    silu_backward,
    softmax_backward,
)

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import validate_backward  # noqa: E402


def _at(counts: dict, b: int, s: int) -> dict[str, int]:
    return {k: int(v(b, s, 0)) if hasattr(v, "evaluate") else int(v) for k, v in counts.items()}


def test_rms_norm_backward_op_by_op() -> None:
    # rows 6, n 64: MULT 6*384 + 4*6 = 2328 (g*y, g*w, g*r, g*x, 2*, *g on x^1; r^3 (2), *-0.5, *g per row)
    # ADD 64*5 (sum of g*y over the rows) + 6*63 (sum of g*x over n) = 698; DIV = EXP = 384 (mean, x^1)
    c = rms_norm_backward(6, 64)
    assert (c["mult"], c["add"], c["div"], c["exp"], c["act"]) == (2328, 698, 384, 384, 8 * 384 + 64 + 24)


def test_elementwise_backward_rules() -> None:
    assert dict(silu_backward(10)) == {"exp": 10, "add": 30, "div": 10, "mult": 30, "act": 10}
    # 8 rows of 3: MULT 2*24, ADD 8*(2*3-1) = 40
    assert dict(softmax_backward(8, 3)) == {"mult": 48, "add": 40, "act": 24}


def test_llama_8b_backward_values() -> None:
    """Llama-3.1-8B at B=1, S=2048: h 4096, H 32, KV 8, D 128, I 14336, V 128256, untied."""
    model = profile_model("llama-3.1-8b")
    back = backward_counts(model)
    t, h = 2048, 4096
    q = _at(back["model.layers.0.self_attn.q_proj"], 1, t)
    # grad x: (T x h) @ (h x h), grad W: (h x T) @ (T x h): 2*T*h*h MACs; ADD T*h*(h-1) + h*h*(T-1);
    # plus rope's fan-out: q read 3 times (x*cos, two rotate_half slices): 2*T*h ADD
    assert q["macs"] == 2 * t * h * h == 68_719_476_736
    assert q["add"] == t * h * (h - 1) + h * h * (t - 1) + 2 * t * h
    # the forward's matmul MACs are exactly half of the backward's, node by node (the "2x" rule)
    fwd = model.at(1, t).values
    for path in ("model.layers.0.mlp.down_proj", "lm_head", "model.layers.0.self_attn:scores"):
        assert _at(back[path], 1, t)["macs"] == 2 * fwd[path]["macs"]
    # scores: grad q and grad k (2 * B*H*S*K*D MACs); the scaling mul back (B*H*S*K); GQA: the keys' 4 repeated
    # heads summed, 3 ADD per KV element (B*KV*K*D)
    s = _at(back["model.layers.0.self_attn:scores"], 1, t)
    assert s["macs"] == 2 * 32 * t * t * 128
    assert s["mult"] == s["macs"] + 32 * t * t
    assert s["add"] == 2 * 32 * t * 128 * (t - 1) + 3 * 8 * t * 128
    loss = _at(back[LOSS], 1, t)
    # log_softmax backward over V per row: EXP V, MULT V, ADD 2V-1; nll: one DIV and one neg
    assert loss["exp"] == t * 128256 and loss["div"] == 1 and loss["add"] == t * (2 * 128256 - 1) + 1


def test_unsupported_family_is_a_profiler_error() -> None:
    # DBRX normalises its top-k weights by their 1-norm (moe_normalize_expert_weights = 1, every checkpoint);
    # another p-norm has no rule yet
    data = json.loads((CONFIGS / "databricks--dbrx-instruct.json").read_text())
    data["ffn_config"] = {**data["ffn_config"], "moe_normalize_expert_weights": 2}
    with pytest.raises(BackwardUnsupportedError, match="moe_normalize_expert_weights=2"):
        backward_counts(profile_model(data))


CONFIGS = Path(__file__).parent / "family_configs"
# granite-3.1-3b-a800m with a shared MLP of 1024 beside its 40 experts (a granitemoeshared config)
GRANITE_SHARED = str(CONFIGS / "ibm-granite--granite-3.1-3b-a800m-instruct-shared.json")
EXACT_MODELS = [
    "llama-3.2-1b",  # llama: GQA (4 heads, 2 KV), tied embedding
    "meta-llama/Llama-2-7b-hf",  # llama: MHA, untied
    "Qwen/Qwen2.5-0.5B",  # qwen2: q/k/v biases (bias grad = sum over rows)
    "Qwen/Qwen3-8B",  # qwen3: q_norm / k_norm
    "mistralai/Mistral-7B-v0.1",  # mistral: sliding window 4 (binds at S = 5)
    str(CONFIGS / "transformers--SmolLM3Config-defaults.json"),  # smollm3: NoPE layers (no rope fan-out)
    str(CONFIGS / "transformers--HeliumConfig-defaults.json"),  # helium
    str(CONFIGS / "transformers--SeedOssConfig-defaults.json"),  # seed_oss
    str(CONFIGS / "transformers--Ernie4_5Config-defaults.json"),  # ernie4_5: interleaved rope
    str(CONFIGS / "transformers--GraniteConfig-defaults.json"),  # granite: embedding/residual multipliers, logits scaling
    str(CONFIGS / "transformers--GlmConfig-defaults.json"),  # glm: partial rotary (rope slices q), fused gate_up
    str(CONFIGS / "transformers--Glm4Config-defaults.json"),  # glm4: post-sublayer norms
    "microsoft/Phi-3-mini-4k-instruct",  # phi3: fused qkv_proj sliced into q, k, v
    "google/gemma-2b",  # gemma: (1 + w) RMSNorm, scaled embedding, gelu (tanh) backward
    "google/gemma-2-9b",  # gemma2: pre and post norms around each block, attention and final soft-capping
    "google/gemma-3-27b-pt",  # gemma3_text: sliding and full layers, q/k norms
    "bigcode/starcoder2-7b",  # starcoder2: LayerNorm (native_layer_norm_backward), biases, plain gelu MLP
    str(CONFIGS / "stabilityai--stablelm-2-zephyr-1_6b.json"),  # stablelm: LayerNorm, partial rotary slices
    str(CONFIGS / "transformers--OlmoConfig-defaults.json"),  # olmo: LayerNorm without parameters
    str(CONFIGS / "allenai--Olmo-3.1-32B-Instruct.json"),  # olmo3: post-norms only, full-width q/k norms
    str(CONFIGS / "LGAI-EXAONE--EXAONE-4.0-32B.json"),  # exaone4: post-norms, hybrid sliding layers
    "mistralai/Mixtral-8x7B-v0.1",  # mixtral: softmax top-k router, batched_mm experts
    "Qwen/Qwen3-30B-A3B",  # qwen3_moe
    "Qwen/Qwen1.5-MoE-A2.7B",  # qwen2_moe: shared expert with a sigmoid gate
    str(CONFIGS / "allenai--OLMoE-1B-7B-0924.json"),  # olmoe
    str(CONFIGS / "ibm-granite--granite-3.1-3b-a800m-instruct.json"),  # granitemoe: top-k then softmax
    GRANITE_SHARED,  # granitemoeshared: granitemoe + a shared MLP (input_linear reads the norm's output)
    str(CONFIGS / "rednote-hilab--dots.llm1.inst.json"),  # dots1: sigmoid, correction bias, groups, shared
    str(CONFIGS / "zai-org--GLM-4.5-Air.json"),  # glm4_moe
    str(CONFIGS / "transformers--ExaoneMoeConfig-defaults.json"),  # exaone_moe
    str(CONFIGS / "MiniMaxAI--MiniMax-M2.5.json"),  # minimax_m2
    "google/vaultgemma-1b",  # vaultgemma: gemma2 without post-norms, every layer full
    str(CONFIGS / "transformers--CwmConfig-defaults.json"),  # cwm: sliding layers between full ones, both masks
    str(CONFIGS / "transformers--SolarOpenConfig-defaults.json"),  # solar_open: glm4_moe routing on every layer
]
EXACT_TINY = [(m, 2, 3) for m in EXACT_MODELS] + [(m, 1, 5) for m in EXACT_MODELS]


def test_validated_list_is_what_is_tested() -> None:
    from llm_profiler.training.backward import DENSE_VALIDATED_MODEL_TYPES, VALIDATED_MODEL_TYPES
    from llm_profiler.training.backward_families import VALIDATED as FAMILY_VALIDATED  # their own test files
    from llm_profiler.validation.reference import reference

    # the GPT-style / other dense layouts: tests/test_training_backward_dense.py; the MLA / MoE / SSM families:
    # tests/test_training_backward_{mla,moe,ssm}.py
    assert {reference(m, tiny=True).profile.spec.model_type for m in EXACT_MODELS} == (
        VALIDATED_MODEL_TYPES - DENSE_VALIDATED_MODEL_TYPES - FAMILY_VALIDATED)


@pytest.mark.parametrize(("model", "batch", "seq"), EXACT_TINY)
def test_backward_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    report = validate_backward(model, batch, seq, tiny=True)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])
    nodes = {r.node for r in report.rows}
    assert LOSS in nodes and "lm_head" in nodes


def test_backward_exact_per_node_full_size_meta() -> None:
    report = validate_backward("llama-3.2-1b", 1, 5, tiny=False)  # 16 layers, h 2048, V 128256, on meta
    assert report.ok, report.summary_line()
    macs = {r.node: r.measured for r in report.rows if r.metric == "macs"}
    # q_proj of Llama-3.2-1B (h = 2048, 32 x 64 = 2048 outputs): 2 * 5 * 2048 * 2048
    assert macs["model.layers.0.self_attn.q_proj"] == 2 * 5 * 2048 * 2048


def test_moe_backward_exact_full_size_meta() -> None:
    report = validate_backward("mistralai/Mixtral-8x7B-v0.1", 1, 5, tiny=False)  # 32 layers, 8 experts, top-2
    assert report.ok, report.summary_line()
    adds = {r.node: r.measured for r in report.rows if r.metric == "add"}
    macs = {r.node: r.measured for r in report.rows if r.metric == "macs"}
    h, i, pairs = 4096, 14336, 5 * 2
    # the experts' bmms backwards: 2 x the forward's pairs * 3*h*I MACs
    assert macs["model.layers.0.mlp.experts"] == 2 * pairs * 3 * h * i
    # ADD: grad x of gate_up (pairs*h*(2I-1)) and of down (pairs*I*(h-1)); grad w = sum_h(g * out)
    # (pairs*(h-1)); the gathered expert weights' gradients scattered back (pairs*3*h*I); the k=2 copies of
    # each token summed (5*h)
    assert adds["model.layers.0.mlp.experts"] == (
        pairs * h * (2 * i - 1) + pairs * i * (h - 1) + pairs * (h - 1) + pairs * 3 * h * i + 5 * h)


def test_granite_shared_mlp_post_norm_accumulation() -> None:
    """granitemoeshared's post_attention_layernorm output is read three times: the router and the experts (both
    through the MoE's reshape, one view) and the shared MLP's input_linear (output_linear reads the gate
    product, not the norm): 2 adds of T*h on the norm; granitemoe (no shared MLP): router and experts, 1 add."""
    t, h = 2 * 3, 1536
    norm = rms_norm_backward(t, h)["add"]  # h*(t-1) + t*(h-1) = 7680 + 9210 = 16890
    assert norm == 16890
    path = "model.layers.0.post_attention_layernorm"
    shared = _at(backward_counts(profile_model(GRANITE_SHARED))[path], 2, 3)
    plain = _at(backward_counts(profile_model(str(CONFIGS / "ibm-granite--granite-3.1-3b-a800m-instruct.json")))[path],
                2, 3)
    assert shared["add"] == norm + 2 * t * h == 35322  # 16890 + 2*6*1536
    assert plain["add"] == norm + 1 * t * h == 26106  # 16890 + 6*1536


def test_a_moved_accumulation_fails_on_both_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Charging the residual stream's accumulation to the norm that reads it instead of the node that wrote it
    fails on exactly those two nodes."""
    import llm_profiler.training.backward as tb
    from llm_profiler.ops import Counts

    real = tb.accumulations

    def moved(model):  # type: ignore[no-untyped-def]
        out = dict(real(model))
        n = tb.TOKENS * model.spec.hidden_size
        out["model.embed_tokens"] = out["model.embed_tokens"] + Counts({"add": -n})
        out["model.layers.0.input_layernorm"] = out["model.layers.0.input_layernorm"] + Counts({"add": n})
        return out

    monkeypatch.setattr(tb, "accumulations", moved)
    report = validate_backward("llama-3.2-1b", 2, 3, tiny=True)
    assert {(r.node, r.metric) for r in report.mismatches} == {
        ("model.embed_tokens", "add"), ("model.layers.0.input_layernorm", "add")}
