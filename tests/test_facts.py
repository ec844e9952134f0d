"""Structured node facts and what derives from them: cache traffic, embedding traffic, labels, scopes.

Each case was a wrong answer before the nodes carried their facts (issue: "Nodes that carry their facts");
the expected values are derived beside each assertion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_profiler import metrics as M
from llm_profiler import profile, profile_model
from llm_profiler.config.presets import list_presets
from llm_profiler.facts import StateKind, TensorClass
from llm_profiler.formula import B, Formula, P, S, fmin
from llm_profiler.perf import roofline
from llm_profiler.traffic import dtypes, model_traffic, node_traffic

PRESETS = [p.alias for p in list_presets()]
REAL = sorted(str(p) for p in (Path(__file__).parent / "real_configs").glob("*.json"))


@pytest.mark.parametrize("source", PRESETS + REAL, ids=lambda s: Path(s).stem)
def test_decode_kv_bytes_follow_the_cache(source: str) -> None:
    """One decode step at B=1, P=100: the bytes written to the cache are one token's cache growth (plus the
    conv / recurrent states of linear-attention layers, rewritten whole by every step while their size stays
    constant), and the cache reads never exceed what the cache holds after the step plus what it wrote (bf16:
    2 bytes)."""
    model = profile_model(source)
    grown = model.count(M.CACHE, "model", 1, 1, 100) - model.count(M.CACHE, "model", 1, 100, 0)
    report = roofline(model, "h100", "decode", batch=1, past=100)
    cats = report.bytes_by_category
    # conv / recurrent states (state-space layers) do not grow: each step rewrites them whole
    rewritten = sum(st.held(1, 1, 100) for node in model.graph.nodes for st in node.facts.states
                    if st.kind in (StateKind.CONV, StateKind.RECURRENT))
    assert cats["kv_written"] == (grown + rewritten) * 2
    held_after = model.count(M.CACHE, "model", 1, 1, 100) * 2
    assert 0 < cats["kv_read"] <= held_after + cats["kv_written"]


def test_deepseek_v3_decode_reads_and_appends_the_latent() -> None:
    # MLA caches kv_lora_rank + qk_rope = 512 + 64 = 576 elements per token and layer, 61 layers, bf16:
    # a decode step appends 576 * 61 * 2 = 70,272 bytes and reads the 101 tokens held: 101 * 70,272.
    cats = roofline("deepseek-v3", "h100", "decode", batch=1, past=100).bytes_by_category
    assert cats["kv_written"] == 576 * 61 * 2 == 70_272
    assert cats["kv_read"] == 101 * 576 * 61 * 2 == 7_097_472
    attn = profile_model("deepseek-v3").graph.node("model.layers.0.self_attn:kv_cache")
    assert [s.kind for s in attn.facts.states] == [StateKind.LATENT]


def test_falcon_40b_style_kv_writes_use_the_kv_groups() -> None:
    # new decoder architecture with 8 KV groups: transformers broadcasts k / v to all 128 heads before
    # caching (validated exact), so a decode step writes 2 * 128 * 64 * 60 layers * 2 bytes = 1,966,080
    # bytes, the cache's growth (it was charged 8 groups' worth, 16x too low).
    config = {"model_type": "falcon", "hidden_size": 8192, "num_attention_heads": 128, "num_hidden_layers": 60,
              "num_kv_heads": 8, "new_decoder_architecture": True, "vocab_size": 65024, "parallel_attn": True,
              "bias": False, "alibi": False}
    cats = roofline(config, "h100", "decode", batch=1, past=100).bytes_by_category
    assert cats["kv_written"] == 2 * 128 * 64 * 60 * 2 == 1_966_080


def test_position_embedding_add_is_elementwise_in_the_embed_scope() -> None:
    model = profile_model("gpt2")
    node = model.graph.node("transformer:embed_add")
    t = node_traffic(node, dtypes("bf16", "bf16"))
    assert t.weights == 0  # no weight is read by token + position embeddings
    assert t.act_read == 2 * B * S * 768 * 2  # two operands of B*S*768, 2 bytes each
    assert "transformer:embed_add" in profile("gpt2", 2, 3).by_module(M.ACT, "embed")


def test_embedding_reads_its_rows_once() -> None:
    # Gemma scales the looked-up rows (a mul of B*S*hidden): the table is read for B*S rows only, once.
    model = profile_model("gemma-2b")
    node = model.graph.node("model.embed_tokens")
    t = node_traffic(node, dtypes("bf16", "bf16"))
    assert t.weights == B * S * 2048 * 2  # B*S rows of 2048, bf16
    assert t.act_read == B * S * 2048 * 2  # the scaling reads the gathered rows (the lookup reads no activation)
    table = node.facts.weights[0]
    assert table.tensor_class == TensorClass.EMBEDDING and table.shape == (256000, 2048)


def test_bloom_embedding_norm_is_not_the_final_norm() -> None:
    text = profile("bloom-560m", 1, 8).table(metrics=["params"], layers=[0])
    labels = [line.rsplit(None, 1)[0].strip() for line in text.splitlines()[2:]]
    assert labels.index("embedding norm") < labels.index("layers.0") < labels.index("final norm")


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu_new"])
def test_qwen2_moe_shared_expert_takes_any_activation(act: str) -> None:
    from llm_profiler.config import load_config

    data = dict(load_config("Qwen/Qwen1.5-MoE-A2.7B").data, hidden_act=act)
    p = profile(data, 2, 3)
    node = "model.layers.0.mlp.shared_expert.act_fn"
    # gelu_pytorch_tanh is one tanh per element, gelu_new one tanh too: B*S*shared_intermediate = 6*5632
    assert p.by_module(M.EXP, node)[node] == 2 * 3 * 5632


def test_formula_arithmetic_is_exact_and_matches_sympy() -> None:
    f = 3 * B * S * (P + S) + fmin(P, 4095) * B - 7
    assert f(2, 3, 5) == 3 * 2 * 3 * 8 + 5 * 2 - 7 == 147
    assert f(2, 3, 10_000) == 3 * 2 * 3 * 10_003 + 4095 * 2 - 7
    assert f.substitute({"S": 1})(2, 9, 5) == 3 * 2 * 1 * 6 + 5 * 2 - 7
    import sympy

    from llm_profiler.symbols import B as sB
    from llm_profiler.symbols import P as sP
    from llm_profiler.symbols import S as sS

    assert sympy.simplify(f.to_sympy() - (3 * sB * sS * (sP + sS) + sympy.Min(sP, 4095) * sB - 7)) == 0
    assert (B * S) // 1 == B * S and Formula.const(4) == 4


def test_matmul_facts_give_the_shapes() -> None:
    node = profile_model("llama-2-7b").graph.node("model.layers.0.mlp.down_proj")
    (mm,) = node.facts.matmuls
    assert (mm.m, mm.n, mm.k, mm.batch) == (B * S, 4096, 11008, 1)  # (B*S x 11008) @ (11008 x 4096)
    (w,) = node.facts.weights
    assert w.shape == (4096, 11008) and w.tensor_class == TensorClass.MATRIX


def test_weight_storage_from_facts_equals_params_bytes() -> None:
    # every weight once, bf16: 2 bytes per parameter (norms and biases at bf16 too)
    for alias in ("llama-3.2-1b", "mixtral-8x7b", "gpt2", "deepseek-v3"):
        model = profile_model(alias)
        assert model_traffic(model, dtypes("bf16", "bf16")).weight_storage() == 2 * model.count(M.PARAMS, "model")


def test_deepseek_decode_reads_only_the_routed_experts() -> None:
    # DeepSeek-V3, one decode token: the routed experts node reads top-8 of its 256 experts, each
    # 3 x 2048 x 7168 bf16 weights = 88,080,384 bytes (it read all 256, at the activation dtype, before)
    node = profile_model("deepseek-v3").graph.node("model.layers.3.mlp.experts")
    (experts,) = node.facts.weights
    assert experts.tensor_class == TensorClass.EXPERTS and experts.shape == (256, 3 * 2048 * 7168)
    assert node_traffic(node, dtypes("bf16", "bf16")).weights(1, 1, 100) == 8 * 88_080_384
