"""Backward of llama4_text, gpt_oss, hunyuan_v1_moe / hunyuan_v1_dense, ernie4_5_moe, phimoe and mimo_v2_flash: exact per node against autograd (training/backward_moe.py), tiny on
the CPU at (2, 3) and (1, 5), with the new rule kinds' numbers derived beside them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.training import backward as tb
from llm_profiler.training.backward_moe import l2_norm_backward

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import BackwardReport, validate_backward  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
SCOUT = str(CONFIGS / "meta-llama--Llama-4-Scout-17B-16E-Instruct.json")
MODELS = [
    SCOUT,  # llama4_text: complex rope, L2 qk_norm, NoPE temperature, every layer MoE (top-1), shared expert
    str(CONFIGS / "meta-llama--Llama-4-Maverick-17B-128E-Instruct.json"),  # dense and MoE layers interleaved
    str(CONFIGS / "openai--gpt-oss-20b.json"),  # gpt_oss: sinks, clamped SwiGLU, biased router and experts
    str(CONFIGS / "openai--gpt-oss-120b.json"),
    str(CONFIGS / "tencent--Hunyuan-A13B-Instruct.json"),  # hunyuan_v1_moe: q/k norms after rope, gate.wg
    "HUNYUAN_DENSE",  # hunyuan_v1_dense: HunYuanDenseV1Config's defaults with head_dim 128 (null there)
    str(CONFIGS / "transformers--Ernie4_5_MoeConfig-defaults.json"),  # ernie4_5_moe: moe_statics, clamp
    str(CONFIGS / "transformers--PhimoeConfig-defaults.json"),  # phimoe: sparsemixer (eval mode)
    # mimo_v2_flash: full and sliding layers (window 4 binds at S=5) with their own KV heads, sinks, partial rope
    str(CONFIGS / "transformers--MiMoV2FlashConfig-defaults.json"),
]


def _config(model: str) -> Any:
    if model == "HUNYUAN_DENSE":
        return {**json.loads((CONFIGS / "transformers--HunYuanDenseV1Config-defaults.json").read_text()),
                "head_dim": 128}
    return model


@cache
def _report(model: str, batch: int, seq: int) -> BackwardReport:
    return validate_backward(_config(model), batch, seq, tiny=True)


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, 2, 3) for m in MODELS] + [(m, 1, 5) for m in MODELS])
def test_moe_backward_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    report = _report(model, batch, seq)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])
    assert report.model_type in tb.VALIDATED_MODEL_TYPES


def _measured(report: BackwardReport, node: str) -> dict[str, int]:
    return {r.metric: r.measured for r in report.rows if r.node == node}


def test_llama4_l2_norm_and_complex_rope_values() -> None:
    """Tiny Scout at B=2, S=3: T=6, H=4, KV=2, D=24, h=64, E=4, top-1, I=96."""
    got = _measured(_report(SCOUT, 2, 3), "model.layers.0.self_attn.qk_norm")
    # weightless L2 norm over r = T*(H+KV) = 36 rows of D = 24 (r*D = 864): x*r back (g*r, sum_D g*x: 2*864
    # MULT, 36*23 ADD), rsqrt (r^3, *-0.5, *g: 4 per row), mean (864 DIV), x^2 (x^1: 864 EXP, *2, *g)
    assert got == {"mult": 4 * 864 + 4 * 36, "add": 36 * 23, "div": 864, "exp": 864, "act": 6 * 864 + 4 * 36}
    assert dict(l2_norm_backward(36, 24)) == {"mult": 3600, "add": 828, "div": 864, "exp": 864, "act": 5328}
    rope = _measured(_report(SCOUT, 2, 3), "model.layers.0.self_attn:rope")
    # grad * conj(freqs): T*(H+KV)*D/2 = 432 complex products (4 MULT, 2 ADD each), plus qk_norm's two reads
    # of rope's output (864 ADD)
    assert (rope["mult"], rope["add"]) == (4 * 432, 2 * 432 + 864)
    routing = _measured(_report(SCOUT, 2, 3), "model.layers.0.feed_forward:routing")
    # x.repeat(E) * scores, E*T*h = 1536: two muls; sum_h of g*x (E*T*(h-1) = 1512 ADD); the E copies summed
    # (T*h*(E-1) = 1152 ADD)
    assert (routing["mult"], routing["add"]) == (2 * 1536, 24 * 63 + 6 * 64 * 3)


def test_gpt_oss_sinks_and_swiglu_values() -> None:
    """Tiny gpt-oss-20b at B=2, S=3: T=6, H=4, KV=2, D=24, E=4, top-2, I=96."""
    report = _report(str(CONFIGS / "openai--gpt-oss-20b.json"), 2, 3)
    swiglu = _measured(report, "model.layers.0.mlp.experts:swiglu")
    n = 6 * 2 * 96  # N = T*k*I = 1152 gated elements
    # clamp backwards: 1 CMP (gate), 2 CMP + a logical and (up); gate * sigmoid(alpha*gate): 2 MULT,
    # sigmoid_backward (1 ADD, 2 MULT), *alpha (1 MULT), gate read twice (1 ADD); (up+1) * glu: 2 MULT
    assert (swiglu["mult"], swiglu["add"], swiglu["cmp"]) == (7 * n, 2 * n, 4 * n) == (8064, 2304, 4608)
    sinks = _measured(report, "model.layers.0.self_attn:sinks")
    # combined - max: rows = B*H*S = 24 of K+1 = 4 columns: -g on 96 elements, summed per row (24*3 ADD)
    assert sinks["add"] == 96 + 24 * 3 == 168


def test_hunyuan_ernie_phimoe_router_and_norm_values() -> None:
    """Tiny configs at B=2, S=3 (T = 6)."""
    hy = _measured(_report(str(CONFIGS / "tencent--Hunyuan-A13B-Instruct.json"), 2, 3), "model.layers.0.self_attn:rope")
    # H=4, KV=2, D=24: rotate_half's negs back, T*(H+KV)*D/2 = 432; the q/k norms after rope read its output
    # twice (x^2, x * rstd): T*(H+KV)*D = 864 ADD
    assert hy["add"] == 432 + 864
    ernie = _measured(_report(str(CONFIGS / "transformers--Ernie4_5_MoeConfig-defaults.json"), 2, 3), "model.layers.1.mlp.gate")
    assert ernie["cmp"] == 6  # clamp(sum, min=norm_min) backwards: one comparison per token
    phi = _measured(_report(str(CONFIGS / "transformers--PhimoeConfig-defaults.json"), 2, 3), "model.layers.0.mlp.router")
    # E=4, h=64: the linear's grads T*h*(E-1) + E*h*(T-1) = 1152 + 1280; two softmax backwards T*(2E-1) = 42
    # each; two gathers scattered back (T each); the logits read by both rounds (T*E = 24)
    assert phi["add"] == 1152 + 1280 + 2 * 42 + 2 * 6 + 24 == 2552
    assert phi["mult"] == 2 * 6 * 4 * 64 + 2 * 2 * 24  # the linear's 3072 MACs, two softmax backwards' 2*T*E
