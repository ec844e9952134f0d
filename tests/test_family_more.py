"""phimoe, ernie4_5_moe and ministral3: the families whose own-forward ops (aten abs / clamp / floor) the
validation counts since the op table holds them. Published totals, the quirks, and validation against
transformers 5.23 per node (full size on meta, tiny on the CPU).

Configs (tests/family_configs/): the transformers config class defaults, dumped with to_dict():
PhimoeConfig (its docstring names microsoft/Phi-3.5-MoE-instruct, and the dims are that checkpoint's),
Ernie4_5_MoeConfig (baidu/ERNIE-4.5-21B-A3B-PT), Ministral3Config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.errors import ConfigError
from llm_profiler.families import build_spec
from llm_profiler.families.phimoe import sparsemixer
from llm_profiler.formula import Formula
from llm_profiler.graph.moe import MoESpec
from llm_profiler.profile import profile

CONFIGS = Path(__file__).parent / "family_configs"
PHIMOE = "transformers--PhimoeConfig-defaults"
ERNIE_MOE = "transformers--Ernie4_5_MoeConfig-defaults"
MINISTRAL3 = "transformers--Ministral3Config-defaults"


def _data(name: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads((CONFIGS / f"{name}.json").read_text()), **changes}


def _node(prof: Any, path: str) -> Any:
    return prof.model.graph.node(path)


# --- totals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "active"), [
    # Phi-3.5-MoE (published 41.9B total / 6.6B active): h=4096, 32 heads x 128, 8 KV heads; per layer
    # attention 2*4096*4096 + 2*4096*1024 = 41,943,040, two LayerNorms (weight + bias) 4*4096, router
    # 16*4096 = 65,536, 16 experts of 3*4096*6400 = 78,643,200; embed + lm_head 2*32064*4096 = 262,668,288,
    # final LayerNorm 2*4096: 32*(41,943,040 + 16,384 + 65,536 + 16*78,643,200) + 262,676,480
    #   = 41,872,793,600; active (two experts): 32*(42,024,960 + 2*78,643,200) + 262,676,480 = 6,640,640,000.
    (PHIMOE, 41_872_793_600, 6_640_640_000),
    # ERNIE-4.5-21B-A3B (published 21B total / 3B active): h=2560, 20 heads x 128, 4 KV heads; per layer
    # attention 2*2560*2560 + 2*2560*512 = 15,728,640, norms 2*2560; layer 0 dense 3*2560*12288 =
    # 94,371,840; 27 MoE layers: router 64*2560 + the moe_statics bias 64 = 163,904, 64 experts of
    # 3*2560*1536 = 11,796,480, shared experts 3*2560*3072 = 23,592,960; tied embedding 103424*2560 =
    # 264,765,440, final norm 2560: 28*15,733,760 + 94,371,840 + 27*(163,904 + 64*11,796,480 + 23,592,960)
    #   + 264,768,000 = 21,825,437,888; active (top 6): 27*(163,904 + 6*11,796,480 + 23,592,960) + ...
    #   = 3,352,150,208 (3.09B without the embedding).
    (ERNIE_MOE, 21_825_437_888, 3_352_150_208),
    # Ministral3Config defaults: h=4096, 32 heads x 128, 8 KV heads, 34 layers; per layer attention
    # 41,943,040 + MLP 3*4096*14336 = 176,160,768 + norms 8,192; embed + lm_head 2*131072*4096 =
    # 1,073,741,824, final norm 4096: 34*218,112,000 + 1,073,745,920 = 8,489,553,920.
    (MINISTRAL3, 8_489_553_920, 8_489_553_920),
])
def test_params_and_active_params(name: str, params: int, active: int) -> None:
    prof = profile(_data(name), 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


# --- quirks ---------------------------------------------------------------------------------------


def test_sparsemixer_counts() -> None:
    # one round on T rows of E: top-1 (E-1 CMP), abs (E CMP), clamp (E CMP), sub (E ADD), div (E DIV),
    # > (E CMP), softmax (E-1 CMP, E ADD, E EXP, E-1 ADD, E DIV), gather; two rounds. T=3, E=16:
    c = sparsemixer(Formula.const(3), 16)
    assert c["cmp"]() == 2 * 3 * (15 + 16 + 16 + 16 + 15)  # = 468
    assert c["add"]() == 2 * 3 * (16 + 16 + 15)  # = 282
    assert c["div"]() == 2 * 3 * (16 + 16)  # = 192
    assert c["exp"]() == 2 * 3 * 16  # = 96


def test_phimoe_quirks() -> None:
    _, spec = build_spec(_data(PHIMOE, attention_bias=True, lm_head_bias=True))
    assert spec.norm == "layernorm" and spec.qkv_bias and spec.o_bias
    prof = profile(_data(PHIMOE, lm_head_bias=True), 1, 1)
    assert _node(prof, "lm_head").counts["params"]() == 32064 * 4096 + 32064  # weight + bias
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        build_spec(_data(PHIMOE, num_experts_per_tok=4))


def test_ernie_moe_layers_and_router() -> None:
    # interval 2 from layer 0 to 9: (i + 1) % 2 == 0 -> layers 1, 3, 5, 7, 9 are MoE
    _, spec = build_spec(_data(ERNIE_MOE, num_hidden_layers=12, moe_layer_interval=2, moe_layer_start_index=0,
                            moe_layer_end_index=9))
    assert isinstance(spec, MoESpec)
    assert [i for i, layer in enumerate(spec.layers) if layer.moe] == [1, 3, 5, 7, 9]
    prof = profile(_data(ERNIE_MOE), 2, 3)
    statics = _node(prof, "model.layers.1.mlp.gate.moe_statics").counts
    assert statics["params"]() == 64  # e_score_correction_bias is a parameter
    assert statics["add"](2, 3) == 6 * 64  # B*S*E
    gate = _node(prof, "model.layers.1.mlp.gate").counts
    # T = 6 rows: softmax max 6*63, the top-6 scans 6*(63+62+61+60+59+58) = 6*363, clamp(sum, min) 6 CMP
    assert gate["cmp"](2, 3) == 6 * 63 + 6 * 363 + 6  # = 2,562
    assert gate["div"](2, 3) == 6 * 64 + 6 * 6  # softmax, then the k weights / the clamped sum
    assert "model.layers.0.mlp.gate_proj" in {n.path for n in prof.model.graph.nodes}  # layer 0 is dense


def test_ministral3_temperature() -> None:
    prof = profile(_data(MINISTRAL3), 2, 3)
    t = _node(prof, "model.layers.0.self_attn:temperature").counts
    # S=3 positions: div, floor, +1, log, *beta, +1 (3 each); q * scale: 2*3*32*128 = 24,576 MULT
    assert t["mult"](2, 3) == 3 + 24_576
    assert t["add"](2, 3) == 2 * 3
    assert t["cmp"](2, 3) == 3  # floor
    assert t["exp"](2, 3) == 3  # log
    with pytest.raises(ConfigError, match="llama_4_scaling_beta"):
        build_spec(_data(MINISTRAL3, rope_parameters={"rope_type": "default", "rope_theta": 1e6}))


# --- validation -----------------------------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
CASES: dict[str, tuple[str, dict[str, Any], list[tuple[int, int, int]]]] = {
    "phimoe": (PHIMOE, {}, []),
    # sliding window (tiny: 4; full: 4096, a shape past it), q/k/v/o and lm_head biases
    "phimoe-window-bias": (PHIMOE, {"sliding_window": 4096, "attention_bias": True, "lm_head_bias": True},
                           [(1, 5, 4097)]),
    "ernie4_5_moe": (ERNIE_MOE, {}, []),
    # use_bias everywhere (lm_head included), MoE on odd layers from 0, no shared experts, untied
    "ernie4_5_moe-bias-interval": (ERNIE_MOE, {"use_bias": True, "moe_layer_interval": 2,
                                               "moe_layer_start_index": 0, "moe_num_shared_experts": 0,
                                               "tie_word_embeddings": False}, []),
    "ministral3": (MINISTRAL3, {}, []),
    # every layer sliding (tiny: 4), a shape past the window on both
    "ministral3-window": (MINISTRAL3, {"sliding_window": 4096}, [(1, 5, 4097)]),
}


def _validate_all(config: Any, tiny: bool, shapes: list[tuple[int, int, int]]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    for shape in shapes:
        report = validate(config, *shape, tiny=tiny, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_full_size_on_meta(case: str) -> None:
    name, changes, extra = CASES[case]
    _validate_all(_data(name, **changes), tiny=False, shapes=SHAPES + extra)


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_tiny_on_cpu(case: str) -> None:
    name, changes, extra = CASES[case]
    # the tiny window is 4: (2, 6, 3) crosses it
    _validate_all(_data(name, **changes), tiny=True, shapes=SHAPES + [(2, 6, 3)] * bool(extra))


@pytest.mark.validation
def test_validate_phimoe_longrope_tiny() -> None:
    """A longrope rope_parameters (as the released Phi-3.5-MoE): exact on the tiny model after a cached prefix
    and at decode; transformers' longrope forward cannot run on the meta device, and the one-off rope init
    of a not yet cached long_inv_freq is not counted (the spec's note says so)."""
    half = 64  # head_dim 128 / 2 frequencies (the tiny variant keeps one entry per tiny frequency)
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": [1.0 + i / 64 for i in range(half)],
            "short_factor": [1.0] * half, "long_mscale": 1.243, "short_mscale": 1.19,
            "original_max_position_embeddings": 4096}
    config = _data(PHIMOE, rope_parameters=rope)
    _, spec = build_spec(config)
    assert any("longrope" in note for note in spec.notes)
    _validate_all(config, tiny=True, shapes=[(3, 7, 5), (1, 1, 9)])
