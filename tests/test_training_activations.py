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


def test_lora_list_is_what_is_tested() -> None:
    """The DecoderTemplate types tested here (LoRA's saved set too); the other validated types:
    tests/test_training_saved_families.py."""
    from llm_profiler.training.activations import LORA_MODEL_TYPES
    from llm_profiler.validation.reference import reference

    assert {reference(m, tiny=True).profile.spec.model_type for m in SAVED_EXACT} == LORA_MODEL_TYPES


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
    # bf16-exact bytes (saved_bytes_by_node): every norm's x upcast to fp32 and its fp32 rstd (4*T*h + 4*T) with
    # y in bf16 (2*T*h); the softmax output in fp32 (4*H*S*S) and its bf16 copy kept by the context (2*H*S*S);
    # the loss's fp32 log-probabilities 4*T*V, int64 targets, the fp32 total weight; the ids int64; the rest bf16
    norm = 4 * t * h + 4 * t + 2 * t * h
    layer_b = (2 * norm + 2 * (2 * t * h) + 2 * 2 * 32 * t * 128 + 4 * 32 * t * t + 2 * 32 * t * 128 + 2 * 32 * t * t
               + 2 * t * h + 2 * 4 * t * i)
    tail_b = 8 * t + 2 * (2 * 4096 * 128) + norm + 2 * t * h + 4 * t * 128256 + 8 * t + 4
    assert got.bytes == 32 * layer_b + tail_b


def test_mixtral_8x7b_training_step_saves_grouped_mm_experts() -> None:
    """Mixtral-8x7B at (1, 4096) bf16: training runs the experts by grouped_mm, so ``training_step`` counts
    its saved set, not batched_mm's. T = 4096, k = 2: N = 8192 pairs per layer, h 4096, I 14336, E 8, 32
    layers. batched_mm keeps the weights gathered per pair, N*2I*h + N*h*I = 1,443,109,011,456 elements
    (2.9 TB in bf16) per layer: 86,016 GiB over 32 layers. grouped_mm keeps neither; it keeps the same sorted
    tokens, gate product, act(gate), down output and routing weights as batched_mm's repeated tokens, gate
    product and so on, and adds perm // k, perm and inv_perm (3*N int64) and the offsets (E int32). Its
    experts per layer: 2*(N*h + 2*N*I + N*h) + 8*3*N + 4*E + 4*N = 604,209,184 bytes (576 MiB); the whole
    step's saved activations: about 141 GiB, hundreds of GiB, not tens of thousands."""
    from llm_profiler.training.activations import saved_bytes_by_node
    from llm_profiler.training.step import training_step

    n, h, i, e = 8192, 4096, 14336, 8
    model = profile_model("mixtral-8x7b")
    batched = saved_activations(model, 1, 4096, experts="batched_mm").bytes
    grouped = saved_activations(model, 1, 4096, experts="grouped_mm").bytes
    gathered = n * 2 * i * h + n * h * i
    assert gathered == 1_443_109_011_456
    assert 32 * 2 * gathered // 2**30 == 86_016
    assert grouped == batched - 32 * 2 * gathered + 32 * (8 * 3 * n + 4 * e)
    per_layer = saved_bytes_by_node(model, experts="grouped_mm")["model.layers.0.mlp.experts"]
    assert int(per_layer(1, 4096, 0)) == 2 * (n * h + 2 * n * i + n * h) + 8 * 3 * n + 4 * e + 4 * n == 604_209_184
    step = training_step(model, 1, 4096)
    assert step.memory.activations == grouped and step.activations_exact
    assert 100 * 2**30 < grouped < 1000 * 2**30
    assert round(grouped / 2**30, 1) == 140.6  # the figure docs/training.md §2 states


def test_unknown_recompute_is_a_profiler_error() -> None:
    with pytest.raises(BackwardUnsupportedError, match="recompute"):
        saved_by_node(profile_model("llama-3.2-1b"), "most")
    with pytest.raises(BackwardUnsupportedError, match="experts"):
        saved_by_node(profile_model("llama-3.2-1b"), experts="deepgemm")


# --- bytes in bf16, and the LoRA saved set (validation.saved_bytes: saved_tensors_hooks counting bytes) ---

from llm_profiler.validation.saved_bytes import saved_bytes_rows  # noqa: E402

ALL_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, 2, 3) for m in SAVED_EXACT] + [(m, 1, 5) for m in SAVED_EXACT])
def test_saved_bytes_exact_per_node_bf16(model: str, batch: int, seq: int) -> None:
    """The tiny model cast to bf16: every node's saved bytes, float32 intermediates included, as predicted."""
    rows = saved_bytes_rows(model, batch, seq, dtype="bf16")
    assert [r for r in rows if not r.ok] == []
    assert len(rows) > 10


def test_tiny_llama_bf16_bytes() -> None:
    """Tiny llama-3.2-1b at B=2, S=3 (T=6, h 64, I 96, H 4, KV 2, D 24, V 128) in bf16, per layer:
    each RMSNorm x.to(float32) kept by pow and by x * rstd (4*384), rstd in fp32 (4*6), y = x * rstd in bf16
    kept by weight * y (2*384): 2328 (in float32 run: 774 elements * 4 = 3096, as the fp32 x is the input);
    softmax(dtype=float32) keeps its fp32 output 4*72 = 288 and the context its bf16 copy 2*72 = 144 with v
    2*576; the rest at 2 bytes: q and gate inputs 2*(768), scores 2*1152, o_proj 1152, act 1152, gate
    product 2304, down 1152. Per layer 2*2328 + 1536 + 2304 + 288 + 1296 + 1152 + 1152 + 2304 + 1152 = 15840;
    the model: 2 layers + rope 288 + ids 8*6 + final norm 2328 + lm_head input 768 + the loss (logits upcast
    to fp32: 4*6*128, int64 targets 8*6, fp32 total weight 4) 3124 = 38276."""
    rows = saved_bytes_rows("llama-3.2-1b", 2, 3, dtype="bf16")
    assert sum(r.measured for r in rows) == sum(r.predicted for r in rows) == 2 * 15840 + 288 + 48 + 2328 + 768 + 3124
    fp32 = saved_bytes_rows("llama-3.2-1b", 2, 3, dtype="fp32")
    assert sum(r.measured for r in fp32) == 4 * (16075 - 12) + 8 * 12  # test_tiny_llama_saved_total's elements


@pytest.mark.parametrize(("model", "targets", "dtype"), [
    *((m, t, "bf16") for m in SAVED_EXACT for t in (("q_proj", "v_proj"), ALL_LINEARS)),
    ("llama-3.2-1b", ("k_proj", "up_proj"), "bf16"), ("llama-3.2-1b", ("q_proj", "v_proj"), "fp32"),
    ("Qwen/Qwen3-8B", ALL_LINEARS, "fp32")])
@pytest.mark.parametrize(("batch", "seq"), [(2, 3), (1, 5)])
def test_lora_saved_exact_per_node(model: str, targets: tuple[str, ...], batch: int, seq: int, dtype: str) -> None:
    """Hand-written LoRA adapters (nn.Linear pairs, base frozen) on the tiny model: what autograd keeps, per
    node, as training.lora predicts it (helium's float32 weight copy and ernie4_5's float32 rope tables
    included)."""
    rows = saved_bytes_rows(model, batch, seq, dtype=dtype, lora_rank=4, lora_targets=targets)
    assert [r for r in rows if not r.ok] == []


def test_tiny_llama_lora_saved_set() -> None:
    """Tiny llama, LoRA r=4 on q_proj and v_proj, bf16, B=2, S=3 (T=6): layer 0's input needs no gradient (the
    embedding is frozen): no input norm, no ids; q_proj's A keeps the normed input 2*384 = 768, q's and v's B
    their x A^T 2*6*4 = 48 each; rope's cos / sin 288; the scores only the repeated keys 2*576 = 1152 (k needs no
    gradient, so q is not kept); softmax 288, context v + probs 1296; from o_proj on the stream needs a
    gradient: post norm x and rstd (no y: the weight is frozen) 4*384 + 4*6 = 1560, act 1152, gate product
    2304; o_proj, gate_proj, down_proj keep nothing (frozen). Layer 1: input norm 1560, 768 + 2*48, scores
    q and keys 2304, softmax 288, context 1296, post norm 1560, 1152, 2304. Tail: final norm 1560, lm_head
    nothing, loss 3124."""
    layer0 = 768 + 2 * 48 + 288 + 1152 + 288 + 1296 + 1560 + 1152 + 2304
    layer1 = 1560 + 768 + 2 * 48 + 2304 + 288 + 1296 + 1560 + 1152 + 2304
    rows = saved_bytes_rows("llama-3.2-1b", 2, 3, dtype="bf16", lora_rank=4)
    assert sum(r.measured for r in rows) == sum(r.predicted for r in rows) == layer0 + layer1 + 1560 + 3124
