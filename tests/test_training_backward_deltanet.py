"""Backward of the gated DeltaNet hybrids (qwen3_next, qwen3_5_text, qwen3_5_moe_text): exact per node against
autograd (training/backward_deltanet.py), tiny on the CPU at (2, 3), (1, 5) and past the delta rule's chunk of
64 ((1, 65): two chunks; (1, 130): three, a chunk between the first and the last); Qwen3-Next-80B-A3B at full
size on the meta device; the new rules' numbers derived beside them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from llm_profiler.training import backward as tb
from llm_profiler.training.backward_deltanet import DELTANET_TYPES, local_delta_nets

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import BackwardReport, validate_backward  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
NEXT = str(CONFIGS / "Qwen--Qwen3-Next-80B-A3B-Thinking.json")
MODELS = [
    NEXT,  # qwen3_next: DeltaNet (in_proj_qkvz / in_proj_ba) and gated attention, MoE + gated shared expert
    str(CONFIGS / "Qwen--Qwen3.5-27B.json"),  # qwen3_5 (multimodal, its text_config: qwen3_5_text): dense MLPs
    str(CONFIGS / "transformers--Qwen3_5MoeTextConfig-defaults.json"),  # qwen3_5_moe_text: every layer MoE
]
SHAPES = [(2, 3), (1, 5), (1, 65)]


@cache
def _report(model: str, batch: int, seq: int) -> BackwardReport:
    return validate_backward(model, batch, seq, tiny=True)


def _cases() -> list[tuple[str, int, int]]:
    return [(m, b, s) for m in MODELS for b, s in SHAPES] + [(NEXT, 1, 130)]


@pytest.mark.parametrize(("model", "batch", "seq"), _cases())
def test_deltanet_backward_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    report = _report(model, batch, seq)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20]) + str(report.unknown_ops)
    assert report.model_type in tb.VALIDATED_MODEL_TYPES


def _config(name: str, **changes: object) -> dict:
    return {**json.loads((CONFIGS / name).read_text()), **changes}


VARIANTS = {
    # as many key heads as value heads: no repeat_interleave of q and k
    "no_repeat": lambda: _config("transformers--Qwen3_5MoeTextConfig-defaults.json", linear_num_value_heads=16),
    # a dense MLP layer (mlp_only_layers) and MoE every other layer; the top-k weights not renormalised
    "dense_layers": lambda: _config("Qwen--Qwen3-Next-80B-A3B-Thinking.json", mlp_only_layers=[0],
                                    decoder_sparse_step=2, norm_topk_prob=False),
    # the multimodal qwen3_5_moe config, its text model with a tied lm_head
    "multimodal_tied": lambda: {"model_type": "qwen3_5_moe", "tie_word_embeddings": True,
                                "text_config": _config("transformers--Qwen3_5MoeTextConfig-defaults.json")},
}


@pytest.mark.parametrize(("variant", "seq"), [(v, s) for v in VARIANTS for s in (3, 65)])
def test_deltanet_backward_exact_variants(variant: str, seq: int) -> None:
    report = validate_backward(VARIANTS[variant](), 2 if seq == 3 else 1, seq, tiny=True)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])


def test_validated_types_are_the_tested_ones() -> None:
    assert {reference(m, tiny=True).profile.spec.model_type for m in MODELS} == DELTANET_TYPES
    assert DELTANET_TYPES <= tb.VALIDATED_MODEL_TYPES


def _measured(report: BackwardReport, node: str) -> dict[str, int]:
    return {r.metric: r.measured for r in report.rows if r.node == node}


def test_qwen3_next_deltanet_values() -> None:
    """Tiny Qwen3-Next at B=2, S=3: T=6, Hk=2 key heads and Hv=4 value heads (repeat g=2) of Dk=8, Dv=12, conv
    over 2*16 + 48 = 80 channels (K=4), chunk C=64: N=1 chunk, L=64 padded positions, b = B*Hv = 8 (head, batch)
    pairs, 8 blocks of 64 x 64."""
    report = _report(NEXT, 2, 3)
    a = "model.layers.0.linear_attn"
    rule = _measured(report, f"{a}:delta_rule")
    # (k_beta @ k^T) and (q @ k^T), two bmm gradients each: 4 * 8*64*64*8; the unit solves A^-H g (C(C-1)/2
    # MACs per column: 8*12*2016 and 8*8*2016) and -g_X @ X^H (8*64*12*64 and 8*64*8*64); the one chunk's
    # intra @ v_new, both gradients (2 * 8*64*64*12), and q @ state, k_cumdecay @ state (the zero initial state
    # needs no gradient: 2 * 8*64*12*8)
    assert (rule["macs"] == 4 * 262_144 + 193_536 + 129_024 + 393_216 + 262_144 + 2 * 393_216 + 2 * 49_152
            == 2_911_232)
    gates = _measured(report, f"{a}:gates")
    # T*Hv = 24: sigmoid back (24), A's side of -exp(A_log) * softplus summed over T (4*5), the neg (4),
    # softplus back (24), dt_bias summed over T (4*5); beta padded to L and read twice: 8*64
    assert gates["add"] == 24 + 20 + 4 + 24 + 20 + 512 == 604
    l2 = _measured(report, f"{a}:l2norm")
    # q and k: sum_Dk(g * x) over 24 rows of 8 each (2 * 24*7); the padded key read by k * beta and its reshape,
    # the reshaped key by two transposes: 2 adds of b*L*Dk = 8*64*8
    assert l2["add"] == 2 * 168 + 2 * 4096 == 8528
    conv_act = _measured(report, a)
    # silu back over the conv's B*80*max(S, K) = 640 outputs (3 ADD each); q and k (b*S*Dk = 192 each) read
    # three times by l2norm (x * x twice, x * inv_norm): 2 adds each
    assert conv_act["add"] == 3 * 640 + 4 * 192 == 2688
    attn = "model.layers.3.self_attn"
    # q_proj (6 x 64 @ 64 x 192, query and gate halves): both gradients' adds, and the query half (6*4*24) read
    # twice by q_norm: one add
    assert _measured(report, f"{attn}.q_proj")["add"] == 6 * 64 * 191 + 64 * 192 * 5 + 576 == 135_360
    # q_norm: the RMSNorm's sums (24 rows of 24: 24*23 twice), rope's 2 adds of the rotary part (2*6*4*6) and
    # its slicing of q into the rotary part and the rest (6*4*24)
    assert _measured(report, f"{attn}.q_norm")["add"] == 2 * 552 + 288 + 576 == 1968
    gate = _measured(report, f"{attn}:output_gate")
    # attn * sigmoid(gate) over T*H*D = 576: sigmoid back (1 ADD, 2 MULT) and the product's two muls
    assert (gate["mult"], gate["add"]) == (4 * 576, 576)


def test_qwen3_next_two_chunks() -> None:
    """B=1, S=65: N=2 chunks of 64, b = 4, 8 blocks. The second chunk reads the state the first wrote."""
    rule = _measured(_report(NEXT, 1, 65), "model.layers.0.linear_attn:delta_rule")
    # ut and intra (4 * 8*64*64*8), the two solves (8*12*2016 + 8*8*2016 + 8*64*12*64 + 8*64*8*64); per chunk
    # (2 chunks) intra @ v_new both ways (2 * 4*64*64*12) and the q / k_cumdecay gradients (2 * 4*64*12*8); the
    # second chunk's state gradients through q @ state and k_cumdecay @ state (2 * 4*8*64*12); the first chunk's
    # state update k^T @ v_new, both gradients (2 * 4*8*12*64)
    assert rule["macs"] == 1_048_576 + 977_920 + 2 * (393_216 + 49_152) + 49_152 + 49_152 == 3_009_536


def test_tensor_parallel_rank_holds_its_heads() -> None:
    """Under tp=4 a rank's DeltaNet holds 4 of the 16 key heads and 8 of the 32 value heads (``parallel.shard``);
    the delta rule's backward is per head: a quarter of the whole layer's."""
    from llm_profiler import profile_model
    from llm_profiler.formula import Formula
    from llm_profiler.parallel import make_plan
    from llm_profiler.parallel.shard import rank_model

    model = profile_model("qwen3-next-80b-a3b")
    rank = rank_model(model, make_plan(tp=4))
    d = local_delta_nets(rank)[0]
    assert (d.key_heads, d.value_heads) == (4, 8)
    node, env = "model.layers.0.linear_attn:delta_rule", {"B": 2, "S": 70, "P": 0}
    whole = Formula.of(tb.backward_counts(model)[node]["macs"]).evaluate(env)
    assert whole == 4 * Formula.of(tb.backward_counts(rank)[node]["macs"]).evaluate(env)


def test_qwen3_next_backward_exact_full_size_meta() -> None:
    """Qwen3-Next-80B-A3B (48 layers, h 2048, 512 experts, DeltaNet 16 / 32 heads of 128) at (1, 5)."""
    report = validate_backward(NEXT, 1, 5, tiny=False)
    assert report.ok, report.summary_line()
    got = {(r.node, r.metric): r.measured for r in report.rows}
    # softplus back: one DIV per (token, value head), T*Hv = 5*32
    assert got[("model.layers.0.linear_attn:gates", "div")] == 5 * 32
    # one chunk of 64 over b = Hv = 32 blocks, Dk = Dv = 128: ut and intra's bmm gradients (4 * 32*64*64*128),
    # the solves (2 * 32*128*2016) and their -g_X @ X^H (2 * 32*64*128*64), intra @ v_new both ways
    # (2 * 32*64*64*128), the q / k_cumdecay gradients through the zero state (2 * 32*64*128*128)
    assert (got[("model.layers.0.linear_attn:delta_rule", "macs")]
            == 67_108_864 + 16_515_072 + 33_554_432 + 33_554_432 + 67_108_864 == 217_841_664)
