"""``validate`` on mutated configs (issue 19): an exact report, a mismatch report, or one ``ProfilerError``,
never another exception.

Hypothesis mutates a few fields of four presets (llama-3.2-1b, qwen3-8b, gemma-2-9b, mixtral-8x7b): rope
scaling, sliding windows, special-token ids, head_dim, the activation, layer_types, ... and runs the tiny
model on the CPU at small shapes. Deterministic (derandomized, no example database), 30 examples.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llm_profiler import profile  # noqa: E402
from llm_profiler.config import load_config  # noqa: E402
from llm_profiler.errors import ProfilerError  # noqa: E402
from llm_profiler.validation import ValidationReport, validate  # noqa: E402

pytestmark = pytest.mark.validation

PRESETS = {name: load_config(name).data for name in ("llama-3.2-1b", "qwen3-8b", "gemma-2-9b", "mixtral-8x7b")}

TOKEN_ID = st.one_of(st.none(), st.integers(-2, 3), st.just(10**9), st.just(math.inf), st.just(0.5),
                     st.lists(st.integers(0, 3), max_size=2))
ROPE = st.one_of(
    st.none(), st.just(2), st.just({}), st.just({"type": "linear"}),
    st.builds(lambda f: {"rope_type": "linear", "factor": f}, st.sampled_from([0.5, 1.0, 2.0, -1.0])),
    st.just({"rope_type": "dynamic", "factor": 2.0}),
    st.just({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    st.just({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 64}),
    st.just({"rope_type": "nope"}),
)
MUTATIONS: dict[str, Any] = {
    "rope_scaling": ROPE,
    "rope_theta": st.sampled_from([10000.0, 1.0, 0.0, -5.0, 1e30]),
    "sliding_window": st.one_of(st.none(), st.integers(-5, 5), st.just(4096)),
    "bos_token_id": TOKEN_ID,
    "eos_token_id": TOKEN_ID,
    "pad_token_id": TOKEN_ID,
    "head_dim": st.one_of(st.none(), st.sampled_from([8, 16, 24, 32, 64, 128, 0, -8])),
    "hidden_act": st.sampled_from(["silu", "gelu", "gelu_pytorch_tanh", "relu", "tanh", "nope"]),
    "hidden_activation": st.sampled_from(["gelu_pytorch_tanh", "silu", "nope"]),
    "layer_types": st.lists(st.sampled_from(["full_attention", "sliding_attention", "chunked_attention"]),
                            min_size=1, max_size=4),
    "tie_word_embeddings": st.booleans(),
    "attention_bias": st.booleans(),
    "text_config": st.just({}),
    "max_position_embeddings": st.sampled_from([1, 8, 64, 131072]),
    "attn_logit_softcapping": st.one_of(st.none(), st.sampled_from([0.0, 50.0, -1.0])),
}


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    config = copy.deepcopy(PRESETS[draw(st.sampled_from(sorted(PRESETS)))])
    for key in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3, unique=True)):
        config[key] = draw(MUTATIONS[key])
    return config


@settings(max_examples=30, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=mutated(), batch=st.integers(1, 2), seq=st.integers(1, 4), past=st.integers(0, 3))
def test_validate_on_mutated_configs(config: dict[str, Any], batch: int, seq: int, past: int) -> None:
    try:
        profile(config, batch, seq, past)
        profiled = True
    except ProfilerError:
        profiled = False
    try:
        report = validate(config, batch, seq, past, tiny=True)
    except ProfilerError as err:
        assert str(err)  # one clear message
        return
    # a report: the profiler read the config, and every row compares one node x metric
    assert profiled, "validate reported on a config the profiler refuses"
    assert isinstance(report, ValidationReport) and report.rows
    table = report.table()  # a mismatch is explained row by row: the node, the metric, both counts
    for row in report.mismatches:
        assert row.node in table and f"{row.predicted:,}" in table and f"{row.measured:,}" in table
