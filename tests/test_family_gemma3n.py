"""gemma3n_text (Gemma 3n's language model): AltUp streams, Laurel, per-layer embeddings, KV sharing across layers,
activation sparsity: the parameter total, hand-derived node counts, config quirks, and validation against
transformers 5.23 (every node and metric, every cache state per layer, full size on meta and tiny on the CPU).

Config: tests/family_configs/transformers--Gemma3nTextConfig-defaults.json, Gemma3nTextConfig's defaults
(transformers 5.23; the class documents checkpoint google/gemma-3n-E4B) written out by ``to_dict()``.

Hand-derived values use the family's tiny config (``Gemma3n.tiny``): h = 64, A = 4 AltUp streams, H = 4, KV = 2,
D = 24, I = 96, Hp = 8 per-layer dims, Laurel rank 8, window W = 4; layers sliding, sliding, full (the last two
of their type: they "store" their K / V), then a sliding and a full layer reusing them; layers 0 and 1 sparse;
at B = 2, S = 3, P = 5 (t = 6 tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import ConfigError, profile
from llm_profiler.families import build_spec
from llm_profiler.families.gemma3n import Gemma3n

CONFIG = Path(__file__).parent / "family_configs" / "transformers--Gemma3nTextConfig-defaults.json"
DEFAULTS = json.loads(CONFIG.read_text())
TINY = Gemma3n().tiny(DEFAULTS)
SHAPE = (2, 3, 5)


def test_params_total() -> None:
    """E4B text model, 35 layers (h 2048, 8 heads of 256, 2 KV heads, I 16384, Hp 256, Laurel 64, A 4).

    Every layer: q 2048*2048, q_norm 256, o 2048*2048, MLP 3*2048*16384, four norms 4*2048, AltUp 2048 (scale)
    + 16 + 64 + 2048*4 + 2048 (router norm), Laurel 2*2048*64 + 2048, per-layer gate / projection 2*2048*256 +
    2048 (norm) = 110,387,536; the 20 layers with their own K / V add 2*2048*512 + 256 = 2,097,408 (the last 15
    reuse them). Model: embeddings 262,400*2048, per-layer embeddings 262,144*35*256, their projection
    2048*8960 and norm 256, 2 * 3 AltUp projections of 2048*2048, final norm 2048 (lm_head tied): 2,929,723,648.
    35 * 110,387,536 + 20 * 2,097,408 + 2,929,723,648 = 6,835,235,568 (transformers' count of the text model;
    the published "8B raw" of E4B includes the vision and audio towers)."""
    assert profile(str(CONFIG), 1, 1).total("params", "model") == 6_835_235_568


def test_kv_sharing_and_layer_plan() -> None:
    _, spec = build_spec(DEFAULTS)
    modes = spec.kv_modes  # type: ignore[attr-defined]
    assert modes[:18] == (None,) * 18 and modes[18:20] == ("store", "store") and modes[20:] == ("reuse",) * 15
    assert spec.layer_types[:5] == ("sliding_attention",) * 4 + ("full_attention",)
    assert spec.sparsity[:10] == (0.95,) * 10 and spec.sparsity[10] == 0.0  # type: ignore[attr-defined]
    _, spec = build_spec({"model_type": "gemma3n", "text_config": {"num_hidden_layers": 12, "num_kv_shared_layers": 4}})
    assert spec.model_type == "gemma3n_text" and spec.num_layers == 12  # a multimodal config: its text_config
    assert "multimodal 'gemma3n' config" in spec.notes[0]
    with pytest.raises(ConfigError, match="num_kv_shared_layers"):
        build_spec({**TINY, "num_kv_shared_layers": 4})  # no full layer before the shared ones
    with pytest.raises(ConfigError, match="activation_sparsity_pattern"):
        build_spec({**TINY, "activation_sparsity_pattern": [0.5, 0.0]})


@pytest.fixture(scope="module")
def v() -> Any:
    return profile(TINY, *SHAPE).values


def test_altup_laurel_per_layer_inputs(v: Any) -> None:
    own = v["model.layers.0:residual"]  # t*h = 384
    # router input * 1/h twice (384 each), streams (t x 64 x 4) @ (4 x 4) 6,144, coefs * innovation 4*384,
    # the corrected scale 384, the per-layer gate * its slice t*Hp = 48
    assert own["mult"] == 2 * 384 + 6_144 + 4 * 384 + 384 + 48
    assert own["exp"] == 2 * 24  # tanh of the router logits, t*A, in predict and in correct
    assert v["model.layers.0.altup.modality_router"]["macs"] == 2 * 6 * 64 * 4  # run by predict and correct
    assert v["model.layers.0.altup"]["params"] == 64 and v["model.layers.0.altup"]["mult"] == 0
    assert v["model.layers.0.laurel"]["add"] == 384 and v["model.layers.0.laurel.linear_left"]["macs"] == 6 * 64 * 8
    base = v["model"]  # (ids >= 0, ids < Vp), and, where; per-layer projection * scale, + embeddings, * 1/sqrt 2
    assert base["cmp"] == 2 * 6 + 6 + 2 * 3 * 6  # the and is a logic op (CMP); each rescale's clamp, twice
    assert base["div"] == 2 * (6 + 3 * (6 + 384)) + 6 * 64  # means, the rescales / magnitude, the mean of 4 streams
    assert v["model.embed_tokens_per_layer"]["params"] == 64 * 5 * 8


def test_kv_shared_layers_and_sparsity(v: Any) -> None:
    assert "model.layers.3.self_attn.k_proj" not in v and "model.layers.3.self_attn:kv_cache" not in v
    # a reusing sliding layer attends to its owner's keys: min(P, W-1) + S = 6; the full one to P + S = 8
    assert v["model.layers.3.self_attn:scores"]["macs"] == 2 * 4 * 3 * 6 * 24
    assert v["model.layers.4.self_attn:scores"]["macs"] == 2 * 4 * 3 * 8 * 24
    assert v["model.layers.3.self_attn:rope"]["mult"] == 2 * 6 * 4 * 24  # q only
    assert v["model.layers.1.self_attn:kv_cache"]["cache"] == 2 * 2 * 2 * 24 * 3  # 2*B*KV*D*min(P+S, W-1)
    sparse, dense = v["model.layers.0.mlp:gate_mul"], v["model.layers.2.mlp:gate_mul"]
    # mean and std over I = 96 per token, + cutoff, gate - cutoff, relu; Normal(0, 1).icdf: 3 MULT, 2 ADD, erfinv
    assert sparse["sqrt"] == 6 and sparse["exp"] == 1 and dense["sqrt"] == 0
    assert sparse["cmp"] - dense["cmp"] == 576 + 2  # relu over t*I, loc == loc and 0 < scale


# --- validation against transformers ---------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


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
    _validate_all(str(CONFIG), tiny=False, shapes=[*SHAPES, (1, 2, 515)])  # past the 512 window


def test_validation_tiny_on_cpu() -> None:
    _validate_all(str(CONFIG), tiny=True, shapes=[*SHAPES, (2, 6, 3)])  # past the window of 4


def test_validation_quirks() -> None:
    """No KV sharing, no sparsity, no corrected-output scale, three streams."""
    _validate_all({**TINY, "num_kv_shared_layers": 0, "activation_sparsity_pattern": [0.0] * 5,
                   "altup_correct_scale": False, "altup_num_inputs": 3},
                  tiny=True, shapes=[(2, 3, 5)])


@pytest.mark.parametrize("metric", ["flops", "cache"])
def test_generation_closed_form_equals_the_forwards(metric: str) -> None:
    """Sliding windows only (the shared layers read their owner's window): one closed form in B, S, P, N."""
    from llm_profiler.generation import compile_exact, generation_sum, phase_count, phase_total
    from llm_profiler.phases import Phase

    model = profile(TINY, 1, 1).model
    closed = generation_sum(phase_total(model, metric))
    assert closed.closed_form
    exact = compile_exact(closed.expr)
    for batch, prompt, past, new in [(2, 3, 2, 7), (1, 1, 0, 9)]:  # the window of 4 binds during the decode
        phase = Phase.generate(batch, prompt, new, past)
        forwards = sum(phase_count(model, metric, Phase.prefill(batch, s, p)) for s, p in phase.steps())
        assert exact(batch, prompt, past, new) == forwards
