"""Execution profiles (llm_profiler.engines): each rule against a reference written from its source.

- FlashAttention-2 (Dao, 2023, Algorithm 1): only the causally kept (query, key) pairs are computed, the
  scores never leave the chip, the online softmax rescales per key block; reference: brute-force loops.
- vLLM's paged KV (Kwon et al., 2023) and chunked prefill: the fit of Llama-3.1-8B on an A100-80GB.
"""

from __future__ import annotations

import pytest

from llm_profiler import metrics as M
from llm_profiler import profile_model
from llm_profiler.engines import FLASH_BLOCK, PROFILES, causal_pairs, get_engine, paged_tokens
from llm_profiler.errors import QueryError
from llm_profiler.memory import largest_batch
from llm_profiler.perf import roofline


def brute_pairs(s: int, p: int, window: int | None) -> int:
    """Query i at absolute position p + i sees keys k <= p + i, and k > p + i - window in a sliding layer."""
    return sum(1 for i in range(s) for k in range(p + s)
               if k <= p + i and (window is None or k > p + i - window))


@pytest.mark.parametrize("window", [None, 1, 2, 4, 7, 4096])
@pytest.mark.parametrize("s, p", [(1, 0), (3, 0), (7, 5), (1, 9), (16, 3), (5, 40), (40, 0)])
def test_causal_pairs_equal_the_brute_force(s: int, p: int, window: int | None) -> None:
    assert causal_pairs(window)(1, s, p) == brute_pairs(s, p, window)


def test_flash_scores_count_only_the_kept_pairs() -> None:
    # Llama-3.1-8B layer 0 at B=2, S=7, P=5: 32 heads of 128 dims; pairs per head 7*5 + 7*8/2 = 63
    node = profile_model("llama-3.1-8b", engine="vllm").graph.node("model.layers.0.self_attn:scores")
    pairs = 2 * 32 * 63
    assert node.counts[M.MACS](2, 7, 5) == pairs * 128  # q . k over the kept pairs
    assert node.counts[M.MULT](2, 7, 5) == pairs * 128 + pairs  # plus the scaling, once per kept score
    assert node.counts[M.ACT](2, 7, 5) == 0  # the scores stay on chip
    eager = profile_model("llama-3.1-8b").graph.node("model.layers.0.self_attn:scores")
    assert eager.counts[M.MACS](2, 7, 5) == 2 * 32 * 7 * 12 * 128  # the eager S x (P + S) product


def test_flash_softmax_counts_the_online_rescaling() -> None:
    # per kept pair: 1 CMP, 2 ADD, 1 EXP; per row and key block (keys = 12 < 128: one block): 2 ADD, 1 EXP,
    # 1 + 128 MULT; per row: 128 DIV. Rows = B*H*S = 2*32*7 = 448, pairs = 2*32*63 = 4032.
    node = profile_model("llama-3.1-8b", engine="vllm").graph.node("model.layers.0.self_attn:softmax")
    rows, pairs, blocks = 448, 4032, 1
    assert FLASH_BLOCK == 128
    c = {m: node.counts[m](2, 7, 5) for m in (M.CMP, M.ADD, M.EXP, M.MULT, M.DIV, M.ACT)}
    assert c == {M.CMP: pairs, M.ADD: 2 * pairs + 2 * rows * blocks, M.EXP: pairs + rows * blocks,
                 M.MULT: rows * blocks * 129, M.DIV: rows * 128, M.ACT: 0}


def test_sliding_layers_count_the_window_pairs() -> None:
    # gemma-2-9b alternates sliding (window 4096) and global layers; a 5000-token prefill: a sliding layer's
    # queries see at most 4096 keys, a global one all earlier keys.
    model = profile_model("gemma-2-9b", engine="vllm")
    sliding = model.graph.node("model.layers.0.self_attn:scores")
    full = model.graph.node("model.layers.1.self_attn:scores")
    heads, d = 16, 256
    assert sliding.counts[M.MACS](1, 5000, 0) == heads * d * brute_pairs(5000, 0, 4096)
    assert full.counts[M.MACS](1, 5000, 0) == heads * d * 5000 * 5001 // 2


def test_vllm_prefill_is_compute_bound_near_two_macs_over_peak() -> None:
    # Llama-3.1-8B, 2048-token prefill on an A100-80GB (312 TFLOP/s bf16): the serving profile's latency is
    # within 10% of 2 x its MACs / peak (flash attention, logits on the last position only)
    model = profile_model("llama-3.1-8b", engine="vllm")
    macs = model.count(M.MACS, "transformer", 1, 2048, 0) + model.count(M.MACS, "lm_head", 1, 1, 0)
    report = roofline("llama-3.1-8b", "a100-80gb", "prefill", seq=2048)
    assert report.engine == "vllm" and report.lm_head == "last" and report.fits
    assert abs(report.latency_s / (2 * macs / 312e12) - 1) < 0.10
    # the transformers eager forward keeps its figure (scores and fp32 softmax copies in memory), plus what
    # repeat_kv copies: K and V of 8 KV heads to 32 heads, 2 x 32 x 2048 x 128 elements written and read
    # again per layer, 32 layers at bf16: 4 x 536,870,912 bytes = 2.15 GB, ~1.05 ms at 2,039 GB/s
    eager = roofline("llama-3.1-8b", "a100-80gb", "prefill", seq=2048, engine="hf-eager")
    assert round(eager.latency_s * 1e3, 1) == 145.8
    cats = eager.bytes_by_category
    no_copies = roofline("llama-3.1-8b", "a100-80gb", "prefill", seq=2048, engine="vllm").bytes_by_category
    assert cats["kv_written"] == no_copies["kv_written"]  # P = 0: DynamicCache has nothing to re-copy


def test_eager_cache_traffic_charges_repeat_kv_and_the_cache_re_copy() -> None:
    # Llama-3.1-8B decode at B=1, P=1023 (32 heads, 8 KV heads, head_dim 128, 32 layers, bf16)
    eager = roofline("llama-3.1-8b", "h100", "decode", past=1023, engine="hf-eager").bytes_by_category
    sdpa = roofline("llama-3.1-8b", "h100", "decode", past=1023, engine="hf-sdpa").bytes_by_category
    vllm = roofline("llama-3.1-8b", "h100", "decode", past=1023, engine="vllm").bytes_by_category
    one_token = 32 * 2 * 8 * 128 * 2  # K and V of one token, all layers: 131,072 bytes
    assert vllm["kv_written"] == one_token  # paged: the new token into its block
    # DynamicCache's torch.cat reads the 1023 tokens held and writes them again with the new one
    assert eager["kv_written"] == sdpa["kv_written"] == one_token * 1024 == 134_217_728
    assert eager["kv_read"] - vllm["kv_read"] == one_token * 1023
    # eager repeat_kv: K (and V) of 1024 tokens copied to 32 heads, 32 x 1024 x 128 = 4,194,304 elements
    # each, written then read by the bmm; SDPA passes no mask for one query row (enable_gqa: no copy), but
    # repeats them for a chunk after a cache, when it passes one
    for node in ("model.layers.0.self_attn:scores", "model.layers.0.self_attn:context"):
        assert profile_model("llama-3.1-8b").graph.node(node).facts.copies(1, 1, 1023) == 4_194_304
        sdpa_node = profile_model("llama-3.1-8b", engine="hf-sdpa").graph.node(node)
        assert sdpa_node.facts.copies(1, 1, 1023) == 0 and sdpa_node.facts.copies(1, 7, 1023) == 32 * 1030 * 128


def test_fit_with_paged_kv_and_chunked_prefill() -> None:
    # A100-80GB: 80 GiB = 85,899,345,920 bytes. Weights 8,030,261,248 x 2 = 16,060,522,496. KV per sequence
    # at 4096 tokens (256 pages of 16): 32 layers x 2 x 8 heads x 128 x 4096 x 2 bytes = 536,870,912.
    # Activations: one 8192-token chunk, the MLP peak 8192 x (2*4096 + 3*14336) x 2 = 838,860,800.
    # 128 sequences: 16,060,522,496 + 128 x 536,870,912 + 838,860,800 = 85,618,860,032 <= capacity; 129 not.
    fit = largest_batch("llama-3.1-8b", "a100-80gb", seq=2048, context=4096)
    assert fit.engine == "vllm" and fit.value == 128
    assert fit.at_value is not None and fit.at_value.total == 85_618_860_032
    assert fit.at_value.kv_cache == 128 * 536_870_912 and fit.at_value.activations == 838_860_800
    assert "chunks of at most 8192 tokens" in fit.notes[0]
    # one transformers forward of the whole batch (eager scores) is what the reference engine fits
    assert largest_batch("llama-3.1-8b", "a100-80gb", seq=2048, context=4096, engine="hf-eager").value == 35


def test_paged_kv_rounds_up_to_pages() -> None:
    vllm = get_engine("vllm")
    assert [paged_tokens(c, vllm) for c in (1, 16, 17, 4096, 4097)] == [16, 16, 32, 4096, 4112]
    assert paged_tokens(17, get_engine("hf-eager")) == 17


def test_roofline_says_when_weights_do_not_fit() -> None:
    # Mixtral-8x7B: 46,702,792,704 params x 2 bytes = 87.0 GiB > 80 GiB on one A100-80GB
    report = roofline("mixtral-8x7b", "a100-80gb", "decode", past=100)
    assert report.fits is False and report.memory is not None
    assert report.memory.weights == 46_702_792_704 * 2 + 0  # every weight at bf16
    assert any(note.startswith("does not fit A100-80GB") for note in report.notes)


def test_sdpa_drops_the_additive_mask_and_writes_no_scores() -> None:
    eager = profile_model("llama-3.2-1b")
    sdpa = profile_model("llama-3.2-1b", engine="hf-sdpa")
    for metric in (M.MULT, M.DIV, M.EXP, M.CMP, M.MACS):
        assert sdpa.count(metric, "model", 2, 7, 5) == eager.count(metric, "model", 2, 7, 5)
    # SDPA takes a boolean mask (a select): the eager additive mask, one add per score, is gone:
    # 16 layers x B*H*S*keys = 16 x 2*32*7*12 = 86,016
    assert eager.count(M.ADD, "model", 2, 7, 5) - sdpa.count(M.ADD, "model", 2, 7, 5) == 16 * 2 * 32 * 7 * 12
    node = sdpa.graph.node("model.layers.0.self_attn:softmax")
    assert node.counts[M.ACT](2, 7, 5) == 0
    # act drops by the four S x keys tensors eager writes per layer (q @ k^T, its scaling, the masked scores,
    # the probabilities): 4 x B*H*S*keys = 4 x 2*32*7*12, 16 layers; and by the mask's expansion over the
    # batch (where(mask, 0, min): B*S*keys = 2*7*12)
    assert (eager.count(M.ACT, "model", 2, 7, 5) - sdpa.count(M.ACT, "model", 2, 7, 5)
            == 16 * 4 * 2 * 32 * 7 * 12 + 2 * 7 * 12)


def test_unknown_engine_lists_the_valid_ones() -> None:
    with pytest.raises(QueryError, match="valid: hf-eager, hf-sdpa, vllm"):
        profile_model("llama-3.2-1b", engine="tensorrt")
    assert sorted(PROFILES) == ["hf-eager", "hf-sdpa", "vllm"]


def test_fused_elementwise_kernels_read_and_write_once() -> None:
    # Llama-3.2-1B at B=2, S=3: the input RMSNorm over 2048 features; eager writes x^2, the mean, + eps, rsqrt,
    # x * rstd and * weight; a fused RMSNorm reads the 6 x 2048 inputs once and writes 6 x 2048 outputs.
    vllm = profile_model("llama-3.2-1b", engine="vllm").graph.node("model.layers.0.input_layernorm")
    eager = profile_model("llama-3.2-1b").graph.node("model.layers.0.input_layernorm")
    assert vllm.counts[M.ACT](2, 3, 0) == 6 * 2048
    assert eager.counts[M.ACT](2, 3, 0) == 6 * 2048 * 3 + 6 * 3  # x^2, x*rstd, *w; mean, +eps, rsqrt per row
    assert vllm.facts.reads(2, 3, 0) == 6 * 2048
    for metric in (M.ADD, M.MULT, M.DIV, M.SQRT):  # the arithmetic is the reference's
        assert vllm.counts[metric](2, 3, 0) == eager.counts[metric](2, 3, 0)
    # SiluAndMul: the gate product reads gate and up (2 x 6 x 8192) and writes 6 x 8192
    gate = profile_model("llama-3.2-1b", engine="vllm").graph.node("model.layers.0.mlp:gate_mul")
    assert (gate.facts.reads(2, 3, 0), gate.counts[M.ACT](2, 3, 0)) == (2 * 6 * 8192, 6 * 8192)


def test_generation_without_closed_form_equals_its_forwards() -> None:
    # under vllm the online softmax's block visits hold ceil((P + S) / 128): sympy has no closed form for their
    # sum over decode steps, so the generation sums the steps exactly; it must equal the forwards one by one
    # (gemma-2-9b, sliding and global layers, prompt 300, 6 new tokens: one prefill and 5 decode steps)
    gen = roofline("gemma-2-9b", "h100", "generate", batch=2, seq=300, new_tokens=6)
    forwards = [roofline("gemma-2-9b", "h100", "prefill", batch=2, seq=300)]
    forwards += [roofline("gemma-2-9b", "h100", "decode", batch=2, past=300 + i) for i in range(5)]
    assert gen.flops.total == sum(f.flops.total for f in forwards)
    assert gen.io.total == sum(f.io.total for f in forwards)
    assert any("no closed form" in note for note in gen.notes)


def test_engines_keep_every_parameter() -> None:
    # gpt-oss keeps its 64 attention-sink logits per layer on the softmax node: the flash rule rewrites the
    # softmax's arithmetic, not the parameters (24 layers x 64 = 1,536 of them)
    for alias in ("gpt-oss-20b", "llama-3.2-1b", "deepseek-v3"):
        params = profile_model(alias).count(M.PARAMS, "model")
        for engine in ("hf-sdpa", "vllm"):
            assert profile_model(alias, engine=engine).count(M.PARAMS, "model") == params, (alias, engine)
