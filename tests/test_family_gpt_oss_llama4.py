"""gpt_oss (attention sinks, alternating sliding windows, biased MoE, clamped SwiGLU) and llama4 / llama4_text
(chunked attention, NoPE layers with temperature tuning, interleaved MoE with a shared expert): published
totals, hand-derived node counts, config quirks, and validation against transformers 5.23.

Hand-derived values use tiny configs: h = 64, H = 4, KV = 2, D = 24 (!= 64/4), V = 128, at B = 2, S = 3, P = 5
(T = B*S = 6 tokens). gpt_oss: I = 96, 4 experts, top 2, layers sliding (window W = 4) then full: keys
min(P, W-1) + S = 6 and P + S = 8. llama4: I = 96, I_mlp = 80, 4 experts, top 1, MoE every 2nd layer, chunk
C = 4, 4 layers (0-2 chunked with rotary, 3 full NoPE): keys min(P, C-1) + S = 6 and P + S = 8.

Config sources (tests/family_configs/): openai--gpt-oss-20b.json and meta-llama--Llama-4-Scout-17B-16E-Instruct
(a TRIMMED copy: class defaults apply) from ../shared/hf-configs (ai-dynamo/aiconfigurator @ 095f58a51c4c);
openai--gpt-oss-120b.json: xiaowanCN/aiconfigurator @ 5f2e6bb0cce1c64ae849cca017cadeeedbc4fcfe,
aic-core/src/aiconfigurator_core/model_configs/openai--gpt-oss-120b_config.json (same keys and values);
meta-llama--Llama-4-Maverick-17B-128E-Instruct.json: ai-dynamo/aiconfigurator @
64c5ddb697dd8ad88a938f65b23d25cf5f45de12, the same folder (TRIMMED as the Scout copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_profiler import ConfigError, profile
from llm_profiler.families import build_spec

CONFIGS = Path(__file__).parent / "family_configs"
GPT_OSS_20B = str(CONFIGS / "openai--gpt-oss-20b.json")
GPT_OSS_120B = str(CONFIGS / "openai--gpt-oss-120b.json")
SCOUT = str(CONFIGS / "meta-llama--Llama-4-Scout-17B-16E-Instruct.json")
MAVERICK = str(CONFIGS / "meta-llama--Llama-4-Maverick-17B-128E-Instruct.json")

_DIMS = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
         "intermediate_size": 96, "vocab_size": 128, "num_local_experts": 4}
GPT_OSS = {**_DIMS, "model_type": "gpt_oss", "num_hidden_layers": 2, "num_experts_per_tok": 2,
           "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]}
LLAMA4 = {**_DIMS, "model_type": "llama4_text", "num_hidden_layers": 4, "num_experts_per_tok": 1,
          "intermediate_size_mlp": 80, "interleave_moe_layer_step": 2, "attention_chunk_size": 4}
SHAPE = (2, 3, 5)


# --- published totals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "params", "active"), [
    # gpt-oss-20b, 24 layers: attention q 2880*4096+4096, k and v 2880*512+512 each, o 4096*2880+2880, sinks 64
    # = 26,550,144; 32 experts of 2880*5760 + 5760 + 2880*2880 + 2880 = 24,891,840 (796,538,880); router
    # 32*2880 + 32 = 92,192; norms 5,760 -> 823,186,976 per layer; embedding + head 2*201088*2880 = 1,158,266,880;
    # final norm 2,880: 24 * 823,186,976 + 1,158,266,880 + 2,880 = 20,914,757,184 (the published "21B").
    # active: 24 * (26,550,144 + 92,192 + 5,760 + 4*24,891,840) + 1,158,266,880 + 2,880 = 4,187,440,704; the
    # published "3.6B active" leaves the embedding out: 4,187,440,704 - 579,133,440 = 3,608,307,264.
    (GPT_OSS_20B, 20_914_757_184, 4_187_440_704),
    # gpt-oss-120b, 36 layers, 128 experts: 26,550,144 + 128*24,891,840 + (128*2880 + 128) + 5,760 =
    # 3,213,080,192 per layer; 36 * that + 1,158,266,880 + 2,880 = 116,829,156,672 (the published "117B");
    # active 36 * (26,550,144 + 368,768 + 5,760 + 4*24,891,840) + 1,158,269,760 = 5,711,982,912 (the published
    # "5.1B active" without the embedding: 5,132,849,472).
    (GPT_OSS_120B, 116_829_156_672, 5_711_982_912),
    # Llama 4 Scout (text), 48 MoE layers: attention 2*5120*5120 + 2*5120*1024 = 62,914,560; 16 experts of
    # 3*5120*8192 = 125,829,120 (2,013,265,920); router 16*5120 = 81,920; shared expert 125,829,120; norms 10,240
    # -> 2,202,101,760 per layer; embedding + head 2*202048*5120 = 2,068,971,520; final norm 5,120:
    # 107,769,861,120 (the published "109B total" adds the vision tower and projector).
    # active: 48 * (62,914,560 + 2*125,829,120 + 81,920 + 10,240) + 2,068,976,640 = 17,172,894,720 ("17B active")
    (SCOUT, 107_769_861_120, 17_172_894_720),
    # Llama 4 Maverick (text): 24 MoE layers (odd: interleave_moe_layer_step 2) of 62,914,560 + 128*125,829,120 +
    # 128*5120 + 125,829,120 + 10,240 = 16,295,536,640, 24 dense of 62,914,560 + 3*5120*16384 + 10,240 =
    # 314,583,040; + 2,068,976,640 = 400,711,848,960 ("400B total" with the vision tower).
    # active: 24 * (62,914,560 + 2*125,829,120 + 655,360 + 10,240) + 24 * 314,583,040 + 2,068,976,640
    # = 17,184,691,200 ("17B active").
    (MAVERICK, 400_711_848_960, 17_184_691_200),
])
def test_published_totals(source: str, params: int, active: int) -> None:
    prof = profile(source, 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


def test_gpt_oss_20b_params_as_transformers_counts_them() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.reference import reference

    model = reference(GPT_OSS_20B).build()  # the full-size model on the meta device
    assert sum(p.numel() for p in model.parameters()) == 20_914_757_184


# --- gpt_oss nodes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oss() -> Any:
    return profile(GPT_OSS, *SHAPE)


def test_gpt_oss_sinks_and_softmax_over_keys_plus_one(oss: Any) -> None:
    v = oss.values
    sinks = v["model.layers.0.self_attn:sinks"]  # rows B*H*S = 24, keys + 1 = 7 columns (sliding: 6 keys)
    assert sinks["cmp"] == 144  # max over 7: 6 CMP per row
    assert sinks["add"] == 168  # combined - max: 24*7
    assert sinks["act"] == 216  # the max's values and indices 2*24, the difference 168
    assert sinks["params"] == 4  # one learned logit per head
    soft = v["model.layers.0.self_attn:softmax"]
    assert (soft["cmp"], soft["add"], soft["exp"], soft["div"]) == (144, 312, 168, 168)  # 24 rows x 7: add 24*13
    full = v["model.layers.1.self_attn:sinks"]  # full layer: 8 keys + the sink
    assert (full["cmp"], full["add"]) == (192, 216)  # 24*8, 24*9
    assert v["model.layers.1.self_attn:context"]["macs"] == 2 * 4 * 3 * 8 * 24  # the sink column is dropped
    node = oss.model.graph.node("model.layers.0.self_attn:sinks")
    assert [(w.name, w.shape) for w in node.facts.weights] == [("sinks", (4,))]


def test_gpt_oss_rope_by_halves_and_half_width_tables(oss: Any) -> None:
    rope = oss.values["model.layers.0.self_attn:rope"]  # T*(H+KV)*D/2 = 6*6*12 = 432 pairs
    assert (rope["mult"], rope["add"]) == (1_728, 864)  # 4 MULT, 1 SUB + 1 ADD per pair
    table = oss.values["model.rotary_emb"]  # S*D/2 = 36: freqs, cos, sin and two * attention_scaling
    assert (table["mult"], table["exp"], table["act"]) == (108, 72, 180)


def test_gpt_oss_router_experts_and_clamped_swiglu(oss: Any) -> None:
    v = oss.values
    router = v["model.layers.0.mlp.router"]
    assert router["macs"] == 6 * 4 * 64  # 1,536 biased logits
    assert router["cmp"] == 30 + 6  # top-2 of 4: 3 + 2 per row; softmax over the 2 kept: 1 per row
    assert router["add"] == 1_536 + 18  # addmm with the bias; softmax 6*(2*2-1)
    assert router["params"] == 4 * 64 + 4
    experts = v["model.layers.0.mlp.experts"]  # 12 (token, expert) pairs
    assert experts["macs"] == 12 * 192 * 64 + 12 * 64 * 96  # 221,184: gate_up and down bmms
    assert experts["add"] == 12 * 192 * 63 + 12 * 192 + 12 * 64 * 95 + 12 * 64 + 6 * 64  # bmms, biases, sum of 2
    assert experts["params"] == 4 * (3 * 64 * 96 + 2 * 96 + 64)  # 74,752
    assert experts["active_params"] == 2 * 18_688
    # traffic facts: the pairs read min(E, T*k) experts' weights (biases included); at decode (B = 1) 2 of 4
    (weight,) = oss.model.graph.node("model.layers.0.mlp.experts").facts.weights
    assert weight.shape == (4, 18_688) and weight.pairs is not None
    assert weight.pairs.evaluate({"B": 2, "S": 3, "P": 5}) == 12 and weight.pairs.evaluate({"B": 1, "S": 1, "P": 5}) == 2
    glu = v["model.layers.0.mlp.experts:swiglu"]  # n = 12 pairs * I = 1,152
    assert glu["cmp"] == 3 * 1_152  # clamp(max) on gate, clamp(min, max) on up
    assert glu["mult"] == 3 * 1_152  # gate * alpha, gate * sigmoid, (up + 1) * glu
    assert (glu["exp"], glu["div"], glu["add"], glu["act"]) == (1_152, 1_152, 2 * 1_152, 7 * 1_152)


def test_gpt_oss_masks_and_cache(oss: Any) -> None:
    v = oss.values
    # position ids 3; full mask (keys 8): 3 + 8 ADD, 24 CMP; sliding (keys 6): 3 + 6 + 3 ADD, 18 + 18 CMP, 36 logic
    assert (v["model:positions"]["add"], v["model:positions"]["cmp"]) == (26, 96)
    assert v["model.layers.0.self_attn:kv_cache"]["cache"] == 576  # 2*B*KV*D*min(P+S, W-1) = 2*2*2*24*3
    assert v["model.layers.1.self_attn:kv_cache"]["cache"] == 1_536  # 2*2*2*24*(P+S)


def test_gpt_oss_config_quirks() -> None:
    _, spec = build_spec({"model_type": "gpt_oss"})  # GptOssConfig's defaults: gpt-oss-120b
    assert spec.num_layers == 36 and spec.layers[0].ffn.experts == 128 and spec.layers[0].ffn.top_k == 4
    assert spec.layer_types[:2] == ("sliding_attention", "full_attention") and spec.sliding_window == 128
    assert all(layer.mixer.sinks for layer in spec.layers) and spec.qkv_bias and spec.o_bias
    assert "GptOssConfig's defaults" in spec.notes[0]
    with pytest.raises(ConfigError, match="sliding_window"):
        build_spec({**GPT_OSS, "sliding_window": None})
    with pytest.raises(ConfigError, match="layer_types"):
        build_spec({**GPT_OSS, "layer_types": ["chunked_attention", "full_attention"]})


# --- llama4 nodes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l4() -> Any:
    return profile(LLAMA4, *SHAPE)


def test_llama4_layer_plan() -> None:
    _, spec = build_spec(LLAMA4)
    assert [layer.mixer.kind for layer in spec.layers] == ["chunked_attention"] * 3 + ["attention"]
    assert [layer.mixer.rope for layer in spec.layers] == [True, True, True, False]  # every 4th layer is NoPE
    assert [layer.ffn.kind for layer in spec.layers] == ["gated", "moe", "gated", "moe"]  # moe_layers 1, 3
    assert spec.layers[1].ffn.shared_intermediate == 96 and spec.layers[0].ffn.intermediate == 80


def test_llama4_rope_qk_norm_and_nope_temperature(l4: Any) -> None:
    v = l4.values
    assert v["model.layers.0.self_attn:rope"]["mult"] == 4 * 432  # complex products: T*(H+KV)*D/2 = 432
    norm = v["model.layers.0.self_attn.qk_norm"]  # weightless L2 norm of 24 q rows and 12 k rows of 24
    assert (norm["mult"], norm["add"], norm["div"], norm["sqrt"], norm["params"]) == (1_728, 864, 72, 36, 0)
    assert "model.layers.3.self_attn:rope" not in v and "model.layers.3.self_attn.qk_norm" not in v
    temp = v["model.layers.3.self_attn:temperature"]
    # arange + past, + 1, / floor_scale, floor, log1p, * attn_scale, + 1 over S = 3 positions; q * scale: T*H*D
    assert (temp["add"], temp["div"], temp["cmp"], temp["exp"], temp["mult"]) == (9, 3, 3, 3, 3 + 576)
    table = v["model.rotary_emb"]  # S*D/2 = 36: freqs 36, polar 72 MULT + 72 EXP, * scaling 72
    assert (table["mult"], table["exp"]) == (180, 72)


def test_llama4_dense_experts_router_and_shared_expert(l4: Any) -> None:
    v = l4.values
    router = v["model.layers.1.feed_forward.router"]
    assert (router["macs"], router["cmp"], router["exp"]) == (1_536, 18, 24)  # top-1 of 4: 3 CMP; 24 sigmoids
    experts = v["model.layers.1.feed_forward.experts"]  # every expert on every token: 4 x (6 x 64) @ (64 x 192)
    assert experts["macs"] == 4 * 6 * 192 * 64 + 4 * 6 * 64 * 96  # 442,368 (4x a top-1 kernel's)
    assert (experts["params"], experts["active_params"]) == (4 * 3 * 64 * 96, 3 * 64 * 96)
    assert v["model.layers.1.feed_forward.experts.act_fn"]["exp"] == 4 * 6 * 96
    (weight,) = l4.model.graph.node("model.layers.1.feed_forward.experts").facts.weights
    assert weight.pairs is not None and weight.pairs.evaluate({"B": 1, "S": 1, "P": 5}) == 4  # all E read, even at decode
    routing = v["model.layers.1.feed_forward:routing"]
    assert routing["mult"] == 4 * 6 * 64  # inputs * scores
    assert routing["add"] == 6 * 64 * 3 + 6 * 64  # sum of the 4 outputs, + shared expert
    assert v["model.layers.1.feed_forward.shared_expert.up_proj"]["macs"] == 6 * 64 * 96
    assert v["model.layers.0.feed_forward.up_proj"]["macs"] == 6 * 64 * 80  # dense layer: intermediate_size_mlp


def test_llama4_chunked_mask_and_cache(l4: Any) -> None:
    pos = l4.values["model:positions"]
    # position ids 3; full mask (keys 8): 3 + 8 ADD, 24 CMP; chunked mask (keys 6): 3 + 6 ADD, kv - pad B*keys = 12
    # and q - pad B*S = 6 ADD, as many floor divisions (18 DIV), == B*S*keys = 36 and kv <= q S*keys = 18 CMP,
    # two ANDs 72
    assert (pos["add"], pos["div"], pos["cmp"]) == (41, 18, 24 + 36 + 18 + 72)
    v = l4.values
    assert v["model.layers.0.self_attn:kv_cache"]["cache"] == 576  # chunked: 2*B*KV*D*min(P+S, C-1) = 2*2*2*24*3
    assert v["model.layers.3.self_attn:kv_cache"]["cache"] == 1_536  # full: 2*2*2*24*(P+S)
    assert v["model.layers.0.self_attn:scores"]["macs"] == 2 * 4 * 3 * 6 * 24  # keys min(P, C-1) + S = 6


def test_llama4_config_quirks() -> None:
    _, spec = build_spec({"model_type": "llama4"})  # no text_config: Llama4TextConfig's defaults (Scout)
    assert spec.model_type == "llama4_text" and spec.num_layers == 48 and spec.attention_chunk_size == 8192
    assert any("multimodal 'llama4'" in n for n in spec.notes)
    _, spec = build_spec({**LLAMA4, "no_rope_layers": [0, 1, 1, 1], "moe_layers": [0]})
    assert spec.layers[0].mixer.kind == "attention" and not spec.layers[0].mixer.rope  # full where NoPE
    assert [layer.moe for layer in spec.layers] == [True, False, False, False]
    _, spec = build_spec({**LLAMA4, "layer_types": ["full_attention"] * 4})  # explicit types win
    assert {layer.mixer.kind for layer in spec.layers} == {"attention"}
    for bad, field in [({"attention_chunk_size": None}, "attention_chunk_size"),
                       ({"no_rope_layers": [1, 2, 1, 1]}, "no_rope_layers"),
                       ({"moe_layers": [4]}, "moe_layers"), ({"attn_temperature_tuning": 4}, "attn_temperature_tuning")]:
        with pytest.raises(ConfigError, match=field):
            build_spec({**LLAMA4, **bad})


# --- validation against transformers ---------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


def _validate_all(config: Any, tiny: bool, shapes: list[tuple[int, int, int]]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for batch, seq, past in shapes:
        report = validate(config, batch, seq, past, tiny=tiny, model=model)
        assert report.ok, report.table()


# past the window / chunk: tiny window and chunk 4 (P + S = 9 > 4, and 11 with a prefill of 6 > 4);
# full size: gpt_oss window 128 (P = 130), llama4 chunk 8192 (P = 8200)
TINY_PAST = (2, 6, 3)
FULL_PAST = {GPT_OSS_20B: (1, 2, 130), GPT_OSS_120B: (1, 2, 130), SCOUT: (1, 2, 8200), MAVERICK: (1, 2, 8200)}


@pytest.mark.parametrize("source", [GPT_OSS_20B, GPT_OSS_120B, SCOUT, MAVERICK],
                         ids=["gpt-oss-20b", "gpt-oss-120b", "llama-4-scout", "llama-4-maverick"])
def test_validation_full_size_on_meta(source: str) -> None:
    _validate_all(source, tiny=False, shapes=[*SHAPES, FULL_PAST[source]])


@pytest.mark.parametrize("source", [GPT_OSS_20B, GPT_OSS_120B, SCOUT, MAVERICK, GPT_OSS, LLAMA4],
                         ids=["gpt-oss-20b", "gpt-oss-120b", "llama-4-scout", "llama-4-maverick", "gpt-oss-hand",
                              "llama4-hand"])
def test_validation_tiny_on_cpu(source: Any) -> None:
    _validate_all(source, tiny=True, shapes=[*SHAPES, TINY_PAST])


def test_validation_quirks() -> None:
    """NoPE and rope, chunked and full, MoE and dense in other combinations; no qk norm, no temperature."""
    _validate_all({**LLAMA4, "no_rope_layers": [0, 1, 1, 1], "moe_layers": [0, 2], "use_qk_norm": False,
                   "layer_types": ["chunked_attention", "full_attention", "chunked_attention", "chunked_attention"]},
                  tiny=True, shapes=[(2, 3, 5), TINY_PAST])
    _validate_all({**LLAMA4, "attn_temperature_tuning": False, "layer_types": ["chunked_attention"] * 4},
                  tiny=True, shapes=[(1, 2, 7)])
    _validate_all({**GPT_OSS, "layer_types": ["full_attention", "full_attention"], "attention_bias": False},
                  tiny=True, shapes=[(2, 3, 5)])
