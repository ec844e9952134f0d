"""dbrx, jetmoe and apertus: the families whose transformers code runs aten ops the op table lacked until
them (sort, index_add, nonzero, expm1, linalg_vector_norm, and F.one_hot's aminmax). The ops' counts on real
tensors, published totals, the quirks, and validation against transformers 5.23 per node.

Configs (tests/family_configs/):
- databricks--dbrx-instruct.json: databricks/dbrx-instruct's config.json fields, from the verbatim copy of
  mlx-community/dbrx-instruct-4bit's config in lablup/mlxcel src/models/dbrx_tests.rs (commit 1094dd77); the
  MLX ``quantization`` block and the PretrainedConfig defaults serialised inside attn_config / ffn_config left out.
- swiss-ai--Apertus-8B-Instruct-2509.json: the trimmed copy of the checkpoint's config.json in lablup/mlxcel
  src/models/apertus_tests.rs (commit 0c09b02a), its MLX ``quantization`` block left out.
- jetmoe--jetmoe-8b.json: transformers' JetMoeConfig defaults (its docstring names jetmoe/jetmoe-8b) with
  num_hidden_layers 24, JetMoE-8B's depth (the class default, 12, is half of it).

Full size: every layer on the meta device. DBRX's and JetMoE's experts loop over the tokens routed to each
expert (transformers 5.23 has no batched path for them): DbrxExperts calls nonzero on the expert mask and
JetMoE's router calls expert_size.tolist(), which need the routing's values; their meta runs use
validation/meta_routing.py's fixed routing (the counts do not depend on which experts are chosen). JetMoE's
forward is also validated at full width (one layer) on the CPU with its real routing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from closed_forms import assert_generation_is_the_sum_of_forwards

from llm_profiler import ops, profile, profile_model
from llm_profiler.families import build_spec, get_family
from llm_profiler.formula import Formula
from llm_profiler.graph import blocks as blk
from llm_profiler.graph.xielu import xielu

CONFIGS = Path(__file__).parent / "family_configs"
DBRX = "databricks--dbrx-instruct"
JETMOE = "jetmoe--jetmoe-8b"
APERTUS = "swiss-ai--Apertus-8B-Instruct-2509"


def _data(name: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads((CONFIGS / f"{name}.json").read_text()), **changes}


def _dbrx(attn: dict[str, Any] | None = None, ffn: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    data = _data(DBRX, **changes)
    return {**data, "attn_config": {**data["attn_config"], **(attn or {})},
            "ffn_config": {**data["ffn_config"], **(ffn or {})}}


# --- the op table entries against the aten side, on real tensors ------------------------------------


def _counted(fn: Any, *inputs: Any) -> dict[str, int]:
    """The counts the measuring side gives every computing aten op of ``fn(*inputs)`` (an unknown op fails)."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    from llm_profiler.validation import aten

    total = ops.Counts()

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            nonlocal total
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            assert aten.classify(func) != "unknown", func
            if aten.classify(func) == "compute":
                total = total + aten.count(func, args, kwargs, out)
            return out

    with torch.no_grad(), Mode():
        fn(*inputs)
    return {k: int(v) for k, v in total.items() if v}


def test_aten_ops_counts() -> None:
    torch = pytest.importorskip("torch")
    x, index, ones = torch.randn(3, 5), torch.tensor([0, 1, 1, 3, 0]), torch.ones(5, 6)
    # sort of 3 rows of 5: 5*4/2 = 10 CMP a row (the topk convention with k = n); writes 15 values + 15 indices
    assert _counted(lambda a: a.sort(-1), x) == {"cmp": 30, "act": 30}
    assert ops.sort(3, 5) == ops.topk(3, 5, 5)
    # index_add of 5 source rows of 6 into 4 rows: one ADD per source element, out of place or in place
    add = {"add": 30, "act": 30}
    assert _counted(lambda z, i, o: z.index_add(0, i, o), torch.zeros(4, 6), index, ones) == add
    assert _counted(lambda z, i, o: z.index_add_(0, i, o), torch.zeros(4, 6), index, ones) == add
    # vector norms over 5, 3 rows: p=1 |x| (5 CMP) summed (4 ADD); p=2 x*x (5 MULT), sum, sqrt; inf: |x| and
    # a max (5 + 4 CMP); p=3: |x| (5 CMP), ^3 (5 EXP), sum (4 ADD), ^(1/3) (1 EXP); each writes one per row
    assert _counted(lambda a: torch.norm(a, p=1.0, dim=-1, keepdim=True), x) == {"cmp": 15, "add": 12, "act": 3}
    assert _counted(lambda a: torch.linalg.vector_norm(a, 2, dim=-1), x) == {"mult": 15, "add": 12, "sqrt": 3, "act": 3}
    assert _counted(lambda a: torch.linalg.vector_norm(a, float("inf"), dim=-1), x) == {"cmp": 27, "act": 3}
    assert _counted(lambda a: torch.linalg.vector_norm(a, 3, dim=-1), x) == {"cmp": 15, "exp": 18, "add": 12, "act": 3}
    # expm1: one transcendental evaluation per element, as log1p
    assert _counted(torch.expm1, x) == {"exp": 15, "act": 15}
    # F.one_hot(index, classes) checks the index range with aminmax: min and max over 8 = 2*7 CMP, writes 2;
    # its zeros + scatter_ are moves
    classes = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert _counted(lambda c: torch.nn.functional.one_hot(c, 5), classes) == {"cmp": 14, "act": 2}
    # nonzero (and torch.where(cond), which is nonzero) moves data: no count, no act
    flags = torch.tensor([0.0, 1.0, 0.0, 2.0])
    assert _counted(torch.nonzero, flags) == {}
    assert _counted(lambda f: torch.where(f > 0.5), flags) == {"cmp": 4, "act": 4}  # the > only
    # a sort whose length is a formula (JetMoE sorts the B*S*top_k pairs): at B=2, S=3, k=2: 12*11/2 = 66
    assert ops.sort(1, blk.TOKENS * 2)["cmp"](2, 3) == 66


def test_xielu_counts() -> None:
    # per element: x > 0 and min(x, eps) (2 CMP); alpha_p*x, *x, beta*x, *alpha_n, beta*x (5 MULT); the branch
    # sums and - x (3 ADD); expm1 (1 EXP); 12 ops each writing n. Once: 2 softplus (2 EXP + 1 CMP each) and
    # beta + _ (1 ADD), writing 3. Params: alpha_p, alpha_n. n = 10:
    c = xielu(Formula.const(10))
    assert {k: int(v()) for k, v in c.items()} == {"cmp": 22, "mult": 50, "add": 31, "exp": 14, "act": 123,
                                                    "params": 2}


# --- totals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "active"), [
    # DBRX (published "132B total parameters of which 36B are active"): d_model 6144, 48 heads x 128, 8 KV heads;
    # per block Wqkv 6144*(6144 + 2*1024) = 50,331,648, out_proj 6144^2 = 37,748,736, norm_1 + norm_2 (no bias)
    # 2*6144, router 16*6144 = 98,304, 16 experts of w1 + v1 + w2 = 3*10752*6144 = 198,180,864 each;
    # wte + lm_head 2*100352*6144 = 1,233,125,376, norm_f 6144:
    # 40*(50,331,648 + 37,748,736 + 12,288 + 98,304 + 16*198,180,864) + 1,233,131,520 = 131,596,523,520;
    # active (top 4): 40*(88,190,976 + 4*198,180,864) + 1,233,131,520 = 36,469,708,800.
    (DBRX, 131_596_523_520, 36_469_708_800),
    # JetMoE-8B (published "8B parameters", "2.2B active"): hidden 2048, 16 KV heads x 128, 8 experts, top 2;
    # per layer MoA: 8 input experts 2048*2048 and 8 output experts 2048*2048 (67,108,864), its bias 2048 and
    # router 8*2048; kv_proj 2048*4096 = 8,388,608; MoE: 8 experts of 2048*11264 + 5632*2048 (34,603,008 each)
    # = 276,824,064, bias 2048, router 16,384; norms 2*2048: 352,362,496 per layer; tied embedding
    # 32000*2048 = 65,536,000, final norm 2048: 24*352,362,496 + 65,538,048 = 8,522,237,952;
    # active (2 of 8 experts in both): 24*94,412,800 + 65,538,048 = 2,331,445,248.
    (JETMOE, 8_522_237_952, 2_331_445_248),
    # Apertus-8B (the Hub's "8B"; 8.05B): hidden 4096, 32 heads x 128, 8 KV heads; per layer q, o 4096^2 and
    # k, v 4096*1024 (41,943,040), q_norm + k_norm 2*128, up + down 2*4096*21504 = 176,160,768, xIELU's
    # alpha_p + alpha_n 2, two norms 2*4096: 218,112,258; embed + lm_head 2*131072*4096 = 1,073,741,824, final
    # norm 4096: 32*218,112,258 + 1,073,745,920 = 8,053,338,176.
    (APERTUS, 8_053_338_176, 8_053_338_176),
])
def test_params_and_active_params(name: str, params: int, active: int) -> None:
    prof = profile(_data(name), 1, 1)
    assert prof.total("params", "model") == params
    assert prof.total("active_params", "model") == active


# --- quirks ---------------------------------------------------------------------------------------


def test_jetmoe_heads_and_routed_attention() -> None:
    _, spec = build_spec(_data(JETMOE, num_attention_heads=99))  # derived: kv heads * top_k, whatever is given
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim) == (32, 16, 128)
    v = profile(_data(JETMOE), 2, 3).values  # 6 tokens, 12 routed pairs
    a = "model.layers.0.self_attention"
    assert v[f"{a}:moa_map"]["add"] == 12 * 2048  # the queries of 12 pairs (16 KV heads x 128) index_added
    # outputs * gate (12*2048), index_add (12*2048), + bias (6*2048)
    assert (v[f"{a}:moa_reduce"]["mult"], v[f"{a}:moa_reduce"]["add"]) == (12 * 2048, 12 * 2048 + 6 * 2048)
    assert v[f"{a}:scores"]["macs"] == 2 * 32 * 3 * 3 * 128  # 32 query heads x 3 queries x 3 keys x 128, B=2
    # the router: top-2 of 8 (2*(16-2-1)/2 = 13 CMP) + the softmax over 2 (1 CMP) per token; the sort of the
    # 12 pair ids: 12*11/2 = 66 CMP; the rows per expert: 8*(6-1) ADD (+ the softmax's 6*3 ADD)
    router = v["model.layers.0.mlp.router"]
    assert router["cmp"] == 6 * (13 + 1) + 66
    assert router["add"] == 8 * 5 + 6 * 3
    assert router["div"] == 6 * 2 + 12  # softmax + the pair index // top_k
    assert v["model.layers.0.self_attention.experts"]["params"] == 2048  # the MoA bias
    assert v["model.layers.0.mlp.input_linear"]["active_params"] == 2 * 2048 * 11264


def test_dbrx_quirks() -> None:
    v = profile(_data(DBRX), 1, 2).values
    a = "transformer.blocks.0.norm_attn_norm.attn"
    assert v[f"{a}:clip_qkv"]["cmp"] == 2 * 2 * 8192  # 2 tokens x (6144 + 2*1024) clamped to +-8
    ffn = v["transformer.blocks.0.ffn"]
    # softmax over 16 (15 CMP, 31 ADD, 16 EXP, 16 DIV), top-4 of 16 (4*(32-4-1)/2 = 54 CMP), the 1-norm of the 4
    # weights (4 CMP, 3 ADD) and 4 DIV, per token
    assert (ffn["cmp"], ffn["add"], ffn["div"]) == (2 * (15 + 54 + 4), 2 * (31 + 3), 2 * (16 + 4))
    experts = v["transformer.blocks.0.ffn.experts"]
    # one_hot's aminmax over 8 pairs (14 CMP), 17 class sums over 8 (17*7 ADD) and 17 > 0; per pair, the
    # weight product and the index_add (8*6144 each)
    assert experts["cmp"] == 14 + 17 and experts["add"] == 17 * 7 + 8 * 6144 and experts["mult"] == 8 * 6144
    plain = profile(_dbrx(attn={"clip_qkv": None}, ffn={"moe_normalize_expert_weights": None}), 1, 2).values
    assert f"{a}:clip_qkv" not in plain and plain["transformer.blocks.0.ffn"]["div"] == 2 * 16
    two = profile(_dbrx(ffn={"moe_normalize_expert_weights": 2}), 1, 2).values["transformer.blocks.0.ffn"]
    assert two["sqrt"] == 2 and two["mult"] == 2 * 4  # the 2-norm of the 4 weights per token
    hf = get_family("dbrx").hf_config(_data(DBRX))
    assert hf["ffn_config"]["moe_normalize_expert_weights"] == 1.0  # transformers 5.23 wants a float
    assert isinstance(hf["ffn_config"]["moe_normalize_expert_weights"], float)
    assert hf["attn_config"]["rope_theta"] == 500000  # kept; filled only when absent


def test_apertus_quirks() -> None:
    v = profile(_data(APERTUS), 1, 3).values
    assert v["model.layers.0.mlp.act_fn"]["params"] == 2
    assert v["model.layers.0.mlp.act_fn"]["exp"] == 3 * 21504 + 4  # expm1 per element, 2 softplus
    assert v["model.layers.0.self_attn.q_norm"]["params"] == 128  # per head
    assert "model.layers.0.attention_layernorm" in v and "model.layers.0.feedforward_layernorm" in v
    silu = profile(_data(APERTUS, hidden_act="silu"), 1, 3).values["model.layers.0.mlp.act_fn"]
    assert silu["exp"] == 3 * 21504 and "params" not in silu or not silu["params"]


def test_generation_closed_form() -> None:
    for name in (DBRX, JETMOE, APERTUS):
        assert_generation_is_the_sum_of_forwards(profile_model(_data(name)), ("flops", "macs", "act", "cache"))


# --- validation against transformers --------------------------------------------------------------

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]  # prefill; odd shape after a cached prefix; decode step
TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "dbrx-instruct": (DBRX, {}),
    "dbrx-mha-top1-2norm": (DBRX, {"n_heads": 4, "attn_config": {"kv_n_heads": 4, "clip_qkv": 0.5, "rope_theta": 1e4},
                                   "ffn_config": {"ffn_hidden_size": 96, "moe_num_experts": 4, "moe_top_k": 1,
                                                  "moe_normalize_expert_weights": 2.0}}),
    "dbrx-no-renormalisation": (DBRX, {"ffn_config": {"ffn_hidden_size": 96, "moe_num_experts": 4, "moe_top_k": 2,
                                                      "moe_normalize_expert_weights": None}}),
    "jetmoe-8b": (JETMOE, {}),
    "jetmoe-top1-gelu": (JETMOE, {"num_experts_per_tok": 1, "activation_function": "gelu"}),
    "apertus-8b": (APERTUS, {}),
    "apertus-bias-silu": (APERTUS, {"attention_bias": True, "hidden_act": "silu"}),
}


def _validate_all(config: Any, tiny: bool, device: str | None = None) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    model = reference(config, tiny=tiny).build(device=device)
    for shape in SHAPES:
        report = validate(config, *shape, tiny=tiny, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()


@pytest.mark.validation
@pytest.mark.parametrize("case", sorted(TINY))
def test_validate_tiny_on_cpu(case: str) -> None:
    name, changes = TINY[case]
    _validate_all(_data(name, **changes), tiny=True)


@pytest.mark.validation
def test_validate_apertus_full_size_on_meta() -> None:
    _validate_all(_data(APERTUS), tiny=False)


@pytest.mark.validation
def test_validate_jetmoe_full_width_on_cpu() -> None:
    """Every width of JetMoE-8B (one of its 24 identical layers: 0.35B parameters), real routing on the CPU."""
    _validate_all(_data(JETMOE, num_hidden_layers=1), tiny=False, device="cpu")


@pytest.mark.validation
@pytest.mark.parametrize("name", [DBRX, JETMOE])
def test_validate_full_size_on_meta_with_a_fixed_routing(name: str) -> None:
    """Every layer at full size on the meta device: validate's measuring side fixes the routing for these
    (measure enters validation/meta_routing.fixed_routing for ROUTING_READERS on meta); the counts do not depend
    on it, as the CPU runs with real routing show."""
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    config = _data(name)
    model = reference(config).build()
    for shape in SHAPES:
        report = validate(config, *shape, model=model)
        assert report.ok and report.rows and not report.unknown_ops, report.table()


@pytest.mark.validation
@pytest.mark.parametrize(("name", "why"), [(DBRX, "nonzero"), (JETMOE, "meta tensor; no data")])
def test_full_size_forward_needs_data(name: str, why: str) -> None:
    """Without the fixed routing, DbrxExperts' nonzero on the expert mask and JetMoE's expert_size.tolist()
    need the routing's values, which the meta device does not have (why measure fixes it for them)."""
    pytest.importorskip("transformers")
    import torch

    from llm_profiler.validation.reference import reference

    model = reference(_data(name)).build()
    with pytest.raises((NotImplementedError, RuntimeError), match=why), torch.no_grad():
        model(input_ids=torch.zeros(1, 2, dtype=torch.long, device="meta"), use_cache=True)
