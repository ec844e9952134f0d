"""Backward of DeepSeek-V4 (deepseek_v4: hyper-connections, CSA / HCA compressed attention with the lightning
indexer, sinks, sqrtsoftplus / hash routers, clamped experts): exact per node against autograd
(training/backward_dsv4.py), tiny on the CPU and V4-Flash at full size on the meta device.

The tiny config (``DeepseekV4.tiny``): h = 64, N = hc_mult 3 streams, 3 Sinkhorn iterations, H = 4 heads of D = 32
(rotary r = 8), q_lora 16, window W = 4, layer 0 sliding (hash-routed), layer 1 CSA (ratio 4, index_topk 2),
layer 2 HCA (ratio 8); 4 experts of I = 48, top 2. S = 3 closes no window; S = 5 one CSA window; S = 9 two CSA
windows (CSA's overlap slices both read) and one HCA window, past the window of 4 keys; S = 17 four CSA entries
(the indexer's top 2 binds) and two HCA windows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.training import backward as tb
from llm_profiler.training.backward_dsv4 import DSV4_TYPES

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import BackwardReport, validate_backward  # noqa: E402

FLASH = json.loads((Path(__file__).parents[1] / "llm_profiler/presets/deepseek-ai--DeepSeek-V4-Flash.json").read_text())
SHAPES = [(2, 3), (1, 5), (1, 17), (2, 9)]


def _failures(report: BackwardReport) -> str:
    return report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20])


def _measured(report: BackwardReport, node: str, metric: str) -> int:
    return next(r.measured for r in report.rows if (r.node, r.metric) == (node, metric))


@pytest.fixture(scope="module")
def flash_1x9() -> BackwardReport:
    return validate_backward("deepseek-v4-flash", 1, 9, tiny=True)


@pytest.mark.parametrize(("batch", "seq"), SHAPES, ids=[f"{b}x{s}" for b, s in SHAPES])
def test_dsv4_backward_exact_per_node_tiny(batch: int, seq: int) -> None:
    report = validate_backward("deepseek-v4-flash", batch, seq, tiny=True)
    assert report.ok, _failures(report)
    assert report.model_type in DSV4_TYPES and report.model_type in tb.VALIDATED_MODEL_TYPES


def test_dsv4_backward_exact_past_window_and_ratios(flash_1x9: BackwardReport) -> None:
    """S = 9: both CSA windows' slices read (one accumulation each on chunk_gate and kv_proj), one HCA window;
    the indexer still sends nothing back."""
    assert flash_1x9.ok, _failures(flash_1x9)
    assert not [r for r in flash_1x9.rows if ".indexer" in r.node and r.measured]


def test_dsv4_sigmoid_scores_tied_exact() -> None:
    """scoring_func sigmoid: score_fn's backward is sigmoid_backward (the sqrt and softplus_backward gone); a tied
    lm_head: its weight gradient added to the embedding's (V*h = 128*64 more ADD on the embedding)."""
    untied = validate_backward({**FLASH, "scoring_func": "sigmoid"}, 1, 9, tiny=True)
    tied = validate_backward({**FLASH, "scoring_func": "sigmoid", "tie_word_embeddings": True}, 1, 9, tiny=True)
    assert untied.ok and tied.ok, _failures(tied if untied.ok else untied)
    assert _measured(tied, "model.embed_tokens", "add") - _measured(untied, "model.embed_tokens", "add") == 128 * 64


def test_dsv4_backward_values_by_hand(flash_1x9: BackwardReport) -> None:
    """B = 1, S = 9 (t = 9): the measured (autograd) counts equal the derivations."""
    got: dict[tuple[str, str], Any] = {(r.node, r.metric): r.measured for r in flash_1x9.rows}
    t, N, h, H, D, r = 9, 3, 64, 4, 32, 8
    p = "model.layers.1"
    # attn_hc (mHC, 15 = (2 + N)*N mixes of N*h = 192): grad x (9 x 15)@(15 x 192) 9*192*14 = 24,192 ADD, grad fn
    # (15 x 9)@(9 x 192) 15*192*8 = 23,040; collapse sum_h 9*3*63 = 1,701; 5 Sinkhorn divisions, each the neg
    # (81), the sum over the broadcast dim (9*3*2 = 54) and c's second read (81): 1,080; softmax over N 27*5 = 135;
    # comb's scale sum 80 and bias sum 9*8 = 72; post's and pre's sigmoid 27, scale sum 26, bias sum 3*8 = 24
    # each; the collapsed output read twice by input_layernorm: 9*64 = 576
    assert got[(f"{p}.attn_hc", "add")] == (24_192 + 23_040 + 1_701 + 5 * (81 + 54 + 81) + 135 + 80 + 72
                                           + 2 * (27 + 26 + 24) + 576) == 51_030
    # the embeddings expanded to N streams: the copies summed back on model:positions, t*h*(N-1) = 1,152; the
    # embedding: its T*h rows into the table (576) and the first stream read 4 times (norm twice, collapse, the
    # residual bmm): 3 adds of t*N*h = 1,728
    assert got[("model:positions", "add")] == t * h * (N - 1) == 1_152
    assert got[("model.embed_tokens", "add")] == t * h + 3 * t * N * h == 5_760
    # CSA scores: K = 9 keys + 2 entries = 11, rows = H*t = 36, combined 36*12 = 432: grad q 4*9*32*10 = 11,520,
    # grad k 4*11*32*8 = 11,264; -g on combined 432 and its sum over 12 columns 36*11 = 396; combined read twice
    # 432; the sink expand summed 4*8 = 32; the shared key's repeat to 4 heads 3*11*32 = 1,056
    keys, rows = 9 + 2, H * t
    assert got[(f"{p}.self_attn:scores", "add")] == (11_520 + 11_264 + 432 + 396 + 432 + 32 + 1_056) == 25_132
    assert got[(f"{p}.self_attn:scores", "mult")] == 2 * rows * keys * D + rows * keys == 25_740
    # the compressor (CSA, 2 windows of 2m = 8 slots over d = 32, width 64): softmax_backward 64 rows 64*15 = 960,
    # the position_bias sum over 2 windows 4*64 = 256, chunk_gate read by two slices 2*4*64 = 512, the entries read
    # twice by kv_norm 2*32 = 64
    assert got[(f"{p}.self_attn.compressor", "add")] == 960 + 256 + 512 + 64 == 1_792
    # kv_norm (RMSNorm over D): 32*8 + 9*31 = 535; rope's slices t*D + 2*t*r = 432; K = V read twice 11*32 = 352
    assert got[(f"{p}.self_attn.kv_norm", "add")] == 535 + t * D + 2 * t * r + keys * D == 1_319
    # input_layernorm: 64*8 + 9*63 = 1,079 and 4 readers (q_a, kv, the compressor's kv and gate): 3*576
    assert got[(f"{p}.input_layernorm", "add")] == 1_079 + 3 * t * h == 2_807


def test_dsv4_backward_exact_full_size_meta() -> None:
    """V4-Flash (43 layers, h 4096, N 4, H 64 of 512, 256 experts top 6) at B=1, S=5: one CSA window, none HCA."""
    report = validate_backward("deepseek-v4-flash", 1, 5, tiny=False)
    assert report.ok, _failures(report)
