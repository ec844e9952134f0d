"""Validation per node: every aten op is attributed to a graph node (module and part), so a formula that puts
computation in the wrong part of a module fails, even when the module's total is right.

The moved-op tests take a family's real graph, move counts from one node of a module to another (a copy of
the graph, built with dataclasses.replace; no core code changes) and compare it with one measurement of the
real transformers model: the unmodified graph agrees on every row, the modified one fails on exactly the two
nodes touched, by exactly the amount moved.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.validation import ValidationReport, ValidationRow

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler import metrics as M  # noqa: E402
from llm_profiler.ops import Counts  # noqa: E402
from llm_profiler.profile import ModelProfile  # noqa: E402
from llm_profiler.validation import parts  # noqa: E402
from llm_profiler.validation.compare import CACHE_GROWTH, compare  # noqa: E402
from llm_profiler.validation.measure import Measured, measure  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402

pytestmark = pytest.mark.validation

# Small configs that reach code paths the presets do not: alibi falcon, gpt2's reordered upcast attention,
# phi3 longrope (partial rotary, tied head).
FALCON_ALIBI = {
    "model_type": "falcon", "alibi": True, "bias": True, "hidden_size": 480, "multi_query": False,
    "num_attention_heads": 12, "num_hidden_layers": 2, "parallel_attn": False, "vocab_size": 1000,
    "bos_token_id": 1, "eos_token_id": 2,
}
GPT2_REORDER = {
    "model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4, "vocab_size": 100, "n_inner": 80,
    "n_positions": 32, "reorder_and_upcast_attn": True, "scale_attn_by_inverse_layer_idx": True,
    "scale_attn_weights": False, "tie_word_embeddings": False, "activation_function": "gelu_fast",
    "bos_token_id": 1, "eos_token_id": 2,
}
PHI3_LONGROPE = {
    "model_type": "phi3", "hidden_size": 3072, "num_hidden_layers": 4, "num_attention_heads": 24,
    "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 200064, "hidden_act": "silu",
    "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75,
    "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.5] * 48},
    "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": True,
    "bos_token_id": 199999, "eos_token_id": 199999, "pad_token_id": 199999,
}


def _moved(profile: ModelProfile, source: str, target: str, metric: str, amount: int) -> ModelProfile:
    """A copy of ``profile`` whose graph has ``amount`` of ``metric`` moved from node ``source`` to ``target``."""
    graph = profile.graph
    paths = {n.path for n in graph.nodes}
    assert source in paths and target in paths, (source, target)
    delta = {source: -amount, target: amount}
    nodes = tuple(replace(n, counts=n.counts + {metric: delta[n.path]}) if n.path in delta else n
                  for n in graph.nodes)
    return ModelProfile(profile.family, replace(graph, nodes=nodes))


def _measure(config: Any, shape: tuple[int, int, int], tiny: bool) -> tuple[ModelProfile, Measured]:
    ref = reference(copy.deepcopy(config), tiny=tiny)
    model = ref.build()
    with torch.no_grad():  # longrope picks its frequencies on a model's first forward: count the steady state
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device))
    return ref.profile, measure(model, *shape)


def _bad(rows: list[ValidationRow]) -> list[tuple[str, str, int]]:
    return [(r.node, r.metric, r.diff) for r in rows if not r.ok]


def test_moving_1000_mults_from_scores_to_softmax_fails_on_those_two_nodes() -> None:
    """The example of issue 10: llama-3.2-1b at full size (meta), B=2, S=3, P=5 (8 keys)."""
    b, s, p = 2, 3, 5
    profile, measured = _measure("llama-3.2-1b", (b, s, p), tiny=False)
    scores, softmax = "model.layers.0.self_attn:scores", "model.layers.0.self_attn:softmax"
    # the unmodified graph: every node exact; scores MULT = the q @ k^T products B*H*S*keys*D plus the scaling
    # B*H*S*keys = 2*32*3*8*64 + 2*32*3*8 = 98,304 + 1,536 = 99,840
    rows, unknown, unattributed = compare(profile, measured, b, s, p)
    assert not _bad(rows) and not unknown and not unattributed
    assert {(r.node, r.metric): r.measured for r in rows}[(scores, M.MULT)] == 99_840
    # 1,000 MULT moved from scores to softmax: exactly those two nodes fail, by exactly the amount moved
    wrong = _moved(profile, scores, softmax, M.MULT, 1_000)
    rows, unknown, unattributed = compare(wrong, measured, b, s, p)
    assert _bad(rows) == [(scores, M.MULT, -1_000), (softmax, M.MULT, 1_000)]
    # ... while the module's total is unchanged: a per-module comparison could not have seen it
    report = ValidationReport(model="m", model_type="llama", batch=b, seq=s, past=p, device="meta", tiny=False,
                              transformers_version="", torch_version="", rows=rows, unknown_ops=unknown,
                              data_ops=[], unattributed_ops=unattributed)
    predicted, got = report.by_module()["model.layers.0.self_attn"][M.MULT]
    assert predicted == got and not report.ok


MOVES = {  # case -> (config, from node, to node, metric): one move per multi-part module kind and rule
    "gemma2 softcap->scores": ("gemma-2-9b", "model.layers.0.self_attn:softcap", "model.layers.0.self_attn:scores",
                               M.DIV),
    "gemma2 final_softcap->lm_head": ("gemma-2-9b", ":final_softcap", "lm_head", M.EXP),
    "gpt2 embed_add->positions": ("gpt2", "transformer:embed_add", "transformer:positions", M.ADD),
    "gpt2 reorder scores->context": (GPT2_REORDER, "transformer.h.1.attn:scores", "transformer.h.1.attn:context",
                                     M.MULT),
    "opt q_scale->scores": ("opt-1.3b", "model.decoder.layers.0.self_attn:q_scale",
                            "model.decoder.layers.0.self_attn:scores", M.MULT),
    "bloom residual->context": ("bloom-560m", "transformer.h.0.self_attention:residual",
                                "transformer.h.0.self_attention:context", M.ADD),
    "deepseek-v3 rope->scores": ("deepseek-v3", "model.layers.0.self_attn:rope", "model.layers.0.self_attn:scores",
                                 M.ADD),
    "falcon softmax->context": ("falcon-7b", "transformer.h.0.self_attention:softmax",
                                "transformer.h.0.self_attention:context", M.EXP),
    "falcon alibi scores->softmax": (FALCON_ALIBI, "transformer.h.0.self_attention:scores",
                                     "transformer.h.0.self_attention:softmax", M.MULT),
    "phi3 longrope->rotary_emb": (PHI3_LONGROPE, "model.rotary_emb:longrope", "model.rotary_emb", M.CMP),
    "ministral3 temperature->rope": (
        json.loads(Path("tests/family_configs/transformers--Ministral3Config-defaults.json").read_text()),
        "model.layers.0.self_attn:temperature", "model.layers.0.self_attn:rope", M.MULT),
    "qwen3_next gates->delta_rule": ("tests/family_configs/Qwen--Qwen3-Next-80B-A3B-Thinking.json",
                                     "model.layers.0.linear_attn:gates", "model.layers.0.linear_attn:delta_rule",
                                     M.EXP),
    "llama rope->context": ("llama-3.2-1b", "model.layers.1.self_attn:rope", "model.layers.1.self_attn:context",
                            M.ADD),
    "deepseek-v3.2 indexer topk->scores": ("deepseek-v3.2", "model.layers.0.self_attn.indexer:topk",
                                           "model.layers.0.self_attn.indexer:scores", M.CMP),
    "gemma4 combine->residual": ("gemma-4-26b-a4b", "model.layers.0:combine", "model.layers.0:residual", M.ADD),
    "gemma4 layer_scalar->residual": ("gemma-4-26b-a4b", "model.layers.0:layer_scalar", "model.layers.0:residual",
                                      M.ACT),
    "mimo_v2_flash row_max->scores": (
        json.loads(Path("tests/family_configs/transformers--MiMoV2FlashConfig-defaults.json").read_text()),
        "model.layers.1.self_attn:row_max", "model.layers.1.self_attn:scores", M.ADD),
    "minimax output_gate->lightning": ("tests/family_configs/MiniMaxAI--MiniMax-M1.json",
                                       "model.layers.0.self_attn:output_gate",
                                       "model.layers.0.self_attn:lightning", M.EXP),
}


@pytest.mark.parametrize("case", sorted(MOVES))
def test_moving_one_op_between_parts_fails(case: str) -> None:
    """Tiny on the CPU, B=2, S=3, P=2: exact as built, exactly two failing rows after moving one count."""
    config, source, target, metric = MOVES[case]
    profile, measured = _measure(config, (2, 3, 2), tiny=True)
    rows, unknown, unattributed = compare(profile, measured, 2, 3, 2)
    assert not _bad(rows) and not unknown and not unattributed
    rows, _, _ = compare(_moved(profile, source, target, metric, 1), measured, 2, 3, 2)
    assert sorted(_bad(rows)) == sorted([(source, metric, -1), (target, metric, 1)])


def test_every_rule_names_ops() -> None:
    """No dead rule in validation.parts.RULES: each one names ops in at least one family's forward."""
    family = "tests/family_configs/"
    granite = json.loads(Path(family + "ibm-granite--granite-3.1-3b-a800m-instruct.json").read_text())
    configs = ["llama-3.2-1b", "deepseek-v3", "deepseek-v3.2", "gemma-4-26b-a4b", "tests/real_configs/deepseek-ai--DeepSeek-V2-Lite.json",
               PHI3_LONGROPE, "gpt2", GPT2_REORDER, "falcon-7b", FALCON_ALIBI, "bloom-560m", "opt-1.3b",
               "gemma-2-9b", family + "openai--gpt-oss-20b.json", family + "meta-llama--Llama-4-Scout-17B-16E-Instruct.json",
               granite, {**granite, "model_type": "granitemoeshared", "shared_intermediate_size": 1024},
               *(json.loads(Path(family + f"transformers--{name}Config-defaults.json").read_text())
                 for name in ("GPTJ", "XGLM", "Mpt", "GPTNeo", "Ministral3", "MiMoV2Flash", "Gemma4Text")),
               # state-space mixers (graph/ssm.py): Mamba-2, Mamba-1, the granite hybrid's shared_mix
               "nemotron-h-56b", "jamba-1.5-mini",
               json.loads(Path(family + "transformers--GraniteMoeHybridConfig-defaults.json").read_text()),
               # compression ratios 2 and 3: windows close and entries are masked at P + S = 3
               {"model_type": "deepseek_v4", "compress_rates": {"compressed_sparse_attention": 2,
                                                               "heavily_compressed_attention": 3}},
               family + "Qwen--Qwen3-Next-80B-A3B-Thinking.json",
               # experts scattered back by index (graph/scatter_experts.py): JetMoE's MoA map / reduce, DBRX's clamp
               family + "jetmoe--jetmoe-8b.json", family + "databricks--dbrx-instruct.json",
               family + "MiniMaxAI--MiniMax-M1.json",  # lightning: output gate, the rest
               family + "transformers--GraniteSWAConfig-defaults.json"]  # the sink scale after attention
    used: set[parts.Rule] = set()
    for config in configs:
        profile, measured = _measure(config, (1, 2, 1), tiny=True)
        rows, unknown, unattributed = compare(profile, measured, 1, 2, 1)
        assert not _bad(rows) and not unknown and not unattributed, config
        used |= set(measured.rules_used)
    assert [r.why for r in parts.RULES if r not in used] == []


def test_an_op_no_rule_names_is_reported() -> None:
    """An own op of a module with several part nodes and none of its own stays on the module path (no node
    predicts it) and is listed; one of a module with a single node goes to that node."""
    profile, measured = _measure("llama-3.2-1b", (1, 2, 1), tiny=True)
    attention, layer = "model.layers.0.self_attn", "model.layers.0"
    measured.counts[(attention, None)] = Counts({M.MULT: 7})
    measured.unnamed[attention]["mul in made_up (models/llama/modeling_llama.py:1)"] = 1
    measured.counts[(layer, None)] = measured.counts[(layer, None)] + {M.ADD: 3}
    rows, unknown, unattributed = compare(profile, measured, 1, 2, 1)
    assert _bad(rows) == [(f"{layer}:residual", M.ADD, -3), (attention, M.MULT, -7)]
    assert unattributed == [f"{attention}: mul in made_up (models/llama/modeling_llama.py:1) (1 calls)"]
    assert not unknown


def test_cache_and_its_growth_per_layer() -> None:
    """llama-3.2-1b at full size, B=3, S=7, P=5: a layer holds 2*B*KV*D*(P+S) = 2*3*8*64*12 = 36,864 elements
    after the forward and grew by 2*B*KV*D*S = 2*3*8*64*7 = 21,504 during it."""
    profile, measured = _measure("llama-3.2-1b", (3, 7, 5), tiny=False)
    rows, _, _ = compare(profile, measured, 3, 7, 5)
    layer0 = {(r.metric): (r.predicted, r.measured) for r in rows if r.node == "model.layers.0.self_attn:kv_cache"}
    assert layer0 == {M.CACHE: (36_864, 36_864), CACHE_GROWTH: (21_504, 21_504)}
    assert measured.cache_before[0] == 2 * 3 * 8 * 64 * 5  # 15,360: what the prefill of P=5 left
    measured.cache_before[0] += 1  # a cache that grew by one element less than predicted
    rows, _, _ = compare(profile, measured, 3, 7, 5)
    assert _bad(rows) == [("model.layers.0.self_attn:kv_cache", CACHE_GROWTH, 1)]


def test_rows_of_schema_1_still_load() -> None:
    """A row given only ``module`` (schema 1, or a caller building rows by hand) is that module's own node."""
    row = ValidationRow(module="model.layers.0.mlp", metric="mult", predicted=10, measured=12)
    assert (row.node, row.module, row.diff) == ("model.layers.0.mlp", "model.layers.0.mlp", -2)
    part = ValidationRow(node="model.layers.0.self_attn:scores", metric="mult", predicted=1, measured=1)
    assert part.module == "model.layers.0.self_attn"
