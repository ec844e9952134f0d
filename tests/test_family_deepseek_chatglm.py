"""DeepSeek-V2 / V3 (MLA + DeepSeek MoE) and ChatGLM-6B: hand-derived counts, preset totals, validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llm_profiler.config import load_config
from llm_profiler.config.presets import find_preset
from llm_profiler.errors import ConfigError, ValidationUnavailableError
from llm_profiler.families import build_spec, get_family
from llm_profiler.families.deepseek import decompressed_cache_per_token, latent_cache_per_token
from llm_profiler.profile import profile, profile_model

# DeepSeek-V2-Lite's config.json (deepseek-ai/DeepSeek-V2-Lite): 15.7B total, 2.4B active as published.
V2_LITE: dict[str, Any] = {
    "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 100000, "eos_token_id": 100001, "first_k_dense_replace": 1, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "model_type": "deepseek_v2", "moe_intermediate_size": 1408,
    "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2, "norm_topk_prob": False,
    "num_attention_heads": 16, "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16,
    "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "tie_word_embeddings": False,
    "topk_group": 1, "topk_method": "greedy", "v_head_dim": 128, "vocab_size": 102400,
}
# A small DeepSeek-V2 with every optional quirk: low-rank q, group-limited routing, biases.
V2_SMALL: dict[str, Any] = {
    **V2_LITE, "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 96, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 24,
    "n_routed_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 48, "intermediate_size": 320,
    "topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2, "attention_bias": True,
    "mlp_bias": True, "vocab_size": 512,
}
SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


def v3_config() -> dict[str, Any]:
    return copy.deepcopy(load_config("deepseek-v3").data)


# --- DeepSeek-V3: params and active params -----------------------------------------------------------
def test_deepseek_v3_params_match_published_total() -> None:
    # h=7168, H=128, q_lora 1536, kv_lora 512, qk_nope 128, qk_rope 64, v_head 128, vocab 129280, 61 layers.
    # attention per layer: q_a 7168*1536 + q_a_norm 1536 + q_b 1536*128*192 + kv_a 7168*576 + kv_a_norm 512
    #   + kv_b 512*128*256 + o 128*128*7168 = 187,107,328; two layer norms 2*7168.
    # dense MLP (3 layers): 3*7168*18432 = 396,361,728.
    # MoE (58 layers): router 256*7168 + 256 experts * 3*2048*7168 + 1 shared 3*2048*7168 = 11,320,164,352.
    # embed + lm_head 2*129280*7168, final norm 7168:
    # 61*(187,107,328 + 14,336) + 3*396,361,728 + 58*11,320,164,352 + 2*926,679,040 + 7168 = 671,026,404,352
    model = profile_model("deepseek-v3")
    assert model.expr("params", "model") == 671_026_404_352
    assert find_preset("deepseek-v3").published_params == 671_026_404_352  # type: ignore[union-attr]


def test_deepseek_v3_active_params() -> None:
    # One token uses, per MoE layer: router 256*7168 = 1,835,008 + top-8 experts 8*44,040,192 + the shared
    # expert 44,040,192 = 398,196,736 (instead of 11,320,164,352); everything else in full:
    # 61*(187,107,328 + 14,336) + 3*396,361,728 + 58*398,196,736 + 2*926,679,040 + 7168 = 37,552,282,624
    # (published: 37B active; this count includes the embedding and lm_head, 1.85B together).
    assert profile_model("deepseek-v3").expr("active_params", "model") == 37_552_282_624


def test_deepseek_v3_cache_is_the_mla_latent() -> None:
    # transformers 5.23 caches the compressed latent: kv_lora 512 + qk_rope 64 = 576 per token and layer;
    # B=2, S=3, P=5: 61 layers * 2 * 8 tokens * 576 = 562,176.
    assert profile("deepseek-v3", 2, 3, 5).total("cache") == 562_176
    _, spec = build_spec(v3_config())
    assert latent_cache_per_token(spec) == 576  # type: ignore[arg-type]
    assert decompressed_cache_per_token(spec) == 40_960  # type: ignore[arg-type]  # 128 * (128+64+128)


def test_deepseek_v3_kv_b_proj_reexpands_every_cached_token() -> None:
    # decode B=1, S=1, P=9: kv_b_proj runs on the 10 held latents: 10 * 512 * (128*256) MACs = 167,772,160
    values = profile_model("deepseek-v3").node_values(1, 1, 9)
    assert values["model.layers.0.self_attn.kv_b_proj"]["macs"] == 167_772_160


def test_deepseek_v3_router_and_experts_counts() -> None:
    # B*S = 2 tokens, layer 3 (the first MoE layer), E=256, k=8, 8 groups of 32, 4 groups kept.
    values = profile_model("deepseek-v3").node_values(1, 2, 0)
    gate = values["model.layers.3.mlp.gate"]
    # CMP: top-2 in each group 2*8*(2*2*32-2-1)/2 = 2*8*61 = 976; top-4 of 8 groups 2*(4*(16-4-1)/2) = 44;
    # ~mask 2*256 = 512; top-8 of 256: 2*(8*(512-8-1)/2) = 4024 -> 5556
    assert gate["cmp"] == 5556
    experts = values["model.layers.3.mlp.experts"]
    # 2 tokens * 8 pairs: gate_up 16*4096*7168 + down 16*7168*2048 MACs = 469,762,048 + 234,881,024
    assert experts["macs"] == 704_643_072
    assert experts["params"] == 256 * 3 * 2048 * 7168
    assert experts["active_params"] == 8 * 3 * 2048 * 7168


# --- DeepSeek-V2 -------------------------------------------------------------------------------------
def test_deepseek_v2_lite_params() -> None:
    # h=2048, H=16, no q_lora: q_proj 2048*16*192; kv_a 2048*576 + 512; kv_b 512*16*256; o 16*128*2048
    #   = 13,763,072 per layer; norms 2*2048; dense layer 0: 3*2048*10944.
    # MoE (26 layers): router 64*2048 + 64 * 3*1408*2048 + shared 2 * 3*1408*2048 = 571,080,704.
    # 27*(13,763,072 + 4096) + 67,239,936 + 26*571,080,704 + 2*102400*2048 + 2048 = 15,706,484,224 (15.7B)
    model = profile_model(V2_LITE)
    assert model.expr("params", "model") == 15_706_484_224
    # active: MoE layer = 64*2048 + (6 + 2) * 8,650,752 = 69,337,088 -> 2,661,150,208
    # (published 2.4B active excludes the 0.42B of embedding + lm_head)
    assert model.expr("active_params", "model") == 2_661_150_208


def test_deepseek_v2_spec_quirks() -> None:
    _, spec = build_spec(V2_LITE)
    assert spec.q_lora_rank == 0 and spec.rope_style == "complex" and spec.router == "softmax_greedy"  # type: ignore[attr-defined]
    assert spec.head_dim == 192 and spec.rotary_dim == 64
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        build_spec({**V2_LITE, "num_key_value_heads": 4})
    with pytest.raises(ConfigError, match="topk_method"):
        build_spec({**V2_LITE, "topk_method": "noaux_tc"})
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        build_spec({**V2_LITE, "num_experts_per_tok": 65})
    _, spec = build_spec({**V2_LITE, "moe_layer_freq": 2})
    assert any("moe_layer_freq" in note for note in spec.notes)


def test_deepseek_v2_complex_rope_counts() -> None:
    # V2-Lite, B*S = 1 token: q has 16 heads * 32 pairs, the shared key 1 * 32 pairs = 544 complex products:
    # 4 MULT + 2 ADD each -> 2176 MULT, 1088 ADD
    rope = profile_model(V2_LITE).node_values(1, 1, 0)["model.layers.0.self_attn:rope"]
    assert (rope["mult"], rope["add"]) == (2176, 1088)


# --- ChatGLM-6B --------------------------------------------------------------------------------------
def test_chatglm_6b_params_match_published_total() -> None:
    # h=4096, inner 16384, 28 layers, vocab 130528, biases everywhere, lm_head tied:
    # per layer: 2 LayerNorms 2*2*4096 + qkv 4096*12288 + 12288 + dense 4096*4096 + 4096
    #   + h_to_4h 4096*16384 + 16384 + 4h_to_h 16384*4096 + 4096 = 201,379,840
    # 28*201,379,840 + embedding 130528*4096 + final LayerNorm 2*4096 = 6,173,286,400
    assert profile_model("chatglm-6b").expr("params", "model") == 6_173_286_400
    assert find_preset("chatglm-6b").published_params == 6_173_286_400  # type: ignore[union-attr]


def test_chatglm_6b_counts() -> None:
    p = profile("chatglm-6b", 1, 8, 0)
    # K and V of 32 heads * 128 dims for 8 tokens, 28 layers: 28 * 2*32*128*8 = 1,835,008
    assert p.total("cache") == 1_835_008
    values = profile_model("chatglm-6b").node_values(1, 8, 0)
    # 2D rope: 2 calls, each q and k over 32 heads * 64 dims: 2*2*(2*8*32*64) MULT = 131,072
    assert values["transformer.layers.0.attention:rope"]["mult"] == 131_072
    # residuals: normed input * alpha + output, twice: 2 * 8*4096 MULT
    assert values["transformer.layers.0:residual_attn"]["mult"] == 8 * 4096


def test_chatglm_rejects_chatglm2_and_validation() -> None:
    with pytest.raises(ConfigError, match="ChatGLM2"):
        build_spec({"model_type": "chatglm", "num_layers": 28, "hidden_size": 4096, "num_attention_heads": 32,
                    "padded_vocab_size": 65024, "multi_query_attention": True})
    with pytest.raises(ValidationUnavailableError):
        get_family("chatglm").tiny({"model_type": "chatglm"})


# --- validation against transformers ----------------------------------------------------------------
def _validate_all(config: Any, tiny: bool, shapes: list[tuple[int, int, int]] = SHAPES) -> None:
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for batch, seq, past in shapes:
        report = validate(config, batch, seq, past, tiny=tiny, model=model)
        assert report.ok, report.table()


def v3_five_layers() -> dict[str, Any]:
    """DeepSeek-V3 at full width with 3 dense + 2 MoE layers: every layer kind, a fraction of the run time."""
    return {**v3_config(), "num_hidden_layers": 5}


@pytest.mark.validation
@pytest.mark.parametrize("tiny", [False, True], ids=["full-meta", "tiny-cpu"])
@pytest.mark.parametrize("config", [v3_five_layers(), V2_LITE, V2_SMALL], ids=["v3-5-layers", "v2-lite", "v2-small"])
def test_deepseek_validation_exact(config: Any, tiny: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    _validate_all(config, tiny)


@pytest.mark.validation
def test_deepseek_v3_all_61_layers_exact() -> None:
    # the whole preset on meta at one shape (all three shapes are exact too, but take ~10 s more)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    _validate_all("deepseek-v3", tiny=False, shapes=[(2, 3, 0)])


@pytest.mark.validation
def test_deepseek_v3_rotate_half_variant_exact() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    cfg = {**v3_config(), "rope_interleave": False, "norm_topk_prob": False, "attention_bias": True}
    _validate_all(cfg, tiny=True)
