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


def test_run_memory_beside_the_prediction():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.runs import build_reference, format_memory, format_run, run_generate

    model, _ = build_reference("llama-3.2-1b", tiny=True)
    run = run_generate("llama-3.2-1b", batch=2, prompt=8, new_tokens=4, tiny=True, bench_seconds=0.1, model=model)
    mem = run.memory
    assert mem is not None and run.load_average is not None
    # tiny llama-3.2-1b: 2 layers, 2 KV heads of 24; the cache at the final context 8 + 4 - 1 = 11 tokens holds
    # 2 layers x (K, V) x 2 heads x 24 x 11 tokens x batch 2 x 4 bytes (fp32) = 16,896 bytes
    assert mem.kv_cache == 2 * 2 * 2 * 24 * 11 * 2 * 4 == 16_896
    # the weights: every parameter once at fp32 (the tied head is the embedding's)
    from llm_profiler import profile_model
    from llm_profiler.validation.reference import reference

    assert mem.weights == 4 * profile_model(reference("llama-3.2-1b", tiny=True).data).count("params", "model", 1, 1, 0)
    # built by build_reference: the baseline is known (a tiny model may fit in memory the process already holds,
    # so loaded - baseline can be 0 in a long-running process)
    assert mem.baseline is not None and 0 < mem.baseline <= mem.loaded
    assert mem.peak >= max(run.peak_memory_bytes) and mem.growth == mem.peak - mem.loaded
    assert mem.predicted_growth == mem.kv_cache + mem.activations > 0
    assert "growth" in format_memory(mem) and format_memory(mem) in format_run(run)
    # the process's allocator, as the device model reads it; a retaining one is named beside the growth
    from llm_profiler.hardware.cpu_bench import process_allocator

    assert mem.allocator == process_allocator()
    retained = mem.model_copy(update={"allocator": "retaining"})
    assert "allocator retaining" in format_memory(retained) and "allocator" not in format_memory(
        mem.model_copy(update={"allocator": "glibc"}))


def test_run_continues_from_a_random_cache():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.runs import build_reference, random_cache, run_generate

    model, _ = build_reference("llama-3.2-1b", tiny=True)
    cache = random_cache(model, 1, 40)
    assert cache.get_seq_length() == 40
    run = run_generate("llama-3.2-1b", batch=1, prompt=1, new_tokens=3, tiny=True, bench_seconds=0.1, model=model,
                       past_cache=cache, warmup=True)
    assert len(run.step_s) == 3 and not any(n.startswith("run ") for n in run.notes)  # 3 forwards each run
    assert cache.get_seq_length() == 40  # cropped back after each run
    # the prediction is the generation after 40 cached tokens: KV at 40 + 1 + 3 - 1 = 43 tokens
    assert run.memory is not None and run.memory.kv_cache == 2 * 2 * 2 * 24 * 43 * 1 * 4
