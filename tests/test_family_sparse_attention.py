"""deepseek_v32 and glm_moe_dsa (MLA + DeepSeek Sparse Attention with a lightning indexer, DeepSeek-V3 MoE):
published totals, hand-derived indexer counts, the indexer-key cache per layer, config quirks, the generation
closed form, and validation against transformers 5.23.

Hand-derived values use a tiny DeepSeek-V3.2: hidden h = 64, 4 heads, q_lora 48, kv_lora 32, qk_nope 16,
qk_rope r = 8, v 12, an indexer of Hi = 3 heads of Di = 16 dims keeping the top K = 4 keys, at B = 2, S = 3,
P = 5: T = B*S = 6 tokens, P + S = 8 keys.

Config sources: tests/family_configs/deepseek-ai--DeepSeek-V3.2.json is ../shared/hf-configs' copy
(ai-dynamo/aiconfigurator @ 095f58a51c4c, aic-core/src/aiconfigurator_core/model_configs/
deepseek-ai--DeepSeek-V3.2_config.json), also the deepseek-v3.2 preset; no real GLM-5 file was at hand:
transformers--GlmMoeDsaConfig-defaults.json is GlmMoeDsaConfig()'s defaults (transformers 5.23, GLM-5's dims).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from closed_forms import assert_generation_is_the_sum_of_forwards

from llm_profiler import ConfigError, profile, profile_model

CONFIGS = Path(__file__).parent / "family_configs"
V32 = str(CONFIGS / "deepseek-ai--DeepSeek-V3.2.json")
GLM = json.loads((CONFIGS / "transformers--GlmMoeDsaConfig-defaults.json").read_text())
TINY = {"model_type": "deepseek_v32", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 128, "q_lora_rank": 48,
        "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 12,
        "moe_intermediate_size": 24, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
        "first_k_dense_replace": 1, "index_n_heads": 3, "index_head_dim": 16, "index_topk": 4}
SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


# --- published totals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "params", "active"), [
    # DeepSeek-V3.2 = DeepSeek-V3 (671,026,404,352; active 37,552,282,624, tests/test_family_deepseek_chatglm.py)
    # + 61 lightning indexers of wq_b 1536*64*128 = 12,582,912, wk 7168*128 = 917,504, k_norm 2*128 = 256,
    # weights_proj 7168*64 = 458,752: 13,959,424 each, 851,524,864 in all (every token uses them: active too).
    # 671,877,929,216 without the multi-token-prediction layer (the Hub's "685B" counts its 14B).
    (V32, 671_877_929_216, 37_552_282_624 + 851_524_864),
    # GLM-5 dims (GlmMoeDsaConfig defaults), 78 layers: MLA q_a 6144*2048 + 2048, q_b 2048*64*256, kv_a 6144*576
    # + 512, kv_b 512*64*448, o 64*256*6144 = 165,022,208; indexer 2048*32*128 + 6144*128 + 256 + 6144*32 =
    # 9,371,904; norms 2*6144; 3 dense MLPs of 3*6144*12288 = 226,492,416; 75 MoE of 256*3*2048*6144 + 256*6144
    # + 3*2048*6144 = 9,702,998,016; embedding + head 2*154880*6144 = 1,903,165,440; final norm 6144:
    # 743,911,199,232 (published "744B"); active: 8 of 256 experts -> 41,784,709,632 (published "40B active").
    (GLM, 743_911_199_232, 41_784_709_632),
])
def test_published_totals(source: Any, params: int, active: int) -> None:
    prof = profile(source, 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


def test_preset_and_transformers_parameter_count() -> None:
    assert profile("deepseek-v3.2", 1, 1).total("params", "model") == 671_877_929_216
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.reference import reference

    model = reference(V32).build()  # the full-size model on the meta device
    assert sum(p.numel() for p in model.parameters()) == 671_877_929_216


# --- the lightning indexer, by hand ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Any:
    return profile(TINY, 2, 3, 5)


def test_indexer_projections_norm_and_rope(tiny: Any) -> None:
    v = tiny.values
    i = "model.layers.0.self_attn.indexer"
    assert (v[f"{i}.wq_b"]["macs"], v[f"{i}.wq_b"]["params"]) == (13_824, 2_304)  # 6 * 48 * (3*16); 48 * 48
    assert (v[f"{i}.wk"]["macs"], v[f"{i}.wk"]["params"]) == (6_144, 1_024)  # 6 * 64 * 16: ONE key head
    assert v[f"{i}.weights_proj"]["macs"] == 1_152  # 6 * 64 * 3: a weight per indexer head
    assert v[f"{i}.k_norm"]["params"] == 32  # LayerNorm(16): weight and bias
    # rotate_half on r = 8 dims of 3 query heads and 1 key: n = 6*4*8 = 192 rotated elements; x*cos, x_rot*sin:
    # 2n = 384 MULT; the negated half 6*4*4 = 96 and the sum n = 192: 288 ADD
    assert (v[f"{i}:rope"]["mult"], v[f"{i}:rope"]["add"]) == (384, 288)


def test_indexer_scores_by_hand(tiny: Any) -> None:
    s = tiny.values["model.layers.0.self_attn.indexer:scores"]
    # q @ k^T: 6 tokens x (3 x 16) @ (16 x 8 keys) = 2,304 MACs; weights (1 x 3) @ relu(3 x 8) per token: 144
    assert s["macs"] == 2_448
    # 2,304 products + 144 (* softmax_scale) + 18 (weights * 3**-0.5) + 144 products of the weighted sum
    assert s["mult"] == 2_610
    # 6*3*8*15 (q.k sums) + 6*8*2 (weighted head sums) + 6*8 (+ mask)
    assert s["add"] == 2_304
    assert s["cmp"] == 144  # ReLU over 6*3*8
    assert s["act"] == 546  # 144 + 144 + 144 + 18 + 48 + 48


def test_indexer_topk_binds_past_index_topk(tiny: Any) -> None:
    # 8 keys, K = 4 kept: 4 max scans of 7, 6, 5, 4 = 22 CMP per token; 4 values + 4 indices written
    t = tiny.values["model.layers.0.self_attn.indexer:topk"]
    assert (t["cmp"], t["act"]) == (6 * 22, 6 * 8)
    below = profile(TINY, 2, 3, 0).values["model.layers.0.self_attn.indexer:topk"]
    assert (below["cmp"], below["act"]) == (6 * 3, 6 * 6)  # 3 keys < K: all 3 kept, 2 + 1 CMP


def test_attention_is_dense_over_every_key(tiny: Any) -> None:
    # transformers masks the unselected keys: q @ k^T of every head over all 8 keys, qk dims 16 + 8
    assert tiny.values["model.layers.0.self_attn:scores"]["macs"] == 2 * 4 * 3 * 8 * 24
    assert tiny.values["model.layers.0.self_attn:context"]["macs"] == 2 * 4 * 3 * 8 * 12


def test_cache_holds_latent_and_indexer_keys_per_layer(tiny: Any) -> None:
    v = tiny.values
    for layer in (0, 1):
        a = f"model.layers.{layer}.self_attn"
        assert v[f"{a}:kv_cache"]["cache"] == 2 * (32 + 8) * 8  # the latent and the rope key, 8 tokens
        assert v[f"{a}.indexer:indexer_keys"]["cache"] == 2 * 16 * 8  # B * Di * (P + S)
        assert v[f"{a}.indexer:indexer_keys"]["kv"] == 0  # not attention keys / values
    node = tiny.model.graph.node("model.layers.0.self_attn.indexer:indexer_keys")
    (state,) = node.facts.states
    assert (state.kind, state.held(2, 3, 5), state.appended(2, 3, 5)) == ("indexer_keys", 256, 96)
    assert tiny.total("cache", "model") == 2 * (640 + 256)


# --- config quirks --------------------------------------------------------------------------------


def test_layer_patterns_and_sparse_mixer() -> None:
    spec = profile(V32, 1, 1).model.spec
    assert {layer.mixer.kind for layer in spec.layers} == {"sparse_attention"}
    assert [layer.ffn.kind for layer in spec.layers[:4]] == ["gated"] * 3 + ["moe"]  # first_k_dense_replace 3
    mixed = profile({**TINY, "num_hidden_layers": 3, "mlp_layer_types": ["sparse", "dense", "sparse"]}, 1, 1)
    assert [layer.ffn.kind for layer in mixed.model.spec.layers] == ["moe", "gated", "moe"]


@pytest.mark.parametrize(("changes", "shared"), [
    ({}, ()),  # defaults: index_topk_freq 1 -> every layer full
    ({"index_topk_pattern": "FSSF"}, (1, 2)),
    ({"indexer_types": ["full", "shared", "full", "shared"]}, (1, 3)),
    # full where max(i - 3 + 1, 0) % 2 == 0: layers 0, 1, 2 (0), 4 (2); shared 3, 5
    ({"num_hidden_layers": 6, "index_topk_freq": 2, "index_skip_topk_offset": 3}, (3, 5)),
])
def test_glm_shared_indexer_layers(changes: dict[str, Any], shared: tuple[int, ...]) -> None:
    prof = profile({**GLM, "num_hidden_layers": 4, **changes}, 1, 1, 3)
    assert prof.model.spec.shared_indexer_layers == shared
    for layer in range(prof.model.spec.num_layers):
        has = f"model.layers.{layer}.self_attn.indexer:topk" in prof.values
        assert has == (layer not in shared)
        keys = prof.values.get(f"model.layers.{layer}.self_attn.indexer:indexer_keys", {}).get("cache", 0)
        assert keys == (0 if layer in shared else 128 * 4)  # B * Di * (P + S)


def test_glm_indexer_rope_is_interleaved() -> None:
    glm = profile({**GLM, "num_hidden_layers": 1}, 1, 1).values["model.layers.0.self_attn.indexer:rope"]
    # 32 query heads + 1 key, 32 pairs of r = 64: 4 MULT and 2 ADD per pair (no negation)
    assert (glm["mult"], glm["add"]) == (4 * 33 * 32, 2 * 33 * 32)


@pytest.mark.parametrize(("changes", "field"), [
    ({"q_lora_rank": None}, "q_lora_rank"),
    ({"index_head_dim": 4}, "index_head_dim"),
])
def test_config_errors(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        profile({**TINY, **changes}, 1, 1)


def test_glm_pattern_errors() -> None:
    with pytest.raises(ConfigError, match="start with full"):
        profile({**GLM, "num_hidden_layers": 2, "index_topk_pattern": "SF"}, 1, 1)
    with pytest.raises(ConfigError, match="index_topk_pattern"):
        profile({**GLM, "num_hidden_layers": 2, "index_topk_pattern": "FX"}, 1, 1)


# --- generation closed form -----------------------------------------------------------------------


def test_generation_closed_form_equals_sum_of_forwards() -> None:
    # the top-k's min(P + S, K) stays linear: one closed form
    assert_generation_is_the_sum_of_forwards(profile_model(TINY), ("flops", "macs", "cmp", "act", "cache"))


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
        assert any(row.metric == "cache[indexer_keys]" for row in report.rows)


CASES = {
    "deepseek-v3.2": V32,
    "glm-5-defaults": GLM,
    "glm-shared-layers": {**GLM, "num_hidden_layers": 4, "index_topk_pattern": "FSSF"},
    "dsa-mlp-layer-types": {**TINY, "num_hidden_layers": 3, "mlp_layer_types": ["sparse", "dense", "sparse"]},
}


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_full_width_on_meta(case: str) -> None:
    # (1, 1, 2050): 2051 keys, past index_topk = 2048 (the top-k binds at full size)
    _validate(CASES[case], tiny=False, shapes=[*SHAPES, (1, 1, 2050)])


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_tiny_on_cpu(case: str) -> None:
    # the tiny indexer keeps 4 keys: (2, 3, 0) below it, (3, 7, 5) and (1, 1, 9) past it
    _validate(CASES[case], tiny=True, shapes=SHAPES)
