"""deepseek_v4 (DeepSeek-V4-Flash): compressed sparse / heavily compressed attention with the lightning indexer and
their cache states, mHC hyper-connections, hash and top-k routers, clamped experts: the published total,
hand-derived node counts, config quirks, and validation against transformers 5.23 (every node, every metric, every
cache state per layer, full size on meta and tiny on the CPU).

Hand-derived values use the family's tiny config (``DeepseekV4.tiny``): h = 64, N = hc_mult 3 streams, H = 4 heads
of D = 32 (rotary r = 8), q_lora 16, window W = 4, layer 0 sliding (hash-routed), layer 1 CSA (ratio 4; indexer 4
heads of Di = 16, top 2), layer 2 HCA (ratio 8); 4 experts of I = 48, top 2; at B = 2, S = 3, P = 5 (t = B*S = 6,
P + S = 8: the CSA layer holds T = 2 compressed entries (one closed this forward), the HCA layer T = 1 (closed
this forward); the window keeps min(P, W-1) = 3 past keys).

Config source: ../shared/hf-configs/deepseek-ai--DeepSeek-V4-Flash.json (ai-dynamo/aiconfigurator @ 095f58a51c4c,
a vendored copy of the Hub config.json), bundled as the preset ``deepseek-v4-flash``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import ConfigError, profile
from llm_profiler.families import build_spec
from llm_profiler.families.deepseek_v4 import CSA, HCA, SLIDING, DeepseekV4
from llm_profiler.graph.compressed_attention import CompressedStateKind

FLASH_PATH = Path(__file__).parents[1] / "llm_profiler" / "presets" / "deepseek-ai--DeepSeek-V4-Flash.json"
FLASH = json.loads(FLASH_PATH.read_text())
TINY = DeepseekV4().tiny(FLASH)
SHAPE = (2, 3, 5)


def test_published_total() -> None:
    """V4-Flash, 43 layers (2 sliding, 21 CSA, 20 HCA; the 44th compress_ratios entry is the MTP layer, not built).

    Every layer: attn_hc and ffn_hc 2 * (24 * 16,384 + 24 + 3) = 786,486; norms 8,192; attention q_a 4096*1024,
    q_a_norm 1024, q_b 1024*32,768, kv_proj 4096*512, kv_norm 512, o_a 1024*32,768, o_b 8192*4096, sinks 64 =
    106,956,352; MoE router 256*4096, 256 experts of 3*4096*2048 and one shared = 6,468,665,344: 6,576,416,374.
    HCA compressor: kv / gate 2*4096*512, position_bias 128*512, kv_norm 512 = 4,260,352. CSA compressor:
    kv / gate 2*4096*1024, position_bias 4*1024, kv_norm 512 = 8,393,216, indexer kv / gate 2*4096*256,
    position_bias 4*256, kv_norm 128, q_b 1024*8192, weights_proj 4096*64 = 10,749,056: 19,142,272.
    43 * 6,576,416,374 + 20 * 4,260,352 + 21 * 19,142,272 = 283,273,098,834; embedding and head 2 * 129,280 * 4096,
    final norm 4096, hc_head 4 * 16,384 + 4 + 1: 284,332,230,231 (the published "284B total").
    active: 6 of 256 experts: 284,332,230,231 - 43 * 250 * 25,165,824 = 13,799,622,231; without the embedding
    13,270,091,351 (the published "13B activated")."""
    prof = profile("deepseek-v4-flash", 1, 1)
    assert prof.total("params", "model") == 284_332_230_231
    assert prof.total("active_params", "model") == 13_799_622_231
    assert prof.total("params", "model") == profile(str(FLASH_PATH), 1, 1).total("params", "model")


def test_layer_plan_from_the_legacy_fields() -> None:
    _, spec = build_spec(FLASH)
    kinds = [layer.mixer.kind for layer in spec.layers]
    assert kinds[:4] == ["sliding_attention", "sliding_attention", "sparse_attention", "attention"]
    assert kinds[42] == "sparse_attention"  # compress_ratios[:43]: the 44th entry is the MTP layer's
    assert (kinds.count("sparse_attention"), kinds.count("attention")) == (21, 20)
    assert {layer.mixer.chunk for layer in spec.layers} == {None, 4, 128} and spec.sliding_window == 128
    assert spec.hash_layers == (0, 1, 2) and spec.rotary_dim == 64 and spec.num_kv_heads == 1  # type: ignore[attr-defined]
    assert all(layer.mixer.sinks and layer.ffn.shared_intermediate == 2048 for layer in spec.layers)


def test_config_quirks() -> None:
    _, spec = build_spec({"model_type": "deepseek_v4"})  # DeepseekV4Config's defaults: V4-Flash's dims
    assert spec.num_layers == 43 and "DeepseekV4Config's defaults" in spec.notes[0]
    # no layer_types nor compress_ratios: V4-Pro's default plan, two HCA layers then CSA / HCA alternating
    assert [layer.mixer.chunk for layer in spec.layers[:5]] == [128, 128, 128, 4, 128]
    _, spec = build_spec({**TINY, "compress_rates": {CSA: 8, HCA: 16}, "num_hash_layers": 0})
    assert [layer.mixer.chunk for layer in spec.layers] == [None, 8, 16] and spec.hash_layers == ()  # type: ignore[attr-defined]
    _, spec = build_spec({**TINY, "partial_rotary_factor": 0.5})
    assert spec.rotary_dim == 16
    cases: list[tuple[dict[str, Any], str]] = [
        ({"compress_ratios": [0, 4, 64]}, "compress_ratios"), ({"layer_types": [SLIDING, "x", HCA]}, "layer_types"),
        ({"scoring_func": "softmax"}, "scoring_func"), ({"mlp_layer_types": ["moe"]}, "mlp_layer_types")]
    for bad, field in cases:  # (explicit layer_types win over compress_ratios: drop them for that case)
        data = {k: v for k, v in TINY.items() if k != "layer_types" or "compress_ratios" not in bad}
        with pytest.raises(ConfigError, match=field):
            build_spec({**data, **bad})


def test_measure_maps_the_compressor_attributes() -> None:
    pytest.importorskip("torch")
    from llm_profiler.validation.measure import STATE_ATTRIBUTES

    assert STATE_ATTRIBUTES["compressed_kv"] == CompressedStateKind.COMPRESSED
    assert {STATE_ATTRIBUTES[a] for a in ("buffer_kv", "buffer_gate", "overlap_kv", "overlap_gate")} == {
        CompressedStateKind.COMPRESSOR}


# --- hand-derived nodes (tiny, B = 2, S = 3, P = 5) --------------------------------------------------


@pytest.fixture(scope="module")
def v() -> Any:
    return profile(TINY, *SHAPE).values


def test_hca_compressor_pooling_and_block_bias(v: Any) -> None:
    own = v["model.layers.2.self_attn.compressor"]  # one window of 8 closed: B*n = 2 entries of D = 32
    # gate + position_bias 2*8*32 = 512 ADD; softmax over 8 slots of 64 rows: 448 CMP, 960 ADD, 512 EXP, 512 DIV;
    # kv * probs 512 MULT; sum over the slots 448 ADD
    assert (own["add"], own["cmp"], own["div"], own["mult"], own["exp"]) == (1_920, 448, 512, 512, 512)
    assert own["params"] == 8 * 32  # position_bias
    # once per position: the entry's position * 8 + first (1 MULT, 1 ADD); the block bias (S > 1, T = 1):
    # (pos + 1) // 8: 3 ADD, 3 DIV; entry >= threshold over S x T: 3 CMP
    pos = v["model.layers.2.self_attn.compressor:entry_positions"]
    assert (pos["add"], pos["mult"], pos["div"], pos["cmp"]) == (4, 1, 3, 3)
    assert v["model.layers.2.self_attn.compressor.kv_norm"]["mult"] == 3 * 2 * 32  # 2 entries: x^2, * rstd, * weight
    assert v["model.layers.2.self_attn:scores"]["macs"] == 2 * 4 * 3 * (3 + 3 + 1) * 32  # window keys + T = 1


def test_csa_indexer_selection_and_scores(v: Any) -> None:
    own = v["model.layers.1.self_attn.compressor.indexer"]  # one window of 4 closed, Di = 16, overlap 2*4 slots
    # pooling: 2*4*32 = 256 ADD; softmax of 32 rows over 8: 224 CMP, 480 ADD, 256 EXP, 256 DIV; 256 MULT; sums 224
    # ADD. Selection (T = 2, k = min(2, 2)): top-2 of 2 per (b, s) row: 1 CMP * 6; invalid 12 CMP; where 12 written
    assert (own["add"], own["cmp"], own["div"], own["mult"]) == (960, 224 + 6 + 12, 256, 256)
    pos = v["model.layers.1.self_attn.compressor.indexer:entry_positions"]  # position 1 MULT 1 ADD; threshold
    assert (pos["add"], pos["div"], pos["cmp"], pos["mult"]) == (1 + 3, 3, 6, 1)  # 3 ADD 3 DIV; future mask S*T
    scorer = v["model.layers.1.self_attn.compressor.indexer.scorer"]  # q @ k^T: 6 x (4 x 16) @ (16 x 2)
    assert scorer["macs"] == 6 * 4 * 16 * 2 and scorer["cmp"] == 48  # relu over B*S*heads*T = 48
    assert scorer["mult"] == 768 + 48 + 24 + 48  # the bmm, * softmax_scale, weights * scaling, scores * weights
    rope = v["model.layers.1.self_attn.compressor.indexer:rope"]  # 2 entries (1 head) and 6 queries (4 heads), r = 8
    assert rope["mult"] == 2 * (2 * 8 + 6 * 4 * 8)
    assert v["model.layers.1.self_attn.compressor.indexer.rotary_emb"]["exp"] == 2 * (2 + 3) * 4  # entries + queries


def test_attention_sinks_grouped_output_and_hyper_connections(v: Any) -> None:
    scores = v["model.layers.1.self_attn:scores"]  # keys 3 + 3 + T = 2 = 8; rows B*H*S = 24
    assert scores["macs"] == 24 * 8 * 32
    assert scores["cmp"] == 24 * 8  # the max over keys + the sink column
    soft = v["model.layers.1.self_attn:softmax"]
    assert (soft["exp"], soft["params"]) == (24 * 9, 4)  # over keys + 1; one sink logit per head
    assert v["model.layers.0.self_attn.o_a_proj"]["macs"] == 6 * 16 * 128  # 2 groups of (64 -> 16)
    assert v["model.layers.0.self_attn"]["add"] == 3 * 4  # -sin for the output's de-rotation: S * r / 2
    hc = v["model.layers.0.attn_hc"]  # t*N*h = 1,152; mixes (2+3)*3 = 15
    # mixes 6*15*192 = 17,280 MULT; pre / post / comb scaling 18 + 18 + 54, post * 2: 18; collapse 1,152
    assert hc["mult"] == 17_280 + 18 + 18 + 54 + 18 + 1_152
    assert hc["div"] == 2 * 18 + 54 + 5 * 54  # two sigmoids, the softmax, 2 * 3 - 1 Sinkhorn normalisations
    assert hc["params"] == 15 * 192 + 15 + 3
    layer = v["model.layers.0:residual"]  # per block: post * out (1,152 MULT), comb^T @ streams (6 x 3x3 @ 3x64)
    assert (layer["mult"], layer["add"]) == (2 * (1_152 + 3_456), 2 * (2_304 + 1_152))


def test_routers_and_clamped_experts(v: Any) -> None:
    hashed, topk = v["model.layers.0.mlp.gate"], v["model.layers.1.mlp.gate"]
    assert hashed["cmp"] == 0 and topk["cmp"] == 6 * (3 + 2)  # the hash layer has no top-k; top-2 of 4
    assert topk["add"] - hashed["add"] == 6 * 4  # + e_score_correction_bias
    assert v["model.layers.0.mlp.gate.score_fn"]["exp"] == 2 * 6 * 4  # sqrt(softplus): exp and log
    experts = v["model.layers.1.mlp.experts"]  # 12 pairs: clamp(max) on gate, clamp(min, max) on up
    assert experts["cmp"] == 3 * 12 * 48
    assert v["model.layers.1.mlp.shared_experts:gate_mul"]["cmp"] == 3 * 6 * 48


def test_cache_states_per_layer(v: Any) -> None:
    # sliding: keys and values apart, 2 * B * D * min(P + S, W - 1) = 2*2*32*3
    assert v["model.layers.0.self_attn:kv_cache"]["cache"] == 384
    # CSA: the shared key once (192), compressed entries B*T*(D + Di) = 2*2*48 = 192, nothing buffered (8 = 2*4),
    # overlap kv and gate of the last window, 2*B*4*(D + Di) = 768
    assert v["model.layers.1.self_attn:kv_cache"]["kv"] == 192
    assert v["model.layers.1.self_attn.compressor:cache"]["cache"] == 128 + 512
    assert v["model.layers.1.self_attn.compressor.indexer:cache"]["cache"] == 64 + 256
    # HCA: the shared key (192) and one entry of 32 per sequence
    assert v["model.layers.2.self_attn.compressor:cache"]["cache"] == 64
    p = profile(TINY, 1, 1, 10)  # P + S = 11: CSA buffers 3 tokens of kv and gate (2*3*64), HCA 3 (2*3*32)
    assert p.values["model.layers.1.self_attn.compressor:cache"]["cache"] == 2 * 32 + 384 + 2 * 4 * 32
    assert p.values["model.layers.2.self_attn.compressor:cache"]["cache"] == 32 + 192


# --- validation against transformers ---------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]
# tiny (W = 4, CSA 4, HCA 8, top 2): the first CSA window closing at a decode (P + S = 4), both closing at a decode
# (8), a prefill past both with more entries than the top-k (17: T = 4 > 2), a decode after a full HCA window
TINY_PAST = [(1, 1, 3), (1, 1, 7), (2, 9, 8), (1, 2, 16)]
# full size (W = 128, HCA 128, top-k 512): the first HCA window closing in a prefill; T = 513 > 512 CSA entries
FULL_PAST = [(1, 2, 127), (1, 3, 2050)]


def _validate_all(config: Any, tiny: bool, shapes: list[tuple[int, int, int]]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for batch, seq, past in shapes:
        report = validate(config, batch, seq, past, tiny=tiny, model=model)
        assert report.ok, report.table()


def test_validation_full_size_on_meta() -> None:
    _validate_all("deepseek-v4-flash", tiny=False, shapes=[*SHAPES, *FULL_PAST])


def test_validation_tiny_on_cpu() -> None:
    _validate_all("deepseek-v4-flash", tiny=True, shapes=[*SHAPES, *TINY_PAST])


def test_validation_quirks() -> None:
    """sigmoid scores, every layer top-k routed, shared-MLP biases, HCA before CSA, five streams."""
    _validate_all({**TINY, "scoring_func": "sigmoid", "num_hash_layers": 0, "mlp_bias": True, "hc_mult": 5,
                   "layer_types": [HCA, CSA, SLIDING]}, tiny=True, shapes=[(2, 3, 5), (1, 1, 8)])


# --- generation closed forms --------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["flops", "cmp", "cache"])
def test_generation_closed_form_equals_the_forwards(metric: str) -> None:
    """The compressed entries grow with the context (floor((P + S) / m) in every decode step), the indexer keeps
    min(T, top_k) of them (its top-k scan: min(T, k) * T and min(T, k)^2 CMP): the generation sum is still one
    closed form in B, S, P, N (generation._sum_ceiling_term), equal to the sum of its forwards."""
    from llm_profiler.generation import compile_exact, generation_sum, phase_count, phase_total
    from llm_profiler.phases import Phase

    model = profile(TINY, 1, 1).model
    closed = generation_sum(phase_total(model, metric))
    assert closed.closed_form and not closed.notes
    exact = compile_exact(closed.expr)
    # N = 1 (the prefill alone); windows closing during decode (CSA 4, HCA 8, top-2 passed); a long decode
    for batch, prompt, past, new in [(1, 2, 0, 1), (2, 3, 2, 7), (3, 9, 5, 11), (1, 1, 0, 20)]:
        phase = Phase.generate(batch, prompt, new, past)
        forwards = sum(phase_count(model, metric, Phase.prefill(batch, s, p)) for s, p in phase.steps())
        assert exact(batch, prompt, past, new) == forwards == phase_count(model, metric, phase)
