"""gemma4 (text; the multimodal gemma4 config through its text_config): the published Gemma 4 26B-A4B totals,
hand-derived nodes (sliding / full layers with their own head dims, k_eq_v, the MoE beside the dense MLP,
per-layer embeddings, KV sharing), the cache per layer, the generation closed form, and validation against
transformers 5.23.

Hand-derived values use a tiny config: hidden h = 64, 4 heads; sliding layers 2 KV heads of D = 24, full layers
(k_eq_v) 1 KV head of Dg = 32; window W = 4; MLP 96; 4 experts of 16, top 2; vocabulary 128; layers
[sliding, full], at B = 2, S = 3, P = 5: T = 6 tokens, sliding keys min(P, W-1) + S = 6, full keys P + S = 8.

Config sources: tests/family_configs/google--gemma-4-26B-A4B.json is ../shared/hf-configs' copy (ai-dynamo/
aiconfigurator @ 095f58a51c4c, aic-core/src/aiconfigurator_core/model_configs/google--gemma-4-26B-A4B_config.json),
also the gemma-4-26b-a4b preset; transformers--Gemma4TextConfig-defaults.json is Gemma4TextConfig()'s defaults
(transformers 5.23: per-layer embeddings of 256, no MoE).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from closed_forms import assert_generation_is_the_sum_of_forwards

from llm_profiler import ConfigError, profile, profile_model

CONFIGS = Path(__file__).parent / "family_configs"
A4B = str(CONFIGS / "google--gemma-4-26B-A4B.json")
DEFAULTS = json.loads((CONFIGS / "transformers--Gemma4TextConfig-defaults.json").read_text())
ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}}
TINY = {"model_type": "gemma4_text", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 24, "global_head_dim": 32, "attention_k_eq_v": True, "num_global_key_value_heads": 1,
        "layer_types": ["sliding_attention", "full_attention"], "num_hidden_layers": 2, "sliding_window": 4,
        "intermediate_size": 96, "vocab_size": 128, "hidden_size_per_layer_input": 0, "enable_moe_block": True,
        "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 16, "final_logit_softcapping": 30.0,
        "rope_parameters": ROPE}
PLE = {**TINY, "hidden_size_per_layer_input": 8, "vocab_size_per_layer_input": 128}
SHARED = {**TINY, "layer_types": ["sliding_attention", "full_attention"] * 2, "num_hidden_layers": 4,
          "num_kv_shared_layers": 2, "use_double_wide_mlp": True}
SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


# --- published totals -----------------------------------------------------------------------------


def test_gemma_4_26b_a4b_published_totals() -> None:
    # 30 layers (25 sliding, 5 full), hidden 2816, 16 heads. Sliding attention: q 2816*16*256, k and v 2816*8*256,
    # o 16*256*2816, q/k norms 2*256 = 34,603,520. Full (k_eq_v, 2 KV heads of 512): q 2816*16*512, k 2816*2*512,
    # o 16*512*2816, norms 2*512 = 49,021,952. Every layer: dense MLP 3*2816*2112 = 17,842,176; 128 experts of
    # 3*2816*704 (761,266,176); router proj 128*2816 + scale 2816 + per_expert_scale 128 = 363,392; 7 norms of
    # 2816 = 19,712: 779,491,456. Tied embedding 262144*2816 = 738,197,504, final norm 2816:
    # 25*(34,603,520 + 779,491,456) + 5*(49,021,952 + 779,491,456) + 738,200,320 = 25,233,141,760 (the
    # published "25.2B total"); active: 120 of 128 experts left out per layer: 3,822,530,560 ("3.8B active").
    prof = profile(A4B, 1, 1)
    assert prof.total("params", "model") == 25_233_141_760
    assert prof.total("active_params", "model") == 3_822_530_560
    assert profile("gemma-4-26b-a4b", 1, 1).total("params", "model") == 25_233_141_760


def test_transformers_counts_the_same_text_model() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.reference import reference

    model = reference(A4B).build()  # Gemma4ForCausalLM from text_config, on the meta device
    assert sum(p.numel() for p in model.parameters()) == 25_233_141_760


# --- nodes by hand ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Any:
    return profile(TINY, 2, 3, 5)


def test_sliding_and_full_layers_have_their_own_heads(tiny: Any) -> None:
    v = tiny.values
    a0, a1 = "model.layers.0.self_attn", "model.layers.1.self_attn"
    assert v[f"{a0}.k_proj"]["macs"] == v[f"{a0}.v_proj"]["macs"] == 6 * 64 * 2 * 24  # 18,432
    assert v[f"{a1}.k_proj"]["macs"] == 6 * 64 * 32  # one KV head of 32
    assert f"{a1}.v_proj" not in v  # k_eq_v: the values are the k_proj output
    assert v[f"{a0}:kv_cache"]["cache"] == 2 * 2 * 48 * 3  # window - 1 = 3 tokens held
    assert v[f"{a1}:kv_cache"]["cache"] == 2 * 1 * 64 * 8  # keys and values (two tensors) of 8 tokens
    assert v[f"{a0}:scores"]["macs"] == 2 * 4 * 3 * 6 * 24  # 6 keys in the window
    assert v[f"{a1}:scores"]["macs"] == 2 * 4 * 3 * 8 * 32
    # q: 6*4*24 = 576 rotated, k: 6*2*24 = 288: 2*(576 + 288) MULT, (576 + 288)/2 negations + 864 ADD
    assert (v[f"{a0}:rope"]["mult"], v[f"{a0}:rope"]["add"]) == (1_728, 1_296)
    assert v[f"{a1}.v_norm"]["params"] == 0  # v_norm has no weight
    assert v[f"{a0}.v_norm"]["mult"] == 2 * 6 * 2 * 24  # x^2 and x * rstd (no weight multiply)


def test_rotary_tables_per_layer_type(tiny: Any) -> None:
    # sliding 24 wide, full (proportional) 32 wide, S = 3 rows each: freqs S*w/2, cos / sin S*w each, and each
    # times attention_scaling: 3*12 + 2*3*24 + 3*16 + 2*3*32 = 420 MULT; 2*3*(24 + 32) = 336 EXP
    t = tiny.values["model.rotary_emb"]
    assert (t["mult"], t["exp"]) == (420, 336)


def test_moe_beside_the_dense_mlp(tiny: Any) -> None:
    v = tiny.values
    router = v["model.layers.0.router"]
    # * scale * hidden**-0.5: 2*6*64; w * per_expert_scale: 6*2 -> 780 MULT; top 2 of 4: 6*2*(8-2-1)/2 = 30 and
    # the softmax's max 6*3 = 18 CMP; w / sum(w): 12 DIV + the softmax's 24
    assert (router["mult"], router["cmp"], router["div"], router["params"]) == (780, 48, 36, 68)
    experts = v["model.layers.0.experts"]
    assert (experts["params"], experts["active_params"]) == (4 * 3 * 64 * 16, 2 * 3 * 64 * 16)
    assert v["model.layers.0.mlp.gate_proj"]["macs"] == 6 * 64 * 96  # the dense MLP on every token
    assert v["model.layers.0:combine"]["add"] == 6 * 64  # MLP + experts
    assert v["model.layers.0:layer_scalar"]["mult"] == 6 * 64
    assert v["model.layers.0:residual"]["add"] == 2 * 6 * 64
    assert tiny.values[":final_softcap"]["exp"] == 6 * 128  # tanh(logits / 30) * 30


def test_per_layer_embeddings() -> None:
    v = profile(PLE, 2, 3, 5).values
    # the packed table: 128 x (2 layers * 8), * sqrt(8) over 6*16 = 96 elements
    assert (v["model.embed_tokens_per_layer"]["params"], v["model.embed_tokens_per_layer"]["mult"]) == (2_048, 96)
    assert v["model.per_layer_model_projection"]["macs"] == 6 * 64 * 16
    mix = v["model:per_layer_inputs"]  # projection * 64**-0.5, (projection + table) * 2**-0.5
    assert (mix["mult"], mix["add"]) == (192, 96)
    assert v["model.layers.0.per_layer_input_gate"]["macs"] == 6 * 64 * 8
    assert v["model.layers.0:per_layer_input"]["mult"] == 6 * 8
    assert v["model.layers.0.per_layer_projection"]["macs"] == 6 * 8 * 64
    assert v["model.layers.0:residual"]["add"] == 3 * 6 * 64  # a third residual addition


def test_kv_shared_layers_reuse_keys_and_values() -> None:
    prof = profile(SHARED, 2, 3, 5)
    v = prof.values
    assert prof.model.spec.kv_shared_layers == (2, 3)
    for layer in (2, 3):
        a = f"model.layers.{layer}.self_attn"
        assert f"{a}.k_proj" not in v and f"{a}:kv_cache" not in v
        assert v[f"{a}:rope"]["mult"] == 2 * 6 * 4 * (24 if layer == 2 else 32)  # q only
    assert v["model.layers.2.self_attn:scores"]["macs"] == v["model.layers.0.self_attn:scores"]["macs"]
    assert v["model.layers.2.mlp.gate_proj"]["macs"] == 6 * 64 * 192  # double-wide MLP on shared layers
    assert v["model.layers.0.mlp.gate_proj"]["macs"] == 6 * 64 * 96
    assert prof.total("cache", "model") == 576 + 1_024  # layers 0 and 1 only


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="num_kv_shared_layers"):  # no full layer before the shared ones
        profile({**TINY, "num_kv_shared_layers": 1}, 1, 1)
    with pytest.raises(ConfigError, match="use_bidirectional_attention"):
        profile({**TINY, "use_bidirectional_attention": "all"}, 1, 1)
    with pytest.raises(ConfigError, match="rope_type"):
        profile({**TINY, "rope_parameters": {**ROPE, "full_attention": {"rope_type": "dynamic", "factor": 2.0}}}, 1, 1)


def test_multimodal_config_profiles_its_text_model() -> None:
    prof = profile(A4B, 1, 1)
    assert prof.model.spec.model_type == "gemma4_text"
    assert any("text_config" in note for note in prof.model.spec.notes)
    layers = prof.model.spec.layers
    assert [layer.mixer.kind for layer in layers[:6]] == ["sliding_attention"] * 5 + ["attention"]


# --- generation closed form -----------------------------------------------------------------------


@pytest.mark.parametrize("config", [TINY, PLE, SHARED], ids=["moe", "ple", "kv-shared"])
def test_generation_closed_form_equals_sum_of_forwards(config: dict[str, Any]) -> None:
    # the sliding layers' min(P, W - 1) splits at the window
    assert_generation_is_the_sum_of_forwards(profile_model(config), ("flops", "macs", "act", "cache"))


# --- validation against transformers -----------------------------------------------------------------


def _validate(config: Any, tiny: bool, shapes: list[tuple[int, int, int]]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for shape in shapes:
        report = validate(config, *shape, tiny=tiny, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()


CASES = {
    "gemma-4-26b-a4b": A4B,
    "gemma4-text-defaults": DEFAULTS,  # per-layer embeddings of 256, dense
    "gemma4-kv-shared-double-wide": {**DEFAULTS, "num_kv_shared_layers": 12, "use_double_wide_mlp": True},
    "gemma4-moe-ple-kv-shared": {**json.loads(Path(A4B).read_text())["text_config"], "num_kv_shared_layers": 6,
                                 "hidden_size_per_layer_input": 64, "use_double_wide_mlp": True},
}


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_full_width_on_meta(case: str) -> None:
    # (1, 2, 1030): past the 26B's window of 1024 (the defaults' 512)
    _validate(CASES[case], tiny=False, shapes=[*SHAPES, (1, 2, 1030)])


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_tiny_on_cpu(case: str) -> None:
    # tiny window 4: (2, 3, 0) inside it, (3, 7, 5) and (1, 1, 9) past it
    _validate(CASES[case], tiny=True, shapes=SHAPES)
