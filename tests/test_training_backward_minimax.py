"""Backward of minimax (lightning attention, softmax attention, post-norm residuals, Mixtral's MoE): exact per node
against autograd (training/backward_lightning.py), tiny on the CPU at (2, 3), (1, 5) and past the tiny lightning
block of 4 tokens (1, 9: three blocks, a state read twice); full size on the meta device at (1, 5); the lightning
rules' numbers derived beside them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from llm_profiler.graph.lightning_attention import LightningMoESpec
from llm_profiler.metrics import ADD, MACS
from llm_profiler.training import backward as tb
from llm_profiler.training.backward_lightning import LIGHTNING_TYPES, lightning_backward, qkv_fan_out

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import BackwardReport, validate_backward  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
DEFAULTS = str(CONFIGS / "transformers--MiniMaxConfig-defaults.json")  # 2 layers tiny: full, then lightning
TEXT_01 = "minimax-text-01"  # tiny: 7 lightning layers (layer 0 first), then a full one; head_dim 24 != h / H
MODELS = [DEFAULTS, TEXT_01]
SHAPES = [(2, 3), (1, 5), (1, 9)]


@cache
def _report(model: str, batch: int, seq: int, tiny: bool = True) -> BackwardReport:
    return validate_backward(model, batch, seq, tiny=tiny)


def _why(report: BackwardReport) -> str:
    return report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20]) + str(report.unknown_ops)


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, b, s) for m in MODELS for b, s in SHAPES])
def test_minimax_backward_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    report = _report(model, batch, seq)
    assert report.ok, _why(report)
    assert report.model_type in LIGHTNING_TYPES and report.model_type in tb.VALIDATED_MODEL_TYPES
    assert any(r.node.endswith(":lightning") for r in report.rows)


@pytest.mark.parametrize("model", MODELS)
def test_minimax_backward_exact_full_size_meta(model: str) -> None:
    report = _report(model, 1, 5, tiny=False)  # MiniMax-Text-01: 80 layers, blocks of 256 (one block at S=5)
    assert report.ok, _why(report)


def _measured(report: BackwardReport, node: str) -> dict[str, int]:
    return {r.metric: r.measured for r in report.rows if r.node == node}


def test_lightning_block_form_values() -> None:
    """Tiny MiniMax-Text-01 at B=1, S=9: layer 0 lightning, H=4 heads of D=24 (w = 96), h = 64, blocks of C=4:
    N = 3 blocks of c = 4, 4, 1 (F = 2 full), T = 9 tokens, B*H = 4 (batch, head) pairs."""
    report = _report(TEXT_01, 1, 9)
    assert report.ok, _why(report)
    a = "model.layers.0.self_attn"
    got = _measured(report, f"{a}:lightning")
    # per (batch, head) and block of c: q @ k^T back 2*c*c*D, @ v back 2*c*c*D, the inter bmm's grad of q*qd c*D*D:
    # c=4: 4*16*24 + 4*576 = 3840 (twice), c=1: 4*24 + 576 = 672; state_1, state_2's grads D*c*D: 2304 + 576;
    # the updates of blocks 0 and 1 (both gradients of (k*kd)^T @ v): 2*576*4 each
    per_pair = 2 * 3840 + 672 + (2304 + 576) + 2 * 4608
    assert per_pair == 20_448 and got["macs"] == 4 * per_pair == 81_792
    # muls back: * diagonal_decay c*c (16 + 16 + 1), * query_decay c*D (96 + 96 + 24), * key_decay in blocks 0, 1
    # (2*96), state_1 * block_decay (576)
    muls = 33 + 216 + 192 + 576
    assert got["mult"] == 81_792 + 4 * muls == 85_860
    # each bmm's adds are its MACs less its outputs (per pair: 4cD + c*c per block, 897; two state grads of D*D;
    # two updates' D*C + C*D); then state_1 read twice (4 * 576) and the output read twice by norm (T*w = 864)
    outputs = 4 * ((400 + 400 + 97) + 2 * 576 + 2 * 192)
    assert outputs == 9732 and got["add"] == 81_792 - outputs + 4 * 576 + 864 == 75_228
    assert got["act"] == outputs + 4 * muls + 4 * 576 + 864
    spec = reference(TEXT_01, tiny=True).profile.spec
    assert isinstance(spec, LightningMoESpec)
    assert int(lightning_backward(spec.lightning)[MACS](1, 9)) == got["macs"]
    act_fn = _measured(report, f"{a}.act_fn")
    # silu_backward over T*3w = 2592 (ADD 3 each); q read twice in every block (T*w = 864); k and v twice in
    # blocks 0, 1 (2 * 2 * 4*4*24 = 1536); q, k, v each sliced into 3 blocks: 2 adds of B*H*S*D = 864 each
    assert act_fn["add"] == 3 * 2592 + 864 + 1536 + 3 * 2 * 864 == 15_360
    assert int(qkv_fan_out(spec.lightning)[ADD](1, 9)) == 864 + 1536 + 3 * 2 * 864
    gate = _measured(report, f"{a}:output_gate")
    # sigmoid(g) * out over T*w = 864: two muls, sigmoid_backward (ADD 1, MULT 2)
    assert (gate["mult"], gate["add"]) == (4 * 864, 864)


def test_post_norm_residual_values() -> None:
    """The same run: the residual taken after each norm, x * alpha + block(x) * beta twice per layer, T*h = 576."""
    report = _report(TEXT_01, 1, 9)
    residual = _measured(report, "model.layers.0:residual")
    # four muls by a constant, one mul back each; the two combines' outputs each read twice by the next norm
    assert (residual["mult"], residual["add"]) == (4 * 576, 2 * 576)
    # the eager RMSNorm's own adds, n(r - 1) + r(n - 1) = 64*8 + 9*63 = 1079, plus its output's readers: qkv_proj,
    # output_gate and the residual (2 adds) on a lightning layer, q, k, v and the residual (3) on the full one
    assert _measured(report, "model.layers.0.input_layernorm")["add"] == 1079 + 2 * 576
    assert _measured(report, "model.layers.7.input_layernorm")["add"] == 1079 + 3 * 576
    assert _measured(report, "model.layers.0.post_attention_layernorm")["add"] == 1079 + 2 * 576  # router, experts
    assert _measured(report, "model.embed_tokens")["add"] == 576 + 576  # embedding_dense_backward; read twice


def test_minimax_backward_exact_sliding_window_tied() -> None:
    """MiniMaxConfig's defaults with a sliding window of 4 (binding at S = 5: only the mask changes, nothing back)
    and a tied lm_head (its weight gradient added to the embedding's: V*h = 128*64 more ADD there)."""
    config = {**json.loads(Path(DEFAULTS).read_text()), "sliding_window": 4, "tie_word_embeddings": True}
    report = validate_backward(config, 1, 5, tiny=True)
    assert report.ok, _why(report)
    # embedding_dense_backward T*h = 320, the stream read twice by input_layernorm 320, the tied weight 8192
    assert _measured(report, "model.embed_tokens")["add"] == 320 + 320 + 128 * 64
