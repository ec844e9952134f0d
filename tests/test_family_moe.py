"""Mixture-of-experts families: mixtral, qwen2_moe, qwen3_moe, and the shared blocks of graph/moe.py."""

from __future__ import annotations

from typing import Any

import pytest
import sympy

from llm_profiler.config import load_config
from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec
from llm_profiler.graph import NodeKind, moe
from llm_profiler.graph.moe import MoESpec
from llm_profiler.profile import profile
from llm_profiler.symbols import B, P, S


def _data(alias: str, **changes: Any) -> dict[str, Any]:
    return {**load_config(alias).data, **changes}


# --- totals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "params", "active"), [
    # Mixtral: per layer attention 2*4096*4096 + 2*4096*1024 = 41,943,040, norms 8,192, router 8*4096 = 32,768,
    # experts 8 * 3*4096*14336 (176,160,768 each); embeddings + head 2*32000*4096 = 262,144,000, final norm 4,096.
    # active: 32 * (41,943,040 + 8,192 + 32,768 + 2*176,160,768) + 262,144,000 + 4,096 = 12,879,925,248
    ("mixtral-8x7b", 46_702_792_704, 12_879_925_248),
    # Qwen3-30B-A3B: per layer attention 2*2048*4096 + 2*2048*512 = 18,874,368, q/k norms 256, norms 4,096,
    # router 128*2048 = 262,144, experts 128 * 3*2048*768; embeddings + head 2*151936*2048 = 622,329,856.
    # active: 48 * (18,874,368 + 256 + 4,096 + 262,144 + 8*4,718,592) + 622,329,856 + 2,048 = 3,353,032,704
    ("qwen3-30b-a3b", 30_532_122_624, 3_353_032_704),
    # Qwen1.5-MoE-A2.7B: 60 experts of 3*2048*1408, top 4, shared expert 3*2048*5632 with a 2048 -> 1 gate;
    # active: 24 * (4*2048*2048 + 2048*3 q/k/v bias + 4,096 norms + 60*2048 router + 4*8,650,752 + 34,603,008
    # + 2,048 gate) + 2*151936*2048 + 2048 = 2,689,173,504
    ("qwen1.5-moe-a2.7b", 14_315_784_192, 2_689_173_504),
])
def test_params_and_active_params(alias: str, params: int, active: int) -> None:
    prof = profile(alias, 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


def test_mixtral_moe_nodes() -> None:
    prof = profile("mixtral-8x7b", batch=2, seq=3)  # 6 tokens, 12 (token, expert) pairs
    gate = prof.values["model.layers.0.mlp.gate"]
    assert gate["macs"] == 6 * 8 * 4096  # 196,608: router logits
    # softmax over 8: 7 CMP per row; top-2 of 8: 7 + 6 = 13 CMP per row -> 6 * 20 = 120
    assert gate["cmp"] == 120
    # logits 6*8*4095 = 196,560; softmax 6*(2*8-1) = 90; renormalising sum of 2: 6 -> 196,656
    assert gate["add"] == 196_656
    assert gate["div"] == 6 * 8 + 6 * 2  # softmax 48 + renormalisation 12
    assert gate["params"] == 8 * 4096
    experts = prof.values["model.layers.0.mlp.experts"]
    # 12 pairs, each gate_up 2*14336 x 4096 and down 4096 x 14336: 12 * 3 * 58,720,256 = 2,113,929,216
    assert experts["macs"] == 2_113_929_216
    assert experts["params"] == 8 * 3 * 4096 * 14336  # 1,409,286,144: every expert
    assert experts["active_params"] == 2 * 3 * 4096 * 14336  # 352,321,536: top-2
    assert prof.values["model.layers.0.mlp.experts.act_fn"]["exp"] == 12 * 14336  # silu on 172,032 gates
    kinds = {n.kind for n in prof.model.nodes}
    assert {NodeKind.ROUTER, NodeKind.EXPERTS} <= kinds


def test_expert_compute_is_independent_of_routing() -> None:
    """Formula: T*top_k pairs of one expert's cost: doubling top_k doubles the experts' MACs."""
    two = profile(_data("mixtral-8x7b"), 1, 5).values["model.layers.0.mlp.experts"]["macs"]
    four = profile(_data("mixtral-8x7b", num_experts_per_tok=4), 1, 5).values["model.layers.0.mlp.experts"]["macs"]
    assert four == 2 * two == 2 * 5 * 2 * 3 * 4096 * 14336


def test_qwen2_moe_shared_expert_and_masks() -> None:
    prof = profile("qwen1.5-moe-a2.7b", batch=1, seq=4, past=2)
    v = prof.values
    assert v["model.layers.0.mlp.shared_expert.up_proj"]["macs"] == 4 * 2048 * 5632
    assert v["model.layers.0.mlp.shared_expert_gate"]["params"] == 2048
    mix = v["model.layers.0.mlp:shared_mix"]
    # sigmoid on 4 gate logits (1 EXP, 1 ADD, 1 DIV each); * shared: 4*2048 MULT; + routed: 4*2048 ADD
    assert (mix["exp"], mix["mult"], mix["add"], mix["div"]) == (4, 8192, 4 + 8192, 4)
    # no renormalisation (norm_topk_prob false): softmax DIV only, 4 rows x 60
    assert v["model.layers.0.mlp.gate"]["div"] == 4 * 60
    # both masks every forward (window 0 when unused), keys = P+S = 6: full S*keys = 24 CMP; sliding
    # S*keys + overlay S*keys + two ANDs 2*S*keys = 96 CMP -> 120
    assert v["model:positions"]["cmp"] == 120


def test_qwen_moe_layer_quirks() -> None:
    _, spec = build_spec(_data("qwen3-30b-a3b", decoder_sparse_step=2, mlp_only_layers=[1, 3], num_hidden_layers=6))
    assert isinstance(spec, MoESpec)
    # (i+1) % 2 != 0 -> dense: 0, 2, 4; plus mlp_only 1, 3 -> MoE only on layer 5
    assert spec.dense_layers == (0, 1, 2, 3, 4) and spec.moe_layers() == (5,)
    prof = profile(_data("qwen3-30b-a3b", decoder_sparse_step=2, num_hidden_layers=2), 1, 1)
    assert prof.values["model.layers.0.mlp.gate_proj"]["params"] == 2048 * 6144  # dense intermediate_size
    assert prof.values["model.layers.1.mlp.experts"]["params"] == 128 * 3 * 2048 * 768
    # qwen3_moe without head_dim: hidden / heads (64), unlike dense qwen3's 128
    _, spec = build_spec({k: v for k, v in _data("qwen3-30b-a3b").items() if k != "head_dim"})
    assert spec.head_dim == 64 and spec.qk_norm
    # sliding windows: off by default; qwen3_moe slides on every layer when enabled
    _, spec = build_spec(_data("qwen3-30b-a3b", use_sliding_window=True, sliding_window=1024))
    assert spec.sliding_window == 1024 and set(spec.layer_types) == {"sliding_attention"}
    _, spec = build_spec(_data("qwen3-30b-a3b", use_sliding_window=True))  # the preset's null window: none
    assert spec.sliding_window is None and spec.layer_types == ()
    # qwen2_moe slides on even layers below max_window_layers
    _, spec = build_spec(_data("qwen1.5-moe-a2.7b", use_sliding_window=True, max_window_layers=4))
    assert spec.layer_types[:5] == ("sliding_attention", "full_attention", "sliding_attention", "full_attention",
                                    "full_attention")
    _, spec = build_spec(_data("mixtral-8x7b"))
    assert spec.sliding_window is None and spec.norm_topk_prob


def test_moe_config_errors() -> None:
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        build_spec({k: v for k, v in _data("mixtral-8x7b").items() if k != "num_experts_per_tok"})
    with pytest.raises(ConfigError, match="mlp_only_layers"):
        build_spec(_data("qwen3-30b-a3b", mlp_only_layers="all"))
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        build_spec(_data("qwen3-30b-a3b", num_experts_per_tok=200))


def test_per_expert_detail() -> None:
    # expected load: tokens * top_k / experts = B*S*2/8, fractional in general (reporting only)
    assert moe.expected_expert_load(8, 2) == B * S / 4
    experts = moe.per_expert_counts(4096, 14336, 8, 2)
    assert len(experts) == 8 and experts[0]["params"] == 3 * 4096 * 14336
    total = sum(experts, moe.routed_experts(4096, 14336, 8, 2) * 0)
    routed = moe.routed_experts(4096, 14336, 8, 2) + moe.expert_activation("silu", 14336, 2)
    combine = moe.ops.reduce_sum(B * S * 4096, 2)  # the top-k sum belongs to no single expert
    for metric in ("macs", "mult", "add", "exp"):
        assert sympy.expand(total[metric] + combine.get(metric, 0) - routed[metric]) == 0
    # any concrete routing: loads summing to tokens * top_k give the same compute
    loads = [5, 0, 3, 0, 0, 2, 1, 1]  # 12 pairs = 6 tokens * top-2
    concrete = sum(moe.per_expert_counts(4096, 14336, 8, 2, loads=loads), moe.routed_experts(1, 1, 1, 1) * 0)
    assert concrete["macs"] == routed["macs"].subs({B: 2, S: 3, P: 0}) == 2_113_929_216


# --- validation against transformers --------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
QUIRKS = {
    "mixtral-sliding": ("mixtral-8x7b", {"sliding_window": 4096, "head_dim": 256}),
    "qwen2-moe-quirks": ("qwen1.5-moe-a2.7b", {"use_sliding_window": True, "max_window_layers": 21,
                                               "decoder_sparse_step": 2, "mlp_only_layers": [3],
                                               "norm_topk_prob": True, "qkv_bias": False}),
    "qwen3-moe-quirks": ("qwen3-30b-a3b", {"use_sliding_window": True, "sliding_window": 4096,
                                           "attention_bias": True, "mlp_only_layers": [0, 2],
                                           "norm_topk_prob": False}),
    "qwen3-moe-null-window": ("qwen3-30b-a3b", {"use_sliding_window": True}),  # null window: no sliding
}


def _validate_all(config: Any, tiny: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for shape in SHAPES:
        report = validate(config, *shape, tiny=tiny, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()


@pytest.mark.validation
@pytest.mark.parametrize("alias", ["mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen3-30b-a3b"])
def test_validate_full_width_on_meta(alias: str) -> None:
    # every dimension at full size, 4 layers to keep this file fast (the whole presets run in test_validation)
    _validate_all(_data(alias, num_hidden_layers=4), tiny=False)


@pytest.mark.validation
@pytest.mark.parametrize("alias", ["mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen3-30b-a3b"])
def test_validate_tiny_on_cpu(alias: str) -> None:
    _validate_all(_data(alias), tiny=True)


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(QUIRKS))
def test_validate_quirks(case: str) -> None:
    alias, changes = QUIRKS[case]
    config = _data(alias, num_hidden_layers=4, **changes)
    _validate_all(config, tiny=False)
    _validate_all(config, tiny=True)
