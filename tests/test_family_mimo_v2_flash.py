"""mimo_v2_flash (sliding layers with twice the KV heads and attention sinks, full layers without, asymmetric
q/k and v head dims, value scaling, partial RoPE per layer type, DeepSeek-V3 routing without shared experts):
totals, hand-derived nodes, the cache per layer, the hub spelling, the generation closed form, and validation
against transformers 5.23.

Hand-derived values use a tiny config: hidden 64, 4 heads, q/k head 24, v head 16, 1 KV head on full layers
(2 on sliding ones), RoPE on int(24 * 0.334) = 8 dims, window W = 4, layers [full (dense MLP), sliding (MoE)],
at B = 2, S = 3, P = 5: T = 6 tokens, full keys P + S = 8, sliding keys min(P, W-1) + S = 6.

No real MiMo-V2-Flash file was at hand: transformers--MiMoV2FlashConfig-defaults.json is MiMoV2FlashConfig()'s
defaults (transformers 5.23, which mirror MiMo-V2-Flash: 48 layers, hidden 4096, 256 experts, top 8).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from closed_forms import assert_generation_is_the_sum_of_forwards

from llm_profiler import ConfigError, profile, profile_model

CONFIGS = Path(__file__).parent / "family_configs"
DEFAULTS = json.loads((CONFIGS / "transformers--MiMoV2FlashConfig-defaults.json").read_text())
TINY = {"model_type": "mimo_v2_flash", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
        "head_dim": 24, "v_head_dim": 16, "intermediate_size": 96, "vocab_size": 128, "num_hidden_layers": 2,
        "layer_types": ["full_attention", "sliding_attention"], "sliding_window": 4,
        "mlp_layer_types": ["dense", "sparse"], "n_routed_experts": 8, "num_experts_per_tok": 2,
        "moe_intermediate_size": 24}
SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


def test_totals() -> None:
    # 48 layers, hidden 4096, 64 heads of 192 (v 128); full layers (0, 5, 11, ..., 47: 9) have 4 KV heads, the 39
    # sliding ones 8 and 64 sinks. Attention: q 4096*64*192 = 50,331,648, o 64*128*4096 = 33,554,432; k and v
    # 4096*KV*(192 + 128): 5,242,880 (full) / 10,485,760 (sliding). Layer 0: dense MLP 3*4096*16384 =
    # 201,326,592; the 47 others: 256 experts of 3*4096*2048 (6,442,450,944) + router 256*4096 = 1,048,576.
    # Norms 2*4096 per layer; embedding and head 2*152576*4096; final norm 4096:
    # 9*(83,886,080 + 5,242,880) + 39*(83,886,080 + 10,485,760 + 64) + 48*8192 + 201,326,592
    # + 47*6,443,499,520 + 1,249,902,592 + 4096 = 308,778,768,832 (the published "309B total");
    # active: 8 of 256 experts: 308,778,768,832 - 47*248*25,165,824 = 15,445,924,288 ("15B active").
    prof = profile(DEFAULTS, 1, 1)
    assert prof.total("params", "model") == 308_778_768_832
    assert prof.total("active_params", "model") == 15_445_924_288


@pytest.fixture(scope="module")
def tiny() -> Any:
    return profile(TINY, 2, 3, 5)


def test_full_and_sliding_attention_by_hand(tiny: Any) -> None:
    v = tiny.values
    a0, a1 = "model.layers.0.self_attn", "model.layers.1.self_attn"
    assert (v[f"{a0}.k_proj"]["macs"], v[f"{a0}.v_proj"]["macs"]) == (6 * 64 * 24, 6 * 64 * 16)
    assert v[f"{a1}.k_proj"]["macs"] == 6 * 64 * 2 * 24  # twice the KV heads on sliding layers
    assert v[f"{a0}:v_scale"]["mult"] == 6 * 16  # values * attention_value_scale
    # RoPE on 8 of 24 dims: q 6*4*8 = 192 and k 6*1*8 = 48 rotated: 2*240 MULT, 120 negations + 240 ADD
    assert (v[f"{a0}:rope"]["mult"], v[f"{a0}:rope"]["add"]) == (480, 360)
    assert v[f"{a0}:kv_cache"]["cache"] == 2 * 1 * (24 + 16) * 8  # k and v widths differ
    assert v[f"{a1}:kv_cache"]["cache"] == 2 * 2 * (24 + 16) * 3  # window - 1 tokens
    # full: the max over 8 keys (7 CMP) and the subtraction, 24 rows; sliding: 7 columns (6 keys + the sink)
    assert (v[f"{a0}:row_max"]["cmp"], v[f"{a0}:row_max"]["add"], v[f"{a0}:row_max"]["params"]) == (168, 192, 0)
    assert (v[f"{a1}:row_max"]["cmp"], v[f"{a1}:row_max"]["add"], v[f"{a1}:row_max"]["params"]) == (144, 168, 4)
    assert v[f"{a1}:softmax"]["exp"] == 24 * 7  # softmax over the keys and the sink
    assert v[f"{a1}:context"]["macs"] == 2 * 4 * 3 * 6 * 16  # the sink column dropped, v head 16
    assert v[f"{a0}.o_proj"]["macs"] == 6 * 64 * 64  # 4 heads * v 16 -> hidden
    # one table per layer type, 8 dims each at S = 3: 2*(3*4 + 2*3*8) MULT, 2*2*3*8 EXP
    assert (v["model.rotary_emb"]["mult"], v["model.rotary_emb"]["exp"]) == (120, 96)


def test_moe_without_shared_experts(tiny: Any) -> None:
    v = tiny.values
    assert "model.layers.1.mlp.shared_experts.gate_proj" not in v
    assert v["model.layers.1.mlp.experts"]["params"] == 8 * 3 * 64 * 24
    assert v["model.layers.0.mlp.gate_proj"]["macs"] == 6 * 64 * 96  # layer 0: dense


def test_hub_spelling() -> None:
    hub = {**TINY, "layer_types": None, "mlp_layer_types": None, "num_hidden_layers": 6,
           "sliding_window_size": 3, "hybrid_layer_pattern": [0, 1, 1, 1, 1, 0],
           "moe_layer_freq": [0, 1, 1, 1, 1, 1], "swa_num_key_value_heads": 2}
    spec = profile(hub, 1, 1).model.spec
    assert spec.sliding_window == 4  # sliding_window_size + 1
    assert [layer.sliding for layer in spec.layers] == [False, True, True, True, True, False]
    assert spec.dense_layers == (0,)
    assert spec.notes == ()  # the hub fields agree with what transformers derives
    odd = profile({**hub, "hybrid_layer_pattern": [1] * 6, "swa_num_key_value_heads": 8}, 1, 1).model.spec
    assert any("hybrid_layer_pattern" in n for n in odd.notes) and any("swa_num_key_value_heads" in n for n in odd.notes)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="rope_type"):
        profile({**TINY, "rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0},
                                             "sliding_attention": {"rope_type": "default"}}}, 1, 1)
    with pytest.raises(ConfigError, match="even"):
        profile({**TINY, "head_dim": 27}, 1, 1)  # int(27 * 0.334) = 9 rotated dims: not pairs


def test_generation_closed_form_equals_sum_of_forwards() -> None:
    assert_generation_is_the_sum_of_forwards(profile_model(TINY), ("flops", "macs", "cmp", "act", "cache"))


def _validate(config: Any, tiny: bool, shapes: list[tuple[int, int, int]]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for shape in shapes:
        report = validate(config, *shape, tiny=tiny, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()


CASES = {"mimo-v2-flash-defaults": DEFAULTS, "mimo-grouped-router": {**DEFAULTS, "n_group": 8, "topk_group": 4}}


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_full_width_on_meta(case: str) -> None:
    _validate(CASES[case], tiny=False, shapes=[*SHAPES, (1, 2, 130)])  # past the window of 129


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_tiny_on_cpu(case: str) -> None:
    _validate(CASES[case], tiny=True, shapes=SHAPES)  # tiny window 4: past it at (3, 7, 5) and (1, 1, 9)
