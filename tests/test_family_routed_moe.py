"""Routed-MoE families (graph/routers.py): glm4_moe, minimax_m2, olmoe, ... Published totals, routing quirks,
layer patterns, and validation against transformers 5.23 (full size on meta, tiny on the CPU).

Configs: tests/family_configs/ (GLM-4.5-Air: a printed Glm4MoeConfig dump; MiniMax-M2.5: a vendored copy
of the Hub config.json; OLMoE-1B-7B-0924: the checkpoint's published dims on OlmoeConfig defaults)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec
from llm_profiler.graph import routers
from llm_profiler.graph.routers import RoutedMoESpec, Router
from llm_profiler.profile import profile

CONFIGS = Path(__file__).parent / "family_configs"


def _data(name: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads((CONFIGS / f"{name}.json").read_text()), **changes}


GLM_AIR = "zai-org--GLM-4.5-Air"
MINIMAX_M2 = "MiniMaxAI--MiniMax-M2.5"
OLMOE = "allenai--OLMoE-1B-7B-0924"


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
    counts = routers.topk_router(16, 8, 2, router, rows=1)
    assert counts["cmp"] == 4 + 5 + 8 + 13
    assert counts["add"] == 8 * 15 + 8 + 8 + 4 + 1 + 1  # logits, sigmoid, bias, group sums, sum of 2, eps
    with pytest.raises(ValueError, match="topk_group"):
        Router(grouped=True, n_group=2, topk_group=3)


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


# --- validation against transformers --------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
FULL = {  # full width, few layers (every layer kind kept) to keep this file fast
    "glm-4.5-air": (GLM_AIR, {"num_hidden_layers": 3}),
    "minimax-m2.5": (MINIMAX_M2, {"num_hidden_layers": 2}),
    "olmoe-1b-7b": (OLMOE, {"num_hidden_layers": 2}),
}
QUIRKS = {
    "glm4-moe-grouped": (GLM_AIR, {"num_hidden_layers": 4, "n_group": 8, "topk_group": 3, "use_qk_norm": True,
                                   "attention_bias": False, "norm_topk_prob": False, "n_shared_experts": 2,
                                   "first_k_dense_replace": 2, "partial_rotary_factor": 1.0,
                                   "routed_scaling_factor": 2.5}),
    "olmoe-gqa-bias-norm": (OLMOE, {"num_hidden_layers": 2, "norm_topk_prob": True, "attention_bias": True,
                                    "num_key_value_heads": 4}),
    "minimax-m2-full-rope": (MINIMAX_M2, {"num_hidden_layers": 2, "rotary_dim": 128}),
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
