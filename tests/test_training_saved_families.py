"""Saved-for-backward activations of the layouts beyond the DecoderTemplate's (training.activations' rules of
their own: MoE routers and batched_mm experts, shared experts), exact per node against saved_tensors_hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_profiler.training.activations import VALIDATED_MODEL_TYPES, saved_by_node, saved_bytes_by_node

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import compare_saved  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402
from llm_profiler.validation.saved_bytes import saved_bytes_rows  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
FAMILIES = [
    "mistralai/Mixtral-8x7B-v0.1",  # mixtral: softmax top-k router, normalized in place, float32 routing weights
    "Qwen/Qwen3-30B-A3B",  # qwen3_moe: normalized, routing weights cast to the activation dtype
    "Qwen/Qwen1.5-MoE-A2.7B",  # qwen2_moe: not normalized; a shared expert (reads the input first), sigmoid gate
    str(CONFIGS / "allenai--OLMoE-1B-7B-0924.json"),  # olmoe: not normalized, q/k norms
]
SHAPES = [(2, 3), (1, 5)]
CASES = [(m, b, s) for m in FAMILIES for b, s in SHAPES]


def test_validated_list_is_what_is_tested() -> None:
    from test_training_activations import SAVED_EXACT

    tested = {reference(m, tiny=True).profile.spec.model_type for m in [*SAVED_EXACT, *FAMILIES]}
    assert tested == VALIDATED_MODEL_TYPES


@pytest.mark.parametrize(("model", "batch", "seq"), CASES)
def test_saved_exact_per_node(model: str, batch: int, seq: int) -> None:
    rows = compare_saved(model, batch, seq)
    assert [r for r in rows if not r.ok] == []
    assert any(r.node.endswith("experts") for r in rows)


@pytest.mark.parametrize(("model", "batch", "seq"), CASES)
def test_saved_bytes_exact_per_node_bf16(model: str, batch: int, seq: int) -> None:
    rows = saved_bytes_rows(model, batch, seq, dtype="bf16")
    assert [r for r in rows if not r.ok] == []
    assert len(rows) > 10


def test_tiny_mixtral_moe_saved() -> None:
    """Tiny mixtral (h 64, I 96, E 4, k 2) at B=2, S=3: T = 6 tokens, N = T*k = 12 pairs.

    router: its input T*h = 384 (the first reader of the norm's output), softmax's float32 scores T*E = 24,
    topk's int64 indices T*k = 12, the in-place normalization's sum T = 6 and the clone of the top values
    before it, 12: 438. experts: bmm 1 keeps the repeated tokens N*h = 768 and the gathered gate_up weights
    N*2I*h = 147,456; bmm 2 the gate product N*I = 1152 and the gathered down weights N*h*I = 73,728;
    act(gate) (the gate product's other factor) 1152; the routing weights N = 12 and the down output N*h = 768:
    225,036. act_fn: the whole gate_up output N*2I = 2304 (gate is a view of it)."""
    profile = reference("mistralai/Mixtral-8x7B-v0.1", tiny=True).profile
    saved = {path: int(f(2, 3, 0)) for path, f in saved_by_node(profile).items()}
    moe = "model.layers.0.mlp"
    assert saved[f"{moe}.gate"] == 384 + 24 + 12 + 6 + 12 == 438
    assert saved[f"{moe}.experts"] == 768 + 147_456 + 1152 + 73_728 + 1152 + 12 + 768 == 225_036
    assert saved[f"{moe}.experts.act_fn"] == 12 * 192 == 2304
    # bf16: the router's input at 2 bytes, its scores, sum and clone float32 (4), the indices int64 (8);
    # mixtral's routing weights stay float32 into the experts (4 * 12), the rest of the experts at 2 bytes
    nbytes = {path: int(f(2, 3, 0)) for path, f in saved_bytes_by_node(profile).items()}
    assert nbytes[f"{moe}.gate"] == 2 * 384 + 4 * 24 + 8 * 12 + 4 * 6 + 4 * 12 == 1032
    assert nbytes[f"{moe}.experts"] == 2 * (225_036 - 12) + 4 * 12 == 450_096


def test_tiny_qwen2_moe_shared_expert_saved() -> None:
    """Tiny qwen2_moe (h 64, shared intermediate 80, E 4, k 2) at B=2, S=3 (T = 6): the shared expert runs
    first, so its gate_proj keeps the normed input (T*h = 384) and the router does not; the router keeps its
    float32 scores 24 and the indices 12 (no normalization); the gated mix sigmoid(x w) * shared keeps the
    sigmoid's output T = 6 and the shared expert's output T*h = 384."""
    profile = reference("Qwen/Qwen1.5-MoE-A2.7B", tiny=True).profile
    saved = {path: int(f(2, 3, 0)) for path, f in saved_by_node(profile).items()}
    moe = "model.layers.0.mlp"
    assert saved[f"{moe}.shared_expert.gate_proj"] == 384
    assert saved[f"{moe}.gate"] == 24 + 12
    assert saved[f"{moe}:shared_mix"] == 6 + 384 == 390
    assert saved[f"{moe}.shared_expert_gate"] == 0  # reads the input the shared expert already keeps
