"""Gated DeltaNet hybrids: qwen3_next, qwen3_5 / qwen3_5_text, qwen3_5_moe / qwen3_5_moe_text. Published totals,
hand-derived node counts of the DeltaNet mixer (graph/linear_attention.py) in its three cache branches, the
cache states per layer, the generation closed form, and validation against transformers 5.23's torch path.

Hand-derived values use the tiny config QN: h = 64, 4 layers (full_attention_interval 4: DeltaNet, DeltaNet,
DeltaNet, full), attention H = 4, KV = 2, D = 24, rotary 24 * 0.25 = 6; DeltaNet 2 key heads and 4 value heads
(H_v = 4: q and k are repeated to 4 heads), D_k = 8, D_v = 12, conv kernel K = 4, conv_dim = 2*2*8 + 4*12 = 80,
chunk C = 64; MoE 4 experts, top 2, expert 32, shared expert 40.

Config sources (tests/family_configs/): Qwen--Qwen3-Next-80B-A3B-Thinking.json and Qwen--Qwen3.5-27B.json are
../shared/hf-configs copies (ai-dynamo/aiconfigurator: src/aiconfigurator/model_configs/ @ 1b7cfb10a6fa and
aic-core/src/aiconfigurator_core/model_configs/ @ 095f58a51c4c); transformers--Qwen3_5MoeTextConfig-defaults.json
is Qwen3_5MoeTextConfig() of transformers 5.23 (count-relevant fields; no real Qwen3.5 MoE config was at hand).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sympy

from llm_profiler import ConfigError, profile, profile_model
from llm_profiler.families import build_spec
from llm_profiler.perf import roofline
from llm_profiler.phases import STEP, N, Phase, generation_sum, phase_count, phase_total
from llm_profiler.symbols import B, P, S

CONFIGS = Path(__file__).parent / "family_configs"
QWEN3_NEXT = str(CONFIGS / "Qwen--Qwen3-Next-80B-A3B-Thinking.json")
QWEN3_5 = str(CONFIGS / "Qwen--Qwen3.5-27B.json")
QWEN3_5_MOE = str(CONFIGS / "transformers--Qwen3_5MoeTextConfig-defaults.json")

QN = {"model_type": "qwen3_next", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": 24, "intermediate_size": 96, "vocab_size": 128, "num_hidden_layers": 4,
      "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 12,
      "linear_conv_kernel_dim": 4, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
      "shared_expert_intermediate_size": 40, "partial_rotary_factor": 0.25}
LA = "model.layers.0.linear_attn"


# --- published totals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "params", "active"), [
    # Qwen3-Next-80B-A3B, h = 2048, 36 DeltaNet + 12 full layers, all MoE. DeltaNet: in_proj_qkvz 2048*(2*2048 +
    # 2*4096) = 25,165,824, in_proj_ba 2048*64 = 131,072, conv1d 8192*4 = 32,768, A_log + dt_bias 64, norm 128,
    # out_proj 4096*2048 = 8,388,608: 33,718,464. Full attention: q_proj (query and gate) 2048*8192 = 16,777,216,
    # k / v 2048*512 each, o 4096*2048, q/k norms 512: 27,263,488. MoE: 512 experts of 3*2048*512 = 3,145,728
    # (1,610,612,736), router 512*2048, shared expert 3,145,728, its gate 2048: 1,614,809,088; norms 4096.
    # 36 * 1,648,531,648 + 12 * 1,642,076,672 + embedding and head 2*151936*2048 + final norm 2048
    # = 79,674,391,296 (the published "80B"; the checkpoint's MTP layer is not part of the transformers model).
    # active: 10 of 512 experts: 79,674,391,296 - 48 * 502 * 3,145,728 = 3,874,929,408 ("3B activated" without
    # the 622,329,856 of embedding and head: 3,252,599,552).
    (QWEN3_NEXT, 79_674_391_296, 3_874_929_408),
    # Qwen3.5-27B (text_config), h = 5120, 48 DeltaNet + 16 full layers, dense MLPs of 17408. DeltaNet: in_proj_qkv
    # 5120*10240 = 52,428,800, in_proj_z 5120*6144 = 31,457,280, in_proj_b / _a 5120*48 each, conv1d 10240*4,
    # A_log + dt_bias 96, norm 128, out_proj 6144*5120: 115,876,064. Full: q_proj 5120*12288 = 62,914,560, k / v
    # 5120*1024 each, o 6144*5120, q/k norms 512: 104,858,112. MLP 3*5120*17408 = 267,386,880; norms 10,240.
    # 48 * 383,273,184 + 16 * 372,255,232 + 2*248320*5120 + 5120 = 26,895,998,464 (the published "27B" adds the
    # vision tower).
    (QWEN3_5, 26_895_998_464, 26_895_998_464),
])
def test_published_totals(source: str, params: int, active: int) -> None:
    prof = profile(source, 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


def test_presets_and_their_aliases() -> None:
    assert profile("qwen3-next-80b-a3b", 1, 1).total("params", "model") == 79_674_391_296
    assert profile("Qwen/Qwen3.5-27B", 1, 1).total("params", "model") == 26_895_998_464


def test_params_as_transformers_counts_them() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.reference import reference

    for source, params in [(QWEN3_NEXT, 79_674_391_296), (QWEN3_5, 26_895_998_464)]:
        model = reference(source).build()  # full size on the meta device (qwen3_5: its text model)
        assert sum(p.numel() for p in model.parameters()) == params


# --- the DeltaNet mixer, node by node ----------------------------------------------------------------


def test_layer_plan_and_config_quirks() -> None:
    _, spec = build_spec(QN)
    assert [layer.mixer.kind for layer in spec.layers] == ["linear_attention"] * 3 + ["attention"]
    assert spec.layers[0].mixer.chunk == 64 and spec.rotary_dim == 6
    _, spec = build_spec({**QN, "layer_types": ["full_attention", "linear_attention"] * 2})
    assert [layer.mixer.kind for layer in spec.layers] == ["attention", "linear_attention"] * 2
    _, spec = build_spec({**QN, "full_attention_interval": 2, "decoder_sparse_step": 2})
    assert [layer.mixer.kind for layer in spec.layers] == ["linear_attention", "attention"] * 2
    assert [layer.moe for layer in spec.layers] == [False, True, False, True]
    _, spec = build_spec(QWEN3_5_MOE_DATA := json.loads(Path(QWEN3_5_MOE).read_text()))
    assert all(layer.moe for layer in spec.layers) and spec.rotary_dim == 64  # 256 * 0.25 from rope_parameters
    _, spec = build_spec({"model_type": "qwen3_5_moe", "text_config": QWEN3_5_MOE_DATA})
    assert spec.model_type == "qwen3_5_moe_text" and any("multimodal 'qwen3_5_moe'" in n for n in spec.notes)
    for bad, field in [({"layer_types": ["sliding_attention"] * 4}, "layer_types"),
                       ({"linear_num_value_heads": 3}, "linear_num_value_heads"),
                       ({"partial_rotary_factor": 0}, "partial_rotary_factor")]:
        with pytest.raises(ConfigError, match=field):
            build_spec({**QN, **bad})
    with pytest.raises(ConfigError, match="text_config"):
        build_spec({"model_type": "qwen3_5", "text_config": 3})


def test_causal_conv_in_its_three_branches() -> None:
    def conv(*shape: int) -> tuple[int, int, int]:
        v = profile(QN, *shape).values
        return v[f"{LA}:conv"]["macs"], v[f"{LA}:conv"]["add"], v[LA]["exp"]  # the conv; its silu (own node)

    # conv_dim 80 channels of K = 4 taps. Prefill (P = 0) of S = 3 < K: the cache pads to max(S, K) = 4
    # positions, padding K - 1 gives 4 + 3 = 7 outputs: B*80*7*4 MACs, 3 ADD each; silu on the 4 kept positions.
    assert conv(2, 3, 0) == (2 * 80 * 7 * 4, 2 * 80 * 7 * 3, 2 * 80 * 4)
    # after a prefill (P = 5), S = 7: the 4 cached columns and 7 new ones, padded: 11 + 3 = 14 outputs
    assert conv(3, 7, 5) == (3 * 80 * 14 * 4, 3 * 80 * 14 * 3, 3 * 80 * 11)
    # decode step (P = 9, S = 1): causal_conv1d_update on K + 1 = 5 columns, no padding: 2 outputs, 1 activated
    assert conv(1, 1, 9) == (80 * 2 * 4, 80 * 2 * 3, 80)
    # a prompt longer than the kernel (S = 70 > 4): 70 + 3 outputs, 70 activated
    assert conv(1, 70, 0) == (80 * 73 * 4, 80 * 73 * 3, 80 * 70)


def test_gates_l2norm_and_gated_norm() -> None:
    v = profile(QN, 2, 3, 0).values
    gates = v[f"{LA}:gates"]  # B*S*H_v = 24: sigmoid (1 EXP), softplus (2 EXP, 1 CMP); exp(A_log) over 4 params
    assert (gates["exp"], gates["cmp"], gates["params"]) == (24 + 2 * 24 + 4, 24, 8)
    norm = v[f"{LA}:l2norm"]  # q and k over the repeated heads: 2 x B*H_v*S = 48 rows of D_k = 8
    assert (norm["mult"], norm["add"], norm["sqrt"]) == (2 * 2 * 24 * 8, 2 * 24 * (7 + 1), 48)
    gated = v[f"{LA}.norm"]  # RMSNorm over D_v = 12 of 24 rows, * weight, * silu(z)
    assert (gated["mult"], gated["exp"], gated["params"]) == (24 * 12 * 3 + 24 * 12 + 24 * 12, 288, 12)


def test_chunked_delta_rule_crosses_the_chunk_boundary() -> None:
    # one chunk (S = 3, padded to 64), batch x heads = 4 blocks: k_beta @ k^T and q @ k^T, 2*4*64*64*8 = 262,144;
    # two unit triangular solves (Dv = 12 and Dk = 8 columns): 4*(12 + 8)*64*63/2 = 161,280; the chunk loop:
    # w @ state and q @ state 2*64*12*8, intra @ v_new 64*12*64, k^T @ v_new 8*12*64: 67,584 per block
    one = 262_144 + 161_280 + 4 * 67_584
    assert profile(QN, 1, 3, 0).values[f"{LA}:delta_rule"]["macs"] == one == 693_760
    assert profile(QN, 1, 64, 0).values[f"{LA}:delta_rule"]["macs"] == one  # still one chunk
    assert profile(QN, 1, 65, 0).values[f"{LA}:delta_rule"]["macs"] == 2 * one  # ceil(65 / 64) = 2 chunks
    # exp: pairwise decays 4*64*64, k_beta / q / k decays 3*4*64 padded positions, the chunk decays 4
    assert profile(QN, 1, 3, 0).values[f"{LA}:delta_rule"]["exp"] == 16_384 + 768 + 4


def test_recurrent_delta_rule_on_a_decode_step() -> None:
    v = profile(QN, 1, 1, 9).values[f"{LA}:delta_rule"]  # 4 (batch, head) rows, state 8 x 12
    assert v["macs"] == 0  # elementwise products and sums, no matmul
    assert v["mult"] == 4 * 4 * 96 + 4 * 12  # decay, k * state, k * delta, q * state; delta * beta
    assert (v["div"], v["exp"]) == (4 * 8, 4)  # q / sqrt(D_k); exp(g)
    assert v["add"] == 2 * 4 * 12 * 7 + 4 * 12 + 4 * 96  # two sums over D_k, v - kv_mem, state + update


def test_cache_states_per_layer() -> None:
    prof = profile(QN, 3, 7, 5)
    v = prof.values
    assert v[f"{LA}:conv_state"]["cache"] == 3 * 80 * 4  # the last K conv columns
    assert v[f"{LA}:recurrent_state"]["cache"] == 3 * 4 * 8 * 12  # B x H_v x D_k x D_v
    assert v["model.layers.3.self_attn:kv_cache"]["cache"] == 2 * 3 * 2 * 24 * 12  # keys and values of P + S
    assert v["model.layers.3.self_attn:kv_cache"]["kv"] == 2 * 3 * 2 * 24 * 12
    assert prof.total("kv", "layers.0") == 0 and prof.total("cache", "layers.0") == 960 + 1152
    node = prof.model.graph.node(f"{LA}:delta_rule")
    (state,) = node.facts.states
    assert state.kind == "recurrent" and int(state.read.evaluate({"B": 3, "S": 7, "P": 5})) == 1152
    assert int(state.read.evaluate({"B": 3, "S": 7, "P": 0})) == 0  # no state before the first prefill
    # a decode step (bf16) rewrites the 3 DeltaNet layers' states whole, 3 * (320 + 384), and appends one token's
    # keys and values to the full layer, 2 * 2 * 24; it reads those states and the 10 cached tokens' K and V
    cats = roofline(QN, "h100", "decode", batch=1, past=9).bytes_by_category
    assert cats["kv_written"] == 2 * (3 * (320 + 384) + 96) == 4_416
    assert cats["kv_read"] == 2 * (3 * (320 + 384) + 10 * 96) == 6_144


def test_gated_attention_and_zero_centred_norms() -> None:
    v = profile(QN, 2, 3, 0).values
    a = "model.layers.3.self_attn"
    assert v[f"{a}.q_proj"]["macs"] == 6 * 64 * 2 * 4 * 24  # query and gate
    assert (v[f"{a}:output_gate"]["exp"], v[f"{a}:output_gate"]["mult"]) == (576, 576)  # sigmoid(gate) * out
    assert v[f"{a}:rope"]["mult"] == 2 * 6 * (4 + 2) * 6  # the 6 rotary dims of q and k only
    # x * rsqrt(mean(x^2) + eps) * (1 + w): 6 rows x (63 + 1) ADD, plus 1 + w over the 64 weights
    assert v["model.layers.0.input_layernorm"]["add"] == 6 * 64 + 64


def test_qwen3_5_mrope_table() -> None:
    # positions expanded to 3 x B rows: freqs, cos, sin and two * attention_scaling over 3*B*S*rotary/2
    v = profile(QWEN3_5, 2, 3, 0).values["model.rotary_emb"]
    assert (v["mult"], v["exp"]) == (3 * 3 * 2 * 3 * 32, 2 * 2 * 3 * 3 * 32)


# --- a generation: one closed form across the prefill's chunks and the recurrent decode steps --------


def test_generation_closed_form_equals_sum_of_forwards() -> None:
    m = profile_model(QN)
    for metric in ("flops", "macs", "act", "cache", "exp", "cmp", "div"):
        forward = phase_total(m, metric, "model")
        closed = generation_sum(forward)
        assert closed.closed_form and STEP not in closed.expr.free_symbols
        for b, s, p, n in [(1, 1, 0, 1), (2, 3, 0, 2), (1, 2, 0, 6), (3, 5, 2, 4), (1, 1, 7, 8), (1, 70, 0, 3)]:
            phase = Phase.generate(b, s, n, p)
            want = sum(m.count(metric, "model", b, ss, pp) for ss, pp in phase.steps())
            assert int(closed.expr.xreplace({B: b, S: s, P: p, N: n})) == want, (metric, b, s, p, n)
            assert phase_count(m, metric, phase, "model") == want
    # the DeltaNet state stays constant over the decode steps: the cache of a layer-0 state is B*80*4 at every N
    conv = generation_sum(phase_total(m, "cache", f"{LA}:conv_state")).expr
    assert sympy.expand(conv - 320 * B * N) == 0


# --- validation against transformers ---------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]
PAST_CHUNK = [(1, 70, 3), (2, 65, 0)]  # S past the 64-token chunk (2 chunks), after a prefill and without


def _validate_all(config: Any, tiny: bool, shapes: list[tuple[int, int, int]]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for batch, seq, past in shapes:
        report = validate(config, batch, seq, past, tiny=tiny, model=model)
        assert report.ok, report.table()
        assert any(row.metric == "cache[recurrent]" for row in report.rows)  # the states were compared


@pytest.mark.parametrize("source", [QWEN3_NEXT, QWEN3_5, QWEN3_5_MOE], ids=["qwen3-next", "qwen3.5-27b", "qwen3.5-moe"])
def test_validation_full_size_on_meta(source: str) -> None:
    _validate_all(source, tiny=False, shapes=[*SHAPES, PAST_CHUNK[0]])


QWEN3_5_MOE_MULTIMODAL = {"model_type": "qwen3_5_moe", "text_config": json.loads(Path(QWEN3_5_MOE).read_text())}


@pytest.mark.parametrize("source", [QWEN3_NEXT, QWEN3_5, QWEN3_5_MOE, QWEN3_5_MOE_MULTIMODAL, QN],
                         ids=["qwen3-next", "qwen3.5-27b", "qwen3.5-moe", "qwen3.5-moe-multimodal", "qn-hand"])
def test_validation_tiny_on_cpu(source: Any) -> None:
    _validate_all(source, tiny=True, shapes=[*SHAPES, *PAST_CHUNK])


def test_validation_quirks() -> None:
    """Full attention first, dense layers between MoE ones, a kernel longer than the prompt, equal key and value
    heads (no repeat), attention biases."""
    _validate_all({**QN, "layer_types": ["full_attention", "linear_attention"] * 2, "decoder_sparse_step": 2,
                   "linear_conv_kernel_dim": 6, "linear_num_key_heads": 4, "attention_bias": True},
                  tiny=True, shapes=[(2, 3, 0), (1, 1, 4), (2, 5, 2)])
    # no partial_rotary_factor: the config classes default to 0.25 (rotary over 24 * 0.25 = 6 dims)
    default = {k: v for k, v in QN.items() if k != "partial_rotary_factor"}
    assert build_spec(default)[1].rotary_dim == 6
    _validate_all(default, tiny=True, shapes=[(2, 3, 1)])
