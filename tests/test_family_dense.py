"""Dense decoder families of issue 11: olmo3, exaone4, cohere, cohere2, stablelm, glm, glm4, granite, smollm3,
seed_oss, hunyuan_v1_dense, ernie4_5, ministral, helium, arcee, olmo, nemotron, persimmon, gpt_neo, gptj,
codegen, gpt_bigcode, mpt, xglm, cwm, jais2.

Configs live in tests/family_configs/: the real config.json of EXAONE-4.0-32B, Olmo-3.1-32B-Instruct,
aya-23-8B and stablelm-2-zephyr-1.6b, and for the other model types the transformers 5.23 config class
defaults (``transformers--<Class>-defaults.json``: ``Class().to_dict()``, which mirror the checkpoint named in
each class's docstring). Each is validated exact against transformers at full size on the meta device and at
tiny size with real weights on the CPU, at a prefill, an odd shape after a cached prefix, a decode step and,
for windowed models, a shape past the window; quirk variants run too. Hand-derived counts sit beside.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import profile, profile_model
from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec

CONFIGS = Path(__file__).parent / "family_configs"


def load(name: str, **changes: Any) -> dict[str, Any]:
    data = json.loads((CONFIGS / f"{name}.json").read_text())
    data.update(changes)
    return data


def defaults(cls: str, **changes: Any) -> dict[str, Any]:
    return load(f"transformers--{cls}-defaults", **changes)


EXAONE4 = load("LGAI-EXAONE--EXAONE-4.0-32B")
OLMO3 = load("allenai--Olmo-3.1-32B-Instruct")
AYA = load("CohereForAI--aya-23-8B")
STABLELM = load("stabilityai--stablelm-2-zephyr-1_6b")
# MPT-7B: MptConfig's defaults are MPT-1B-sized; these are mosaicml/mpt-7b's dimensions.
MPT_7B = defaults("MptConfig", d_model=4096, n_heads=32, n_layers=32, vocab_size=50432)

# (id, config, windowed: a shape past the window runs at full size): every model type once, as published or as its config class defaults it.
BASE: list[tuple[str, dict[str, Any], bool | str]] = [
    ("olmo3", OLMO3, True),
    ("exaone4", EXAONE4, True),
    ("cohere", AYA, False),
    ("cohere2", defaults("Cohere2Config"), True),
    ("stablelm", STABLELM, False),
    ("glm", defaults("GlmConfig"), False),
    ("glm4", defaults("Glm4Config"), False),
    ("granite", defaults("GraniteConfig"), False),
    ("smollm3", defaults("SmolLM3Config"), False),
    ("seed_oss", defaults("SeedOssConfig"), False),
    # HunYuanDenseV1Config leaves head_dim null, which its attention cannot use: Hunyuan-7B's 128.
    ("hunyuan_v1_dense", defaults("HunYuanDenseV1Config", head_dim=128), False),
    ("ernie4_5", defaults("Ernie4_5Config"), False),
    # MinistralConfig leaves head_dim null, which its attention cannot use: Ministral-8B's 128.
    ("ministral", defaults("MinistralConfig", head_dim=128), True),
    ("helium", defaults("HeliumConfig"), False),
    ("arcee", defaults("ArceeConfig"), False),
    ("olmo", defaults("OlmoConfig"), False),
    # NemotronConfig leaves num_key_value_heads null, which its attention cannot use: Minitron-8B's 8.
    ("nemotron", defaults("NemotronConfig", num_key_value_heads=8), False),
    ("persimmon", defaults("PersimmonConfig"), False),
    ("gpt_neo", defaults("GPTNeoConfig"), "local"),
    ("gptj", defaults("GPTJConfig"), False),
    ("codegen", defaults("CodeGenConfig"), False),
    ("gpt_bigcode", defaults("GPTBigCodeConfig"), False),
    ("mpt", MPT_7B, False),
    ("xglm", defaults("XGLMConfig"), False),
    # CwmConfig's defaults are CWM-32B's dimensions (a full layer every fourth, 8192-token windows otherwise)
    ("cwm", defaults("CwmConfig"), True),
    ("jais2", defaults("Jais2Config"), False),  # Jais-2-8B's dimensions
]
ALTERNATE = [f"{f}_attention" for f in ("sliding", "full")]
# Quirks the base configs leave off (2-4 layers each, run both ways).
VARIANTS: list[tuple[str, dict[str, Any], bool | str]] = [
    ("exaone4-no-window", {**EXAONE4, "sliding_window": None, "layer_types": None, "num_hidden_layers": 3}, False),
    ("exaone4-pattern-LLG", {**EXAONE4, "layer_types": None, "sliding_window_pattern": "LLG",
                             "num_hidden_layers": 3}, True),
    ("cohere-qk-norm", {**AYA, "use_qk_norm": True, "num_hidden_layers": 2}, False),
    ("stablelm-parallel-qk-norm-gqa", {**STABLELM, "use_parallel_residual": True, "qk_layernorm": True,
                                       "num_key_value_heads": 8, "num_hidden_layers": 2}, False),
    ("granite-3-multipliers", defaults("GraniteConfig", attention_bias=True, mlp_bias=True, num_key_value_heads=8,
                                       embedding_multiplier=12.0, residual_multiplier=0.22,
                                       attention_multiplier=0.0078125, logits_scaling=16.0, num_hidden_layers=2),
     False),
    ("smollm3-sliding-nope", defaults("SmolLM3Config", use_sliding_window=True, sliding_window=4096,
                                      layer_types=None, num_hidden_layers=4, no_rope_layers=None), True),
    ("ministral-alternating", defaults("MinistralConfig", head_dim=128, num_hidden_layers=2,
                                       layer_types=ALTERNATE), True),
    ("olmo3-all-sliding", {**OLMO3, "num_hidden_layers": 2, "layer_types": [ALTERNATE[0]] * 2}, True),
    # no layer slides, yet the base model builds the sliding mask, sized by layer 0's full cache
    ("olmo3-all-full", {**OLMO3, "num_hidden_layers": 2, "layer_types": [ALTERNATE[1]] * 2}, True),
    ("ministral-all-full", defaults("MinistralConfig", head_dim=128, num_hidden_layers=2,
                                    layer_types=[ALTERNATE[1]] * 2), True),
    ("gpt_bigcode-mha", defaults("GPTBigCodeConfig", multi_query=False, n_layer=2), False),
    ("mpt-12-heads", defaults("MptConfig", n_heads=12, d_model=768, n_layers=2), False),
    # an explicit head_dim (not hidden / heads) is what the attention of these uses
    ("olmo-head-dim-64", defaults("OlmoConfig", head_dim=64, num_hidden_layers=2), False),
    ("cohere2-head-dim-64", defaults("Cohere2Config", head_dim=64, num_hidden_layers=4, layer_types=None), True),
]
SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
PAST_WINDOW = (1, 2, 4095)  # full size: P + S = 4097 > the full-size windows (4096)
# GPT-Neo's local window is 256, and its mask buffer caps P + S at max_position_embeddings (2048)
PAST_LOCAL = (1, 2, 300)


def _run(config: dict[str, Any], windowed: bool | str, tiny: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(copy.deepcopy(config), tiny=tiny).build()
    # tiny windows are 4 tokens: (3, 7, 5) and (1, 1, 9) are past them already
    past_window = PAST_LOCAL if windowed == "local" else PAST_WINDOW
    shapes = SHAPES + ([past_window] if windowed and not tiny else [])
    for batch, seq, past in shapes:
        report = validate(copy.deepcopy(config), batch, seq, past, tiny=tiny, model=model)
        assert report.ok and report.rows, report.table()


@pytest.mark.validation
@pytest.mark.parametrize(("name", "config", "windowed"), BASE + VARIANTS, ids=[c[0] for c in BASE + VARIANTS])
def test_validate_full_size_on_meta(name: str, config: dict[str, Any], windowed: bool | str) -> None:
    _run(config, windowed, tiny=False)


@pytest.mark.validation
@pytest.mark.parametrize(("name", "config", "windowed"), BASE + VARIANTS, ids=[c[0] for c in BASE + VARIANTS])
def test_validate_tiny_on_cpu(name: str, config: dict[str, Any], windowed: bool | str) -> None:
    _run(config, windowed, tiny=True)


def test_every_model_type_is_registered_and_covered() -> None:
    types = {build_spec(config)[1].model_type for _, config, _ in BASE}
    assert types == {name for name, _, _ in BASE}


# --- parameter totals ------------------------------------------------------------------------------

def test_aya_23_8b_params() -> None:
    # embedding 256000*4096 = 1,048,576,000 (tied); per layer: q 4096^2 = 16,777,216, k + v 2*4096*1024 =
    # 8,388,608, o 16,777,216, MLP 3*4096*14336 = 176,160,768, input_layernorm (weight only) 4096 ->
    # 218,107,904; 32 layers 6,979,452,928 + final norm 4096 = 8,028,033,024 (the Hub's 8.03B).
    assert profile_model(AYA).count("params", "model") == 8_028_033_024


def test_stablelm_2_1_6b_params() -> None:
    # embedding + lm_head 2*100352*2048 = 411,041,792; per layer: q/k/v with bias 3*(2048^2 + 2048) =
    # 12,589,056, o 4,194,304, MLP 3*2048*5632 = 34,603,008, two LayerNorms 2*2*2048 = 8192 -> 51,394,560;
    # 24 layers 1,233,469,440 + final LayerNorm 4096 = 1,644,515,328 (the Hub's 1.64B).
    assert profile_model(STABLELM).count("params", "model") == 1_644_515_328


def test_exaone4_32b_params() -> None:
    # per layer: q 5120^2 = 26,214,400, k + v 2*5120*1024 = 10,485,760, o 26,214,400, q/k norms 2*128,
    # MLP 3*5120*27392 = 420,741,120, two post-norms 10,240 -> 483,666,176; 64 layers 30,954,635,264 + final
    # norm 5120 = 30,954,640,384 without embeddings (the model card's 30.95B); + 2*102400*5120 = 32,003,216,384.
    assert profile_model(EXAONE4).count("params", "model") == 32_003_216_384


def test_mpt_7b_params() -> None:
    # embedding 50432*4096 = 206,569,472 (tied); per layer: Wqkv 3*4096^2 = 50,331,648, out_proj 16,777,216,
    # ffn 2*4096*16384 = 134,217,728, norm_1 / norm_2 (weight only) 8192 -> 201,334,784; 32 layers
    # 6,442,713,088 + norm_f 4096 = 6,649,286,656 (MPT-7B's published 6.7B).
    assert profile_model(MPT_7B).count("params", "model") == 6_649_286_656


def test_gpt_neo_1_3b_and_xglm_564m_params() -> None:
    # GPT-Neo-1.3B: wte 50257*2048 = 102,926,336, wpe 2048*2048 = 4,194,304; per layer: q/k/v 3*2048^2,
    # out_proj 2048^2 + 2048, c_fc / c_proj 2*2048*8192 + 8192 + 2048, ln_1 / ln_2 8192 -> 50,352,128;
    # 24 layers 1,208,451,072 + ln_f 4096 = 1,315,575,808.
    assert profile_model(defaults("GPTNeoConfig")).count("params", "model") == 1_315_575_808
    # XGLM-564M: embed_tokens 256008*1024 = 262,152,192 (tied; the sinusoidal table is a buffer); per layer:
    # q/k/v/out 4*(1024^2 + 1024) = 4,198,400, fc1 4,198,400, fc2 4,195,328, two LayerNorms 4096 ->
    # 12,596,224; 24 layers 302,309,376 + layer_norm 2048 = 564,463,616.
    assert profile_model(defaults("XGLMConfig")).count("params", "model") == 564_463_616


# --- quirks, by hand (B = 2, S = 3, P = 0: T = 6 tokens unless said) ------------------------------------

def test_olmo3_sliding_cache_and_two_rotary_tables() -> None:
    p = profile(OLMO3, batch=1, seq=1, past=5000)
    # sliding layer (window 4096) keeps 4095 tokens: 2 * 8 kv heads * 128 * 4095 = 8,386,560;
    # full layer keeps P + S = 5001: 2 * 8 * 128 * 5001 = 10,242,048
    assert p.values["model.layers.0.self_attn:kv_cache"]["cache"] == 8_386_560
    assert p.values["model.layers.3.self_attn:kv_cache"]["cache"] == 10_242_048
    assert p.total("cache", "model") == 48 * 8_386_560 + 16 * 10_242_048  # 566,427,648
    # one rotary table per layer type: 2 * (S*64 + 2*S*128) MULT = 2 * 960 at S = 3; 2 * 2*S*128 cos/sin
    rot = profile(OLMO3, batch=2, seq=3).values["model.rotary_emb"]
    assert (rot["mult"], rot["exp"]) == (1920, 1536)


def test_exaone4_nope_global_layers() -> None:
    graph = profile_model(EXAONE4).graph
    # "LLLG": layers 0-2 slide and rotate; layer 3 is global and NoPE
    assert graph.node("model.layers.0.self_attn:rope").counts["mult"] != 0
    with pytest.raises(KeyError):
        graph.node("model.layers.3.self_attn:rope")
    # without a window every layer rotates
    no_window = profile_model({**EXAONE4, "sliding_window": None, "layer_types": None, "num_hidden_layers": 2})
    assert no_window.graph.node("model.layers.1.self_attn:rope").counts


def test_cohere_parallel_block_layer_norm_and_logit_scale() -> None:
    v = profile(AYA, batch=2, seq=3).values
    assert v["model.layers.0:residual"]["add"] == 2 * 6 * 4096  # x + attn + mlp: 2*T*h
    # CohereLayerNorm: mean, x - mean, ^2, mean, + eps, rsqrt, x - mean again, * rstd, * weight:
    # ADD 6*(4095 + 4096 + 4095 + 1 + 4096) = 98,298; MULT 6*3*4096 = 73,728; DIV 3*6 (2 means, rsqrt)
    norm = v["model.layers.0.input_layernorm"]
    assert (norm["add"], norm["mult"], norm["div"], norm["params"]) == (98_298, 73_728, 18, 4096)
    assert v[":logit_scale"]["mult"] == 6 * 256000  # logits * logit_scale: T*V


def test_cohere2_rotates_sliding_layers_only() -> None:
    graph = profile_model(defaults("Cohere2Config")).graph
    assert graph.node("model.layers.2.self_attn:rope").counts["mult"] != 0
    with pytest.raises(KeyError):
        graph.node("model.layers.3.self_attn:rope")  # the fourth layer is full attention, NoPE


def test_smollm3_nope_every_fourth_layer() -> None:
    spec = profile_model(defaults("SmolLM3Config")).spec
    assert [i for i, layer in enumerate(spec.layers) if not layer.mixer.rope][:3] == [3, 7, 11]


def test_granite_multipliers_are_ops() -> None:
    cfg = defaults("GraniteConfig", num_hidden_layers=2)
    v = profile(cfg, batch=2, seq=3).values
    assert v["model:embedding_multiplier"]["mult"] == 6 * 4096  # T*h
    assert v["model.layers.0:residual_multiplier"]["mult"] == 2 * 6 * 4096  # twice per layer
    assert v[":logits_scaling"]["div"] == 6 * 32000  # logits / logits_scaling: T*V


def test_glm_partial_rotary() -> None:
    v = profile(defaults("GlmConfig"), batch=2, seq=3).values
    # int(128 * 0.5) = 64 dims rotate for 32 q heads and 2 kv heads: MULT 2 * T*(32 + 2)*64 = 26,112
    assert v["model.layers.0.self_attn:rope"]["mult"] == 26_112


def test_gptj_divides_the_scores() -> None:
    v = profile(defaults("GPTJConfig"), batch=2, seq=3).values
    scores = v["transformer.h.0.attn:scores"]
    assert scores["div"] == 2 * 16 * 3 * 3  # one per score: B*H*S*keys
    assert v["transformer.h.0.attn:sincos"]["act"] == 3 * 64  # gather of S rows of rotary_dim


def test_mpt_alibi_is_rebuilt_every_forward() -> None:
    v = profile(MPT_7B, batch=2, seq=3).values
    # 32 heads (a power of two): base * (8/32), pow(2, _), 1 / _ (reciprocal and * 1.0): 3*32 MULT-ish;
    # positions * slopes: 32 * 2048 MULT; the causal mask adds S + keys, compares S*keys
    assert v["transformer:positions"]["div"] == 32
    assert v["transformer:positions"]["mult"] == 32 + 32 + 32 * 2048


# --- config errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "field"), [
    ({**defaults("MinistralConfig"), "head_dim": None}, "head_dim"),
    ({**defaults("MinistralConfig", head_dim=128), "sliding_window": None}, "sliding_window"),
    ({**defaults("Cohere2Config"), "sliding_window": None}, "sliding_window"),
    ({**defaults("HunYuanDenseV1Config")}, "head_dim"),
    ({**defaults("NemotronConfig")}, "num_key_value_heads"),
    ({**EXAONE4, "layer_types": None, "sliding_window_pattern": "LXG"}, "sliding_window_pattern"),
    ({**defaults("SmolLM3Config"), "layer_types": ["sliding_attention"] * 36}, "use_sliding_window"),
    ({**defaults("SmolLM3Config"), "no_rope_layers": [1, 0]}, "no_rope_layers"),
    ({**defaults("GPTJConfig"), "rotary_dim": 300}, "rotary_dim"),
    ({**defaults("CodeGenConfig"), "n_head": 6, "n_embd": 384}, "mp_num"),
    ({**defaults("GPTNeoConfig"), "attention_types": [[["global", "local"], 3]]}, "attention_types"),
    ({**defaults("HeliumConfig"), "head_dim": 64}, "head_dim"),
    ({**STABLELM, "head_dim": 32}, "head_dim"),
    ({**defaults("PersimmonConfig"), "head_dim": 32}, "head_dim"),
])
def test_config_errors_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build_spec(config)


def test_cwm_params_and_layers() -> None:
    # CWM-32B (CwmConfig's defaults): untied 128256 x 6144 embedding and lm_head = 2 * 788,004,864; per layer
    # q, o 6144^2 each, k, v 6144*1024 each, MLP 3*6144*21504, two norms 2*6144 = 484,454,400; 64 layers; final norm
    cwm = defaults("CwmConfig")
    assert profile(cwm, 1, 1).total("params", "model") == 2 * 788_004_864 + 64 * 484_454_400 + 6_144
    spec = build_spec(cwm)[1]
    assert [layer.sliding for layer in spec.layers[:5]] == [False, True, True, True, False]  # full when i % 4 == 0
    assert spec.sliding_window == 8192


def test_jais2_params() -> None:
    # Jais-2-8B (Jais2Config's defaults): h = 3328 = 26 heads x 128 (MHA); q, k, v, o with biases 4*(3328^2 + 3328);
    # relu2 MLP with biases: up 3328*26624 + 26624, down 26624*3328 + 3328; two LayerNorms 2*(2*3328); 32 layers;
    # untied 150272 x 3328 embedding and head; final LayerNorm 2*3328
    layer = 4 * (3328**2 + 3328) + (3328 * 26624 + 26624) + (26624 * 3328 + 3328) + 4 * 3328
    assert profile(defaults("Jais2Config"), 1, 1).total("params", "model") == 32 * layer + 2 * 150272 * 3328 + 2 * 3328
    assert 32 * layer + 2 * 150272 * 3328 + 2 * 3328 == 8_090_401_280
    assert build_spec(defaults("Jais2Config"))[1].norm == "layernorm"
