"""hf-sdpa validated per node against transformers' own SDPA forward (issue 12).

The fused op (``torch.nn.functional.scaled_dot_product_attention``) is counted by PyTorch's documented
definition, whatever backend runs it (``validation.aten.scaled_dot_product_attention``); everything around
it (the mask transformers builds for SDPA, or not, the projections, rope, the MLP) is measured op by op.
"""

from __future__ import annotations

import pytest

from llm_profiler import metrics as M
from llm_profiler.engines import sdpa_mask_built
from llm_profiler.errors import ValidationBuildError
from llm_profiler.profile import profile_model, with_engine

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation import aten, validate  # noqa: E402


def test_the_fused_op_is_counted_by_its_documented_definition() -> None:
    q, k, v = torch.zeros(2, 4, 3, 16), torch.zeros(2, 2, 5, 16), torch.zeros(2, 2, 5, 8)
    parts = aten.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(2, 1, 3, 5, dtype=torch.bool))
    rows = 2 * 4 * 3  # batch * heads * queries = 24 rows of 5 keys
    assert parts["scores"] == {M.MACS: rows * 5 * 16, M.ADD: rows * 5 * 15, M.MULT: rows * 5 * 16 + rows * 5}
    # q @ k^T: 24*5*16 = 1,920 MACs (16 mults and 15 adds per score), the scaling one mult per score (120); the
    # boolean mask a select (no arithmetic); nothing written (a fused kernel keeps the scores on chip)
    assert parts["softmax"] == {M.CMP: rows * 4, M.ADD: rows * 9, M.EXP: rows * 5, M.DIV: rows * 5}
    # per row of 5: max 4 CMP, subtract 5 + sum 4 ADD, 5 EXP, 5 DIV; nothing written
    assert parts["context"] == {M.MACS: rows * 8 * 5, M.ADD: rows * 8 * 4, M.MULT: rows * 8 * 5, M.ACT: rows * 8}
    float_mask = aten.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros(2, 1, 3, 5))
    assert float_mask["scores"][M.ADD] == rows * 5 * 15 + rows * 5  # a float mask is one add per score


def test_the_mask_is_built_only_for_a_chunk_after_a_cache() -> None:
    # transformers passes SDPA no mask for one query row (decode) or a prefill from an empty cache (is_causal)
    built = sdpa_mask_built()
    assert [built(1, s, p) for s, p in ((3, 0), (1, 9), (7, 5), (2, 1))] == [0, 0, 1, 1]
    sdpa = with_engine(profile_model("llama-3.1-8b"), "hf-sdpa")
    assert sdpa.count(M.CMP, "model:positions", 1, 3, 2) == 15  # kv_idx <= q_idx over S x keys = 3 x 5
    assert sdpa.count(M.CMP, "model:positions", 1, 1, 9) == 0
    assert sdpa.count(M.ACT, "model:positions", 2, 3, 0) == 3  # position ids only: S adds


SHAPES = [(2, 3, 0), (1, 1, 9), (3, 7, 5)]
# past the tiny window / chunk (every tiny sliding window and llama4's tiny chunk are 4 tokens): a 9-token
# prefill (kv_length 9 >= 4: the sliding / chunked mask is built although the cache is empty) and a decode
# step after 20 tokens (kv_length min(20, 3) + 1 = 4 >= 4: built although one query row)
BOUNDARY_SHAPES = [(2, 9, 0), (1, 1, 20)]
# every preset transformers runs with attn_implementation="sdpa", one per model type, and every windowed or
# chunked one (the masks sdpa_mask builds depend on the layout)
SDPA_PRESETS = ["llama-3.1-8b", "mistral-7b", "mixtral-8x7b", "qwen2.5-7b", "qwen3-8b", "qwen3-30b-a3b",
                "qwen1.5-moe-a2.7b", "gemma-2b", "gemma-3-27b", "phi-2", "phi-3-mini", "gpt2", "gpt-neox-20b",
                "falcon-7b", "opt-1.3b", "deepseek-v3", "starcoder2-7b", "llama-4-scout", "glm-4.5-air",
                "minimax-m2.5", "exaone-4.0-32b", "olmo-3.1-32b-instruct", "aya-23-8b", "stablelm-2-zephyr-1.6b",
                "nemotron-h-56b", "jamba-1.5-mini", "deepseek-v3.2", "gemma-4-26b-a4b", "qwen3-next-80b-a3b",
                "qwen3.5-27b", "minimax-text-01", "dbrx-instruct", "apertus-8b-instruct"]
WINDOWED = ["mistral-7b", "gemma-3-27b", "phi-3-mini", "starcoder2-7b", "llama-4-scout", "exaone-4.0-32b",
            "olmo-3.1-32b-instruct", "gemma-4-26b-a4b", "qwen1.5-moe-a2.7b"]
# presets transformers 5.23 does not run with SDPA (``_supports_sdpa = False``), or cannot run at all
NOT_SDPA = {"gemma-2-9b": "Gemma2ForCausalLM", "gemma-2-27b": "Gemma2ForCausalLM", "bloom-560m": "BloomForCausalLM",
            "gpt-oss-20b": "GptOssForCausalLM", "deepseek-v4-flash": "DeepseekV4ForCausalLM", "chatglm-6b": None,
            "vaultgemma-1b": "VaultGemmaForCausalLM"}


def test_every_preset_is_covered_by_type_or_named_as_not_sdpa() -> None:
    from llm_profiler.config import list_presets
    from llm_profiler.profile import profile_model as pm

    covered = {pm(name).spec.model_type for name in SDPA_PRESETS}
    for preset in list_presets():
        if preset.alias in NOT_SDPA:
            continue
        assert pm(preset.alias).spec.model_type in covered, preset.alias


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-S{s[1]}-P{s[2]}")
@pytest.mark.parametrize("name", SDPA_PRESETS)
def test_sdpa_tiny_on_cpu_is_exact_per_node(name: str, shape: tuple[int, int, int]) -> None:
    report = validate(name, *shape, tiny=True, engine="hf-sdpa")
    assert report.attn_implementation == "sdpa"
    assert report.ok, report.summary_line() + "\n" + report.table()


@pytest.mark.parametrize("shape", BOUNDARY_SHAPES, ids=lambda s: f"B{s[0]}-S{s[1]}-P{s[2]}")
@pytest.mark.parametrize("name", WINDOWED)
def test_sdpa_tiny_past_the_window_or_chunk_is_exact_per_node(name: str, shape: tuple[int, int, int]) -> None:
    report = validate(name, *shape, tiny=True, engine="hf-sdpa")
    assert report.ok, report.summary_line() + "\n" + report.table()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-S{s[1]}-P{s[2]}")
@pytest.mark.parametrize("name", ["llama-3.1-8b", "mixtral-8x7b", "mistral-7b", "llama-4-scout", "falcon-7b",
                                  "deepseek-v3.2"])
def test_sdpa_full_size_on_meta_is_exact_per_node(name: str, shape: tuple[int, int, int]) -> None:
    report = validate(name, *shape, engine="hf-sdpa")
    assert report.ok, report.summary_line() + "\n" + report.table()


# the model types no preset covers that transformers runs with SDPA: one family config each
# (tests/family_configs/; codegen, gptj, gpt_neo, mamba, mamba2, mimo_v2_flash, mpt and xglm do not run SDPA)
FAMILY_CONFIGS = ["allenai--OLMoE-1B-7B-0924", "ibm-granite--granite-3.1-3b-a800m-instruct",
                  "meta-llama--Llama-4-Maverick-17B-128E-Instruct", "rednote-hilab--dots.llm1.inst",
                  "tencent--Hunyuan-A13B-Instruct", "transformers--ArceeConfig-defaults",
                  "transformers--Cohere2Config-defaults", "transformers--Ernie4_5Config-defaults",
                  "transformers--Ernie4_5_MoeConfig-defaults", "transformers--ExaoneMoeConfig-defaults",
                  "transformers--FalconH1Config-defaults", "transformers--GPTBigCodeConfig-defaults",
                  "transformers--Gemma3nTextConfig-defaults", "transformers--Gemma4TextConfig-defaults",
                  "transformers--Glm4Config-defaults", "transformers--Glm4MoeLiteConfig-defaults",
                  "transformers--GlmConfig-defaults", "transformers--GlmMoeDsaConfig-defaults",
                  "transformers--GraniteConfig-defaults", "transformers--GraniteMoeHybridConfig-defaults",
                  "transformers--HeliumConfig-defaults", "transformers--Lfm2Config-LFM2-1.2B-dims",
                  "transformers--Ministral3Config-defaults", "transformers--OlmoConfig-defaults",
                  "transformers--PersimmonConfig-defaults", "transformers--PhimoeConfig-defaults",
                  "transformers--Qwen3_5MoeTextConfig-defaults", "transformers--SeedOssConfig-defaults",
                  "transformers--SmolLM3Config-defaults"]


@pytest.mark.parametrize("config", FAMILY_CONFIGS)
def test_sdpa_family_configs_tiny_after_a_cache_are_exact_per_node(config: str) -> None:
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "family_configs" / f"{config}.json").read_text())
    report = validate(data, 3, 7, 5, tiny=True, engine="hf-sdpa")  # past every tiny window (kv 10 >= 4)
    assert report.ok, report.summary_line() + "\n" + report.table()


def test_a_local_mask_is_built_once_its_keys_reach_the_window() -> None:
    # masking_utils._ignore_causal_mask_sdpa: kv_length >= local_size -> always built; shorter: skipped for one
    # query row or an empty cache. Mistral-7B's sliding layers (window 4096) see min(P, 4095) + S keys.
    from llm_profiler.engines import sdpa_local_mask_built
    from llm_profiler.graph.blocks import keys_sliding

    built = sdpa_local_mask_built(keys_sliding(4096), 4096)
    assert [built(1, s, p) for s, p in ((3, 0), (4095, 0), (4096, 0), (1, 4094), (1, 4095), (1, 9000), (7, 5))] \
        == [0, 0, 1, 0, 1, 1, 1]  # 3, 4095 < 4096: skipped; 4096 keys: built; decode: 4095 keys, then 4096
    sdpa = with_engine(profile_model("mistral-7b"), "hf-sdpa")
    # a 5000-token prefill builds the boolean sliding mask over 5000 x 5000: S + keys ADD (the index ranges),
    # S SUB (q - window), 4 CMP per pair (kv <= q, kv > q - window, two ANDs); no where over the batch
    assert sdpa.count(M.CMP, "model:positions", 2, 5000, 0) == 4 * 5000 * 5000
    assert sdpa.count(M.ADD, "model:positions", 2, 5000, 0) == 5000 + 5000 + 5000 + 5000  # + the position ids
    assert sdpa.count(M.CMP, "model:positions", 2, 3, 0) == 0
    # with a mask SDPA cannot take grouped heads (no enable_gqa): repeat_kv copies K and V of 8 KV heads to 32
    # heads, 32 x 5000 x 128 elements each; a 3-token prefill passes no mask (enable_gqa: no copy)
    node = sdpa.graph.node("model.layers.0.self_attn:scores")
    assert (node.facts.copies(1, 5000, 0), node.facts.copies(1, 3, 0)) == (32 * 5000 * 128, 0)


def test_dsa_under_sdpa_masks_the_unpicked_keys_with_boolean_ops() -> None:
    # DeepseekV32Attention.forward under sdpa: attention_mask & ~index_mask over B x S x T (T = P + S), run by
    # the attention module; the indexer masks its scores with masked_fill(~mask) (one NOT per score) instead of
    # eager's additive mask. B=2, S=3, P=5: T = 8, B*S*T = 48.
    sdpa = with_engine(profile_model("deepseek-v3.2"), "hf-sdpa")
    eager = profile_model("deepseek-v3.2")
    node = sdpa.graph.node("model.layers.0.self_attn")
    assert (node.counts[M.CMP](2, 3, 5), node.counts[M.ACT](2, 3, 5)) == (2 * 48, 2 * 48)
    index = "model.layers.0.self_attn.indexer:scores"
    assert eager.count(M.ADD, index, 2, 3, 5) - sdpa.count(M.ADD, index, 2, 3, 5) == 48
    assert sdpa.count(M.CMP, index, 2, 3, 5) - eager.count(M.CMP, index, 2, 3, 5) == 48
    # the mask is always built (allow_is_causal_skip=False), as the boolean SDPA takes: S + T ADD, S*T CMP
    assert sdpa.count(M.CMP, "model:positions", 1, 1, 9) == 10


def test_a_model_transformers_runs_only_eagerly_is_one_clear_error() -> None:
    with pytest.raises(ValidationBuildError, match="GptOssForCausalLM does not run attn_implementation='sdpa'.*hf-eager"):
        validate("gpt-oss-20b", 1, 3, 0, engine="hf-sdpa")


def test_a_serving_engine_is_not_validated_against_transformers() -> None:
    from llm_profiler.errors import QueryError

    with pytest.raises(QueryError, match="engine must be one of hf-eager, hf-sdpa"):
        validate("llama-3.1-8b", 1, 3, 0, engine="vllm")
