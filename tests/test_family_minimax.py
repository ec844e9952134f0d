"""minimax (MiniMax-Text-01 / MiniMax-M1): lightning attention, softmax attention, MoE on every layer. Published
totals, hand-derived counts of the lightning mixer (graph/lightning_attention.py) in its block and recurrent
forms, the cache states per layer, the generation closed form, the MiniMaxCache workaround of the measuring side
(validation/measure.py: ``minimax_cache``, ``linear_cache``) and validation against transformers 5.23.

Hand-derived values use the tiny config MM: h = 64, 2 layers (lightning, then full), 4 heads of D = 24 (KV 2 on the
full layer), lightning blocks of C = 4, 4 experts of 96, top 2.

Config sources (tests/family_configs/): MiniMaxAI--MiniMax-M1.json is the published MiniMax-M1 config.json (remote
code, model_type minimax_m1, ``attn_type_list``), a stored public copy found with the search tool (find_string
"layernorm_full_attention_alpha": a repository digest quoting the file; the index names no repository); it is read
as transformers' minimax. transformers--MiniMaxConfig-defaults.json is MiniMaxConfig() of transformers 5.23 (even
layers full, odd lightning: layer 0 full); MiniMaxAI--MiniMax-Text-01-hf.reconstructed.json
is MiniMax-Text-01 in transformers' ``minimax`` form, reconstructed: dims from the model card (MiniMax-AI/MiniMax-01,
MiniMax-Text-01-Model-Card.md @ 3c6375c22a89: 80 layers, a softmax layer after every 7 lightning ones, 64 heads of
128, hidden 6144, 32 experts of 9216, top 2, vocabulary 200,064, RoPE theta 1e7 on half the head) and the KV heads
(8), norms and alpha / beta factors (3.5565588200778455 / 1.0) of the published MiniMax-M1 config.json (same
architecture; a stored copy found with the search tool), renamed as transformers' converted ``-hf`` checkpoints
name them (``attn_type_list`` -> ``layer_types``, ``layernorm_*_alpha`` -> ``*_alpha_factor``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sympy

from llm_profiler import ConfigError, profile, profile_model
from llm_profiler.facts import StateKind
from llm_profiler.families import build_spec
from llm_profiler.phases import N, generation_sum, phase_total
from llm_profiler.symbols import B
from tests.closed_forms import assert_generation_is_the_sum_of_forwards

CONFIGS = Path(__file__).parent / "family_configs"
TEXT_01 = str(CONFIGS / "MiniMaxAI--MiniMax-Text-01-hf.reconstructed.json")
M1 = str(CONFIGS / "MiniMaxAI--MiniMax-M1.json")
DEFAULTS = str(CONFIGS / "transformers--MiniMaxConfig-defaults.json")

MM = {"model_type": "minimax", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
      "intermediate_size": 96, "vocab_size": 128, "num_hidden_layers": 2,
      "layer_types": ["linear_attention", "full_attention"], "block_size": 4, "num_local_experts": 4,
      "num_experts_per_tok": 2}
LA = "model.layers.0.self_attn"


# --- published totals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "params", "active"), [
    # MiniMax-Text-01, h = 6144, 70 lightning + 10 full layers, all MoE. Lightning: qkv_proj 6144*3*8192 =
    # 150,994,944, output_gate 6144*8192 and out_proj 8192*6144 (50,331,648 each), norm 8192: 251,666,432. Full:
    # q / o 6144*8192 each, k / v 6144*1024 each: 113,246,208. MoE: 32 experts of 3*6144*9216 = 169,869,312
    # (5,435,817,984), router 32*6144 = 196,608; layer norms 2*6144. 70 * 5,687,693,312 + 10 * 5,549,273,088
    # + embedding and lm_head 2*200064*6144 = 2,458,386,432 + final norm 6144 = 456,089,655,296 (the model card's
    # "456B"). Active: 2 of 32 experts, 80 * 30 * 169,869,312 fewer = 48,403,306,496; without the embedding and
    # lm_head 45,944,920,064 (the card's "45.9B activated").
    (TEXT_01, 456_089_655_296, 48_403_306_496),
    (M1, 456_089_655_296, 48_403_306_496),  # MiniMax-M1 is MiniMax-Text-01's architecture ("456B, 45.9B activated")
    # MiniMaxConfig(): h = 4096, 16 full + 16 lightning layers, 8 experts of 14336. Full: 2*4096*4096 + 2*4096*1024
    # = 41,943,040; lightning: 4096*12288 + 2*4096*4096 + 4096 = 83,890,176; MoE 8*3*4096*14336 + 8*4096 =
    # 1,409,318,912; norms 8192. 16 * 1,451,270,144 + 16 * 1,493,217,280 + 2*32000*4096 + 4096 = 47,373,946,880;
    # active: 32 * 6 * 176,160,768 fewer = 13,551,079,424.
    (DEFAULTS, 47_373_946_880, 13_551_079_424),
])
def test_published_totals(source: str, params: int, active: int) -> None:
    prof = profile(source, 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


def test_params_as_transformers_counts_them() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.reference import reference

    for source, params in [(M1, 456_089_655_296), (DEFAULTS, 47_373_946_880)]:
        model = reference(source).build()  # full size on the meta device
        assert sum(p.numel() for p in model.parameters()) == params


# --- config quirks ---------------------------------------------------------------------------------


def test_layer_plan_and_config_quirks() -> None:
    _, spec = build_spec(json.loads(Path(TEXT_01).read_text()))
    kinds = [layer.mixer.kind for layer in spec.layers]
    assert kinds == (["linear_attention"] * 7 + ["attention"]) * 10  # a softmax layer after every 7 lightning
    assert spec.layers[0].mixer.chunk == 256 and all(layer.moe for layer in spec.layers)
    # transformers rotates the whole head_dim whatever rotary_dim says; the profile says so
    assert spec.rotary_dim == 128 and any("rotary_dim" in n for n in spec.notes)
    # no layer_types: the class default, even layers full (layer 0 full)
    _, spec = build_spec({k: v for k, v in MM.items() if k != "layer_types"} | {"num_hidden_layers": 4})
    assert [layer.mixer.kind for layer in spec.layers] == ["attention", "linear_attention"] * 2
    assert build_spec({k: v for k, v in MM.items() if k != "block_size"})[1].layers[0].mixer.chunk == 256
    for bad, field in [({"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
                       ({"layer_types": ["linear_attention"]}, "layer_types"),
                       ({"block_size": 0}, "block_size"),
                       ({"num_experts_per_tok": 5}, "num_experts_per_tok")]:
        with pytest.raises(ConfigError, match=field):
            build_spec({**MM, **bad})


def test_remote_code_config_reads_as_the_hf_conversion() -> None:
    m1 = json.loads(Path(M1).read_text())
    family, spec = build_spec(m1)
    _, hf = build_spec(json.loads(Path(TEXT_01).read_text()))
    assert family.name == "minimax" and spec.layers == hf.layers and any("minimax_m1" in n for n in spec.notes)
    assert profile(M1, 2, 3, 5).values == profile(TEXT_01, 2, 3, 5).values
    assert family.hf_config(m1)["layer_types"][:8] == ["linear_attention"] * 7 + ["full_attention"]
    assert family.hf_config(m1)["mlp_alpha_factor"] == 3.5565588200778455
    assert build_spec({**m1, "model_type": "minimax_text_01"})[1].layers == hf.layers
    for bad, field in [({"attn_type_list": [0, 2] * 40}, "attn_type_list"), ({"attn_type_list": None}, "attn_type_list"),
                       ({"postnorm": False}, "postnorm"), ({"shared_intermediate_size": [8]}, "shared_intermediate_size")]:
        with pytest.raises(ConfigError, match=field):
            build_spec({**m1, **bad})


# --- the lightning mixer, node by node --------------------------------------------------------------


def _lightning(*shape: int) -> dict[str, int]:
    v = profile(MM, *shape).values[f"{LA}:lightning"]
    return {k: int(v[k]) for k in ("macs", "mult", "add", "exp")}


def test_block_form_of_a_prefill() -> None:
    # one block of c = 3 tokens for B*H = 4 (batch, head) pairs: q @ k^T c*c*D = 216, (.) @ v c*c*D = 216,
    # q @ state c*D*D = 1,728, k^T @ v D*D*c = 1,728: 4 * 3,888 = 15,552 MACs. MULT adds the block decay's
    # H = 4, the diagonal decay 4*9, the q and k decays 2 * 4*72 and the state decay 4*576: 18,472. ADD: the
    # matmuls' sums 4*(9*23 + 72*2 + 72*23 + 576*2) = 828 + 576 + 6,624 + 4,608, intra + inter 4*72, the state
    # update 4*576, the negated rates 4: 15,232. EXP: the block decay, H = 4.
    assert _lightning(1, 3, 0) == {"macs": 15_552, "mult": 18_472, "add": 15_232, "exp": 4}
    # S = 9 crosses two block boundaries (blocks of 4, 4, 1): per pair 2*D*(16 + 16 + 1) + 2*D*D*9 = 11,952 MACs,
    # 4 pairs: 47,808; one block decay per block: 3 * 4 EXP
    nine = _lightning(1, 9, 0)
    assert (nine["macs"], nine["exp"]) == (47_808, 12)
    # S = 4 fills one block exactly, S = 5 opens a second one (blocks of 4 and 1)
    assert _lightning(1, 4, 0)["exp"] == 4 and _lightning(1, 5, 0)["exp"] == 8
    assert _lightning(1, 5, 0)["macs"] == 4 * (2 * 24 * (16 + 1) + 2 * 576 * 5)  # 26,304


def test_recurrent_form_after_a_prefill() -> None:
    # with a cached state every token is one recurrent step, whatever S: per (batch, head, token) k^T @ v and
    # q @ state, 2 * D*D = 1,152 MACs; ratio * state D*D MULT and + D*D ADD; ratio = exp(-rates) once: H EXP
    assert _lightning(1, 1, 9) == {"macs": 4 * 1_152, "mult": 4 * (1_152 + 576), "add": 4 * (24 * 23 + 576) + 4,
                                   "exp": 4}
    assert _lightning(3, 7, 5)["macs"] == 3 * 4 * 7 * 1_152  # 96,768: no blocks once a state exists


def test_output_gate_norm_and_residual_combines() -> None:
    v = profile(MM, 2, 3, 0).values
    # sigmoid(output_gate(x)) * out over B*S*H*D = 6*96 = 576: sigmoid 1 EXP + 1 ADD + 1 DIV, then 1 MULT
    assert {k: int(v[f"{LA}:output_gate"][k]) for k in ("exp", "div", "mult")} == {"exp": 576, "div": 576, "mult": 576}
    assert v[f"{LA}.norm"]["params"] == 96  # RMSNorm over all H*D = 96 outputs of a token, not per head
    assert v[f"{LA}.qkv_proj"]["macs"] == 6 * 64 * 3 * 96
    assert v[f"{LA}.act_fn"]["exp"] == 6 * 3 * 96  # silu on q, k and v
    # residual * alpha + out * beta after attention and after the MoE: 2 * 6*64 = 768 elements, 2 MULT + 1 ADD each
    res = v["model.layers.0:residual"]
    assert (int(res["mult"]), int(res["add"])) == (1_536, 768)


def test_cache_states_per_layer() -> None:
    prof = profile(MM, 3, 7, 5)
    v = prof.values
    assert v[f"{LA}:recurrent_state"]["cache"] == 3 * 4 * 24 * 24  # B x H x D x D: 6,912, constant in P
    assert profile(MM, 3, 7, 500).values[f"{LA}:recurrent_state"]["cache"] == 6_912
    assert v["model.layers.1.self_attn:kv_cache"]["cache"] == 2 * 3 * 2 * 24 * 12  # K and V of P + S = 12 tokens
    assert prof.total("kv", "layers.0") == 0 and prof.total("cache", "layers.0") == 6_912
    (state,) = prof.model.graph.node(f"{LA}:lightning").facts.states
    assert state.kind == StateKind.RECURRENT
    assert int(state.read.evaluate({"B": 3, "S": 7, "P": 5})) == 6_912
    assert int(state.read.evaluate({"B": 3, "S": 7, "P": 0})) == 0  # nothing cached before the first prefill


def test_generation_closed_form_equals_sum_of_forwards() -> None:
    m = profile_model(MM)
    assert_generation_is_the_sum_of_forwards(m, ("flops", "macs", "act", "cache", "exp", "div", "add"))
    # the lightning state stays B*H*D*D = 2,304 B over all N forwards of a generation
    state = generation_sum(phase_total(m, "cache", f"{LA}:recurrent_state")).expr
    assert sympy.expand(state - 2_304 * B * N) == 0


# --- the measuring side ------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


class _Layer:
    def __init__(self, **tensors: object) -> None:
        self.__dict__.update(tensors)


class MiniMaxCache:  # the shape of transformers' MiniMaxCache: layers, and the lightning states by layer index
    def __init__(self, layers: list[_Layer], linear_cache: list[Any]) -> None:
        self.layers, self.linear_cache = layers, linear_cache


def test_measure_counts_the_linear_cache_as_recurrent_state() -> None:
    from llm_profiler.validation.measure import cache_states

    keys = torch.zeros(2, 2, 5, 24)  # 480 elements, as values
    state = torch.zeros(2, 4, 24, 24)  # 4,608
    # defaults pattern: layer 0 full (the only cache layer), layer 1 lightning ([] marks the attention layer)
    cache = MiniMaxCache([_Layer(keys=keys, values=torch.zeros(2, 2, 5, 24))], [[], state])
    assert cache_states(cache) == {0: {StateKind.KEYS_VALUES: 960}, 1: {StateKind.RECURRENT: 4_608}}


def test_minimax_cache_makes_only_empty_lightning_slots_dummy() -> None:
    pytest.importorskip("transformers")
    from transformers.cache_utils import DummyLayer, DynamicLayer

    from llm_profiler.validation.measure import minimax_cache

    full = DynamicLayer()
    full.lazy_initialization(torch.zeros(1, 2, 0, 8), torch.zeros(1, 2, 0, 8))
    empty = DynamicLayer()
    cache = minimax_cache(MiniMaxCache([empty, full], [torch.zeros(1, 4, 8, 8)]))
    assert isinstance(cache.layers[0], DummyLayer) and cache.layers[1] is full
    other = _Layer(layers=[empty])  # any other cache class is left alone
    assert minimax_cache(other) is other and other.layers[0] is empty


def test_rebuilt_cache_runs_the_decode_transformers_means() -> None:
    """transformers 5.23 fails on a forward after a prefill when layer 0 is lightning (the mask is sized from
    the empty cache slot 0); with that slot a DummyLayer the cached forward gives the logits of the uncached
    forward over all P + S tokens, so the counted forward is the model's own decode."""
    pytest.importorskip("transformers")
    from llm_profiler.validation.measure import minimax_cache
    from llm_profiler.validation.reference import reference

    model = reference(MM, tiny=True).build()
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(input_ids=ids).logits[:, 5:]
        cache = model(input_ids=ids[:, :5], use_cache=True).past_key_values
        with pytest.raises(RuntimeError, match="size of tensor"):  # transformers 5.23 as it is
            model(input_ids=ids[:, 5:], past_key_values=cache, use_cache=True)
        cache = model(input_ids=ids[:, :5], use_cache=True).past_key_values
        step = model(input_ids=ids[:, 5:], past_key_values=minimax_cache(cache), use_cache=True).logits
    assert torch.allclose(step, whole, atol=1e-4)


# --- validation against transformers ---------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]


def _validate_all(config: Any, tiny: bool, shapes: list[tuple[int, int, int]]) -> None:
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build()
    lightning_layers = [i for i, layer in enumerate(build_spec(reference(config, tiny=tiny).data)[1].layers)
                        if layer.mixer.kind == "linear_attention"]
    for batch, seq, past in shapes:
        report = validate(config, batch, seq, past, tiny=tiny, model=model)
        assert report.ok, report.table()
        # every lightning layer's state compared on its own row, every attention layer's K and V
        states = {row.node for row in report.rows if row.metric == "cache[recurrent]"}
        assert states == {f"model.layers.{i}.self_attn:recurrent_state" for i in lightning_layers}


@pytest.mark.parametrize("source", [M1, DEFAULTS], ids=["m1", "defaults"])
def test_validation_full_size_on_meta(source: str) -> None:
    # S = 300 crosses the 256-token block (2 blocks); a decode at P = 300
    _validate_all(source, tiny=False, shapes=[*SHAPES, (1, 300, 0), (1, 2, 300)])


@pytest.mark.parametrize("source", [M1, DEFAULTS, MM], ids=["m1", "defaults", "mm-hand"])
def test_validation_tiny_on_cpu(source: Any) -> None:
    # tiny blocks of 4 tokens: S = 9 is three blocks; S = 6 after a prefill runs the recurrent form
    _validate_all(source, tiny=True, shapes=[*SHAPES, (2, 9, 0), (1, 6, 5)])


def test_validation_quirks() -> None:
    """A sliding window (only the mask changes), MHA on the full layers, full layers first, unequal factors."""
    _validate_all({**MM, "sliding_window": 4, "num_key_value_heads": 4, "full_attn_alpha_factor": 2.5,
                   "layer_types": ["full_attention", "linear_attention", "linear_attention"], "num_hidden_layers": 3},
                  tiny=True, shapes=[(2, 3, 0), (1, 1, 6), (2, 7, 3)])
