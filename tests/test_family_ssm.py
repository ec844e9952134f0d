"""State-space models (graph/ssm.py): nemotron_h (Mamba-2 + attention + MLP blocks), jamba (Mamba-1 +
attention, MoE), mamba and mamba2 (pure Mamba-1 / Mamba-2 stacks), falcon_h1 (Mamba-2 and attention in
parallel in every layer), granitemoehybrid (Granite-4.0-H: Mamba-2 or NoPE attention, MoE + shared MLP), lfm2
(gated short-convolution layers and attention). Published totals, layer patterns, the conv / scan paths by hand, every cache state, the
generation closed form, and validation against transformers 5.23's torch path (full size on meta, tiny on
the CPU; no mamba_ssm / causal_conv1d kernels are installed, so transformers runs its torch fallbacks).

Configs: the bundled presets nemotron-h-56b (nvidia/Nemotron-H-56B-Base-8K) and jamba-1.5-mini
(ai21labs/AI21-Jamba-1.5-Mini), copies of shared/hf-configs (sources in its SOURCES.md); for mamba and mamba2
falcon_h1 and granitemoehybrid the transformers config class defaults (tests/family_configs/transformers--{Mamba,
Mamba2,FalconH1,GraniteMoeHybrid}Config-defaults.json: the class's to_dict() in transformers 5.23, run-time
fields dropped; GraniteMoeHybrid's layer_types put attention on layers 5, 15 and 25, because the default
all-Mamba stack fails in transformers' own DynamicCache.get_seq_length); lfm2: Lfm2Config with LFM2-1.2B's
dimensions (hidden 2048, 16 layers with attention at 2, 5, 8, 10, 12, 14, 12288 before the 2/3 adjustment,
32 heads / 8 KV, conv_L_cache 3, vocab 65536, tied), transformers--Lfm2Config-LFM2-1.2B-dims.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import metrics as M
from llm_profiler.config import load_config
from llm_profiler.errors import ConfigError
from llm_profiler.facts import StateKind
from llm_profiler.families import build_spec, get_family
from llm_profiler.generation import N
from llm_profiler.phases import Phase, generation_sum, phase_count, phase_total
from llm_profiler.profile import profile, profile_model
from llm_profiler.symbols import B, P, S

NEMOTRON = "nemotron-h-56b"
JAMBA = "jamba-1.5-mini"
CONFIGS = Path(__file__).parent / "family_configs"
MAMBA = "transformers--MambaConfig-defaults"
MAMBA2 = "transformers--Mamba2Config-defaults"
FALCON_MAMBA = "transformers--FalconMambaConfig-defaults"
BAMBA = "transformers--BambaConfig-defaults"  # BambaConfig's defaults with Bamba-9B's attention layers 9, 18, 27
FALCON_H1 = "transformers--FalconH1Config-defaults"
GRANITE_H = "transformers--GraniteMoeHybridConfig-defaults"
LFM2 = "transformers--Lfm2Config-LFM2-1.2B-dims"
# Lfm2MoeConfig with LFM2-8B-A1B's 24 layers and layer_types (as a trimmed public copy of its config lists them)
LFM2_MOE = "transformers--Lfm2MoeConfig-LFM2-8B-A1B-dims"


def _data(preset: str, **changes: Any) -> dict[str, Any]:
    if preset in (MAMBA, MAMBA2, FALCON_MAMBA, BAMBA, FALCON_H1, GRANITE_H, LFM2, LFM2_MOE):
        return {**json.loads((CONFIGS / f"{preset}.json").read_text()), **changes}
    return {**load_config(preset).data, **changes}


# --- totals ---------------------------------------------------------------------------------------


def test_nemotron_h_56b_total() -> None:
    # h = 8192; pattern: 54 Mamba-2 (M), 10 attention (*), 54 MLP (-) blocks, each with an 8192 RMSNorm.
    # M: in_proj 8192 x (16384 gate + 20480 conv channels + 256 dt) = 304,087,040; conv1d 20480*4 + 20480;
    #    A_log, D, dt_bias 3*256; gated norm 16384; out_proj 16384*8192 -> 438,432,512 with the block norm
    #    (conv channels = 256 heads * 64 + 2 * 8 groups * 256 state = 20480).
    # *: q, o 8192*8192; k, v 8192*(8*128) -> 151,003,136;  -: up, down 8192*32768 -> 536,879,104.
    # + embeddings and lm_head 131072*8192 each + norm_f 8192. The model card says "56B".
    mamba = 8192 * 37120 + 20480 * 5 + 3 * 256 + 16384 + 16384 * 8192 + 8192
    attention = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 8192
    mlp = 2 * 8192 * 32768 + 8192
    assert (mamba, attention, mlp) == (438_432_512, 151_003_136, 536_879_104)
    total = 54 * mamba + 10 * attention + 54 * mlp + 2 * 131072 * 8192 + 8192
    assert profile(NEMOTRON, 1, 1).total("params", "model") == total == 56_324_350_464


def test_jamba_1_5_mini_total_and_active() -> None:
    # h = 4096, 32 layers: attention on i % 8 == 4 (4 layers), Mamba-1 on the 28 others; MoE (16 experts of
    # 3*4096*14336, router 16*4096) on odd layers, a gated MLP of 14336 on even ones; two RMSNorms per layer.
    # Mamba: in_proj 4096*16384, conv1d 8192*4 + 8192, x_proj 8192*(256 + 2*16), dt_proj 256*8192 + 8192,
    # A_log 8192*16, D 8192, dt/B/C norms 256 + 16 + 16, out_proj 8192*4096 -> 105,308,448.
    mamba = 4096 * 16384 + 8192 * 5 + 8192 * 288 + 256 * 8192 + 8192 + 8192 * 16 + 8192 + 288 + 8192 * 4096
    attention = 2 * 4096 * 4096 + 2 * 4096 * 1024
    mlp = 3 * 4096 * 14336
    assert mamba == 105_308_448
    total = 28 * mamba + 4 * attention + 16 * mlp + 16 * (16 * mlp + 16 * 4096) + 32 * 2 * 4096 + 2 * 65536 * 4096 + 4096
    p = profile(JAMBA, 1, 1)
    assert p.total("params", "model") == total == 51_570_323_328  # published "52B total"
    # active: 2 of the 16 experts per MoE layer -> 14 fewer experts on each of the 16 MoE layers
    assert p.total("active_params", "model") == total - 16 * 14 * mlp == 12_110_311_296  # published "12B active"


def test_mamba_and_mamba2_defaults_totals() -> None:
    # MambaConfig(): h = 768, 32 layers, inner 1536, state 16, dt rank 48, conv 4, vocab 50280, tied head.
    # per layer: in_proj 768*3072, conv1d 1536*4 + 1536, x_proj 1536*(48 + 32), dt_proj 48*1536 + 1536,
    # A_log 1536*16, D 1536, out_proj 1536*768, norm 768
    h, inner, rank, n = 768, 1536, 48, 16
    layer = h * 2 * inner + inner * 5 + inner * (rank + 2 * n) + rank * inner + inner + inner * n + inner + inner * h + h
    assert profile(_data(MAMBA), 1, 1).total("params", "model") == 32 * layer + 50280 * h + h == 159_308_544
    # Mamba2Config() (Mamba-Codestral-7B's dims): h = 4096, 64 layers, 128 heads x 64, 8 groups of state 128
    # (conv channels 8192 + 2*8*128 = 10240), vocab 32768, untied head.
    h, inner, ch, heads = 4096, 8192, 10240, 128
    layer = h * (inner + ch + heads) + ch * 5 + 3 * heads + inner + inner * h + h
    assert profile(_data(MAMBA2), 1, 1).total("params", "model") == 64 * layer + 2 * 32768 * h + h == 7_285_403_648
    with pytest.raises(ConfigError, match="expand x hidden_size"):
        build_spec(_data(MAMBA2, num_heads=64))


def test_falcon_h1_defaults_total() -> None:
    # FalconH1Config(): h = 4096, 32 layers; Mamba-2 of 1024 = 128 heads x 8, 1 group of state 256 (conv
    # channels 1024 + 2*256 = 1536), in_proj 4096 x (1024 + 1536 + 128), conv1d 1536*4 + 1536, A_log/D/dt_bias
    # 3*128, out_proj 1024*4096 (no norm module: mamba_rms_norm off); attention q, o 4096^2, k, v 4096*1024;
    # gated MLP 3*4096*14336; two norms; vocab 128000, untied head.
    h = 4096
    layer = 2 * h + h * 2688 + 1536 * 5 + 3 * 128 + 1024 * h + 2 * h * h + 2 * h * 1024 + 3 * h * 14336
    assert profile(_data(FALCON_H1), 1, 1).total("params", "model") == 32 * layer + 2 * 128000 * h + h == 8_514_961_408
    # every layer holds K, V (8 heads x 128) and the Mamba states: conv B x 1536 x 4, SSM B x 128 x 8 x 256
    m = profile_model(_data(FALCON_H1))
    assert m.count(M.CACHE, "model.layers.3", 2, 3, 5) == 2 * (8 * 8 * 256 + 1536 * 4 + 128 * 8 * 256)
    with pytest.raises(ConfigError, match="mamba_n_heads"):
        build_spec(_data(FALCON_H1, mamba_n_heads=96))


def test_granitemoehybrid_total() -> None:
    # h = 4096, 32 layers: 29 Mamba-2 (inner 8192 = 128 heads x 64, 1 group of state 256: conv channels 8704;
    # in_proj 4096 x (8192 + 8704 + 128), conv1d 8704*5, A_log/D/dt_bias, gated norm 8192, out_proj 8192*4096)
    # and 3 attention layers (32 heads = 32 KV heads of 128: 4 x 4096^2); every layer: router 8*4096, 8 experts
    # of 3*4096*11008, shared MLP 3*4096*1024, two norms; vocab 32000, untied head.
    h = 4096
    mamba = h * 17024 + 8704 * 5 + 3 * 128 + 8192 + 8192 * h
    ffn = 8 * h + 8 * 3 * h * 11008 + 3 * h * 1024 + 2 * h
    p = profile(_data(GRANITE_H), 1, 1)
    assert p.total("params", "model") == 29 * mamba + 3 * 4 * h * h + 32 * ffn + 2 * 32000 * h + h == 38_492_380_544
    assert p.total("active_params", "model") == 38_492_380_544 - 32 * 6 * 3 * h * 11008  # 2 of 8 experts
    _, spec = build_spec(_data(GRANITE_H))
    assert [i for i, layer in enumerate(spec.layers) if layer.mixer.kind != "state_space"] == [5, 15, 25]
    assert spec.rotary_dim == 0  # position_embedding_type unset: NoPE attention
    _, dense = build_spec(_data(GRANITE_H, num_local_experts=0))
    assert not any(layer.moe for layer in dense.layers)


def test_lfm2_total_and_conv_cache() -> None:
    # h = 2048; MLP width int(2 * 12288 / 3) = 8192 (x 1.0, a multiple of 256); 10 conv layers: in_proj
    # 2048 x 6144, conv1d 2048*3 (no bias), out_proj 2048^2; 6 attention layers: q, out 2048^2, k, v
    # 2048 x 512 (8 KV heads of 64), q/k per-head norms 64 each; SwiGLU 3 x 2048 x 8192 and two norms per
    # layer; tied embeddings 65536 x 2048 + the final norm. LFM2-1.2B's card: 1.17B.
    h = 2048
    conv, attention = h * 3 * h + h * 3 + h * h, 2 * h * h + 2 * h * 512 + 2 * 64
    total = 10 * conv + 6 * attention + 16 * (3 * h * 8192 + 2 * h) + 65536 * h + h
    assert profile(_data(LFM2), 1, 1).total("params", "model") == total == 1_170_340_608
    m = profile_model(_data(LFM2))
    # a conv layer's cache: the conv state B x 2048 x 3 (no SSM state); an attention layer's: K, V
    assert m.count(M.CACHE, "model.layers.0", 3, 7, 5) == 3 * 2048 * 3
    assert m.count(M.CACHE, "model.layers.2", 3, 7, 5) == 3 * 12 * 8 * 128  # B * (P+S) * KV heads * (K+V dims)


def test_lfm2_moe_total_and_active() -> None:
    # LFM2-8B-A1B ("8.3B total, 1.5B active"): h = 2048; 18 conv layers (in_proj 2048 x 6144, conv 2048*3,
    # out_proj 2048^2) and 6 attention layers (q, o 2048^2, k, v 2048 x 512, q/k norms 64 each); two norms per
    # layer; layers 0-1 a dense SwiGLU of 7168; 22 MoE layers: router 32 x 2048, 32 experts of 3*2048*1792
    # (top 4); tied 65536 x 2048 embedding, final norm
    h, expert = 2048, 3 * 2048 * 1792
    conv, attention = h * 3 * h + h * 3 + h * h, 2 * h * h + 2 * h * 512 + 2 * 64
    shared = 18 * conv + 6 * attention + 24 * 2 * h + 2 * 3 * h * 7168 + 65536 * h + h
    prof = profile(_data(LFM2_MOE), 1, 1)
    assert prof.total("params", "model") == shared + 22 * (32 * h + 32 * expert) == 8_339_929_856
    assert prof.total("active_params", "model") == shared + 22 * (32 * h + 4 * expert) == 1_557_740_288
    assert "model.pos_emb" in prof.values and "model.layers.2.feed_forward.gate" in prof.values


# --- layer patterns and config quirks --------------------------------------------------------------


def test_nemotron_h_block_types() -> None:
    _, spec = build_spec(_data(NEMOTRON, hybrid_override_pattern="M*-M"))
    assert [(layer.mixer.kind, layer.ffn.kind) for layer in spec.layers] == [
        ("state_space", "none"), ("attention", "none"), ("attention", "dense"), ("state_space", "none")]
    assert [layer.mixer.rope for layer in spec.layers[:2]] == [True, False]  # attention blocks have no rotary
    _, listed = build_spec(_data(NEMOTRON, layers_block_type=["full_attention", "linear_attention"]))
    assert listed.num_layers == 2 and listed.layers[1].mixer.chunk == 128
    v = profile(_data(NEMOTRON, hybrid_override_pattern="M*-"), 1, 2).values
    assert "model.layers.0.mixer:scan" in v and "model.layers.1.mixer:scores" in v
    assert "model.layers.2.mixer.up_proj" in v and "model.layers.1.mixer:rope" not in v
    with pytest.raises(ConfigError, match="MoE blocks"):
        build_spec(_data(NEMOTRON, hybrid_override_pattern="M*E"))
    with pytest.raises(ConfigError, match="hybrid_override_pattern"):
        build_spec(_data(NEMOTRON, hybrid_override_pattern="M*X"))
    with pytest.raises(ConfigError, match="n_groups"):
        build_spec(_data(NEMOTRON, n_groups=3))


def test_jamba_layer_pattern() -> None:
    _, spec = build_spec(_data(JAMBA))
    assert [i for i, layer in enumerate(spec.layers) if layer.mixer.kind != "state_space"] == [4, 12, 20, 28]
    assert [i for i, layer in enumerate(spec.layers) if layer.moe] == list(range(1, 32, 2))
    _, dense = build_spec(_data(JAMBA, num_experts=1))
    assert not any(layer.moe for layer in dense.layers)  # one expert: JambaMLP everywhere
    _, auto = build_spec(_data(JAMBA, mamba_dt_rank="auto", hidden_size=4000))
    assert auto.mamba.dt_rank == 250  # ceil(4000 / 16)


# --- the mixer by hand -----------------------------------------------------------------------------


def test_mamba2_conv_columns_by_hand() -> None:
    m = profile_model(NEMOTRON)
    conv = "model.layers.0.mixer:conv"
    ch = 20480  # conv channels; kernel 4: 4 MACs per output
    # prefill of 3 (< kernel): padded to 4 columns, F.conv1d pads 3 more: 4 + 3 = 7 outputs per channel
    assert m.count("macs", conv, 2, 3, 0) == 2 * ch * 7 * 4
    # prefill of 200: 200 + 3 outputs; 7 new tokens after a cache: 4 cached + 7 columns, + 3 -> 14
    assert m.count("macs", conv, 1, 200, 0) == ch * 203 * 4
    assert m.count("macs", conv, 3, 7, 5) == 3 * ch * 14 * 4
    # one token with a cache: causal_conv1d_update over 4 + 1 columns, no padding: 2 outputs
    assert m.count("macs", conv, 1, 1, 9) == ch * 2 * 4
    # the silu after it sees max(S, 4) columns, 4 + S after a cache, 1 in decode
    own = "model.layers.0.mixer"
    divs = [profile(NEMOTRON, 1, s, p).values[own]["div"] for s, p in ((3, 0), (7, 5), (1, 9))]
    assert divs == [ch * 4, ch * 11, ch]  # silu: one DIV per element


def test_mamba2_chunked_scan_and_decode_by_hand() -> None:
    m = profile_model(NEMOTRON)
    scan = "model.layers.0.mixer:scan"
    H, D, N, L = 256, 64, 256, 128
    # chunked: c = ceil(S / 128) chunks; the einsums G = C B^T (L x L x N), Y_diag (L x D x L), states
    # (D x N x L), C_times_states (L x D x N) per (batch, chunk, head), plus the inter-chunk recurrence over
    # c + 1 states: (c+1)^2 x D*N.
    for s, c in ((128, 1), (129, 2)):
        per_chunk = H * (L * L * N + L * D * L + D * N * L + L * D * N)
        assert m.count("macs", scan, 1, s, 0) == c * per_chunk + H * (c + 1) ** 2 * D * N
    # one token with a state: the state @ C bmm only: H x D x N MACs
    assert m.count("macs", scan, 2, 1, 9) == 2 * H * D * N
    # dt: chunked per (token, head): add, softplus (2 EXP, 1 CMP), clamp (2 CMP); decode per (head, head_dim)
    assert m.count("cmp", "model.layers.0.mixer:dt", 1, 5, 0) == 5 * H * 3
    assert m.count("cmp", "model.layers.0.mixer:dt", 1, 1, 9) == H * D


def test_cache_states_per_layer() -> None:
    m = profile_model(NEMOTRON)
    # a Mamba layer holds its conv state (B x 20480 x 4) and SSM state (B x 256 heads x 64 x 256), whatever P, S
    mamba_layer = 20480 * 4 + 256 * 64 * 256
    for b, s, p in ((1, 1, 0), (2, 3, 0), (3, 7, 5), (1, 1, 9)):
        assert m.count(M.CACHE, "model.layers.0", b, s, p) == b * mamba_layer
        assert m.count(M.KV, "model.layers.0", b, s, p) == 0
    # layer 7 ("M-M-M-M*": the first attention block): K and V of 8 heads x 128 for P + S = 8 tokens, B = 2
    assert m.count(M.CACHE, "model.layers.7", 2, 3, 5) == m.count(M.KV, "model.layers.7", 2, 3, 5) == 2 * 8 * 8 * 256
    kinds = {st.kind: st.held(2, 3, 0) for node in m.graph.nodes if node.layer == 0 for st in node.facts.states
             if st.held}
    assert kinds == {StateKind.CONV: 2 * 20480 * 4, StateKind.RECURRENT: 2 * 256 * 64 * 256}
    j = profile_model(JAMBA)
    # Jamba's Mamba-1 layer: conv B x 8192 x 4 and SSM B x 8192 x 16
    assert j.count(M.CACHE, "model.layers.0", 3, 7, 5) == 3 * 8192 * (4 + 16)


# --- generation closed form ------------------------------------------------------------------------


@pytest.mark.parametrize("preset", [NEMOTRON, JAMBA])
def test_generation_closed_form_equals_sum_of_steps(preset: str) -> None:
    data = load_config(preset).data
    m = profile_model(get_family(data["model_type"]).tiny(data))
    for metric in ("flops", "act", "cache", "exp", "cmp"):
        forward = phase_total(m, metric, "model")
        closed = generation_sum(forward)  # the chunk count ceil(S/4) is an atom of the prefill only
        assert closed.closed_form, closed.notes
        for b, s, p, n in [(1, 1, 0, 1), (2, 3, 0, 2), (1, 2, 0, 6), (3, 5, 2, 4), (1, 1, 7, 8), (1, 9, 0, 3)]:
            phase = Phase.generate(b, s, n, p)
            want = sum(m.count(metric, "model", b, ss, pp) for ss, pp in phase.steps())
            assert int(closed.expr.xreplace({B: b, S: s, P: p, N: n})) == want, (metric, b, s, p, n)
            assert phase_count(m, metric, phase, "model") == want


# --- validation against transformers --------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
def test_falcon_mamba_is_mamba_with_weightless_dt_b_c_norms() -> None:
    # FalconMambaConfig() has MambaConfig's dims; its RMSNorms on dt (rank 48), B and C (state 16) have no
    # learned scale (a buffer the forward never reads): the same params, and per norm of n over T rows x^2 and
    # x * rstd (2*T*n MULT), the mean (T*(n-1) ADD, T DIV), + eps (T ADD), rsqrt (T SQRT, T DIV)
    falcon, mamba = profile(_data(FALCON_MAMBA), 1, 2), profile(_data(MAMBA), 1, 2)
    assert falcon.total("params", "model") == mamba.total("params", "model") == 159_308_544
    t, widths = 2, (48, 16, 16)
    assert falcon.total("mult", "model") - mamba.total("mult", "model") == 32 * sum(2 * t * n for n in widths)
    assert falcon.total("add", "model") - mamba.total("add", "model") == 32 * sum(t * (n - 1) + t for n in widths)
    assert falcon.total("sqrt", "model") - mamba.total("sqrt", "model") == 32 * 3 * t
    assert "backbone.layers.0.mixer.b_layernorm" in falcon.values


def test_bamba_total_and_layers() -> None:
    # h = 4096; Mamba-2: inner 8192, 128 heads x 64, 1 group, state 256, conv 4: in_proj 4096*(2*8192 + 2*256 + 128)
    # = 69,730,304, conv1d (8192 + 512)*(4 + 1) = 43,520, dt_bias / A_log / D 3*128, gated norm 8192, out_proj
    # 8192*4096 = 33,554,432: 103,336,832. Attention (32 heads, 8 KV, 128): 2*4096^2 + 2*4096*1024 = 41,943,040.
    # Every layer: MLP 3*4096*14336 = 176,160,768, two norms 8192. Untied 128000 x 4096 embedding and head.
    mixer, attention, rest = 103_336_832, 41_943_040, 176_160_768 + 8_192
    total = 29 * (mixer + rest) + 3 * (attention + rest) + 2 * 128_000 * 4096 + 4096
    assert profile(_data(BAMBA), 1, 1).total("params", "model") == total == 9_808_584_064
    _, spec = build_spec(_data(BAMBA))
    assert [i for i, layer in enumerate(spec.layers) if layer.mixer.kind != "state_space"] == [9, 18, 27]
    assert spec.rotary_dim == 64  # half of head_dim 128: BambaConfig hard-codes partial_rotary_factor 0.5


# full size: past Nemotron-H's chunk of 128 (2 chunks); tiny (chunk 4, conv kernel 4): 3 chunks after a cache,
# a one-token prefill (the chunked path at S = 1), S < kernel after a cache
FULL_EXTRA = {NEMOTRON: [(1, 130, 2)], JAMBA: [(1, 2, 0)]}
TINY_EXTRA = [(2, 9, 4), (1, 1, 0), (2, 2, 3)]
QUIRKS: dict[str, tuple[str, dict[str, Any]]] = {
    "nemotron-h-biases": (NEMOTRON, {"use_bias": True, "use_conv_bias": False, "mlp_bias": True,
                                     "hybrid_override_pattern": "-M*M"}),
    "jamba-dense-biases": (JAMBA, {"num_experts": 1, "mamba_proj_bias": True, "mamba_conv_bias": False}),
    # the gated RMSNorm module, gate before the norm, every bias, non-unit muP multipliers (ops all the same)
    "falcon-h1-norm-biases-mup": (FALCON_H1, {
        "mamba_rms_norm": True, "mamba_norm_before_gate": False, "attention_bias": True, "mlp_bias": True,
        "projectors_bias": True, "mamba_proj_bias": True, "mamba_conv_bias": False, "embedding_multiplier": 2.0,
        "mlp_multipliers": [0.5, 2.0], "ssm_multipliers": [1.0, 2.0, 3.0, 4.0, 5.0], "key_multiplier": 0.5}),
    "granitemoehybrid-rope-biases-mup": (GRANITE_H, {
        "position_embedding_type": "rope", "attention_bias": True, "mamba_proj_bias": True, "mamba_conv_bias": False,
        "embedding_multiplier": 12.0, "residual_multiplier": 0.22, "logits_scaling": 6.0,
        "attention_multiplier": 0.015625}),
    "granitemoehybrid-no-experts": (GRANITE_H, {"num_local_experts": 0}),  # the shared MLP alone
    "lfm2-conv-bias-kernel-4": (LFM2, {"conv_bias": True, "conv_L_cache": 4, "block_auto_adjust_ff_dim": False}),
}


def _cache_params_named_past_key_values(model: Any) -> Any:
    """MambaForCausalLM / Mamba2ForCausalLM take and return their cache as ``cache_params``; the measuring side
    passes and reads ``past_key_values``. The same model (same modules, same forward) under a subclass that
    renames the argument and the output field (llm_profiler/validation/measure.py itself does not know the
    name yet: see the SSM report)."""
    base = type(model)

    class PastKeyValuesNamed(base):  # type: ignore[misc, valid-type]
        def forward(self, input_ids: Any = None, past_key_values: Any = None, use_cache: Any = None, **kw: Any) -> Any:
            out = base.forward(self, input_ids=input_ids, cache_params=past_key_values, use_cache=use_cache, **kw)
            out["past_key_values"] = out.cache_params
            return out

    model.__class__ = PastKeyValuesNamed
    return model


def _validate_all(config: Any, tiny: bool, shapes: list[tuple[int, int, int]],
                  states: tuple[str, ...] = ("conv", "recurrent")) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    if "cache_params" in type(model).forward.__code__.co_varnames:
        model = _cache_params_named_past_key_values(model)
    for shape in shapes:
        report = validate(config, *shape, tiny=tiny, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()
        # per-kind rows for the Mamba layers (attention layers' keys and values are the plain cache rows); the
        # growth has rows where it is not zero: a prefill creates the states, later forwards only overwrite them
        kinds = {row.metric for row in report.rows if row.metric.startswith("cache")}
        want = {"cache", *(f"cache[{kind}]" for kind in states)} | ({"cache_growth"} if shape[2] == 0 else set())
        assert want <= kinds, (want, kinds)


@pytest.mark.validation
@pytest.mark.parametrize("preset", [NEMOTRON, JAMBA])
def test_validate_full_size_on_meta(preset: str) -> None:
    _validate_all(preset, tiny=False, shapes=SHAPES + FULL_EXTRA[preset])


@pytest.mark.validation
@pytest.mark.parametrize("preset", [NEMOTRON, JAMBA])
def test_validate_tiny_on_cpu(preset: str) -> None:
    _validate_all(preset, tiny=True, shapes=SHAPES + TINY_EXTRA)


@pytest.mark.validation
@pytest.mark.parametrize("name", [MAMBA, MAMBA2, FALCON_MAMBA])
def test_validate_mamba_and_mamba2(name: str) -> None:
    _validate_all(_data(name), tiny=False, shapes=SHAPES + [(1, 300, 2)])  # mamba2's chunk is 256
    _validate_all(_data(name), tiny=True, shapes=SHAPES + TINY_EXTRA)


@pytest.mark.validation
def test_validate_bamba() -> None:
    _validate_all(_data(BAMBA), tiny=False, shapes=SHAPES + [(1, 260, 2)])  # chunk 256: 2 chunks
    _validate_all(_data(BAMBA), tiny=True, shapes=SHAPES + TINY_EXTRA)


@pytest.mark.validation
def test_validate_falcon_h1() -> None:
    _validate_all(_data(FALCON_H1), tiny=False, shapes=SHAPES + [(1, 260, 2)])  # chunk 256: 2 chunks
    _validate_all(_data(FALCON_H1), tiny=True, shapes=SHAPES + TINY_EXTRA)


@pytest.mark.validation
def test_validate_granitemoehybrid() -> None:
    _validate_all(_data(GRANITE_H), tiny=False, shapes=SHAPES + [(1, 260, 2)])  # chunk 256: 2 chunks
    _validate_all(_data(GRANITE_H), tiny=True, shapes=SHAPES + TINY_EXTRA)


@pytest.mark.validation
def test_validate_lfm2_moe() -> None:
    _validate_all(_data(LFM2_MOE), tiny=False, shapes=SHAPES + [(1, 2, 0)], states=("conv",))
    _validate_all(_data(LFM2_MOE), tiny=True, shapes=SHAPES + TINY_EXTRA, states=("conv",))
    with pytest.raises(ConfigError, match="layer_types"):
        build_spec(_data(LFM2_MOE, layer_types=None))


@pytest.mark.validation
def test_validate_lfm2() -> None:
    # S < conv kernel; the short conv's cache has no recurrent state
    _validate_all(_data(LFM2), tiny=False, shapes=SHAPES + [(1, 2, 0)], states=("conv",))
    _validate_all(_data(LFM2), tiny=True, shapes=SHAPES + TINY_EXTRA, states=("conv",))


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(QUIRKS))
def test_validate_quirks_tiny(case: str) -> None:
    preset, changes = QUIRKS[case]
    states = ("conv",) if preset == LFM2 else ("conv", "recurrent")
    _validate_all(_data(preset, **changes), tiny=True, shapes=SHAPES + TINY_EXTRA, states=states)
