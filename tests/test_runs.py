"""Measured runs: a real generate of a tiny model on the CPU, timed per forward, beside the roofline."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.validation


def test_run_generate_tiny_cpu():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.runs import format_run, run_generate

    run = run_generate("llama-3.2-1b", batch=2, prompt=8, new_tokens=4, tiny=True, bench_seconds=0.1)
    assert run.device == "local-cpu" and run.torch_device == "cpu" and run.dtype == "fp32"
    assert len(run.step_s) == 4 and len(run.peak_memory_bytes) == 4 and not run.notes  # 1 prefill + 3 decodes
    assert run.ttft_s == run.step_s[0] and run.tpot_s == pytest.approx(sum(run.step_s[1:]) / 3)
    assert run.total_s >= sum(run.step_s) * 0.999
    assert run.tokens_per_s == pytest.approx(2 * 4 / run.total_s)
    assert run.ttft_ratio == pytest.approx(run.ttft_s / run.predicted_ttft_s)
    assert run.tpot_ratio == pytest.approx(run.tpot_s / run.predicted_tpot_s)
    # the tiny model (hidden 64, vocab 128) is far from any roof: python overhead dominates
    assert run.ttft_ratio > 1 and run.tpot_ratio > 1
    assert run.prefill_flops > run.decode_flops > 0 and run.decode_bytes > 0
    assert 0 < run.decode_mbu < 1 and min(run.peak_memory_bytes) > 0
    assert "TTFT" in format_run(run)
