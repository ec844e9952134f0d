"""Backward of gemma4_text and gemma3n_text: exact per node against autograd (training/backward_gemma.py), tiny on
the CPU at (2, 3), (1, 5) and past the tiny sliding window of 4 (1, 9), and at full size on the meta device at
(1, 5); a few of the new rules' numbers derived beside them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.training import backward as tb
from llm_profiler.training.backward_gemma import GEMMA3N_TYPES, GEMMA4_TYPES, pow_rms_norm_backward

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import BackwardReport, validate_backward  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
GEMMA4 = str(CONFIGS / "transformers--Gemma4TextConfig-defaults.json")
GEMMA4_MOE = str(CONFIGS / "google--gemma-4-26B-A4B.json")
GEMMA3N = str(CONFIGS / "transformers--Gemma3nTextConfig-defaults.json")


def _kv_shared() -> dict[str, Any]:
    """Gemma4TextConfig's defaults with the E2B / E4B layout's KV sharing, a double-wide MLP on the shared layers
    and final soft-capping (the tiny model: a sliding and a full layer storing keys and values, one of each
    reusing them)."""
    data: dict[str, Any] = json.loads(Path(GEMMA4).read_text())
    return {**data, "num_kv_shared_layers": 10, "use_double_wide_mlp": True, "final_logit_softcapping": 30.0}


def _moe_kv_shared() -> dict[str, Any]:
    """gemma-4-26B-A4B (MoE, k = v on full layers) with per-layer inputs, KV sharing and the double-wide MLP too."""
    data: dict[str, Any] = json.loads(Path(GEMMA4_MOE).read_text())
    text = {**data["text_config"], "num_kv_shared_layers": 10, "hidden_size_per_layer_input": 256,
            "vocab_size_per_layer_input": 262_144, "use_double_wide_mlp": True}
    return {**data, "text_config": text}


def _gemma3n_variant() -> dict[str, Any]:
    """Gemma3nTextConfig's defaults with 3 AltUp streams, no correct_output_scale and an untied head."""
    data: dict[str, Any] = json.loads(Path(GEMMA3N).read_text())
    return {**data, "altup_num_inputs": 3, "altup_correct_scale": False, "tie_word_embeddings": False}


MODELS: dict[str, Any] = {
    "gemma4": GEMMA4,  # dense MLP, per-layer inputs, sliding and full layers (global head dim)
    "gemma4-moe": GEMMA4_MOE,  # the MoE beside the dense MLP, k = v on full layers, soft-capping, no per-layer inputs
    "gemma4-kv-shared": _kv_shared(),  # KV-shared layers reading the stored keys and values
    "gemma4-moe-kv-shared": _moe_kv_shared(),  # all of gemma4's layouts in one model
    "gemma3n": GEMMA3N,  # AltUp streams, Laurel, activation sparsity, per-layer inputs, KV sharing
    "gemma3n-variant": _gemma3n_variant(),  # A = 3 streams, no correct_output_scale, untied
}
SHAPES = [(2, 3), (1, 5), (1, 9)]


@cache
def _report(name: str, batch: int, seq: int, tiny: bool = True) -> BackwardReport:
    return validate_backward(MODELS[name], batch, seq, tiny=tiny)


def _explain(report: BackwardReport) -> str:
    return report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20]) + str(report.unknown_ops)


@pytest.mark.parametrize(("name", "batch", "seq"), [(m, b, s) for m in MODELS for b, s in SHAPES])
def test_gemma_backward_exact_per_node_tiny(name: str, batch: int, seq: int) -> None:
    report = _report(name, batch, seq)
    assert report.ok, _explain(report)
    assert report.model_type in tb.VALIDATED_MODEL_TYPES and report.model_type in GEMMA4_TYPES | GEMMA3N_TYPES


@pytest.mark.parametrize("name", ["gemma4", "gemma4-moe", "gemma3n"])
def test_gemma_backward_exact_full_size_meta(name: str) -> None:
    report = _report(name, 1, 5, tiny=False)
    assert report.ok, _explain(report)


def _measured(report: BackwardReport, node: str) -> dict[str, int]:
    return {r.metric: r.measured for r in report.rows if r.node == node}


def test_gemma4_norm_router_and_layer_values() -> None:
    """Tiny gemma4 at B=2, S=3: T=6 tokens, h=64, 4 heads, 2 KV heads of D=24 on sliding layers, 6 layers,
    per-layer inputs of d=8; the MoE variant: 4 experts, top 2."""
    report = _report("gemma4", 2, 3)
    layer = "model.layers.0"
    norm = _measured(report, f"{layer}.post_attention_layernorm")
    # Gemma4RMSNorm over r=6 rows of n=64 (rn=384): x * pow(mean(x^2) + eps, -0.5) * w. Per element: g*w, g*y, g*r,
    # g*x, x^1 * 2 * g (6 MULT), g/n (DIV), pow(x, 1) (EXP); per row pow(m, -1.5) (EXP), * -0.5 and * g (2 MULT);
    # sums: grad w over the rows 64*5, grad r over n 6*63
    assert norm == {"mult": 6 * 384 + 2 * 6, "exp": 384 + 6, "div": 384, "add": 64 * 5 + 6 * 63,
                    "act": 8 * 384 + 64 + 4 * 6}
    assert {k: int(v) for k, v in pow_rms_norm_backward(6, 64).items()} == norm
    v_norm = _measured(report, f"{layer}.self_attn.v_norm")
    # weightless over T*KV = 12 rows of 24 (288 elements): no g*w, no weight sum
    assert (v_norm["mult"], v_norm["add"], v_norm["exp"]) == (4 * 288 + 2 * 12, 12 * 23, 288 + 12)
    scalar = _measured(report, f"{layer}:layer_scalar")
    # hidden *= layer_scalar: one mul back per element; the stream it writes read by the next layer's input
    # norm twice and its residual add: 2 adds of 384
    assert scalar == {"mult": 384, "add": 2 * 384, "act": 3 * 384}
    mix = _measured(report, "model:per_layer_inputs")
    # (norm(proj * h**-0.5) + emb) * 2**-0.5: 2 muls of T*L*d = 6*6*8 = 288 back; the scaled projection read twice
    # by its norm (1 add), the per-layer inputs sliced by the 6 layers (5 adds)
    assert mix == {"mult": 2 * 288, "add": 6 * 288, "act": 8 * 288}

    moe = _report("gemma4-moe", 2, 3)
    router = _measured(moe, f"{layer}.router")
    # norm(x) * scale: g*scale, g*x (2*384 MULT), the scale's gradient summed over 6 rows (64*5 ADD); * h**-0.5 (384
    # MULT); softmax over E=4 per token (MULT 2*24, ADD 6*7); w /= w.sum() over the 12 (token, expert) pairs (3*12
    # DIV, 12 MULT, 2*12 + 6 ADD); w * per_expert_scale[idx] (2*12 MULT) and the gather scattered back (12 ADD)
    assert router["mult"] == 2 * 384 + 384 + 2 * 24 + 12 + 2 * 12 == 1236
    assert router["add"] == 64 * 5 + 6 * 7 + 2 * 12 + 6 + 12 == 404
    assert router["div"] == 3 * 12
    residual = _measured(moe, f"{layer}:residual")
    # the stream after attention read by the MLP's pre-norm, the router's norm and pre_feedforward_layernorm_2
    # (twice each) and the MLP's residual add: 6 adds of 384
    assert residual["add"] == 6 * 384


def test_gemma3n_altup_and_sparsity_values() -> None:
    """Tiny gemma3n at B=2, S=3: T=6, h=64 (n=384), A=4 AltUp streams, per-layer inputs of 8, 5 layers, I=96;
    layers 0 and 1 sparse."""
    report = _report("gemma3n", 2, 3)
    own = _measured(report, "model.layers.0:residual")
    # the streams' matmul, T x (64 x 4)(4 x 4), both gradients: 2 * 6*64*4*4 MACs
    assert own["macs"] == 2 * 6 * 64 * 4 * 4 == 12_288
    # router scalings (2*384), tanh back (2*2*24), innovation * coefs (2*4*384), correct_output_scale (2*384),
    # act * per-layer input (2*48)
    assert own["mult"] == own["macs"] + 2 * 384 + 2 * 2 * 24 + 2 * 4 * 384 + 2 * 384 + 2 * 48
    # its own adds: grad streams 6*64*4*3, grad coefs 6*16*63, tanh 2*24, -g 384, repeat 3*384, coefs' sum
    # 4*6*63, the scale's sum 64*5, the slice add's broadcast 2*384; accumulations 6*384 + 4*4*384 and the next
    # layer's reads of its streams, 384 + 2*4*384
    own_adds = 6 * 64 * 12 + 6 * 16 * 63 + 48 + 384 + 3 * 384 + 4 * 6 * 63 + 64 * 5 + 2 * 384
    assert own["add"] == own_adds + 6 * 384 + 16 * 384 + 384 + 8 * 384 == 26_744
    last = _measured(report, "model.layers.4:residual")
    # after the last layer its streams are read by the base model's 5 selects: 4 adds of 4*384
    assert last["add"] == own_adds + 6 * 384 + 16 * 384 + 4 * 4 * 384
    sparse = _measured(report, "model.layers.0.mlp:gate_mul")
    # T*I = 576 gate elements, 6 rows: gate * up (2*576 MULT), relu back (576 CMP), the cutoff's -g (576 ADD)
    # summed per row (6*95), std * c (6 MULT), std_backward (2*6 MULT, 6 DIV, 6 CMP; the mean 6*95 ADD + 6 DIV,
    # x - mean 576 ADD, * 576 MULT), mean back (576 DIV); 7 tensors of 576 and 7 of 6 written
    assert sparse == {"mult": 2 * 576 + 6 + 12 + 576, "cmp": 576 + 6, "add": 576 + 6 * 95 + 6 * 95 + 576,
                      "div": 6 + 6 + 576, "act": 7 * 576 + 7 * 6}
    assert _measured(report, "model.layers.0.mlp.gate_proj")["add"] == 6 * 64 * 95 + 96 * 64 * 5 + 2 * 576
