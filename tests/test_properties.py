"""Property tests: random valid configs of every registered family at random shapes.

Configs start from the bundled preset of each model_type and vary its dimensions with hypothesis, keeping
them valid (heads a multiple of kv heads, hidden = heads * head_dim when head_dim is implied, top-k <=
experts, ...). The properties, for every node and metric:

- counts are non-negative Python ints; params and active_params do not depend on the shape;
- every count is affine in the batch B: count(B) = a(S, P) + B * b(S, P). The B-free part a(S, P) is work
  done once per forward whatever the batch: position ids and the attention mask's index arithmetic
  (kind ``positions``), the rotary cos / sin tables (``rotary``), learned position embeddings looked up
  once per position (gpt2's ``wpe``, kind ``embedding``), and Gemma's ``1 + weight`` of its RMSNorms
  (kind ``norm``), llama4's per-position attention temperature (part ``temperature``), the gated DeltaNet's
  exp(A_log) and its negation (part ``gates``). Every other node is
  exactly linear in B: count(2B) == 2 * count(B). The model's
  macs, div, sqrt and cache are exactly linear in B;
- scopes add up: transformer + lm_head == model; the layers plus the non-layer nodes == model; a layer's
  scope equals its by_layer entry; by_module and by_kind sum to the total; the compiled totals equal the
  sums of the per-node values (two independent code paths).
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, reject, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llm_profiler import metrics as M  # noqa: E402
from llm_profiler import profile_model, supported_model_types  # noqa: E402
from llm_profiler.config import list_presets, read_preset  # noqa: E402
from llm_profiler.errors import ConfigError  # noqa: E402
from llm_profiler.graph import NodeKind  # noqa: E402

# Node kinds allowed a B-free part, and the metrics it may appear in (see the module docstring).
B_FREE: dict[str, set[str]] = {
    NodeKind.POSITIONS: set(M.STORED),
    NodeKind.ROTARY: set(M.STORED),
    NodeKind.EMBEDDING: {M.ACT},  # learned position embeddings: S rows, whatever B
    NodeKind.NORM: {M.ADD, M.ACT},  # Gemma: 1 + weight, once per forward
}
# Parts (the text after ":" in a node path) allowed a B-free part whatever their kind: llama4's NoPE attention
# temperature, log1p(floor((positions + 1) / floor_scale)) * attn_scale + 1, is computed once per position
# before it scales q (B*S*heads*head_dim multiplications, linear in B).
# deepseek_v4's compressors: their entries' positions, the queries' causal threshold and entry >= threshold, once
# per position (position_ids is one row for the batch).
B_FREE_PARTS: dict[str, set[str]] = {"temperature": set(M.STORED), "entry_positions": set(M.STORED)}
# A state-space mixer's decay rates A = -exp(A_log) (graph/ssm.py) are computed once per forward from the weights.
B_FREE_PARTS["decay"] = set(M.STORED)
# The chunked scan negates its two (chunk x chunk) and (chunks+1)^2 triangular masks once per call, whatever the batch.
B_FREE_PARTS["scan"] = {M.CMP, M.ACT}
# The gated DeltaNet's gates: g = -exp(A_log) * softplus(...) takes exp(A_log) and its negation over the
# value_heads parameters once per forward (then B*S*heads products, linear in B).
B_FREE_PARTS["gates"] = {M.EXP, M.ADD, M.ACT}
# MiniMax's lightning attention: the block decay and exp(-slope) over the H rates, once per forward.
B_FREE_PARTS["lightning"] = {M.EXP, M.ADD, M.MULT, M.ACT}
# Apertus' xIELU takes softplus of its two scalar parameters and adds beta once per forward (graph/xielu.py):
# allowed on the activation nodes of the families whose activation it is.
B_FREE_ACTIVATIONS = {"xielu": {M.EXP, M.ADD, M.CMP, M.ACT}}
# Experts that loop over the experts hit (graph/scatter_experts.py): DBRX's one_hot over E + 1 classes (its arange
# and range check once per call) and the expert mask summed per class (E + 1 sums of B*S*k - 1 adds).
B_FREE_EXPERT_LOOPS = {"dbrx": {M.ADD, M.CMP, M.ACT}, "jetmoe": {M.ADD, M.CMP, M.ACT}}
LINEAR_TOTALS = (M.MACS, M.DIV, M.SQRT, M.CACHE, M.MATMUL_FLOPS)
SHAPE_FREE = (M.PARAMS, M.ACTIVE_PARAMS)


def _presets_by_type() -> dict[str, dict[str, Any]]:
    """One bundled config per registered model_type (the text config of a multimodal preset)."""
    supported = set(supported_model_types())
    out: dict[str, dict[str, Any]] = {}
    for preset in list_presets():
        data = read_preset(preset)
        if data.get("model_type") not in supported and isinstance(data.get("text_config"), dict):
            data = data["text_config"]
        model_type = data.get("model_type")
        if model_type in supported and model_type not in out:
            out[model_type] = data
    return out


PRESETS = _presets_by_type()


def _set(data: dict[str, Any], value: Any, *names: str) -> None:
    """Set the first of ``names`` the config uses (only fields it has: a family may not know the others)."""
    for name in names:
        if data.get(name) is not None:
            data[name] = value
            return


@st.composite
def configs(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    data = dict(base)
    layers = draw(st.integers(1, 4))
    old_layers = next((data[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if data.get(k)), layers)
    _set(data, layers, "num_hidden_layers", "n_layer", "num_layers")
    if isinstance(data.get("layer_types"), list) and data["layer_types"]:
        data["layer_types"] = [data["layer_types"][i % len(data["layer_types"])] for i in range(layers)]
    for key in ("first_k_dense_replace", "max_window_layers"):
        if isinstance(data.get(key), int):
            data[key] = draw(st.integers(0, layers))
    if isinstance(data.get("mlp_only_layers"), list):
        data["mlp_only_layers"] = draw(st.lists(st.integers(0, layers - 1), max_size=layers, unique=True))

    heads_now = data.get("num_attention_heads") or data.get("n_head") or 1
    kv_now = data.get("num_key_value_heads") or heads_now
    kv = draw(st.integers(1, 3))
    heads = kv if kv_now == heads_now else kv * draw(st.integers(2, 3))  # keep MHA presets MHA
    if "qk_nope_head_dim" in data:  # DeepSeek MLA: every head has its own k and v
        kv = heads
    _set(data, heads, "num_attention_heads", "n_head")
    if data.get("num_key_value_heads") is not None:
        data["num_key_value_heads"] = kv
    partial = any(k in data for k in ("partial_rotary_factor", "rotary_pct"))
    # A partial rotary dimension int(head_dim * factor) must stay even: 16 * 0.4 -> 6, 40 * 0.25 -> 10.
    head_dim = draw(st.sampled_from([16, 32, 40] if partial else [8, 16, 32]))
    if data.get("head_dim") is not None:
        data["head_dim"] = head_dim  # explicit: hidden need not be heads * head_dim (but Gemma2+ wants a multiple)
        hidden = heads * draw(st.integers(1, 4)) * 8
    else:
        hidden = heads * head_dim
    _set(data, hidden, "hidden_size", "n_embd", "d_model")
    if isinstance(data.get("query_pre_attn_scalar"), int):
        data["query_pre_attn_scalar"] = head_dim
    if isinstance(data.get("rotary_dim"), int):  # a legacy explicit rotary width (minimax_m2, gptj): even, <= head_dim
        data["rotary_dim"] = head_dim // 2
    for key in ("intermediate_size", "n_inner", "moe_intermediate_size", "shared_expert_intermediate_size"):
        if isinstance(data.get(key), int):
            data[key] = draw(st.integers(1, 12)) * 8
    data["vocab_size"] = draw(st.integers(16, 512))
    for key in ("sliding_window", "sliding_window_size"):
        if isinstance(data.get(key), int):
            data[key] = draw(st.integers(2, 12))

    experts_key = next((k for k in ("num_experts", "n_routed_experts", "num_local_experts") if data.get(k)), None)
    if experts_key:
        experts = draw(st.integers(2, 8))
        data[experts_key] = experts
        if isinstance(data.get("n_group"), int):  # DeepSeek group-limited routing
            groups = draw(st.sampled_from([g for g in (1, 2, 4) if experts % g == 0]))
            data["n_group"] = groups
            data["topk_group"] = draw(st.integers(1, groups))
            data["num_experts_per_tok"] = draw(st.integers(1, data["topk_group"] * experts // groups))
        else:
            data["num_experts_per_tok"] = draw(st.integers(1, experts))
    for key, low, high in (("q_lora_rank", 1, 8), ("kv_lora_rank", 1, 8), ("qk_nope_head_dim", 1, 4),
                           ("v_head_dim", 1, 4)):
        if isinstance(data.get(key), int):
            data[key] = draw(st.integers(low, high)) * 8
    if isinstance(data.get("qk_rope_head_dim"), int):
        data["qk_rope_head_dim"] = draw(st.integers(1, 4)) * 4
    assert old_layers
    return data


shapes = st.tuples(st.integers(1, 64), st.integers(1, 48), st.integers(0, 48))


def _model(data: dict[str, Any]) -> Any:
    try:
        return profile_model(data)
    except ConfigError:  # a combination the family rightly refuses; test_fuzz covers the messages
        reject()


COMMON = settings(max_examples=5, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_every_registered_type_has_a_preset() -> None:
    assert PRESETS, "no bundled preset of a registered model_type"
    for model_type, data in PRESETS.items():
        assert profile_model(data).spec.num_layers > 0, model_type


@pytest.mark.parametrize("model_type", sorted(PRESETS))
@COMMON
@given(data=st.data())
def test_counts_are_ints_affine_in_batch_and_params_shape_free(model_type: str, data: st.DataObject) -> None:
    model = _model(data.draw(configs(PRESETS[model_type]), label="config"))
    b, s, p = data.draw(shapes, label="shape")
    v1, v2, v3 = (model.node_values(k * b, s, p) for k in (1, 2, 3))
    for node in model.nodes:
        for metric in M.ALL:
            f1, f2, f3 = v1[node.path][metric], v2[node.path][metric], v3[node.path][metric]
            where = f"{node.path} {metric}"
            assert type(f1) is int and f1 >= 0, where
            if metric in SHAPE_FREE:
                assert f1 == f2 == f3, where
                continue
            assert f3 - f2 == f2 - f1, f"{where} is not affine in B"
            if 2 * f1 != f2:  # a B-free part: only where the module docstring allows one
                allowed = B_FREE.get(node.kind, set()) | B_FREE_PARTS.get(node.part or "", set())
                if node.kind == NodeKind.ACTIVATION:
                    allowed = allowed | B_FREE_ACTIVATIONS.get(model.spec.activation, set())
                if node.path.endswith(".experts"):
                    allowed = allowed | B_FREE_EXPERT_LOOPS.get(model.spec.model_type, set())
                assert metric in allowed or (metric in M.DERIVED and allowed), f"{where} has a B-free part {2 * f1 - f2}"
    other = model.node_values(b, s + 1, p + 2)
    for node in model.nodes:
        for metric in SHAPE_FREE:
            assert other[node.path][metric] == v1[node.path][metric]
    free = [node.path for node in model.nodes if node.part in B_FREE_PARTS]  # their own B-free work, allowed above
    for metric in LINEAR_TOTALS:
        twice = model.count(metric, "model", 2 * b, s, p) - sum(v2[path][metric] for path in free)
        assert twice == 2 * (model.count(metric, "model", b, s, p) - sum(v1[path][metric] for path in free)), metric
    assert model.count(M.ACTIVE_PARAMS, "model", b, s, p) <= model.count(M.PARAMS, "model", b, s, p)


@pytest.mark.parametrize("model_type", sorted(PRESETS))
@COMMON
@given(data=st.data())
def test_scopes_add_up(model_type: str, data: st.DataObject) -> None:
    model = _model(data.draw(configs(PRESETS[model_type]), label="config"))
    b, s, p = data.draw(shapes, label="shape")
    prof = model.at(b, s, p)
    for metric in (M.FLOPS, M.MACS, M.ACT, M.PARAMS, M.CACHE, M.EXP, M.CMP):
        total = sum(prof.values[n.path][metric] for n in model.nodes)
        scoped = {scope: sum(prof.by_module(metric, scope).values()) for scope in ("transformer", "lm_head")}
        assert total == scoped["transformer"] + scoped["lm_head"], metric
        layers = prof.by_layer(metric)
        outside = sum(prof.values[n.path][metric] for n in model.nodes if n.layer is None)
        assert sum(layers.values()) + outside == total, metric
        assert sum(prof.by_kind(metric, "model").values()) == total, metric
        last = max(layers)
        assert sum(prof.by_module(metric, f"layers.{last}").values()) == layers[last], metric
    # The compiled totals and the per-node values are separate code paths: they agree.
    for metric, scope in ((M.FLOPS, "model"), (M.ACT, "transformer"), (M.CACHE, "attn")):
        compiled = prof.total(metric, scope)
        assert type(compiled) is int
        assert compiled == sum(prof.by_module(metric, scope).values()), (metric, scope)
    # The symbolic formula agrees with the compiled one.
    expr = model.expr(M.FLOPS, "model")
    from llm_profiler.symbols import B, P, S

    assert int(expr.subs({B: b, S: s, P: p})) == prof.total(M.FLOPS, "model")


def test_docstring_states_the_b_free_kinds() -> None:
    # Keep the stated property and the checked one together.
    doc = sys.modules[__name__].__doc__ or ""
    for kind in B_FREE:
        assert f"``{kind}``" in doc


# --- huge shapes stay exact ------------------------------------------------------------------------------

HUGE = 10**9


@pytest.mark.parametrize("b, s, p", [(HUGE, HUGE, 0), (HUGE, 1, HUGE), (7, HUGE, HUGE - 1), (HUGE, HUGE, HUGE)])
def test_huge_shapes_are_exact_python_ints(b: int, s: int, p: int) -> None:
    model = profile_model("llama-3.1-405b")
    h, kv, d, heads = 16384, 8, 128, 128  # Llama-3.1-405B: hidden, kv heads, head_dim, heads
    prof = model.at(b, s, p)
    # k_proj: a (B*S x h) @ (h x kv*d) product: B*S*h*kv*d multiply-accumulates, no bias.
    k_proj = "model.layers.0.self_attn.k_proj"
    assert prof.values[k_proj]["macs"] == b * s * h * kv * d
    assert prof.total("macs", k_proj) == b * s * h * kv * d
    assert type(prof.total("macs", k_proj)) is int
    # Scores: B*heads bmm of (S x d) @ (d x (P+S)): B*heads*S*(P+S)*d MACs; at 1e9 that is ~1e31 > 2**63.
    scores = "model.layers.0.self_attn:scores"
    assert prof.values[scores]["macs"] == b * heads * s * (p + s) * d
    # The KV cache after the forward: 2 (K and V) * B * kv * d * (P+S) elements per layer, 126 layers.
    assert prof.total("cache", "model") == 126 * 2 * b * kv * d * (p + s)


@pytest.mark.parametrize("model_type", sorted(PRESETS))
def test_compiled_totals_equal_the_symbolic_ones_at_huge_shapes(model_type: str) -> None:
    # Any float (a Rational coefficient, a float Min) in a compiled formula would lose digits here.
    from llm_profiler.symbols import B, P, S

    model = profile_model(PRESETS[model_type])
    shape = {B: HUGE + 7, S: HUGE + 3, P: HUGE - 1}
    values = model.node_values(HUGE + 7, HUGE + 3, HUGE - 1)
    for metric in M.ALL:
        got = model.count(metric, "model", HUGE + 7, HUGE + 3, HUGE - 1)
        assert type(got) is int
        assert got == int(model.expr(metric, "model").subs(shape)), metric
        assert got == sum(v[metric] for v in values.values()), metric


def test_sweep_is_exact_past_int64() -> None:
    np = pytest.importorskip("numpy")
    model = profile_model("llama-3.1-405b")
    b = np.array([1, 16, HUGE])
    s = np.array([[1], [HUGE]])
    out = model.sweep("flops", "model", batch=b, seq=s, past=7)
    assert out.shape == (2, 3)
    # 405B flops at 1e9 x 1e9 is ~1e25, far beyond int64: exact Python ints, never wrapped around.
    for i in range(2):
        for j in range(3):
            assert int(out[i, j]) == model.count("flops", "model", int(b[j]), int(s[i, 0]), 7)
    small = model.sweep("macs", "model", batch=b[:2], seq=s[0], past=0)
    assert small.dtype == np.int64
