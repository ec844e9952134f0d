"""The ``vllm`` profile's kernel rules beyond dense attention (llm_profiler.engines), each from its kernel:

- DSA (DeepSeek-V3.2 / GLM-MoE-DSA; DeepSeek-V3.2-Exp paper, section 2.1: the lightning indexer
  I[t, s] = sum_j w[t, j] ReLU(q[t, j] . k[s]) and attention over the top-k keys, "instantiated under MLA in
  MQA mode"): vLLM's FlashMLA sparse backend (``vllm/v1/attention/backends/mla/flashmla_sparse.py``:
  ``flash_mla_sparse_fwd`` for prefill, ``flash_mla_with_kvcache`` with the top-k indices for decode) runs
  the absorbed (MQA) form over min(top_k, P + i + 1) latent entries per query; the indexer's logits
  (DeepGEMM ``fp8_mqa_logits`` / ``fp8_paged_mqa_logits``) over the causal keys only.
- DeepSeek-V4's compressed layers: a fused kernel attends to the window keys plus the compressed entries
  each query sees (floor((t + 1) / m) of them; a CSA layer's top-k of those).
- Gated DeltaNet (fla's ``chunk_gated_delta_rule`` / ``fused_recurrent_gated_delta_rule``, with
  ``use_qk_l2norm_in_kernel``) and Mamba (mamba_ssm's ``mamba_chunk_scan_combined`` /
  ``selective_scan_fn`` / ``selective_state_update``; ``causal_conv1d_fn``): the chunk intermediates stay on
  chip; only the output is written (the state is the cache node's).
"""

from __future__ import annotations

import pytest

from llm_profiler import metrics as M
from llm_profiler import profile_model
from llm_profiler.engines import causal_pairs, compressed_pairs


def brute_capped_pairs(s: int, p: int, cap: int) -> int:
    """Query i (absolute position p + i) keeps its min(cap, p + i + 1) best keys."""
    return sum(min(cap, p + i + 1) for i in range(s))


def brute_entries(s: int, p: int, m: int, top_k: int | None) -> int:
    """Query at position t sees the entries j with j < (t + 1) // m (transformers' causal threshold)."""
    out = 0
    for i in range(s):
        visible = sum(1 for j in range(p + s) if j < (p + i + 1) // m)
        out += visible if top_k is None else min(top_k, visible)
    return out


# --- DSA ------------------------------------------------------------------------------------------------


def test_dsa_decode_attends_to_the_top_k_latents_in_the_absorbed_form() -> None:
    # DeepSeek-V3.2 layer 3, one decode step (B=1, S=1) after P=8192: H=128, kv_lora 512, qk_rope 64,
    # qk_nope 128, v_head 128, index_topk 2048: the query keeps min(2048, 8193) = 2048 latent entries.
    v = profile_model("deepseek-v3.2", engine="vllm")
    assert v.graph.meta.get("dsa") == "sparse"

    def macs(node: str) -> int:
        return int(v.graph.node(f"model.layers.3.self_attn{node}").counts[M.MACS](1, 1, 8192))

    assert macs(":scores") == 128 * 2048 * (512 + 64)  # 150,994,944: latent + rope key per kept pair and head
    assert macs(":context") == 128 * 2048 * 512  # 134,217,728: probabilities @ latent
    assert macs(".kv_b_proj") == 128 * 128 * 512 + 128 * 512 * 128  # 16,777,216: q_nope in, output out
    # the latent entries each query gathers: 2048 x (512 + 64) elements (FlashMLA's sparse gather)
    scores = v.graph.node("model.layers.3.self_attn:scores")
    assert sum(st.read(1, 1, 8192) for st in scores.facts.states) == 2048 * 576
    # the online softmax: per kept pair max, exp and two adds; the rows' key blocks are ceil(2048 / 128) = 16
    softmax = v.graph.node("model.layers.3.self_attn:softmax").counts
    assert softmax[M.EXP](1, 1, 8192) == 128 * 2048 + 128 * 16
    # transformers computes every head over all 8193 keys, re-expanding them through kv_b_proj:
    # 8193 x 512 x 128 x 256 + 128 x 8193 x (192 + 128)
    eager = profile_model("deepseek-v3.2")
    dense = sum(eager.graph.node(f"model.layers.3.self_attn{n}").counts[M.MACS](1, 1, 8192)
                for n in (":scores", ":context", ".kv_b_proj"))
    assert dense == 8193 * 512 * 128 * 256 + 128 * 8193 * 320


def test_dsa_prefill_keeps_min_top_k_keys_per_query() -> None:
    # a 3000-token prefill: query i keeps min(2048, i + 1) keys: 2048*2049/2 + 952*2048 = 4,047,872 per head
    assert causal_pairs(2048)(1, 3000, 0) == brute_capped_pairs(3000, 0, 2048) == 4_047_872
    v = profile_model("deepseek-v3.2", engine="vllm")
    assert v.graph.node("model.layers.3.self_attn:scores").counts[M.MACS](1, 3000, 0) == 128 * 4_047_872 * 576


def test_dsa_indexer_scores_only_the_causal_keys() -> None:
    # the lightning indexer, Hi = 64 heads of Di = 128, at B=2, S=5, P=20: causal pairs 5*20 + 5*6/2 = 115 per
    # sequence; per pair Hi*Di MACs for q.k and Hi for the weighted sum (64*129 = 8,256), a ReLU per head
    v = profile_model("deepseek-v3.2", engine="vllm")
    node = v.graph.node("model.layers.3.self_attn.indexer:scores").counts
    pairs = 2 * 115
    assert node[M.MACS](2, 5, 20) == pairs * 64 * 129
    assert node[M.CMP](2, 5, 20) == pairs * 64
    assert node[M.ACT](2, 5, 20) == 2 * 5 * 25  # the logits the top-k reads, B x S x (P + S)
    eager = profile_model("deepseek-v3.2").graph.node("model.layers.3.self_attn.indexer:scores").counts
    assert eager[M.MACS](2, 5, 20) == 2 * 5 * 25 * 64 * 129  # every (query, key), masked after


# --- DeepSeek-V4 compressed attention ---------------------------------------------------------------


@pytest.mark.parametrize("m, top_k", [(4, None), (4, 3), (128, None), (4, 512), (3, 2)])
@pytest.mark.parametrize("s, p", [(1, 0), (5, 0), (7, 5), (1, 9), (40, 3), (1, 600), (300, 0)])
def test_compressed_pairs_equal_the_brute_force(m: int, top_k: int | None, s: int, p: int) -> None:
    assert compressed_pairs(m, top_k)(1, s, p) == brute_entries(s, p, m, top_k)


def test_deepseek_v4_compressed_layers_count_window_plus_entries() -> None:
    # DeepSeek-V4-Flash: 64 heads of 512 (K = V), window 128; layer 0 sliding, layer 2 CSA (m = 4, top-512),
    # layer 3 HCA (m = 128). A 1000-token prefill: window pairs 128*129/2 + 872*128 = 119,872 per head;
    # CSA entries sum_{x=1}^{1000} min(floor(x/4), 512) = 124,750; HCA sum floor(x/128) = 3,423.
    v = profile_model("deepseek-v4-flash", engine="vllm")
    per_pair = 64 * 512

    def scores(layer: int, s: int, p: int) -> int:
        return int(v.graph.node(f"model.layers.{layer}.self_attn:scores").counts[M.MACS](1, s, p))

    assert brute_capped_pairs(1000, 0, 128) == 119_872 and brute_entries(1000, 0, 4, 512) == 124_750
    assert brute_entries(1000, 0, 128, None) == 3_423
    assert scores(0, 1000, 0) == per_pair * 119_872  # 3,927,965,696
    assert scores(2, 1000, 0) == per_pair * (119_872 + 124_750)  # 8,015,773,696
    assert scores(3, 1000, 0) == per_pair * (119_872 + 3_423)  # 4,040,130,560
    # decode after 5000 tokens: 128 window keys, + min(floor(5001/4), 512) = 512 (CSA), + floor(5001/128) = 39
    assert (scores(2, 1, 5000), scores(3, 1, 5000)) == (per_pair * 640, per_pair * 167)
    context = v.graph.node("model.layers.2.self_attn:context").counts[M.MACS](1, 1000, 0)
    assert context == per_pair * (119_872 + 124_750)  # the same pairs times the 512-wide values
    # the compressor's indexer scorer keeps its reference count (it is not the layer's attention)
    eager = profile_model("deepseek-v4-flash")
    scorer = "model.layers.2.self_attn.compressor.indexer.scorer"
    assert v.graph.node(scorer).counts[M.MACS](1, 1000, 0) == eager.graph.node(scorer).counts[M.MACS](1, 1000, 0)


# --- gated DeltaNet and Mamba: fused scans ---------------------------------------------------------


def test_deltanet_kernel_writes_only_its_output() -> None:
    # Qwen3-Next layer 0: 16 key heads x 128, 32 value heads x 128, conv kernel 4 over 2*2048 + 4096 = 8192
    # channels. B=2, S=64, P=0.
    v = profile_model("qwen3-next-80b-a3b", engine="vllm").graph
    eager = profile_model("qwen3-next-80b-a3b").graph
    rule = "model.layers.0.linear_attn:delta_rule"
    assert v.node(rule).counts[M.ACT](2, 64, 0) == 2 * 64 * 32 * 128  # 524,288: the output only
    assert eager.node(rule).counts[M.ACT](2, 64, 0) == 11_554_880  # every chunk intermediate of the torch path
    # reads: q and k at the 16 key heads, v, g and beta: 2*64*(2*2048 + 4096 + 2*32) = 1,056,768
    assert v.node(rule).facts.reads(2, 64, 0) == 1_056_768
    for metric in (M.MACS, M.MULT, M.ADD, M.EXP, M.DIV):  # the arithmetic stays the torch path's
        assert v.node(rule).counts.get(metric, 0) == eager.node(rule).counts.get(metric, 0)
    # the l2norm runs in the kernel (use_qk_l2norm_in_kernel); the conv writes its S columns, activated in it
    assert v.node("model.layers.0.linear_attn:l2norm").counts[M.ACT](2, 64, 0) == 0
    assert v.node("model.layers.0.linear_attn:conv").counts[M.ACT](2, 64, 0) == 2 * 64 * 8192
    assert v.node("model.layers.0.linear_attn").counts[M.ACT](2, 64, 0) == 0
    # decode: the recurrent kernel writes 32 x 128 per token
    assert v.node(rule).counts[M.ACT](4, 1, 100) == 4 * 32 * 128


def test_mamba_kernels_write_only_their_output() -> None:
    # Nemotron-H (Mamba-2): 256 heads x 64 = 16,384 inner, 8 groups of state 256; B=2, S=64.
    v = profile_model("nemotron-h-56b", engine="vllm").graph
    eager = profile_model("nemotron-h-56b").graph
    scan = "model.layers.0.mixer:scan"
    assert v.node(scan).counts[M.ACT](2, 64, 0) == 2 * 64 * 16_384  # 2,097,152
    # reads x, dt, B and C: 2*64*(16,384 + 256 + 2*8*256) = 2,654,208
    assert v.node(scan).facts.reads(2, 64, 0) == 2_654_208
    assert v.node(scan).counts[M.MACS](2, 64, 0) == eager.node(scan).counts[M.MACS](2, 64, 0)
    assert v.node("model.layers.0.mixer:dt").counts[M.ACT](2, 64, 0) == 0  # dt_softplus in the kernel
    # Jamba (Mamba-1, selective_scan_fn): 8,192 channels, state 16: the output only, x, dt, B, C read
    j = profile_model("jamba-1.5-mini", engine="vllm").graph
    assert j.node("model.layers.0.mamba:scan").counts[M.ACT](2, 64, 0) == 2 * 64 * 8192
    assert j.node("model.layers.0.mamba:scan").facts.reads(2, 64, 0) == 2 * 64 * (2 * 8192 + 2 * 16)


def test_attention_sinks_cost_one_max_exp_and_two_adds_per_row() -> None:
    # gpt-oss-20b (64 heads), B=2, S=3, P=4: 2*64*3 = 384 rows; the sink joins each row's running max and sum
    v = profile_model("gpt-oss-20b", engine="vllm").graph.node("model.layers.0.self_attn:sinks").counts
    rows = 2 * 64 * 3
    assert {m: v[m](2, 3, 4) for m in (M.CMP, M.ADD, M.EXP, M.ACT)} == {M.CMP: rows, M.ADD: 2 * rows,
                                                                        M.EXP: rows, M.ACT: 0}
    assert v[M.PARAMS](1, 1, 0) == 64  # the sink logits stay its parameters
