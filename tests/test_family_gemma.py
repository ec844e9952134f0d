"""The Gemma families (gemma, gemma2, gemma3_text, vaultgemma, multimodal gemma3 via text_config): hand-derived counts,
preset params, config quirks, and validation against transformers.

The hand-derived values use a tiny gemma2 / gemma3_text config: h = 64, H = 4, KV = 2, D = 24 (!= 64/4),
I = 96, V = 128, 2 layers (sliding then full), sliding_window W = 4, at B = 2, S = 3, P = 5:
T = B*S = 6 tokens; keys: sliding min(P, W-1) + S = 3 + 3 = 6, full P + S = 8.
"""

from __future__ import annotations

import pytest

from llm_profiler import ConfigError, profile, profile_model
from llm_profiler.config import find_preset
from llm_profiler.spec import FULL_ATTENTION, SLIDING_ATTENTION

TINY = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
        "intermediate_size": 96, "vocab_size": 128, "num_hidden_layers": 2, "sliding_window": 4,
        "layer_types": [SLIDING_ATTENTION, FULL_ATTENTION]}
GEMMA2 = {**TINY, "model_type": "gemma2", "query_pre_attn_scalar": 24, "attn_logit_softcapping": 50.0,
          "final_logit_softcapping": 30.0}
GEMMA3 = {**TINY, "model_type": "gemma3_text", "query_pre_attn_scalar": 24, "final_logit_softcapping": 30.0}
# VaultGemma: gemma2's attention and softcaps without the post-norms
VAULT = {**GEMMA2, "model_type": "vaultgemma"}
SHAPE = (2, 3, 5)


@pytest.fixture(scope="module")
def g2():
    return profile(GEMMA2, *SHAPE)


@pytest.fixture(scope="module")
def g3():
    return profile(GEMMA3, *SHAPE)


def test_scaled_embedding(g2):
    v = g2.values["model.embed_tokens"]
    assert v["mult"] == 384  # * sqrt(h): T*h = 6*64
    assert v["act"] == 768  # the lookup (384) and the scaled copy (384)
    assert v["params"] == 8_192  # V*h = 128*64


def test_rms_norm_plus_one(g2):
    v = g2.values["model.layers.0.input_layernorm"]
    assert v["add"] == 448  # mean: T*(h-1) = 378, + eps: T = 6, 1 + weight: h = 64
    assert v["mult"] == 1_152  # x^2, x*rstd, (1+w)*x: 3*T*h
    assert v["div"] == 12  # mean, rsqrt: 2*T
    assert v["sqrt"] == 6  # rsqrt: T
    assert v["act"] == 1_234  # 3*T*h + 3*T (mean, +eps, rsqrt) + h (1 + weight)


def test_four_norms_per_layer(g2):
    norms = {n.path for n in profile_model(GEMMA2).select("layers.1") if n.kind == "norm"}
    assert norms == {f"model.layers.1.{n}" for n in ("input_layernorm", "post_attention_layernorm",
                                                      "pre_feedforward_layernorm", "post_feedforward_layernorm")}
    assert g2.total("params", "norm") == 576  # (4 per layer * 2 layers + final) * h = 9*64


def test_vaultgemma_two_norms_per_layer_else_gemma2():
    norms = {n.path for n in profile_model(VAULT).select("layers.1") if n.kind == "norm"}
    assert norms == {"model.layers.1.input_layernorm", "model.layers.1.pre_feedforward_layernorm"}
    v, g2 = profile(VAULT, *SHAPE), profile(GEMMA2, *SHAPE)
    assert v.total("params", "norm") == 320  # (2 per layer * 2 layers + final) * h = 5*64
    # the two post-norms per layer are the whole difference: 2 layers * 2 norms * (mult 3*T*h = 1,152)
    assert g2.total("mult", "model") - v.total("mult", "model") == 4 * 1_152
    assert v.total("mult", "attn") == g2.total("mult", "attn")  # softcap, scaling and rope as gemma2's


def test_vaultgemma_preset_params():
    # the Hub's count: 256000*1152 + 26*(3*1152*1024 + 1024*1152 + 3*1152*6912 + 2*1152) + 1152 = 1,038,741,120
    assert profile("vaultgemma-1b", 1, 1).total("params", "model") == 1_038_741_120


def test_attention_softcap_and_sliding_keys(g2):
    # c * tanh(x / c) over B*H*S*keys scores: sliding 2*4*3*6 = 144, full 2*4*3*8 = 192
    v = g2.values["model.layers.0.self_attn:softcap"]
    assert (v["div"], v["exp"], v["mult"], v["act"], v["add"]) == (144, 144, 144, 432, 0)
    assert g2.values["model.layers.1.self_attn:softcap"]["div"] == 192
    # self_attn's own DIVs: softcap + softmax (one per score) = 2*192 in the full layer
    assert g2.total("div", "model.layers.1.self_attn") == 384


def test_final_logit_softcap_in_lm_head_scope(g2):
    v = g2.values[":final_softcap"]
    assert v["div"] == v["exp"] == v["mult"] == 768  # T*V = 6*128
    assert g2.total("mult", "lm_head") == 49_920  # matmul T*V*h = 6*128*64 = 49,152 + softcap 768
    assert g2.total("exp", "transformer") == g2.total("exp", "model") - 768  # not part of the transformer


def test_kv_cache_sliding_and_full(g2):
    assert g2.values["model.layers.0.self_attn:kv_cache"]["cache"] == 576  # 2*B*KV*D*min(P+S, W-1) = 2*2*2*24*3
    assert g2.values["model.layers.1.self_attn:kv_cache"]["cache"] == 1_536  # 2*2*2*24*(P+S = 8)


def test_gemma3_two_rotary_tables_qk_norm_no_attention_softcap(g3):
    assert g3.values["model.rotary_emb"]["exp"] == 288  # cos, sin: 2*S*D = 144 per table, local + global
    assert g3.values["model.layers.0.self_attn.q_norm"]["add"] == 600  # rows T*H = 24: 24*23 + 24 + D (1+w)
    assert g3.values["model.layers.0.self_attn.k_norm"]["params"] == 24  # D
    assert "model.layers.1.self_attn:softcap" not in g3.values  # attn softcapping is never applied
    assert g3.values["model.layers.1.self_attn:softmax"]["div"] == 192  # B*H*S*keys = 2*4*3*8
    assert g3.values[":final_softcap"]["exp"] == 768  # T*V, when final_logit_softcapping is set


# Published totals. gemma-2b: embed 256000*2048 = 524,288,000; per layer q/o 2*2048*2048 + k/v (MQA, KV = 1)
# 2*2048*256 + MLP 3*2048*16384 + 2 norms 2*2048 = 110,104,576, * 18 = 1,981,882,368; + final norm 2048.
# gemma-2-9b: embed 917,504,000; layer 2*3584*4096 + 2*3584*2048 + 3*3584*14336 + 4*3584 = 198,195,200, * 42;
# + 3584. gemma-2-27b: embed 1,179,648,000; layer 2*4608*4096 + 2*4608*2048 + 3*4608*36864 + 4*4608
# = 566,249,472, * 46; + 4608.
@pytest.mark.parametrize("alias", ["gemma-2b", "gemma-2-9b", "gemma-2-27b"])
def test_preset_params_match_published(alias):
    assert profile_model(alias).count("params", "model") == find_preset(alias).published_params


# gemma-3-27b: the language model only (Gemma3ForCausalLM from text_config, vocab 262208 by default):
# embed 262208*5376 = 1,409,630,208; layer 2*5376*4096 + 2*5376*2048 + 3*5376*21504 + 4*5376 + q/k norms 2*128
# = 412,898,560, * 62 = 25,599,710,720; + final norm 5376 = 27,009,346,304. The published 27,432,406,640 adds
# the SigLIP vision tower (416,866,032) and the multimodal projector (6,194,304).
GEMMA3_27B_TEXT_PARAMS = 27_009_346_304


def test_gemma3_multimodal_profiles_text_config():
    model = profile_model("gemma-3-27b")
    spec = model.spec
    assert model.count("params", "model") == GEMMA3_27B_TEXT_PARAMS
    assert find_preset("gemma-3-27b").published_params - GEMMA3_27B_TEXT_PARAMS == 416_866_032 + 6_194_304
    assert spec.model_type == "gemma3_text" and spec.vocab_size == 262_208
    assert any("text_config" in note for note in spec.notes)
    assert any("vocab_size=262208" in note for note in spec.notes)
    # sliding_window_pattern 6 by default: every 6th layer global -> 10 of 62
    assert spec.layer_types.count(FULL_ATTENTION) == 10 and spec.layer_types[5] == FULL_ATTENTION
    assert spec.rope_tables == 2 and spec.sliding_window == 1024


def test_config_quirks():
    g = profile_model("gemma-2b").spec
    assert g.activation == "gelu_pytorch_tanh"  # the legacy hidden_act "gelu" means the tanh approximation
    assert g.num_kv_heads == 1 and g.head_dim == 256 and g.tie_word_embeddings
    g2 = profile_model("gemma-2-9b").spec
    assert g2.layer_types[:2] == (SLIDING_ATTENTION, FULL_ATTENTION)  # old pattern: alternate, sliding first
    assert g2.attn_softcap == 50.0 and g2.final_softcap == 30.0 and g2.query_pre_attn_scalar == 256
    exact = profile_model({**GEMMA2, "hidden_activation": "gelu", "attn_logit_softcapping": None}).spec
    assert exact.activation == "gelu" and exact.attn_softcap is None  # gemma2 does not remap "gelu"


def test_errors():
    with pytest.raises(ConfigError, match="layer_types"):
        profile({**GEMMA2, "layer_types": [SLIDING_ATTENTION]})
    with pytest.raises(ConfigError, match="use_bidirectional_attention"):
        profile({**GEMMA3, "use_bidirectional_attention": True})
    with pytest.raises(ConfigError, match="hidden_activation"):
        profile({**GEMMA2, "hidden_activation": "mish"})
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        profile({**GEMMA2, "num_key_value_heads": 3})
    with pytest.raises(ConfigError, match="text_config"):
        profile({"model_type": "gemma3", "text_config": 5})


# --- validation against transformers ------------------------------------------------------------------
SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step


def _exact(report) -> None:
    assert report.ok, report.table()
    assert report.rows


@pytest.mark.validation
@pytest.mark.parametrize("source", ["gemma-2b", "gemma-2-9b", "gemma-2-27b", "gemma-3-27b", "vaultgemma-1b", GEMMA2,
                                    GEMMA3, VAULT],
                         ids=["gemma-2b", "gemma-2-9b", "gemma-2-27b", "gemma-3-27b", "vaultgemma-1b", "gemma2",
                              "gemma3_text", "vaultgemma"])
def test_tiny_on_cpu(source):
    pytest.importorskip("torch")
    from llm_profiler.validation import validate

    for shape in SHAPES:
        _exact(validate(source, *shape, tiny=True))


@pytest.mark.validation
@pytest.mark.parametrize("alias", ["gemma-2b", "gemma-3-27b"])
def test_full_size_on_meta(alias):
    """gemma-3-27b (62 layers) runs the odd shape only here to keep this file fast; tests/test_validation.py
    runs every registered preset, these included, at full size at all three shapes."""
    pytest.importorskip("torch")
    from llm_profiler.config import load_config
    from llm_profiler.families import get_family
    from llm_profiler.validation import validate
    from llm_profiler.validation.measure import build_model

    data = load_config(alias).data
    model = build_model(get_family(data["model_type"]).hf_config(data), device="meta")
    if alias == "gemma-3-27b":  # the text model transformers builds: Gemma3ForCausalLM from text_config
        assert type(model).__name__ == "Gemma3ForCausalLM"
        assert sum(p.numel() for p in model.parameters()) == GEMMA3_27B_TEXT_PARAMS
    for shape in SHAPES if alias == "gemma-2b" else [(3, 7, 5)]:
        _exact(validate(alias, *shape, model=model))
