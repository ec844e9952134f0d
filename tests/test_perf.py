"""Bytes moved, roofline per phase, TTFT / TPOT, and memory fit (hand-derived values beside each check)."""

from __future__ import annotations

import json

import pytest

from llm_profiler import profile_model
from llm_profiler.cli import main
from llm_profiler.errors import QueryError
from llm_profiler.hardware import custom_device, get_device
from llm_profiler.memory import (
    activation_bytes,
    kv_cache_bytes,
    largest_batch,
    largest_context,
    memory_usage,
    weights_bytes,
)
from llm_profiler.perf import measured_utilization, phase_report, roofline, settings
from llm_profiler.phases import Phase
from llm_profiler.symbols import B, S
from llm_profiler.traffic import dtypes, model_traffic, node_traffic

TINY = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 128}
LLAMA_PARAMS = 6_738_415_616  # Llama-2-7b, published


@pytest.fixture(scope="module")
def llama():
    return profile_model("llama-2-7b")


def _node(model, path):
    return model.graph.node(path)


def test_int4_weight_bytes_by_hand(llama):
    t = node_traffic(_node(llama, "model.layers.0.self_attn.q_proj"), dtypes("int4", "fp16"))
    # 4096 x 4096 int4, groups of 128 input features, an fp16 scale + int4 zero point (20 bits) per group:
    # 4096*4096*4 = 67,108,864 bits + 4096 rows * 32 groups * 20 = 2,621,440 bits = 69,730,304 bits
    # = 8,716,288 bytes
    assert t.weights == 8_716_288
    # the input (B*S x 4096) is read and the output (B*S x 4096) written at fp16: 8192*B*S bytes each
    assert t.act_read == 8192 * B * S and t.act_written == 8192 * B * S
    # roofline FLOPs of an unbiased linear: 2 * macs = 2 * 4096 * 4096 per token
    assert t.flops == 2 * 4096 * 4096 * B * S


def test_bias_at_activation_dtype():
    m = profile_model("qwen2-7b")
    t = node_traffic(_node(m, "model.layers.0.self_attn.k_proj"), dtypes("int8", "bf16"))
    # k_proj 3584 -> 512 (4 KV heads of 128) with a bias: 512 * 3584 int8 bytes + 512 bf16 biases
    assert t.weights == 512 * 3584 + 2 * 512


def test_decode_bytes_by_hand(llama):
    r = roofline(llama, "a100-80gb", "decode", batch=1, past=0)
    cats = r.bytes_by_category
    # every weight once at bf16, except the embedding table, of which a lookup reads one row (4096):
    # 2 * (6,738,415,616 - 32000*4096) + 2*4096 = 13,214,695,424
    assert cats["weights"] == 2 * (LLAMA_PARAMS - 32000 * 4096) + 2 * 4096 == 13_214_695_424
    # K and V of the new token appended in 32 layers: 32 * 2 * 32 heads * 128 * 2 bytes = 524,288
    assert cats["kv_written"] == 524_288
    # all memory-bound: the latency is the bytes over the A100-80GB's 2,039 GB/s
    assert r.bound == "memory" and r.latency_s == pytest.approx(r.io.total / 2039e9)
    assert r.io.total >= cats["weights"] and r.mbu == pytest.approx(1.0)


def test_kv_read_at_context_by_hand(llama):
    r = roofline(llama, "a100-80gb", "decode", batch=2, past=1023, kv_dtype="fp8")
    # scores read K, context reads V, of 1023 + 1 tokens: 32 layers * 2 * B=2 * 32 heads * 128 * 1024 * 1 byte
    assert r.bytes_by_category["kv_read"] == 32 * 2 * 2 * 32 * 128 * 1024
    assert r.bytes_by_category["kv_written"] == 32 * 2 * 2 * 32 * 128 * 1


def test_weight_storage_is_params_times_bytes(llama):
    assert weights_bytes(llama, "bf16") == 2 * LLAMA_PARAMS
    assert weights_bytes(llama, "fp32", "fp32") == 4 * LLAMA_PARAMS
    # int4: every decoder matrix in groups; embeddings and lm_head stay at the activation dtype
    int4 = model_traffic(llama, dtypes("int4", "fp16")).weight_storage()
    assert 2 * 2 * 32000 * 4096 < int4 < 2 * LLAMA_PARAMS / 3


def test_prefill_compute_bound_and_efficiencies(llama):
    base = roofline(llama, "a100-80gb", "prefill", batch=4, seq=2048)
    assert base.bound == "compute" and base.flops.total > 2 * 4 * 2048 * (LLAMA_PARAMS - 32000 * 4096)
    slow = roofline(llama, "a100-80gb", "prefill", batch=4, seq=2048, flops_efficiency=0.5)
    assert slow.flops.theoretical_latency_s == pytest.approx(2 * base.flops.theoretical_latency_s)
    mfu, mbu = measured_utilization(base, base.latency_s, "a100-80gb")
    assert mfu == pytest.approx(base.mfu) and mbu == pytest.approx(base.mbu)
    with pytest.raises(QueryError):
        settings("a100-80gb", compute_dtype="fp8")  # the A100 has no fp8 figure
    with pytest.raises(QueryError):
        settings("a100-80gb", kv_dtype="int4")  # int4 is weight-only


def test_node_rows_sum_to_the_phase(llama):
    r = roofline(llama, "h100", "prefill", batch=1, seq=128, nodes=True)
    assert len(r.nodes) == len(llama.nodes)
    assert sum(n.time_s for n in r.nodes) == pytest.approx(r.latency_s)
    assert sum(n.bytes for n in r.nodes) == r.io.total
    assert sum(n.flops for n in r.nodes) == r.flops.total


@pytest.mark.parametrize("config", [TINY, {**TINY, "model_type": "mistral", "sliding_window": 4}])
def test_generation_equals_its_forwards(config):
    m = profile_model(config)
    dev = custom_device("toy", 1, 100, {"bf16": 1})
    g = phase_report(m, Phase.generate(2, 5, 6, 0, "last"), dev)
    forwards = [phase_report(m, Phase.prefill(2, s, p, "last"), dev) for s, p in Phase.generate(2, 5, 6).steps()]
    assert g.forwards == 6 and g.tokens == 12
    assert g.flops.total == sum(f.flops.total for f in forwards)
    for cat in g.bytes_by_category:
        assert g.bytes_by_category[cat] == sum(f.bytes_by_category[cat] for f in forwards)
    assert g.ttft_s == pytest.approx(forwards[0].latency_s)
    assert g.tpot_s == pytest.approx(sum(f.latency_s for f in forwards[1:]) / 5)
    assert g.latency_s == pytest.approx(sum(f.latency_s for f in forwards))
    assert g.tokens_per_s == pytest.approx(12 / g.latency_s)
    assert g.decode.flops.total + g.prefill.flops.total == g.flops.total


def test_activation_peak_by_hand():
    # TINY at B=1, S=8, P=0, bf16 (2 bytes): keys 8; mask 1*8*8*2 = 128 bytes.
    # attention: residual + normed 2*8*64*2 = 2048, q 8*4*16*2 = 1024, K and V repeated to 4 heads
    #   2*4*8*16*2 = 2048, scores 4*8*8 = 256 elements at 2 bytes (512) + their fp32 copy softmax converts
    #   to (1024) + fp32 probs (1024) -> 7680
    # MLP: 2048 + 3*8*96*2 = 6656; head: 8*64*2 + 8*128*2 = 3072. peak = 128 + 7680 = 7808
    assert activation_bytes(TINY, 1, 8) == 7808
    # fused attention keeps no scores or repeated K / V: attention 3072, MLP 6656 -> 128 + 6656
    assert activation_bytes(TINY, 1, 8, attention="fused") == 6784
    # at S=16 the scores grow quadratically: mask 512; attention 4096 + 2048 + 4096 + 1024*2 + 1024*4
    #   + 1024*4 = 20480; MLP 4096 + 9216 = 13312 -> 512 + 20480 = 20992
    assert activation_bytes(TINY, 1, 16) == 20992
    # fp32: .to(float32) returns the scores themselves, no copy: attention at S=16 = 2*(4096 + 2048 + 4096)
    #   + 1024*4 + 1024*4 = 28672; mask 1024 -> 29696
    assert activation_bytes(TINY, 1, 16, act_dtype="fp32") == 29696


def test_kv_cache_bytes_by_hand(llama):
    # 32 layers * 2 (K, V) * 32 heads * 128 * 4096 tokens * 2 bytes = 2 GiB per sequence
    assert kv_cache_bytes(llama, 1, 4096) == 2 * 2**30
    assert kv_cache_bytes(llama, 3, 4096, "fp8") == 3 * 2**30


def test_largest_batch_is_the_boundary(llama):
    r = largest_batch(llama, "a100-80gb", seq=2048, context=4096)
    assert r.value > 0 and r.at_value.fits and not r.at_next.fits and r.at_next.batch == r.value + 1
    again = memory_usage(llama, r.value + 1, 2048, 4096, "a100-80gb")
    assert again.total == r.at_next.total > get_device("a100-80gb").memory_bytes
    assert largest_batch(llama, "a100-80gb", seq=2048, context=4096, kv_dtype="fp8").value > r.value
    tight = largest_batch(llama, "a100-80gb", seq=2048, memory_fraction=0.1)  # 8 GiB < 12.6 GiB of weights
    assert tight.value == 0 and tight.at_value is None and tight.notes


def test_largest_context_is_the_boundary(llama):
    r = largest_context(llama, "h100", batch=2, seq=512, weight_dtype="int4", attention="fused")
    assert r.at_value.fits and not r.at_next.fits and r.at_next.context == r.value + 1


def test_cli_roofline_and_fit(capsys, tmp_path):
    assert main(["roofline", "llama-2-7b", "--phase", "decode", "--past", "100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["phase"] == "decode" and data["bound"] == "memory"
    assert main(["roofline", "llama-2-7b", "--phase", "generate", "--seq", "64", "-n", "8", "--batch", "1,4",
                 "--weight-dtype", "int4", "--act-dtype", "fp16", "--measured", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "TTFT" in out and "TPOT" in out and "measured 1 s" in out
    assert main(["fit", "llama-2-7b", "--device", "h100", "--seq", "2048", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["at_value"]["fits"] and not fit["at_next"]["fits"]
    assert main(["fit", "llama-2-7b", "--solve", "context"]) == 0
    assert "largest context" in capsys.readouterr().out
    assert main(["roofline", "llama-2-7b", "--kv-dtype", "int4"]) == 2
    pytest.importorskip("matplotlib")
    assert main(["roofline", "llama-2-7b", "--phase", "decode", "--plot", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 10_000  # one point per node, coloured by kind
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "r.png").ndim == 3  # a real image that opens
    assert main(["roofline", "llama-2-7b", "--phase", "generate", "-n", "4", "--plot", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 10_000  # prefill and decode as two points
