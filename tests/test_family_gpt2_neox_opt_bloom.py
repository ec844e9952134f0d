"""Families gpt2, gpt_neox, opt, bloom: hand-derived counts, preset totals, config errors, and validation
against transformers (full size on meta, tiny on CPU) at a prefill, an odd shape and a decode step."""

from __future__ import annotations

import copy

import pytest

from llm_profiler.config.presets import find_preset
from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec
from llm_profiler.profile import profile, profile_model

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step

# GPT-2 with the reordered, upcast attention (scaling folded into baddbmm's alpha), per-layer scaling
# 1/(layer+1) without 1/sqrt(d) (alpha = 1 on layer 0 only), an explicit n_inner, an untied head, gelu_fast.
GPT2_REORDER = {
    "model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4, "vocab_size": 100, "n_inner": 80,
    "n_positions": 32, "reorder_and_upcast_attn": True, "scale_attn_by_inverse_layer_idx": True,
    "scale_attn_weights": False, "tie_word_embeddings": False, "activation_function": "gelu_fast",
    "bos_token_id": 1, "eos_token_id": 2,
}
# GPT-NeoX with a sequential residual, no attention bias, a tied head, head_dim 20 with rotary_pct 0.25
# (int(5) -> 3 frequencies -> 6 rotated dims), gelu_new.
NEOX_SEQUENTIAL = {
    "model_type": "gpt_neox", "hidden_size": 80, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "vocab_size": 100, "use_parallel_residual": False, "attention_bias": False,
    "tie_word_embeddings": True, "rotary_pct": 0.25, "hidden_act": "gelu_new", "bos_token_id": 0,
    "eos_token_id": 2,
}
# opt-350m style: post-LN (no final decoder norm) and word_embed_proj_dim != hidden (project_in / _out).
OPT_350M_STYLE = {
    "model_type": "opt", "hidden_size": 64, "ffn_dim": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "vocab_size": 100, "word_embed_proj_dim": 32, "do_layer_norm_before": False, "max_position_embeddings": 64,
    "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2,
}
# OPT without biases nor LayerNorm weights, untied head.
OPT_BARE = {
    "model_type": "opt", "hidden_size": 64, "ffn_dim": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "vocab_size": 100, "enable_bias": False, "layer_norm_elementwise_affine": False,
    "tie_word_embeddings": False, "max_position_embeddings": 64, "pad_token_id": 1, "bos_token_id": 2,
    "eos_token_id": 2,
}


# --- preset parameter totals ---------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["gpt2", "gpt2-medium", "gpt2-large", "gpt-neox-20b", "opt-1.3b", "bloom-560m"])
def test_preset_params_match_published(alias: str) -> None:
    assert profile_model(alias).count("params", "model") == find_preset(alias).published_params


def test_gpt2_params_by_hand() -> None:
    # wte 50257*768 = 38,597,376; wpe 1024*768 = 786,432;
    # per layer: c_attn 768*2304 + 2304 = 1,771,776; attn.c_proj 768^2 + 768 = 590,592;
    # c_fc 768*3072 + 3072 = 2,362,368; mlp.c_proj 3072*768 + 768 = 2,360,064; ln_1 + ln_2 4*768 = 3,072
    # -> 7,087,872; 12 layers 85,054,464 + embeddings + ln_f 1,536 = 124,439,808 (lm_head tied to wte).
    p = profile("gpt2", batch=2, seq=3)
    assert p.total("params", "model") == 124_439_808
    assert p.values["lm_head"]["params"] == 0
    # embed scope: wte + wpe = 38,597,376 + 786,432 = 39,383,808
    assert p.total("params", "embed") == 39_383_808


def test_gpt2_nodes_by_hand() -> None:
    p = profile("gpt2", batch=2, seq=3)
    v = p.values
    # gelu_new is 8 aten ops over n = 2*3*3072 = 18,432: act 8n = 147,456; MULT 6n = 110,592 (0.5*x, x**3 = 2,
    # *0.044715, *sqrt(2/pi), final *); ADD 2n = 36,864; EXP (tanh) n = 18,432
    act = v["transformer.h.0.mlp.act"]
    assert (act["act"], act["mult"], act["add"], act["exp"]) == (147_456, 110_592, 36_864, 18_432)
    # wpe is looked up for S = 3 positions only (1 x S, shared by the batch): 3*768 = 2,304 elements
    assert v["transformer.wpe"]["act"] == 2_304
    # token + position embeddings: 2*3*768 = 4,608 ADD
    assert v["transformer:embed_add"]["add"] == 4_608
    # Conv1D c_attn: 6 rows x 768 -> 2304: MACs 6*768*2304 = 10,616,832; ADD with the bias also 10,616,832
    c_attn = v["transformer.h.0.attn.c_attn"]
    assert c_attn["macs"] == c_attn["add"] == 10_616_832
    # positions: arange + P (S = 3 ADD), mask cache_position (3 ADD) and kv index (keys 3 ADD): 9;
    # causal compare S*keys = 9 CMP
    assert (v["transformer:positions"]["add"], v["transformer:positions"]["cmp"]) == (9, 9)


def test_gpt2_reordered_attention_scales_only_where_alpha_is_not_one() -> None:
    p = profile(GPT2_REORDER, batch=1, seq=1)
    # baddbmm of 4 heads, 1 query, 1 key, head_dim 16: 4*16 = 64 MULT (= MACs); alpha = 1/(layer+1):
    # 1 on layer 0 (no scaling), 1/2 on layer 1 (+4 MULT, one per score)
    assert p.values["transformer.h.0.attn:scores"]["mult"] == 64
    assert p.values["transformer.h.1.attn:scores"]["mult"] == 68
    # beta = 0: no bias addition; the mask adds 4: ADD = 4*(16-1) + 4 = 64
    assert p.values["transformer.h.1.attn:scores"]["add"] == 64
    # n_inner 80 (not 4*64), untied head 64*100 = 6,400 params
    assert p.values["transformer.h.0.mlp.c_fc"]["params"] == 64 * 80 + 80
    assert p.values["lm_head"]["params"] == 6_400


def test_gpt_neox_20b_by_hand() -> None:
    p = profile("gpt-neox-20b", batch=1, seq=1, past=9)
    v = p.values
    # head_dim 6144/64 = 96, rotary_pct 0.25 -> 24 rotated dims. Per q (64 heads, 1 token): x*cos 1,536 MULT,
    # neg of half 768 ADD, *sin 1,536 MULT, + 1,536 ADD; q and k: 6,144 MULT and 4,608 ADD
    rope = v["gpt_neox.layers.0.attention:rope"]
    assert (rope["mult"], rope["add"]) == (6_144, 4_608)
    # rotary table for 1 position: freqs 12 MULT, cos/sin 2*24 EXP, * attention_scaling 2*24 MULT -> 60 MULT
    assert (v["gpt_neox.rotary_emb"]["mult"], v["gpt_neox.rotary_emb"]["exp"]) == (60, 48)
    # cache: 2 * 64 heads * 96 * 10 tokens = 122,880 per layer; 44 layers: 5,406,720
    assert p.total("cache", "model") == 5_406_720
    # gelu_fast: 9 aten ops over 24,576: act 221,184; MULT 6*24,576 = 147,456
    act = v["gpt_neox.layers.0.mlp.act"]
    assert (act["act"], act["mult"]) == (221_184, 147_456)
    # untied head: 6144*50432 = 309,854,208 params
    assert v["lm_head"]["params"] == 309_854_208
    # fused qkv with bias: 6144*18432 + 18432 = 113,264,640 params
    assert v["gpt_neox.layers.0.attention.query_key_value"]["params"] == 113_264_640


def test_gpt_neox_partial_rotary_sources() -> None:
    _, spec = build_spec(NEOX_SEQUENTIAL)
    assert spec.rotary_dim == 6  # head_dim 20 * 0.25 = 5 -> arange(0, 5, 2): 3 frequencies -> 6 dims
    rope = {**NEOX_SEQUENTIAL, "hidden_size": 64, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                                                      "partial_rotary_factor": 0.5}}
    _, spec = build_spec(rope)
    assert spec.rotary_dim == 8  # rope_parameters wins over rotary_pct: 16 * 0.5
    _, spec = build_spec({**NEOX_SEQUENTIAL, "hidden_size": 64, "partial_rotary_factor": 1.0})
    assert spec.rotary_dim == 4 and spec.notes  # top-level factor ignored by transformers (noted)


def test_opt_by_hand() -> None:
    p = profile("opt-1.3b", batch=2, seq=3, past=5)
    v = p.values
    # positions over the all-ones B x (P+S) = 2 x 8 mask: cumsum 2*7 = 14 ADD, * mask 16 MULT, - 1 16 ADD;
    # mask: cache_position 3 ADD + kv index 8 ADD; causal compare 3*8 = 24 CMP -> ADD 41, MULT 16, CMP 24
    pos = v["model.decoder:positions"]
    assert (pos["add"], pos["mult"], pos["cmp"]) == (41, 16, 24)
    # + offset 2 over 2*3 ids: 6 ADD; the lookup writes 6*2048 = 12,288 (+ the 6 offset ids) = 12,294;
    # table (2048 + 2) x 2048 = 4,198,400 params
    emb = v["model.decoder.embed_positions"]
    assert (emb["add"], emb["act"], emb["params"]) == (6, 12_294, 4_198_400)
    # q_proj(x) * scaling: 6*2048 = 12,288 MULT
    assert v["model.decoder.layers.0.self_attn:q_scale"]["mult"] == 12_288


def test_opt_projections_and_post_ln() -> None:
    graph = profile_model(OPT_350M_STYLE).graph
    paths = {n.path for n in graph.nodes}
    assert {"model.decoder.project_in", "model.decoder.project_out"} <= paths
    assert "model.decoder.final_layer_norm" not in paths  # post-LN: no final decoder norm
    # embed_tokens at the projection width: 100*32; project_in 32*64 (no bias)
    assert graph.node("model.decoder.embed_tokens").counts["params"] == 3_200
    assert graph.node("model.decoder.project_in").counts["params"] == 2_048
    bare = profile_model(OPT_BARE).graph
    assert bare.node("model.decoder.layers.0.final_layer_norm").counts["params"] == 0
    assert bare.node("model.decoder.layers.0.fc1").counts["params"] == 64 * 96


def test_bloom_by_hand() -> None:
    v = profile("bloom-560m", batch=2, seq=3, past=5).values
    # ALiBi over 16 heads and 8 keys: slopes pow 16 EXP, slopes x arange 16*8 = 128 MULT;
    # mask: 3 + 8 ADD, 3*8 = 24 CMP
    pos = v["transformer:positions"]
    assert (pos["exp"], pos["mult"], pos["add"], pos["cmp"]) == (16, 128, 11, 24)
    v = profile("bloom-560m", batch=1, seq=1, past=9).values
    # baddbmm(alibi, q, k^T, alpha=1/8) over 16 heads, 1 query, 10 keys, head_dim 64: MACs 16*10*64 = 10,240;
    # MULT 10,240 + 160 (alpha); ADD 16*10*63 + 160 (alibi) + 160 (mask) = 10,400
    s = v["transformer.h.0.self_attention:scores"]
    assert (s["macs"], s["mult"], s["add"]) == (10_240, 10_400, 10_400)
    # the embedding LayerNorm: 2*1024 params; MLP 4*1024 wide
    assert v["transformer.word_embeddings_layernorm"]["params"] == 2_048
    assert v["transformer.h.0.mlp.dense_h_to_4h"]["params"] == 1024 * 4096 + 4096


def test_bloom_legacy_names() -> None:
    _, spec = build_spec({"model_type": "bloom", "n_embed": 128, "hidden_size": 64, "n_layer": 3,
                          "num_attention_heads": 4, "vocab_size": 100})
    assert (spec.hidden_size, spec.num_layers, spec.num_heads, spec.intermediate_size) == (128, 3, 4, 512)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="n_embd"):
        build_spec({"model_type": "gpt2", "n_layer": 2, "n_head": 4})
    with pytest.raises(ConfigError, match="add_cross_attention"):
        build_spec({**GPT2_REORDER, "add_cross_attention": True})
    with pytest.raises(ConfigError, match="activation"):
        build_spec({**GPT2_REORDER, "activation_function": "swiglu_magic"})
    with pytest.raises(ConfigError, match="slow_but_exact"):
        build_spec({"model_type": "bloom", "n_embed": 64, "n_layer": 2, "n_head": 4, "pretraining_tp": 2,
                    "slow_but_exact": True})
    with pytest.raises(ConfigError, match="partial rotary"):
        build_spec({**NEOX_SEQUENTIAL, "rotary_pct": 0.0})
    with pytest.raises(ConfigError, match="ffn_dim"):
        build_spec({"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "vocab_size": 100})


# --- validation against transformers ---------------------------------------------------------------

FULL = ["gpt2", "gpt-neox-20b", "opt-1.3b", "bloom-560m", GPT2_REORDER, NEOX_SEQUENTIAL, OPT_350M_STYLE, OPT_BARE]
TINY = FULL


def _run(config: object, tiny: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(copy.deepcopy(config), tiny=tiny).build()  # shared by the shapes
    for batch, seq, past in SHAPES:
        report = validate(copy.deepcopy(config), batch, seq, past, tiny=tiny, model=model)
        assert report.ok and report.rows, report.table()


def _id(config: object) -> str:
    if isinstance(config, str):
        return config
    return f"{config['model_type']}-" + "-".join(k for k, v in config.items() if v is False or v is True)


@pytest.mark.validation
@pytest.mark.parametrize("config", FULL, ids=_id)
def test_validate_full_size_on_meta(config: object) -> None:
    _run(config, tiny=False)


@pytest.mark.validation
@pytest.mark.parametrize("config", TINY, ids=_id)
def test_validate_tiny_on_cpu(config: object) -> None:
    _run(config, tiny=True)
