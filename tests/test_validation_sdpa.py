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
EXACT_UNDER_SDPA = ["llama-3.1-8b", "qwen2.5-7b", "qwen3-8b", "mixtral-8x7b", "gemma-2b", "gpt2", "qwen3-30b-a3b",
                    "phi-2", "glm-4.5-air"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-S{s[1]}-P{s[2]}")
@pytest.mark.parametrize("name", EXACT_UNDER_SDPA)
def test_sdpa_tiny_on_cpu_is_exact_per_node(name: str, shape: tuple[int, int, int]) -> None:
    report = validate(name, *shape, tiny=True, engine="hf-sdpa")
    assert report.attn_implementation == "sdpa"
    assert report.ok, report.summary_line() + "\n" + report.table()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-S{s[1]}-P{s[2]}")
@pytest.mark.parametrize("name", ["llama-3.1-8b", "mixtral-8x7b"])
def test_sdpa_full_size_on_meta_is_exact_per_node(name: str, shape: tuple[int, int, int]) -> None:
    report = validate(name, *shape, engine="hf-sdpa")
    assert report.ok, report.summary_line() + "\n" + report.table()


def test_a_model_transformers_runs_only_eagerly_is_one_clear_error() -> None:
    with pytest.raises(ValidationBuildError, match="GptOssForCausalLM does not run attn_implementation='sdpa'.*hf-eager"):
        validate("gpt-oss-20b", 1, 3, 0, engine="hf-sdpa")


def test_a_serving_engine_is_not_validated_against_transformers() -> None:
    from llm_profiler.errors import QueryError

    with pytest.raises(QueryError, match="engine must be one of hf-eager, hf-sdpa"):
        validate("llama-3.1-8b", 1, 3, 0, engine="vllm")
