"""Families falcon, phi, phi3, starcoder2, olmo2: hand-derived counts, preset totals, and validation against
transformers (full size on meta, tiny on CPU) at a prefill, an odd shape and a decode step."""

from __future__ import annotations

import copy

import pytest

from llm_profiler.config.presets import find_preset, read_preset
from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec
from llm_profiler.profile import profile, profile_model

# OLMo-2-1124-7B dimensions (no bundled preset).
OLMO2_7B = {
    "model_type": "olmo2", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 100352, "rms_norm_eps": 1e-6,
    "rope_theta": 500000, "hidden_act": "silu", "attention_bias": False, "max_position_embeddings": 4096,
    "tie_word_embeddings": False, "pad_token_id": 100277, "eos_token_id": 100257,
}
# Small OLMo-2 with every option off its default: GQA, explicit head_dim, biases, tied head.
OLMO2_GQA = {
    "model_type": "olmo2", "hidden_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
    "num_key_value_heads": 2, "head_dim": 80, "intermediate_size": 700, "vocab_size": 1000,
    "attention_bias": True, "tie_word_embeddings": True, "eos_token_id": 2, "pad_token_id": 1,
}
# falcon-40b (new decoder architecture: 8 KV groups in one fused projection, ln_attn / ln_mlp).
FALCON_40B = {
    "model_type": "falcon", "alibi": False, "bias": False, "bos_token_id": 11, "eos_token_id": 11,
    "hidden_size": 8192, "layer_norm_epsilon": 1e-5, "new_decoder_architecture": True,
    "num_attention_heads": 128, "num_hidden_layers": 60, "num_kv_heads": 8, "parallel_attn": True,
    "vocab_size": 65024,
}
# falcon-rw style: ALiBi, sequential blocks, biases, no multi-query; 12 heads (not a power of two).
FALCON_RW = {
    "model_type": "falcon", "alibi": True, "bias": True, "hidden_size": 480, "multi_query": False,
    "num_attention_heads": 12, "num_hidden_layers": 2, "parallel_attn": False, "vocab_size": 1000,
    "bos_token_id": 1, "eos_token_id": 2,
}
# The legacy RefinedWeb keys (n_embed / n_head / n_head_kv / n_layer), new architecture with one norm.
REFINEDWEB = {
    "model_type": "RefinedWeb", "n_embed": 1024, "n_head": 16, "n_head_kv": 4, "n_layer": 2,
    "num_ln_in_parallel_attn": 1, "ffn_hidden_size": 3000, "vocab_size": 1000, "parallel_attn": True,
    "bias": False, "alibi": False, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}
# Phi-4-mini style phi3: GQA, partial rotary 0.75, longrope, tied head, huge sliding window.
PHI3_LONGROPE = {
    "model_type": "phi3", "hidden_size": 3072, "num_hidden_layers": 4, "num_attention_heads": 24,
    "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 200064, "hidden_act": "silu",
    "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75,
    "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.5] * 48},
    "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": True,
    "bos_token_id": 199999, "eos_token_id": 199999, "pad_token_id": 199999,
}



def _phi2() -> dict:
    return read_preset(find_preset("phi-2"))


# --- preset parameter totals ---------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["falcon-7b", "phi-2", "phi-3-mini", "starcoder2-7b"])
def test_preset_params_match_published(alias: str) -> None:
    assert profile_model(alias).count("params", "model") == find_preset(alias).published_params


def test_falcon_7b_params_by_hand() -> None:
    # embedding 65024*4544 = 295,469,056 (lm_head tied);
    # per layer: query_key_value 4544*(4544 + 2*64) = 21,229,568; dense 4544^2 = 20,647,936;
    # MLP 2*4544*18176 = 165,183,488; input_layernorm 2*4544 = 9,088 -> 207,070,080;
    # 32 layers 6,626,242,560 + embedding + ln_f 9,088 = 6,921,720,704.
    assert profile_model("falcon-7b").count("params", "model") == 6_921_720_704


def test_falcon_40b_params_and_broadcast_kv_cache() -> None:
    # head_dim 8192/128 = 64; per layer: query_key_value 8192*(128 + 2*8)*64 = 75,497,472; dense 8192^2 =
    # 67,108,864; MLP 2*8192*32768 = 536,870,912; ln_attn + ln_mlp 4*8192 = 32,768 -> 679,510,016;
    # 60 layers 40,770,600,960 + embedding 65024*8192 = 532,676,608 (tied) + ln_f 16,384 = 41,303,293,952.
    model = profile_model(FALCON_40B)
    assert model.count("params", "model") == 41_303_293_952
    # The new architecture caches k / v broadcast to all 128 heads: 60 * 2 * 128 * 64 * 10 tokens = 9,830,400
    # (8 KV heads would hold 614,400).
    assert model.count("cache", "model", batch=1, seq=3, past=7) == 9_830_400


def test_olmo2_7b_params() -> None:
    # embedding + lm_head 2*100352*4096 = 822,083,584; per layer: q/k/v/o 4*4096^2 = 67,108,864;
    # q_norm + k_norm over the full width 2*4096 = 8,192; MLP 3*4096*11008 = 135,266,304;
    # post_attention / post_feedforward norms 2*4096 = 8,192 -> 202,391,552; 32 layers 6,476,529,664;
    # + final norm 4,096 = 7,298,617,344 (OLMo-2-1124-7B's published 7.3B).
    assert profile_model(OLMO2_7B).count("params", "model") == 7_298_617_344


def test_olmo2_qk_norm_over_the_full_projection() -> None:
    graph = profile_model(OLMO2_GQA).graph
    # q_norm: 8 heads * 80 = 640 weights; k_norm: 2 * 80 = 160 (one RMSNorm row per token, not per head)
    assert graph.node("model.layers.0.self_attn.q_norm").counts["params"] == 640
    assert graph.node("model.layers.0.self_attn.k_norm").counts["params"] == 160
    p = profile(OLMO2_GQA, batch=2, seq=3)
    # RMSNorm over 640 for 6 rows: mean DIV 6 + rsqrt DIV 6 = 12
    assert p.values["model.layers.0.self_attn.q_norm"]["div"] == 12


def test_phi2_gelu_new_and_partial_rotary() -> None:
    p = profile("phi-2", batch=2, seq=3)
    # gelu_new is eight Python ops over 2*3*10240 elements: act 8*61,440 = 491,520; MULT 6 per element
    act = p.values["model.layers.0.mlp.activation_fn"]
    assert act["act"] == 491_520 and act["mult"] == 368_640
    # rotary over int(80*0.4) = 32 dims for 3 positions: MULT 3*16 + 2*3*32 = 240, EXP (cos, sin) 2*3*32 = 192
    rot = p.values["model.rotary_emb"]
    assert (rot["mult"], rot["exp"]) == (240, 192)
    # the lm_head has a bias: 2560*51200 + 51200 = 131,123,200 params
    assert p.values["lm_head"]["params"] == 131_123_200


def test_phi3_fused_projections() -> None:
    graph = profile_model("phi-3-mini").graph
    # qkv_proj 3072 -> (32 + 2*32)*96 = 9216: 28,311,552; gate_up_proj 3072 -> 2*8192: 50,331,648
    assert graph.node("model.layers.0.self_attn.qkv_proj").counts["params"] == 28_311_552
    assert graph.node("model.layers.0.mlp.gate_up_proj").counts["params"] == 50_331_648


def test_phi3_sliding_window_caps_cache() -> None:
    # window 2047 keeps the last 2046 tokens: 32 layers * 2 * 32 heads * 96 * 2046 = 402,259,968
    assert profile("phi-3-mini", batch=1, seq=1, past=5000).total("cache", "model") == 402_259_968


def test_starcoder2_sliding_window_cache() -> None:
    # window 4096 keeps 4095 tokens: 32 layers * 2 * 4 kv heads * 128 * 4095 = 134,184,960
    assert profile("starcoder2-7b", batch=1, seq=1, past=9000).total("cache", "model") == 134_184_960


def test_falcon_linear_bias_is_a_separate_add() -> None:
    p = profile(FALCON_RW, batch=2, seq=3)
    # query_key_value 480 -> 1440 for 6 rows: matmul writes 8,640, the bias addition another 8,640
    qkv = p.values["transformer.h.0.self_attention.query_key_value"]
    assert qkv["act"] == 17_280 and qkv["add"] == 6 * 1440 * 480


def test_falcon_legacy_keys_and_refinedweb() -> None:
    family, spec = build_spec(REFINEDWEB)
    assert (spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.num_layers) == (1024, 16, 4, 2)
    assert spec.new_decoder_architecture  # RefinedWeb implies it
    hf = family.hf_config(REFINEDWEB)
    assert hf["model_type"] == "falcon" and hf["num_attention_heads"] == 16 and "n_head" not in hf


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="parallel_attn"):
        build_spec({**FALCON_40B, "parallel_attn": False})
    with pytest.raises(ConfigError, match="num_ln_in_parallel_attn"):
        build_spec({**FALCON_RW, "parallel_attn": True, "num_ln_in_parallel_attn": 2})
    with pytest.raises(ConfigError, match="rotary"):
        build_spec({**_phi2(), "partial_rotary_factor": 0.4125})  # int(80 * 0.4125) = 33 is odd
    with pytest.raises(ConfigError, match="hidden_act"):
        build_spec({**_phi2(), "hidden_act": "nope"})


# --- validation against transformers ---------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]
FULL = ["falcon-7b", "phi-2", "phi-3-mini", "starcoder2-7b", OLMO2_7B, FALCON_40B]
TINY = [*FULL, FALCON_RW, REFINEDWEB, OLMO2_GQA, PHI3_LONGROPE]


def _run(config: object, tiny: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch

    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(copy.deepcopy(config), tiny=tiny).build()
    # longrope computes its long frequencies once, on a model's first forward: warm up so that every shape
    # counts the steady state (validate's own prefill does the same for P > 0).
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device))
    for batch, seq, past in SHAPES:
        report = validate(copy.deepcopy(config), batch, seq, past, tiny=tiny, model=model)
        assert report.ok, report.table()


def _id(config: object) -> str:
    return config if isinstance(config, str) else f"{config['model_type']}-{config.get('hidden_size', 'legacy')}"


@pytest.mark.validation
@pytest.mark.parametrize("config", FULL, ids=_id)
def test_validate_full_size_on_meta(config: object) -> None:
    _run(config, tiny=False)


@pytest.mark.validation
@pytest.mark.parametrize("config", TINY, ids=_id)
def test_validate_tiny_on_cpu(config: object) -> None:
    _run(config, tiny=True)
