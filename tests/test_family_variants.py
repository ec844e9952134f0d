"""The variants of registered families that transformers 5.23 runs: granite_swa and granitemoe_swa (granite /
granitemoe(shared) with sliding-window layers, learned attention sinks applied after the attention,
sigmoid(logsumexp(scores) - sink) times the output, and a RoPE base per layer: families/_granite_swa.py), and
cohere2_moe (cohere2's parallel block with MoE layers: families/cohere.py), and minicpm3 (DeepSeek-V2's MLA in a
Llama decoder with muP-style scalings: families/minicpm3.py). Totals derived by hand, the quirks, and validation
per node (tiny on the CPU, full size on meta).

Configs (tests/family_configs/): the transformers config class defaults, dumped with to_dict() (``architectures``
set): GraniteSWAConfig (its docstring names ibm-granite/granite-swash-2b), GraniteMoeSWAConfig, Cohere2MoeConfig,
MiniCPM3Config (openbmb/MiniCPM3-4B's dims)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec
from llm_profiler.families._granite_swa import sink_scale
from llm_profiler.formula import Formula
from llm_profiler.profile import profile

CONFIGS = Path(__file__).parent / "family_configs"
GRANITE_SWA = "transformers--GraniteSWAConfig-defaults"
GRANITEMOE_SWA = "transformers--GraniteMoeSWAConfig-defaults"
COHERE2_MOE = "transformers--Cohere2MoeConfig-defaults"
MINICPM3 = "transformers--MiniCPM3Config-defaults"


def _data(name: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads((CONFIGS / f"{name}.json").read_text()), **changes}


# a NoPE layer and two RoPE bases (two rotary embeddings run), sliding layers between
NOPE = _data(GRANITE_SWA, num_hidden_layers=3, layer_types=["full_attention", "sliding_attention", "sliding_attention"],
             layer_rope_theta=[0, 10000.0, 500000.0])
# the shared MLP beside the experts (granitemoeshared's), attention biases
SHARED = _data(GRANITEMOE_SWA, shared_intermediate_size=1024, attention_bias=True)
# a dense first layer (full, rotated: prefix pattern 1), RMSNorms, the sigmoid router renormalised, a shared
# expert averaged with the routed output
COHERE_DENSE = _data(COHERE2_MOE, num_hidden_layers=5,
                     layer_types=["full_attention"] + ["sliding_attention"] * 3 + ["full_attention"],
                     mlp_layer_types=["dense"] + ["sparse"] * 4, prefix_dense_intermediate_size=4096,
                     rms_norm_eps=1e-5, expert_selection_fn="sigmoid", num_shared_experts=1)
# prefix pattern 2 (its full dense layer is NoPE), two shared experts summed, the sigmoid weights not renormalised
COHERE_SUM = _data(COHERE2_MOE, num_hidden_layers=4,
                   layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
                   mlp_layer_types=["dense", "sparse", "sparse", "sparse"], prefix_dense_sliding_window_pattern=2,
                   num_shared_experts=2, shared_expert_combination_strategy="sum", expert_selection_fn="sigmoid",
                   norm_topk_prob=False)


# a plain q_proj (no q low rank), attention biases, and the scalings' null (no-op) values: their ops still run
MINICPM3_Q = _data(MINICPM3, q_lora_rank=None, attention_bias=True, scale_depth=None, dim_model_base=None)


# --- totals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "active"), [
    # GraniteSWAConfig: h=2560, 20 heads x 128, 4 KV heads, 24 layers, tied; per layer attention
    # 2*2560*2560 + 2*2560*512 = 15,728,640, sinks 20, MLP 3*2560*8192 = 62,914,560, norms 2*2560 = 5,120
    # -> 78,648,340; embedding 100352*2560 = 256,901,120, final norm 2560:
    # 24*78,648,340 + 256,903,680 = 2,144,463,840 (transformers' own parameter count on meta)
    (GRANITE_SWA, 2_144_463_840, 2_144_463_840),
    # GraniteMoeSWAConfig: h=4096, 32 heads = 32 KV heads x 128, 32 layers, untied; per layer attention
    # 4*4096*4096 = 67,108,864, sinks 32, norms 8,192, router 8*4096 = 32,768, 8 experts of 3*4096*11008 =
    # 135,266,304 -> 1,149,280,288; embed + lm_head 2*32000*4096 = 262,144,000, final norm 4096:
    # 32*1,149,280,288 + 262,148,096 = 37,039,117,312; active (top 2):
    # 32*(67,108,864 + 32 + 8,192 + 32,768 + 2*135,266,304) + 262,148,096 = 11,067,986,944.
    (GRANITEMOE_SWA, 37_039_117_312, 11_067_986_944),
    # Cohere2MoeConfig: h=8192, 64 heads = 64 KV heads x 128, 40 layers, tied, cohere's LayerNorm (weight only,
    # one per layer: the blocks run in parallel); per layer attention 4*8192*8192 = 268,435,456, router 8*8192 =
    # 65,536, 8 experts of 3*8192*22528 = 553,648,128, norm 8,192 -> 4,697,694,208; embedding 256000*8192 =
    # 2,097,152,000, final norm 8192: 40*4,697,694,208 + 2,097,160,192 = 190,004,928,512; active (top 2):
    # 40*(268,435,456 + 65,536 + 2*553,648,128 + 8,192) + 2,097,160,192 = 57,129,377,792.
    (COHERE2_MOE, 190_004_928_512, 57_129_377_792),
    # MiniCPM3Config (MiniCPM3-4B): h=2560, 40 heads, q_lora 768, kv_lora 256, qk 64 + 32, v 64, 62 layers, tied;
    # per layer q_a 2560*768 = 1,966,080, q_a_layernorm 768, q_b 768*40*96 = 2,949,120, kv_a 2560*(256+32) =
    # 737,280, kv_a_layernorm 256, kv_b 256*40*(64+64) = 1,310,720, o 40*64*2560 = 6,553,600, MLP 3*2560*6400 =
    # 49,152,000, norms 5,120 -> 62,674,944; embedding 73448*2560 = 188,026,880, final norm 2560:
    # 62*62,674,944 + 188,029,440 = 4,073,875,968
    (MINICPM3, 4_073_875_968, 4_073_875_968),
])
def test_params_and_active_params(name: str, params: int, active: int) -> None:
    prof = profile(_data(name), 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


# --- quirks ---------------------------------------------------------------------------------------


def test_sink_scale_counts() -> None:
    # rows R = B*H*S = 2*4*3 = 24 over K = 5 keys, D = 16: logsumexp (K-1 CMP, 2K ADD, K+1 EXP per row), the
    # sub (R ADD), sigmoid (R EXP, R ADD, R DIV), the output times it (R*D MULT)
    c = sink_scale(4, 16, Formula.const(5))
    values = {k: Formula.of(v)(2, 3, 0) for k, v in c.items()}
    assert values["cmp"] == 24 * 4  # = 96
    assert values["add"] == 24 * 10 + 24 + 24  # = 288
    assert values["exp"] == 24 * 6 + 24  # = 168
    assert values["div"] == 24
    assert values["mult"] == 24 * 16  # = 384
    assert values["params"] == 4


def test_layer_types_default_and_window() -> None:
    _, spec = build_spec(_data(GRANITE_SWA, layer_types=None))  # every fourth layer from 0 full, the rest slide
    assert [layer.mixer.window for layer in spec.layers[:5]] == [None, 128, 128, 128, None]
    assert all(layer.mixer.sinks for layer in spec.layers)


def test_nope_layers_and_rope_tables() -> None:
    prof = profile(NOPE, 1, 4)
    paths = {n.path for n in prof.model.graph.nodes}
    assert "model.layers.0.self_attn:rope" not in paths  # theta 0: NoPE
    assert "model.layers.1.self_attn:rope" in paths
    # two distinct non-zero thetas: two rotary embeddings run, model.rotary_emb (the global one) never does
    assert {"model.rotary_embs.0", "model.rotary_embs.1"} <= paths and "model.rotary_emb" not in paths


@pytest.mark.parametrize(("changes", "field"), [
    ({"sliding_window": None}, "sliding_window"),
    ({"layer_rope_theta": [10000.0]}, "layer_rope_theta"),
    ({"layer_rope_theta": ["x"] * 24}, "layer_rope_theta"),
])
def test_bad_fields_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build_spec(_data(GRANITE_SWA, **changes))


def test_cohere2_moe_layer_kinds() -> None:
    # first_k_dense_replace 2, patterns 2 (prefix) and 3 (the rest, counted from 0 again): prefix sliding, full;
    # then sliding, sliding, full, sliding
    data = _data(COHERE2_MOE, num_hidden_layers=6, layer_types=None, mlp_layer_types=None, first_k_dense_replace=2,
                 prefix_dense_sliding_window_pattern=2, sliding_window_pattern=3)
    _, spec = build_spec(data)
    assert [layer.sliding for layer in spec.layers] == [True, False, True, True, False, True]
    assert [layer.moe for layer in spec.layers] == [False, False, True, True, True, True]
    # rope on sliding layers only (the prefix pattern is not 1: no forced rope on the full dense layer)
    assert [layer.mixer.rope for layer in spec.layers] == [True, False, True, True, False, True]
    _, spec = build_spec({**data, "prefix_dense_sliding_window_pattern": 1})  # dense layers always rotate
    assert [layer.mixer.rope for layer in spec.layers[:2]] == [True, True]


@pytest.mark.parametrize(("changes", "field"), [
    ({"expert_selection_fn": "relu"}, "expert_selection_fn"),
    ({"shared_expert_combination_strategy": "max"}, "shared_expert_combination_strategy"),
    ({"sliding_window": None}, "sliding_window"),
])
def test_cohere2_moe_bad_fields_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build_spec(_data(COHERE2_MOE, **changes))


def test_minicpm3_quirks() -> None:
    # T = 3 tokens, h = 2560: the embedding times scale_emb, both residual branches times residual_scale,
    # the final hidden states / logits_scaling
    prof = profile(_data(MINICPM3), 1, 3)
    assert prof.values["model.embed_tokens"]["mult"] == 3 * 2560  # = 7,680
    assert prof.values["model.layers.0:residual_multiplier"]["mult"] == 2 * 3 * 2560  # = 15,360
    assert prof.values[":logits_scaling"]["div"] == 3 * 2560
    spec = prof.model.graph.spec
    assert spec.v_head_dim == 2560 // 40 and all(layer.mixer.kind == "mla" and not layer.moe for layer in spec.layers)


# --- validation against transformers ----------------------------------------------------------------

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation import validate  # noqa: E402

SINK_MODELS = [str(CONFIGS / f"{GRANITE_SWA}.json"), str(CONFIGS / f"{GRANITEMOE_SWA}.json"), NOPE, SHARED]
MODELS = [*SINK_MODELS, str(CONFIGS / f"{COHERE2_MOE}.json"), COHERE_DENSE, COHERE_SUM,
          str(CONFIGS / f"{MINICPM3}.json"), MINICPM3_Q]
# prefill; past the tiny window (4) after a cached prefix; a decode step past it
SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


@pytest.mark.parametrize("model", range(len(MODELS)))
@pytest.mark.parametrize("shape", SHAPES)
def test_exact_tiny(model: int, shape: tuple[int, int, int]) -> None:
    report = validate(MODELS[model], *shape, tiny=True)
    assert report.ok, report.table()
    assert report.rows
    if model < len(SINK_MODELS):
        assert any(r.node.endswith(":sink_scale") for r in report.rows)


@pytest.mark.parametrize("name", [GRANITE_SWA, GRANITEMOE_SWA, COHERE2_MOE, MINICPM3])
def test_exact_full_size_meta(name: str) -> None:
    report = validate(str(CONFIGS / f"{name}.json"), 3, 7, 5)
    assert report.ok, report.table()
    assert report.rows
