"""Backward counts of the GPT-style and other dense layouts (llm_profiler.training.backward_dense) against autograd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import profile_model
from llm_profiler.config.presets import find_preset, read_preset
from llm_profiler.training.backward import (
    DENSE_VALIDATED_MODEL_TYPES,
    LOSS,
    VALIDATED_MODEL_TYPES,
    backward_counts,
)
from llm_profiler.training.backward_dense import (
    bloom_gelu_backward,
    fast_gelu_backward,
    new_gelu_backward,
    op_by_op_layer_norm_backward,
    relu2_backward,
)

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import validate_backward  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"


def _config(name: str, **fields: Any) -> dict[str, Any]:
    """A stored config with the fields transformers needs and its defaults leave null (as docs/validation.md)."""
    data: dict[str, Any] = json.loads((CONFIGS / name).read_text())
    data.update(fields)
    return data


def _at(counts: dict, b: int, s: int) -> dict[str, int]:
    return {k: int(v(b, s, 0)) if hasattr(v, "evaluate") else int(v) for k, v in counts.items()}


# OLMo-2 with every option off its default (tests/test_family_falcon_phi_starcoder2_olmo2.py's OLMO2_GQA)
OLMO2 = {"model_type": "olmo2", "hidden_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
         "num_key_value_heads": 2, "head_dim": 80, "intermediate_size": 700, "vocab_size": 1000,
         "attention_bias": True, "tie_word_embeddings": True, "eos_token_id": 2, "pad_token_id": 1}
# falcon-rw style: ALiBi, sequential blocks, FalconLinear biases (a separate add), no multi-query
FALCON_RW = {"model_type": "falcon", "alibi": True, "bias": True, "hidden_size": 480, "multi_query": False,
             "num_attention_heads": 12, "num_hidden_layers": 2, "parallel_attn": False, "vocab_size": 1000,
             "bos_token_id": 1, "eos_token_id": 2}

# falcon-40b (new decoder architecture: 8 KV groups in one fused projection broadcast to the heads, ln_attn / ln_mlp)
FALCON_40B = {"model_type": "falcon", "alibi": False, "bias": False, "bos_token_id": 11, "eos_token_id": 11,
              "hidden_size": 8192, "layer_norm_epsilon": 1e-5, "new_decoder_architecture": True,
              "num_attention_heads": 128, "num_hidden_layers": 60, "num_kv_heads": 8, "parallel_attn": True,
              "vocab_size": 65024}

# the legacy RefinedWeb keys (tests/test_family_falcon_phi_starcoder2_olmo2.py's REFINEDWEB): the new
# architecture with one norm, untied; RefinedWebModel: the legacy multi-query falcon-7b layout
REFINEDWEB = {"model_type": "RefinedWeb", "n_embed": 1024, "n_head": 16, "n_head_kv": 4, "n_layer": 2,
              "num_ln_in_parallel_attn": 1, "ffn_hidden_size": 3000, "vocab_size": 1000, "parallel_attn": True,
              "bias": False, "alibi": False, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
REFINEDWEB_MODEL = {"model_type": "RefinedWebModel", "n_embed": 1024, "n_head": 16, "n_layer": 2, "vocab_size": 1000,
                    "multi_query": True, "parallel_attn": True}

_NEOX = find_preset("gpt-neox-20b")
assert _NEOX is not None
NEOX_SEQUENTIAL = {**read_preset(_NEOX), "use_parallel_residual": False}

DENSE_MODELS: list[tuple[str, Any]] = [
    ("gpt2", "gpt2"),  # learned positions (1, S) summed over the batch, gelu_new, Conv1D c_attn split
    ("gpt_neo", str(CONFIGS / "transformers--GPTNeoConfig-defaults.json")),  # where(mask, scores, min)
    ("gpt_bigcode", str(CONFIGS / "transformers--GPTBigCodeConfig-defaults.json")),  # multi-query, gelu tanh
    ("opt", "opt-1.3b"),  # per-sequence positions (cumsum of the mask), q scaling, ReLU
    ("xglm", str(CONFIGS / "transformers--XGLMConfig-defaults.json")),  # sinusoidal positions, max(scores, min)
    ("gpt_neox", "gpt-neox-20b"),  # parallel residual, two norms, fused qkv chunked, partial rotary, gelu_fast
    ("gpt_neox", NEOX_SEQUENTIAL),  # use_parallel_residual false: sequential blocks
    ("phi", "phi-2"),  # parallel blocks sharing one LayerNorm, partial rotary sliced, gelu_new
    ("gptj", str(CONFIGS / "transformers--GPTJConfig-defaults.json")),  # parallel, rotate_every_two, / sqrt(d)
    ("codegen", str(CONFIGS / "transformers--CodeGenConfig-defaults.json")),  # parallel, qkv split, gelu_new
    ("bloom", "bloom-560m"),  # alibi baddbmm, embedding LayerNorm, residual in the blocks, GeLUFunction
    ("mpt", str(CONFIGS / "transformers--MptConfig-defaults.json")),  # alibi, Wqkv chunked, residual in blocks
    ("falcon", "falcon-7b"),  # multi-query index_put, parallel attention, one LayerNorm
    ("falcon", FALCON_RW),  # sequential, alibi, FalconLinear's bias add
    ("falcon", FALCON_40B),  # KV groups indexed out of the fused qkv and broadcast, two LayerNorms
    ("RefinedWeb", REFINEDWEB),  # legacy keys: the new architecture with one LayerNorm
    ("RefinedWebModel", REFINEDWEB_MODEL),  # legacy keys: multi-query
    ("cohere", "aya-23-8b"),  # LayerNorm op by op, parallel blocks, logit scale
    ("cohere2", str(CONFIGS / "transformers--Cohere2Config-defaults.json")),  # + sliding layers
    ("cohere2_moe", str(CONFIGS / "transformers--Cohere2MoeConfig-defaults.json")),  # + MoE (top-k, then softmax)
    # a dense first layer (rotated although full), RMSNorms, the sigmoid router normalised, a shared expert averaged
    ("cohere2_moe", _config("transformers--Cohere2MoeConfig-defaults.json", num_hidden_layers=5,
                            layer_types=["full_attention"] + ["sliding_attention"] * 3 + ["full_attention"],
                            mlp_layer_types=["dense"] + ["sparse"] * 4, prefix_dense_intermediate_size=4096,
                            rms_norm_eps=1e-5, expert_selection_fn="sigmoid", num_shared_experts=1)),
    # the dense prefix's own window pattern (2: its full layer not rotated), two shared experts summed, no renorm
    ("cohere2_moe", _config("transformers--Cohere2MoeConfig-defaults.json", num_hidden_layers=4,
                            layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
                            mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
                            prefix_dense_sliding_window_pattern=2, num_shared_experts=2,
                            shared_expert_combination_strategy="sum", expert_selection_fn="sigmoid",
                            norm_topk_prob=False)),
    ("ministral3", str(CONFIGS / "transformers--Ministral3Config-defaults.json")),  # query temperature
    ("ministral", _config("transformers--MinistralConfig-defaults.json", head_dim=128)),
    ("arcee", str(CONFIGS / "transformers--ArceeConfig-defaults.json")),  # relu2 MLP (up, down)
    ("jais2", str(CONFIGS / "transformers--Jais2Config-defaults.json")),  # arcee's relu2 MLP with LayerNorm and biases
    ("persimmon", str(CONFIGS / "transformers--PersimmonConfig-defaults.json")),  # per-head q/k LayerNorm, relu2
    ("nemotron", _config("transformers--NemotronConfig-defaults.json", num_key_value_heads=8)),  # LayerNorm1P
    ("olmo2", OLMO2),  # post-norms only, q/k norms over the full projections
    ("hunyuan_v1_dense", _config("transformers--HunYuanDenseV1Config-defaults.json", head_dim=128)),  # q/k norm after rope
]
SHAPES = [(2, 3), (1, 5)]
# stablelm (validated sequential in tests/test_training_backward.py) is counted here too: its other layouts
_STABLELM = json.loads((CONFIGS / "stabilityai--stablelm-2-zephyr-1_6b.json").read_text())
STABLELM_LAYOUTS = [
    {**_STABLELM, "use_parallel_residual": True},  # x + attn(ln(x)) + mlp(ln(x)), one norm
    {**_STABLELM, "qk_layernorm": True},  # per-head q / k LayerNorms stacked before rope
]


def test_dense_validated_list_is_what_is_tested() -> None:
    assert {t for t, _ in DENSE_MODELS} == DENSE_VALIDATED_MODEL_TYPES
    assert DENSE_VALIDATED_MODEL_TYPES <= VALIDATED_MODEL_TYPES


@pytest.mark.parametrize(("batch", "seq"), SHAPES)
@pytest.mark.parametrize(("model_type", "config"), DENSE_MODELS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(DENSE_MODELS)])
def test_dense_backward_exact_per_node_tiny(model_type: str, config: Any, batch: int, seq: int) -> None:
    report = validate_backward(config, batch, seq, tiny=True)
    assert report.model_type == model_type
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])
    nodes = {r.node for r in report.rows}
    assert LOSS in nodes and "lm_head" in nodes


@pytest.mark.parametrize(("batch", "seq"), SHAPES)
@pytest.mark.parametrize("config", STABLELM_LAYOUTS, ids=["parallel_residual", "qk_layernorm"])
def test_stablelm_layouts_exact_per_node_tiny(config: dict[str, Any], batch: int, seq: int) -> None:
    report = validate_backward(config, batch, seq, tiny=True)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])


@pytest.mark.parametrize("model", ["gpt2", "phi-2", "falcon-7b"])
def test_dense_backward_exact_full_size_meta(model: str) -> None:
    """gpt2 (sequential, learned positions), phi-2 (parallel blocks), falcon-7b (parallel, multi-query)."""
    report = validate_backward(model, 1, 5, tiny=False)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])


def test_gpt2_position_embedding_backward_values() -> None:
    """GPT-2 (h 768, 1024 positions, 50257 tokens, I 3072) at B = 4, S = 128, T = 512 tokens."""
    back = backward_counts(profile_model("gpt2"))
    b, s, h, t = 4, 128, 768, 512
    wpe = _at(back["transformer.wpe"], b, s)
    # embedding_dense_backward of the S position rows (ids (1, S), shared by the batch) into the 1024 x 768
    # table: S*h = 128*768 = 98,304 ADD, the table written (786,432)
    assert wpe == {"add": 98_304, "act": 786_432}
    add = _at(back["transformer:embed_add"], b, s)
    # the (1, S, h) position embeddings' gradient summed over the batch: (B - 1)*S*h = 3*128*768 = 294,912 ADD;
    # the stream embed_add writes, read by ln_1 and the residual add: one accumulation, T*h = 393,216 ADD
    assert add["add"] == 294_912 + 393_216 == 688_128
    wte = _at(back["transformer.wte"], b, s)
    # the T token rows added into the table (512*768 = 393,216), plus the tied lm_head's weight gradient
    # added to the embedding's (50257*768 = 38,597,376)
    assert wte["add"] == 393_216 + 38_597_376
    act = _at(back["transformer.h.0.mlp.act"], b, s)
    # gelu_new backward over T*I = 512*3072 = 1,572,864 elements: MULT 10, ADD 1 per element
    assert (act["mult"], act["add"]) == (10 * 1_572_864, 1_572_864)
    fc = _at(back["transformer.h.0.mlp.c_fc"], b, s)
    # c_fc (Conv1D addmm, 768 -> 3072, bias): grad x T*h*(I-1) ADD, grad W h*I*(T-1) ADD, grad b I*(T-1) ADD;
    # gelu_new reads its input three times (0.5*x, x + ..., pow): 2*T*I accumulation ADD
    assert fc["add"] == t * h * 3071 + h * 3072 * (t - 1) + 3072 * (t - 1) + 2 * 1_572_864
    assert fc["macs"] == 2 * t * h * 3072


def test_activation_rules() -> None:
    # per element: NewGELU MULT 10 ADD 1; FastGELU MULT 11 ADD 1; bloom_gelu_back MULT 12 ADD 5 EXP 1 (the
    # tanh GELU's count); relu2: pow(y, 1) EXP 1, * 2 and * g MULT 2, threshold_backward CMP 1
    assert dict(new_gelu_backward(10)) == {"mult": 100, "add": 10, "act": 90}
    assert dict(fast_gelu_backward(10)) == {"mult": 110, "add": 10, "act": 100}
    assert dict(bloom_gelu_backward(10)) == {"mult": 120, "add": 50, "exp": 10, "act": 180}
    assert dict(relu2_backward(10)) == {"mult": 20, "exp": 10, "cmp": 10, "act": 40}


def test_cohere_layer_norm_op_by_op() -> None:
    # 6 rows of 64 (rn = 384): MULT 6*384 + 4*6 = 2328; DIV 2*384 (two means); EXP 384 (pow(d, 1));
    # ADD 64*5 (grad w) + 6*63 (grad rstd) + 2*(384 + 6*63) (the two subtractions' -g and their sums over n)
    # + 6 (the mean's two gradients) = 2228 (measured on cohere's final norm at B=2, S=3)
    c = op_by_op_layer_norm_backward(6, 64)
    assert (c["mult"], c["div"], c["exp"], c["add"]) == (2328, 768, 384, 2228)


def test_cohere2_moe_backward_exact_full_size_meta() -> None:
    report = validate_backward(str(CONFIGS / "transformers--Cohere2MoeConfig-defaults.json"), 1, 5, tiny=False)
    assert report.ok, report.summary_line()
