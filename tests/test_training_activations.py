"""Saved-for-backward activations per node (training.activations) against saved_tensors_hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_profiler import profile_model
from llm_profiler.training.activations import saved_activations, saved_by_node
from llm_profiler.training.backward import LOSS, BackwardUnsupportedError

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import compare_saved  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
SAVED_EXACT = ["llama-3.2-1b", "meta-llama/Llama-2-7b-hf", "Qwen/Qwen3-8B", "Qwen/Qwen2.5-0.5B",
               "mistralai/Mistral-7B-v0.1", *(str(CONFIGS / f"transformers--{n}Config-defaults.json")
                                               for n in ("SmolLM3", "Helium", "SeedOss", "Ernie4_5", "Granite"))]


def test_validated_list_is_what_is_tested() -> None:
    from llm_profiler.training.activations import VALIDATED_MODEL_TYPES
    from llm_profiler.validation.reference import reference

    assert {reference(m, tiny=True).profile.spec.model_type for m in SAVED_EXACT} == VALIDATED_MODEL_TYPES


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, 2, 3) for m in SAVED_EXACT] + [(m, 1, 5) for m in SAVED_EXACT])
def test_saved_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    rows = compare_saved(model, batch, seq)
    assert [r for r in rows if not r.ok] == []
    assert any(r.node == LOSS for r in rows)


def test_tiny_llama_saved_total() -> None:
    """Tiny llama-3.2-1b (h 64, I 96, H 4, KV 2, D 24, V 128, 2 layers) at B=2, S=3 (T=6):
    a layer: 2 norms 2*(2*6*64 + 6) = 1548; q_proj and gate_proj inputs 2*384; scores q + repeated k
    2*(2*4*3*24) = 1152; softmax 2*4*3*3 = 72; context v 576; o_proj input 576; act input 576; gate product
    1152; down input 576: 6996 per layer; rope's cos and sin once 2*3*24 = 144; ids 6, final norm 774,
    lm_head input 384, loss 6*128 + 6 + 1 = 775: 2*6996 + 144 + 6 + 774 + 384 + 775 = 16075 (measured the
    same by test_saved_exact_per_node_tiny)."""
    from llm_profiler.validation.reference import reference

    profile = reference("llama-3.2-1b", tiny=True).profile
    saved = saved_by_node(profile)
    assert sum(int(f(2, 3, 0)) for f in saved.values()) == 16075
    # selective recomputation drops the softmax outputs: 16075 - 2 * 72
    assert sum(int(f(2, 3, 0)) for f in saved_by_node(profile, "selective").values()) == 16075 - 144
    # full: each layer keeps its input (T*h = 384) instead of its 6996 (+144 rope tables of layer 0)
    assert sum(int(f(2, 3, 0)) for f in saved_by_node(profile, "full").values()) == 16075 - 2 * 6996 - 144 + 2 * 384


def test_llama_8b_saved_bytes() -> None:
    """Llama-3.1-8B, B=1, S=4096, bf16: per layer (T=4096, h=4096, H=32, KV=8, D=128, I=14336, K=S)
    2 norms 2*(2*T*h + T), 2 linear inputs 2*T*h, scores 2*H*S*D, softmax H*S*S, context H*S*D,
    o_proj T*h, act T*I, gate product 2*T*I, down T*I."""
    t, h, i = 4096, 4096, 14336
    layer = 2 * (2 * t * h + t) + 2 * t * h + 2 * 32 * t * 128 + 32 * t * t + 32 * t * 128 + t * h + 4 * t * i
    tail = t + 2 * 4096 * 128 + (2 * t * h + t) + t * h + t * 128256 + t + 1  # ids, rope, norm, lm_head, loss
    got = saved_activations(profile_model("llama-3.1-8b"), 1, t)
    assert got.elements == 32 * layer + tail
    assert got.bytes == (32 * layer + tail - 2 * t) * 2 + 2 * t * 8


def test_unknown_recompute_is_a_profiler_error() -> None:
    with pytest.raises(BackwardUnsupportedError, match="recompute"):
        saved_by_node(profile_model("llama-3.2-1b"), "most")
