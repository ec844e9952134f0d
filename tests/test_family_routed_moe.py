"""Routed-MoE families (graph/routers.py): glm4_moe, solar_open, minimax_m2, olmoe, flex_olmo, ... Published totals, routing quirks,
layer patterns, and validation against transformers 5.23 (full size on meta, tiny on the CPU).

Configs: tests/family_configs/ (GLM-4.5-Air: a printed Glm4MoeConfig dump; MiniMax-M2.5: a vendored copy
of the Hub config.json; OLMoE-1B-7B-0924, granite-3.1-3b-a800m, Hunyuan-A13B, dots.llm1: the checkpoints'
structural fields from stored public copies on the config class defaults; EXAONE-MoE and GLM-4-MoE-Lite:
the transformers config class defaults (GLM-4.7-Flash's dims))."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec
from llm_profiler.formula import Formula
from llm_profiler.graph import moe, routers
from llm_profiler.graph.routers import RoutedMoESpec, Router
from llm_profiler.profile import profile

CONFIGS = Path(__file__).parent / "family_configs"


def _data(name: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads((CONFIGS / f"{name}.json").read_text()), **changes}


GLM_AIR = "zai-org--GLM-4.5-Air"
MINIMAX_M2 = "MiniMaxAI--MiniMax-M2.5"
OLMOE = "allenai--OLMoE-1B-7B-0924"
GRANITE = "ibm-granite--granite-3.1-3b-a800m-instruct"
HUNYUAN = "tencent--Hunyuan-A13B-Instruct"
DOTS = "rednote-hilab--dots.llm1.inst"
EXAONE = "transformers--ExaoneMoeConfig-defaults"
GLM_LITE = "transformers--Glm4MoeLiteConfig-defaults"
SOLAR = "transformers--SolarOpenConfig-defaults"
FLEX_OLMO = "transformers--FlexOlmoConfig-defaults"  # FlexOlmoConfig's defaults (FlexOlmo-7x7B's dims)  # SolarOpenConfig's defaults (Solar-Open-100B's dims)


# --- totals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "active"), [
    # GLM-4.5-Air (published 106B total / 12B active): h=4096, 96 heads x 128, 8 KV heads, q/k/v bias.
    # attention per layer: q 4096*12288+12288, k and v 4096*1024+1024 each, o 12288*4096 = 109,064,192;
    # norms 2*4096. Layer 0 dense MLP 3*4096*10944 = 134,479,872. 45 MoE layers: router 128*4096 = 524,288,
    # experts 128 * 3*4096*1408 (17,301,504 each), shared expert 17,301,504.
    # embed + head 2*151552*4096 = 1,241,513,984, final norm 4096:
    # 46*(109,064,192 + 8,192) + 134,479,872 + 45*(524,288 + 129*17,301,504) + 1,241,513,984 + 4096
    #   = 106,852,245,504; active: 45*(524,288 + 9*17,301,504) instead: 13,424,123,904 (12.18B without the
    #   embedding and lm_head, as published).
    (GLM_AIR, 106_852_245_504, 13_424_123_904),
    # MiniMax-M2.5 (published 230B / 10B): h=3072, 48 heads x 128, 8 KV heads; per layer q 3072*6144 + k, v
    # 3072*1024 each + o 6144*3072 = 44,040,192, q_norm 6144 + k_norm 1024, norms 2*3072; router 256*3072 =
    # 786,432; experts 256 * 3*3072*1536 (14,155,776 each). embed + head 2*200064*3072 = 1,229,193,216 +
    # final norm 3072: 62*(44,040,192 + 7,168 + 6,144 + 786,432 + 256*14,155,776) + 1,229,196,288
    #   = 228,689,748,992; active (top 8): 11,030,537,216 (9.80B without embeddings).
    (MINIMAX_M2, 228_689_748_992, 11_030_537_216),
    # OLMoE-1B-7B (published 6.9B total / 1.3B active): h=2048, 16 heads; per layer attention 4*2048*2048 =
    # 16,777,216, q_norm 2048 + k_norm 2048, norms 2*2048, router 64*2048 = 131,072, experts 64 *
    # 3*2048*1024 (6,291,456 each); embed + head 2*50304*2048 = 206,045,184, final norm 2048:
    # 16*(16,777,216 + 8,192 + 131,072 + 64*6,291,456) + 206,047,232 = 6,919,161,856; active (top 8):
    # 16*(16,916,480 + 8*6,291,456) + 206,047,232 = 1,282,017,280.
    (OLMOE, 6_919_161_856, 1_282_017_280),
    # granite-3.1-3b-a800m (published 3.3B / 800M): h=1536, 24 heads x 64, 8 KV heads; per layer attention
    # 1536*1536*2 + 2*1536*512 = 6,291,456, norms 2*1536, router 40*1536 = 61,440, experts 40 * 3*1536*512
    # (2,359,296 each); tied embedding 49155*1536 = 75,502,080, final norm 1536:
    # 32*(6,291,456 + 3,072 + 61,440 + 40*2,359,296) + 75,503,616 = 3,298,793,472; top 8: 882,874,368.
    (GRANITE, 3_298_793_472, 882_874_368),
    # Hunyuan-A13B (published 80B / 13B): h=4096, 32 heads x 128, 8 KV heads; per layer attention 41,943,040,
    # q/k norms 2*128, norms 2*4096, router 64*4096 = 262,144, 64 experts + the shared MLP of 3*4096*3072
    # (37,748,736 each); tied embedding 128167*4096 = 524,972,032, final norm 4096:
    # 32*(41,943,040 + 256 + 8,192 + 262,144 + 65*37,748,736) + 524,976,128 = 80,393,183,232; top 8 + shared:
    # 32*(42,213,632 + 9*37,748,736) + 524,976,128 = 12,747,448,320.
    (HUNYUAN, 80_393_183_232, 12_747_448_320),
    # dots.llm1 (published 142B / 14B): h=4096, 32 heads x 128; per layer attention 67,108,864, q/k norms 256,
    # norms 8,192; layer 0 dense 3*4096*10944 = 134,479,872; 61 MoE layers: router 128*4096 = 524,288, 128
    # routed + 2 shared experts of 3*4096*1408 = 17,301,504; embed + head 2*152064*4096, final norm 4096:
    # 62*67,117,312 + 134,479,872 + 61*(524,288 + 130*17,301,504) + 1,245,712,384 + 4096 = 142,774,373,888;
    # top 6 + 2 shared: 14,016,581,120.
    (DOTS, 142_774_373_888, 14_016_581_120),
    # GLM-4-MoE-Lite defaults = GLM-4.7-Flash (published 30B-A3B): h=2048, 20 heads, MLA q_lora 768, kv_lora
    # 512, nope 192, rope 64, v 256: attention 2048*768 + 768 + 768*20*256 + 2048*576 + 512 + 512*20*448 +
    # 20*256*2048 = 21,759,232 per layer, norms 2*2048; layer 0 dense 3*2048*10240 = 62,914,560; 46 MoE
    # layers: router 64*2048, 64 + 1 shared experts of 3*2048*1536 = 9,437,184; embed + head 2*154880*2048,
    # final norm: 47*21,763,328 + 62,914,560 + 46*(131,072 + 65*9,437,184) + 634,390,528 = 29,943,390,976;
    # top 4 + shared: 3,896,763,136.
    (GLM_LITE, 29_943_390_976, 3_896_763_136),
    # Solar Open (SolarOpenConfig's defaults, "100B"): h=4096, 64 heads x 128, 8 KV heads, no biases; per layer
    # attention 4096*8192 + 2*4096*1024 + 8192*4096 = 75,497,472, norms 2*4096; every layer MoE: router 128*4096
    # = 524,288, 128 + 1 shared experts of 3*4096*1280 = 15,728,640; embed + head 2*196608*4096 = 1,610,612,736,
    # final norm 4096: 48*(75,505,664 + 524,288 + 129*15,728,640) + 1,610,616,832 = 102,651,793,408;
    # top 8 + shared: 48*(75,505,664 + 524,288 + 9*15,728,640) + 1,610,616,832 = 12,054,827,008.
    (SOLAR, 102_651_793_408, 12_054_827_008),
    # FlexOlmo-7x7B (FlexOlmoConfig's defaults): h=4096, 32 heads x 128 (MHA), no biases; per layer attention
    # 4*4096^2 = 67,108,864, whole-projection q / k norms 2*4096, post-norms 2*4096; router 7*4096 = 28,672;
    # 7 experts of 3*4096*11008 = 135,266,304; embed + head 2*100352*4096 = 822,083,584, final norm 4096:
    # 32*(67,125,248 + 28,672 + 7*135,266,304) + 822,087,680 = 33,270,665,216; top 5: 24,613,621,760.
    (FLEX_OLMO, 33_270_665_216, 24_613_621_760),
])
def test_params_and_active_params(name: str, params: int, active: int) -> None:
    prof = profile(_data(name), 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


# --- routing and layer quirks ---------------------------------------------------------------------


def test_glm4_moe_router_and_layers() -> None:
    _, spec = build_spec(_data(GLM_AIR))
    assert isinstance(spec, RoutedMoESpec)
    assert spec.dense_layers == (0,) and not spec.layers[0].moe and spec.layers[1].moe  # first_k_dense_replace 1
    assert spec.layers[1].ffn.experts == 128 and spec.layers[1].ffn.top_k == 8
    assert spec.layers[1].ffn.shared_intermediate == 1408  # one shared expert of moe_intermediate_size
    assert spec.rotary_dim == 64 and spec.qkv_bias and not spec.o_bias  # partial_rotary_factor 0.5 of 128
    v = profile(_data(GLM_AIR), 2, 3).values  # 6 tokens
    gate = v["model.layers.1.mlp.gate"]
    # sigmoid on 6*128 logits (1 EXP each); top-8 of 128: 8*(2*128-8-1)/2 = 988 CMP per token; the group
    # top-2 over one group of 128: 253 per token; top-1 of 1 group: 0; ~mask: 128 per token
    assert gate["exp"] == 6 * 128
    assert gate["cmp"] == 6 * (988 + 253 + 128)
    # logits 6*128*4095; sigmoid 6*128; + correction bias 6*128; group sum of 2: 6; renormalising sum of 8:
    # 6*7; + 1e-20: 6
    assert gate["add"] == 6 * 128 * 4095 + 2 * 6 * 128 + 6 + 6 * 7 + 6
    assert gate["mult"] == 6 * 128 * 4096 + 6 * 8  # logits; * routed_scaling_factor (1.0 still multiplies)
    assert gate["div"] == 6 * 128 + 6 * 8  # sigmoid + renormalisation
    assert gate["params"] == 128 * 4096  # the correction bias is a buffer
    assert v["model.layers.1.mlp.shared_experts.down_proj"]["macs"] == 6 * 1408 * 4096
    assert v["model.layers.0.mlp.down_proj"]["macs"] == 6 * 10944 * 4096  # the dense layer


def test_group_limited_router_counts() -> None:
    # 4 groups of 2 experts, 2 groups kept, top 2, one token: group top-2 of 2: 1 CMP per group (4) + sum of 2
    # (4 ADD); top-2 of 4 groups: 2*(8-2-1)/2 = 5 CMP; ~mask: 8; top-2 of 8: 13 CMP
    router = Router(scoring="sigmoid", correction_bias=True, grouped=True, n_group=4, topk_group=2,
                    normalize=True, norm_eps=True, scaling=True)
    counts = routers.topk_router(16, 8, 2, router, rows=Formula.const(1))
    assert counts["cmp"] == 4 + 5 + 8 + 13
    assert counts["add"] == 8 * 15 + 8 + 8 + 4 + 1 + 1  # logits, sigmoid, bias, group sums, sum of 2, eps
    with pytest.raises(ValueError, match="topk_group"):
        Router(grouped=True, n_group=2, topk_group=3)
    # the plain softmax router is graph/moe.py's, op for op (Mixtral / Qwen-MoE / OLMoE)
    for normalize in (True, False):
        assert routers.topk_router(4096, 8, 2, Router(normalize=normalize)) == moe.router(4096, 8, 2, normalize)


def test_minimax_m2_quirks() -> None:
    _, spec = build_spec(_data(MINIMAX_M2))
    assert spec.rotary_dim == 64 and spec.head_dim == 128  # legacy rotary_dim: 64 of 128
    assert all(layer.moe for layer in spec.layers) and spec.layers[0].ffn.intermediate == 1536
    v = profile(_data(MINIMAX_M2), 1, 4).values
    # q_norm over the whole q projection: one row of 48*128 per token (4 rsqrt), not one per head
    assert v["model.layers.0.self_attn.q_norm"]["sqrt"] == 4
    assert v["model.layers.0.self_attn.q_norm"]["params"] == 6144
    gate = v["model.layers.0.mlp.gate"]
    assert gate["mult"] == 4 * 256 * 3072  # logits only: no routed scaling factor
    assert gate["div"] == 4 * 256 + 4 * 8  # sigmoid + renormalisation (no epsilon: ADD 4*7 for the sums)
    with pytest.raises(ConfigError, match="shared_intermediate_size"):
        build_spec(_data(MINIMAX_M2, shared_intermediate_size=1024))
    with pytest.raises(ConfigError, match="rotary_dim"):
        build_spec(_data(MINIMAX_M2, rotary_dim=256))


def test_olmoe_quirks() -> None:
    v = profile(_data(OLMOE), 1, 2).values
    gate = v["model.layers.0.mlp.gate"]
    assert gate["div"] == 2 * 64  # softmax only: norm_topk_prob false
    assert v["model.layers.0.self_attn.k_norm"]["params"] == 2048  # 16 KV heads * 128
    normed = profile(_data(OLMOE, norm_topk_prob=True), 1, 2).values["model.layers.0.mlp.gate"]
    assert normed["div"] == 2 * 64 + 2 * 8
    clipped = profile(_data(OLMOE, clip_qkv=8.0), 1, 2)
    # q, k, v (3*2048 wide) clamped: 2 CMP per element on 2 tokens
    assert clipped.values["model.layers.0.self_attn:clip_qkv"]["cmp"] == 2 * 2 * 3 * 2048
    assert any("clip_qkv" in note for note in clipped.model.spec.notes)
    with pytest.raises(ConfigError, match="head_dim"):
        build_spec(_data(OLMOE, head_dim=64))


def test_granite_multipliers_and_router() -> None:
    v = profile(_data(GRANITE), 1, 3).values
    assert v["model:embedding_multiplier"]["mult"] == 3 * 1536  # inputs_embeds * embedding_multiplier
    assert v["model.layers.0:residual_multiplier"]["mult"] == 2 * 3 * 1536  # both block outputs
    assert v[":logits_scaling"]["div"] == 3 * 49155  # logits / logits_scaling
    router = v["model.layers.0.block_sparse_moe.router"]
    # top-8 of 40 logits: 8*(80-8-1)/2 = 284 CMP per token, then a softmax over the 8: 7 CMP, 8 DIV
    assert router["cmp"] == 3 * (284 + 7) and router["div"] == 3 * 8
    shared = profile(_data(GRANITE, model_type="granitemoeshared", shared_intermediate_size=1024), 1, 3).values
    assert shared["model.layers.0.shared_mlp.input_linear"]["params"] == 1536 * 2048  # hidden -> 2I
    assert shared["model.layers.0:shared_mix"]["add"] == 3 * 1536


def test_hunyuan_per_layer_top_k_and_names() -> None:
    data = _data(HUNYUAN, num_hidden_layers=2, moe_topk=[8, 2])
    _, spec = build_spec(data)
    assert [layer.ffn.top_k for layer in spec.layers] == [8, 2]
    assert any("moe_intermediate_size is ignored" in note for note in spec.notes)
    v = profile(data, 1, 1).values
    assert v["model.layers.1.mlp.experts"]["active_params"] == 2 * 37_748_736
    assert v["model.layers.0.mlp.gate.wg"]["params"] == 64 * 4096  # the fp32 router linear is a submodule
    assert v["model.layers.0.self_attn.query_layernorm"]["params"] == 128  # per head
    with pytest.raises(ConfigError, match="num_experts"):
        build_spec(_data(HUNYUAN, num_experts=[64] * 32))
    with pytest.raises(ConfigError, match="moe_topk"):
        build_spec(_data(HUNYUAN, moe_topk=[8] * 31))


def test_layer_patterns() -> None:
    _, dots = build_spec(_data(DOTS, num_hidden_layers=4, sliding_window=16, max_window_layers=2))
    assert [layer.mixer.window for layer in dots.layers] == [None, None, 16, 16]  # layers >= max_window_layers
    assert [layer.moe for layer in dots.layers] == [False, True, True, True]  # first_k_dense_replace 1
    _, exaone = build_spec(_data(EXAONE, num_hidden_layers=8))
    # every 4th layer global (NoPE), the others sliding with RoPE; layer 0 dense (first_k_dense_replace 1)
    assert [layer.mixer.rope for layer in exaone.layers] == [True, True, True, False] * 2
    assert [layer.sliding for layer in exaone.layers] == [True, True, True, False] * 2
    assert [layer.moe for layer in exaone.layers] == [False] + [True] * 7
    v = profile(_data(EXAONE, num_hidden_layers=4), 1, 2).values
    assert "model.layers.0.self_attn:rope" in v and "model.layers.3.self_attn:rope" not in v
    _, mixed = build_spec(_data(EXAONE, num_hidden_layers=3, mlp_layer_types=["sparse", "dense", "sparse"]))
    assert [layer.moe for layer in mixed.layers] == [True, False, True]
    with pytest.raises(ConfigError, match="sliding_window_pattern"):
        build_spec(_data(EXAONE, sliding_window_pattern="LLLG"))  # a string pattern needs layer_types
    _, lite = build_spec(_data(GLM_LITE, num_hidden_layers=3, mlp_layer_types=["sparse", "dense", "sparse"]))
    assert [layer.moe for layer in lite.layers] == [True, False, True]
    assert lite.model_type == "glm4_moe_lite"
    flex = profile(_data(FLEX_OLMO, num_hidden_layers=1), 1, 2).values
    assert "model.layers.0.input_layernorm" not in flex  # OLMo-2's layer: norms after the blocks
    assert {"model.layers.0.post_attention_layernorm", "model.layers.0.post_feedforward_layernorm"} <= set(flex)
    _, solar = build_spec(_data(SOLAR))
    assert solar.model_type == "solar_open"
    assert all(layer.moe for layer in solar.layers)  # no first_k_dense_replace: every layer routes
    assert solar.rotary_dim == 128  # the whole head (glm4_moe's default is half)
    with pytest.raises(ConfigError, match="partial_rotary_factor"):  # transformers fails on it (LlamaAttention)
        build_spec(_data(SOLAR, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                 "partial_rotary_factor": 0.5}))


# --- validation against transformers --------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
FULL: dict[str, tuple[str, dict[str, Any]]] = {  # every layer at full width (a few seconds each on meta); EXAONE's window cut to 6 to bind at (3,7,5)
    "glm-4.5-air": (GLM_AIR, {}),
    "minimax-m2.5": (MINIMAX_M2, {}),
    "olmoe-1b-7b": (OLMOE, {}),
    "granite-3.1-3b-a800m": (GRANITE, {}),
    "hunyuan-a13b": (HUNYUAN, {}),
    "dots.llm1": (DOTS, {}),
    "exaone-moe-defaults": (EXAONE, {"sliding_window": 6}),
    "glm4-moe-lite-defaults": (GLM_LITE, {}),
    "solar-open-defaults": (SOLAR, {}),
    "flex-olmo-defaults": (FLEX_OLMO, {}),
}
QUIRKS: dict[str, tuple[str, dict[str, Any]]] = {
    "glm4-moe-grouped": (GLM_AIR, {"num_hidden_layers": 4, "n_group": 8, "topk_group": 3, "use_qk_norm": True,
                                   "attention_bias": False, "norm_topk_prob": False, "n_shared_experts": 2,
                                   "first_k_dense_replace": 2, "partial_rotary_factor": 1.0,
                                   "routed_scaling_factor": 2.5}),
    "olmoe-gqa-bias-norm": (OLMOE, {"num_hidden_layers": 2, "norm_topk_prob": True, "attention_bias": True,
                                    "num_key_value_heads": 4}),
    "minimax-m2-full-rope": (MINIMAX_M2, {"num_hidden_layers": 2, "rotary_dim": 128}),
    "granitemoeshared-mup": (GRANITE, {"num_hidden_layers": 2, "model_type": "granitemoeshared",
                                       "shared_intermediate_size": 1024, "attention_bias": True,
                                       "embedding_multiplier": 12.0, "logits_scaling": 6.0,
                                       "residual_multiplier": 0.22, "attention_multiplier": 0.015625,
                                       "tie_word_embeddings": False}),
    "hunyuan-per-layer-topk-ntk": (HUNYUAN, {"num_hidden_layers": 2, "moe_topk": [8, 3], "attention_bias": True,
                                             "rope_scaling": {"alpha": 1000.0, "factor": 1.0, "type": "dynamic"}}),
    "dots1-sliding-grouped": (DOTS, {"num_hidden_layers": 4, "sliding_window": 4, "max_window_layers": 2,
                                     "attention_bias": True, "n_group": 8, "topk_group": 2,
                                     "num_key_value_heads": 8}),
    "exaone-moe-k-exaone-dims": (EXAONE, {"num_hidden_layers": 4, "hidden_size": 6144, "head_dim": 128,
                                          "intermediate_size": 18432, "num_attention_heads": 64,
                                          "num_key_value_heads": 8, "num_experts": 128, "moe_intermediate_size": 2048,
                                          "vocab_size": 153600, "sliding_window": 4, "sliding_window_pattern": "LLLG",
                                          "layer_types": ["sliding_attention"] * 3 + ["full_attention"]}),
    "flex-olmo-gqa-bias-norm": (FLEX_OLMO, {"num_hidden_layers": 2, "num_key_value_heads": 8,
                                            "attention_bias": True, "norm_topk_prob": True}),
    "solar-open-bias-groups": (SOLAR, {"num_hidden_layers": 2, "attention_bias": True, "n_group": 8,
                                       "topk_group": 2, "norm_topk_prob": False, "n_shared_experts": 2}),
    "glm4-moe-lite-quirks": (GLM_LITE, {"num_hidden_layers": 3, "mlp_layer_types": ["sparse", "dense", "sparse"],
                                        "q_lora_rank": None, "rope_interleave": False, "n_group": 8,
                                        "topk_group": 2, "norm_topk_prob": False}),
}


def _validate_all(config: Any, tiny: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for shape in SHAPES:
        report = validate(config, *shape, tiny=tiny, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(FULL))
def test_validate_full_width_on_meta(case: str) -> None:
    name, changes = FULL[case]
    _validate_all(_data(name, **changes), tiny=False)


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(FULL))
def test_validate_tiny_on_cpu(case: str) -> None:
    name, _ = FULL[case]
    _validate_all(_data(name), tiny=True)


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(QUIRKS))
def test_validate_quirks(case: str) -> None:
    name, changes = QUIRKS[case]
    _validate_all(_data(name, **changes), tiny=False)
    _validate_all(_data(name, **changes), tiny=True)
