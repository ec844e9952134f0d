"""Hand-derived counts for the Llama family, node kind by node kind, and the core invariants.

Llama-2-7b: h = 4096, H = KV = 32 heads, D = 128, I = 11008, V = 32000, 32 layers.
At B = 16, S = 200, P = 0: T = B*S = 3200 tokens, K = P+S = 200 keys.
"""

from __future__ import annotations

import pytest
import sympy

from llm_profiler import (
    ConfigError,
    QueryError,
    ShapeError,
    UnknownModelTypeError,
    get_model_config,
    get_profile,
    profile,
    profile_model,
)
from llm_profiler.config import list_presets
from llm_profiler.families import supported_model_types
from llm_profiler.symbols import B, P, S

LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3"}


@pytest.fixture(scope="module")
def llama7b():
    return profile("meta-llama/Llama-2-7b-hf", batch=16, seq=200)


def node(prof, path):
    return prof.values[path]


def test_embedding(llama7b):
    v = node(llama7b, "model.embed_tokens")
    assert v["act"] == 13_107_200  # T*h = 3200*4096: a lookup writes one row per token
    assert v["params"] == 131_072_000  # V*h = 32000*4096
    assert v["add"] == v["mult"] == v["macs"] == 0


def test_rms_norm(llama7b):
    v = node(llama7b, "model.layers.0.input_layernorm")
    assert v["mult"] == 39_321_600  # x^2, x*rstd, w*x: 3*T*h = 3*3200*4096
    assert v["add"] == 13_107_200  # mean: T*(h-1), + eps: T  -> T*h
    assert v["div"] == 6_400  # mean: T, rsqrt: T
    assert v["sqrt"] == 3_200  # rsqrt: T
    assert v["act"] == 39_331_200  # 3*T*h + 3*T (mean, +eps, rsqrt outputs)
    assert v["params"] == 4_096


def test_linear(llama7b):
    v = node(llama7b, "model.layers.0.self_attn.q_proj")
    assert v["macs"] == v["mult"] == 53_687_091_200  # T*h*h = 3200*4096*4096
    assert v["add"] == 53_673_984_000  # T*h*(h-1): no bias
    assert v["act"] == 13_107_200  # T*h
    assert v["params"] == 16_777_216  # 4096*4096


def test_rope(llama7b):
    v = node(llama7b, "model.layers.0.self_attn:rope")
    n = 16 * 32 * 200 * 128  # B*H*S*D = 13,107,200 for q, the same for k (KV = H)
    assert v["mult"] == 4 * n  # (x*cos, rotate_half(x)*sin) for q and k = 52,428,800
    assert v["add"] == 2 * (n // 2 + n)  # neg of half, then + : for q and k = 39,321,600


def test_attention_core(llama7b):
    scores = node(llama7b, "model.layers.0.self_attn:scores")
    assert scores["macs"] == 2_621_440_000  # B*H*S*K*D = 16*32*200*200*128
    assert scores["mult"] == 2_641_920_000  # + scaling: B*H*S*K = 20,480,000
    assert scores["add"] == 2_621_440_000  # B*H*S*K*(D-1) + mask B*H*S*K = 20,480,000*128
    softmax = node(llama7b, "model.layers.0.self_attn:softmax")
    rows = 16 * 32 * 200  # B*H*S = 102,400 rows of K = 200
    assert softmax["cmp"] == rows * 199  # max: K-1 per row = 20,377,600
    assert softmax["add"] == rows * 399  # subtract max: K, sum: K-1 = 40,857,600
    assert softmax["exp"] == softmax["div"] == rows * 200  # 20,480,000
    context = node(llama7b, "model.layers.0.self_attn:context")
    assert context["macs"] == 2_621_440_000  # B*H*S*D*K
    assert context["add"] == 2_608_332_800  # B*H*S*D*(K-1) = 16*32*200*128*199


def test_kv_cache(llama7b):
    assert node(llama7b, "model.layers.0.self_attn:kv_cache")["cache"] == 26_214_400  # 2*B*KV*D*(P+S)
    assert llama7b.total("cache", "model") == 838_860_800  # 32 layers * 26,214,400


def test_mlp_activation_and_gate(llama7b):
    act = node(llama7b, "model.layers.0.mlp.act_fn")
    ti = 3200 * 11008  # T*I = 35,225,600
    # silu(x) = x / (1 + exp(-x)): one EXP, ADD, DIV and MULT per element
    assert (act["exp"], act["add"], act["div"], act["mult"]) == (ti, ti, ti, ti)
    assert node(llama7b, "model.layers.0.mlp:gate_mul")["mult"] == ti
    assert node(llama7b, "model.layers.0.mlp.down_proj")["macs"] == 3200 * 11008 * 4096  # 144,284,057,600


def test_residual_positions_rotary_head(llama7b):
    assert node(llama7b, "model.layers.0:residual")["add"] == 26_214_400  # 2*T*h
    pos = node(llama7b, "model:positions")
    assert pos["add"] == 600  # position ids S, cache positions S, key indices K
    assert pos["cmp"] == 40_000  # causal comparison over S x K
    assert pos["act"] == 680_600  # 600 + 40,000 + where() over B*S*K = 640,000
    rot = node(llama7b, "model.rotary_emb")
    assert rot["mult"] == 64_000  # S*D/2 (freqs) + 2*S*D (cos, sin times the scaling) = 12,800 + 51,200
    assert rot["exp"] == 51_200  # cos and sin: 2*S*D
    assert node(llama7b, "lm_head")["macs"] == 419_430_400_000  # T*h*V = 3200*4096*32000


def test_llama2_7b_totals(llama7b):
    # linear MACs per token: 32 layers * (4*4096^2 + 3*4096*11008) + 4096*32000 = 6,607,077,376
    # attention: 32 layers * 2 * B*H*S*K*D = 32 * 2 * 2,621,440,000 = 167,772,160,000
    assert llama7b.total("macs", "model") == 3200 * 6_607_077_376 + 167_772_160_000 == 21_310_419_763_200
    assert llama7b.total("matmul_flops", "model") == 2 * 21_310_419_763_200
    assert llama7b.total("flops") == llama7b.total("add") + llama7b.total("mult")


def test_decode_step():
    prof = profile("llama-2-7b", batch=16, seq=1, past=512)
    # linear: 16 tokens * 6,607,077,376; attention: 32 * 2 * 16*32*1*513*128 = 2,151,677,952
    assert prof.total("macs", "model") == 16 * 6_607_077_376 + 2_151_677_952 == 107_864_915_968
    assert prof.total("cache", "model") == 32 * 2 * 16 * 4096 * 513  # 2,151,677,952 elements


def test_gqa_and_tied_embeddings():
    prof = profile("meta-llama/Llama-3.2-1B", batch=2, seq=10)
    # 8 kv heads of 64: k_proj is 2048 x 512
    assert prof.values["model.layers.0.self_attn.k_proj"]["macs"] == 20 * 2048 * 512
    assert prof.values["lm_head"]["params"] == 0  # tied to the embedding, counted there once
    assert prof.total("params", "model") == 1_235_814_400


def test_explicit_head_dim_qkv_bias_and_qk_norm():
    cfg = {"model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16,
           "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072, "vocab_size": 1000,
           "attention_bias": True}
    prof = profile(cfg, batch=1, seq=4)
    q = prof.values["model.layers.0.self_attn.q_proj"]
    assert q["params"] == 1024 * 16 * 128 + 16 * 128  # head_dim 128 != 1024/16, with bias
    assert q["add"] == 4 * 2048 * 1024  # with the bias fused (addmm): T*out*k = 4*2048*1024
    q_norm = prof.values["model.layers.0.self_attn.q_norm"]
    assert q_norm["params"] == 128 and q_norm["sqrt"] == 4 * 16  # one rsqrt per token and head
    qwen2 = profile({**cfg, "model_type": "qwen2"}, batch=1, seq=4)
    assert qwen2.values["model.layers.0.self_attn.o_proj"]["params"] == 2048 * 1024  # qwen2: no o bias
    assert qwen2.values["model.layers.0.self_attn.k_proj"]["params"] == 1024 * 1024 + 1024  # qkv bias


def test_sliding_window_caps_cache_and_keys():
    prof = profile("mistral-7b", batch=1, seq=1, past=5000)
    # the cache keeps the last window-1 = 4095 tokens: 32 layers * 2 * 8 heads * 128 * 4095
    assert prof.total("cache", "model") == 32 * 2 * 1024 * 4095 == 268_369_920
    # keys this step: min(P, 4095) + S = 4096
    assert prof.values["model.layers.0.self_attn:scores"]["macs"] == 32 * 4096 * 128


def test_published_params_llama_family():
    checked = 0
    for preset in list_presets():
        cfg = get_model_config(preset.hub_id)
        if cfg.model_type in LLAMA_FAMILY:
            assert profile(cfg).total("params", "model") == preset.published_params, preset.hub_id
            checked += 1
    assert checked == 14  # 9 llama, 1 mistral, 3 qwen2, 1 qwen3


def test_symbolic():
    model = profile_model("llama-2-7b")
    assert model.expr("macs", "model.layers.0.self_attn.q_proj") == 16_777_216 * B * S
    attn_core = model.expr("macs", "model.layers.0.self_attn:scores")
    assert sympy.expand(attn_core - 4096 * B * S * (P + S)) == 0  # H*D per (query, key) pair


def test_scopes_add_up(llama7b):
    for metric in ("add", "mult", "macs", "params", "act", "cache"):
        model_total = llama7b.total(metric, "model")
        assert llama7b.total(metric) + llama7b.total(metric, "lm_head") == model_total
        outside = sum(v[metric] for path, v in llama7b.values.items()
                      if llama7b.model.graph.node(path).layer is None)
        assert sum(llama7b.by_layer(metric).values()) + outside == model_total
        assert llama7b.total(metric, "layers.3") == llama7b.by_layer(metric)[3]
    assert sum(llama7b.by_module("macs", "*.k_proj").values()) == 32 * 3200 * 4096 * 4096


def test_linear_in_batch_and_params_fixed():
    model = profile_model("qwen2.5-0.5b")
    for metric in ("macs", "cache"):
        assert model.count(metric, "model", 6, 9, 3) == 2 * model.count(metric, "model", 3, 9, 3)
    assert model.count("params", "model", 1, 1) == model.count("params", "model", 7, 300, 50) == 494_032_768


def test_seed_format(capsys):
    cfg = get_model_config("llama-2-7b")
    value = get_profile({"model_config": cfg, "input_shape": [16, 200]}, "MACs", "model")
    assert value == 21_310_419_763_200
    out = capsys.readouterr().out.splitlines()
    # the seed's notation: 21_310_419_763_200 = 21.31 x 10^12 (the power a multiple of 3, two decimals)
    assert out == ["model with input batchsize 16 and sequence length 200:", "    MACs:       21.31  (10^12)"]
    get_profile({"model_config": cfg, "input_shape": [16, 200]}, "MACs", "model", exact=True)
    assert capsys.readouterr().out.splitlines()[1] == "    MACs:       21310419763200"


def test_errors():
    with pytest.raises(UnknownModelTypeError, match="supported: .*llama"):
        profile({"model_type": "not_a_model", "hidden_size": 8})
    with pytest.raises(ConfigError, match="intermediate_size"):
        profile({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "vocab_size": 10})
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        profile({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "num_key_value_heads": 3, "intermediate_size": 8, "vocab_size": 10})
    for shape in ([0, 5], [-1, 5], [2.5, 5], [2], ["a", 5]):
        with pytest.raises(ShapeError):
            get_profile({"model_config": "llama-2-7b", "input_shape": shape}, "mult", quiet=True)
    with pytest.raises(QueryError, match="valid: add"):
        get_profile({"model_config": "llama-2-7b", "input_shape": [1, 1]}, "flips", quiet=True)
    with pytest.raises(QueryError, match="transformer"):
        get_profile({"model_config": "llama-2-7b", "input_shape": [1, 1]}, "mult", "nowhere", quiet=True)
    assert "llama" in supported_model_types()
