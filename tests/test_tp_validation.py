"""transformers' own tensor parallelism (tp_plan="auto"), measured per rank on the CPU (gloo, loopback).

One spawn per world size runs every family and shape (process start dominates a tiny run). The tiny
variants (``tiny_dims``): hidden H=64, intermediate INTER=96, vocabulary V=128, 2 layers, 4 query heads; the
KV heads and head_dim per family below; mixtral 4 experts, top-2. T = B*S tokens in the counted forward.
Prefill: (B, S, P) = (2, 3, 0), T = 6; one decode step after 3 cached tokens: (2, 1, 3), T = 2.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.errors import ArgumentError  # noqa: E402
from llm_profiler.validation.tensor_parallel import (  # noqa: E402
    TensorParallelMeasurement,
    measure_tensor_parallel,
    measure_tensor_parallel_runs,
)

pytestmark = pytest.mark.validation

H, INTER, V, LAYERS, FP32 = 64, 96, 128, 2, 4
SHAPES = [(2, 3, 0), (2, 1, 3)]  # prefill of 3 tokens for 2 sequences; one decode step after 3 cached


@dataclass(frozen=True)
class Dims:
    heads: int
    kv: int
    head_dim: int
    experts: int = 0  # mixtral: every rank holds all of them, each with INTER / tp
    top_k: int = 0
    tied: bool = False  # lm_head shares the embedding's (vocab-sharded) weight


# llama-2-7b is MHA (kv 4) and has no head_dim field: 64 / 4 = 16; qwen3-8b GQA (kv 2) with an explicit
# head_dim, which tiny_dims makes 24; mixtral-8x7b GQA (kv 2), 64 / 4 = 16. At 4 ranks the KV heads are
# made 4 (override) so that they divide: transformers splits the KV heads evenly. llama-3.2-1b: GQA (kv 2),
# head_dim 24, and tied embeddings (sharded once, counted once: on the embedding).
DIMS = {"llama-2-7b": Dims(4, 4, 16), "qwen3-8b": Dims(4, 2, 24), "mixtral-8x7b": Dims(4, 2, 16, 4, 2),
        "llama-3.2-1b": Dims(4, 2, 24, tied=True)}
DIMS4 = {"llama-2-7b": Dims(4, 4, 16), "mixtral-8x7b": Dims(4, 4, 16, 4, 2)}


@pytest.fixture(scope="module")
def tp2() -> dict[tuple[str, tuple[int, int, int]], TensorParallelMeasurement]:
    return measure_tensor_parallel_runs(list(DIMS), 2, SHAPES)


@pytest.fixture(scope="module")
def tp4() -> dict[tuple[str, tuple[int, int, int]], TensorParallelMeasurement]:
    return measure_tensor_parallel_runs(list(DIMS4), 4, SHAPES, overrides={"num_key_value_heads": 4})


def runs(tp: int) -> list[tuple[str, tuple[int, int, int]]]:
    return [(name, shape) for name in (DIMS if tp == 2 else DIMS4) for shape in SHAPES]


def get(request: pytest.FixtureRequest, tp: int, name: str, shape: tuple[int, int, int]) -> TensorParallelMeasurement:
    return request.getfixturevalue(f"tp{tp}")[(name, shape)]


CASES = [(tp, name, shape) for tp in (2, 4) for name, shape in runs(tp)]
IDS = [f"tp{tp}-{name}-{b}x{s}+{p}" for tp, name, (b, s, p) in CASES]


def dims(tp: int, name: str) -> Dims:
    return (DIMS if tp == 2 else DIMS4)[name]


@pytest.mark.parametrize(("tp", "name", "shape"), CASES, ids=IDS)
def test_sharded_linear_macs_per_rank(request: pytest.FixtureRequest, tp: int, name: str,
                                      shape: tuple[int, int, int]) -> None:
    m, d = get(request, tp, name, shape), dims(tp, name)
    b, s, _ = shape
    t = b * s
    for layer in range(LAYERS):
        a = f"model.layers.{layer}.self_attn"
        want = {
            f"{a}.q_proj": t * H * (d.heads // tp * d.head_dim),  # colwise: this rank's heads' columns
            f"{a}.k_proj": t * H * (d.kv // tp * d.head_dim),
            f"{a}.v_proj": t * H * (d.kv // tp * d.head_dim),
            f"{a}.o_proj": t * (d.heads // tp * d.head_dim) * H,  # rowwise: this rank's heads' rows
        }
        if d.experts:  # every token's top-k experts, each with INTER / tp of its intermediate
            want[f"model.layers.{layer}.mlp.experts"] = t * d.top_k * 3 * H * (INTER // tp)
            want[f"model.layers.{layer}.mlp.gate"] = t * H * d.experts  # the router, replicated: whole
        else:
            for proj in ("gate_proj", "up_proj", "down_proj"):
                want[f"model.layers.{layer}.mlp.{proj}"] = t * H * (INTER // tp)
        for node, macs in want.items():
            assert m.per_rank(node, "macs") == [macs] * tp, node
    assert m.per_rank("lm_head", "macs") == [t * H * (V // tp)] * tp  # colwise over the vocabulary
    if (tp, name, shape) == (2, "llama-2-7b", (2, 3, 0)):  # the numbers, once
        assert m.per_rank("model.layers.0.self_attn.q_proj", "macs") == [12_288, 12_288]  # 6*64*(2*16)
        assert m.per_rank("model.layers.0.mlp.down_proj", "macs") == [18_432, 18_432]  # 6*48*64
        assert m.per_rank("lm_head", "macs") == [24_576, 24_576]  # 6*64*64


@pytest.mark.parametrize(("tp", "name", "shape"), CASES, ids=IDS)
def test_ranks_sum_to_the_single_process(request: pytest.FixtureRequest, tp: int, name: str,
                                         shape: tuple[int, int, int]) -> None:
    """Sharded nodes: every rank does 1/tp of the single process's MACs (and the sum is it); replicated nodes
    (norms, rotary, positions, residuals, the router) do exactly the single process's work on every rank."""
    m, d = get(request, tp, name, shape), dims(tp, name)
    sharded = re.compile(r".*(_proj|\.experts(\.act_fn)?|lm_head|:scores|:softmax|:context|:rope|:gate_mul"
                         r"|\.act_fn|\.q_norm|\.k_norm)$")
    replicated = re.compile(r".*(layernorm|model\.norm|rotary_emb|:positions|:residual|mlp\.gate)$")
    checked_sharded = checked_replicated = 0
    for node, single in m.single.items():
        if sharded.fullmatch(node):
            checked_sharded += 1
            assert m.per_rank(node, "macs") == [single.get("macs", 0) // tp] * tp, node
            assert m.summed(node, "macs") == single.get("macs", 0), node
        elif replicated.fullmatch(node):
            checked_replicated += 1
            for metric, value in single.items():
                assert m.per_rank(node, metric) == [value] * tp, (node, metric)
        else:
            assert node == "model.embed_tokens", node  # vocab-parallel: test_cache_heads_and_embedding_and_lm_head
    # sharded per layer: q k v o, rope scores softmax context (8), the MLP's gate up down act_fn gate_mul (5) or
    # mixtral's experts and experts.act_fn (2), qwen3's q_norm k_norm (2); + lm_head
    mlp = 2 if d.experts else 5
    norms = 2 if name == "qwen3-8b" else 0
    assert checked_sharded == LAYERS * (8 + mlp + norms) + 1
    # replicated per layer: 2 norms, the residual adds (+ mixtral's router); + model.norm, rotary_emb, positions
    assert checked_replicated == LAYERS * (3 + (1 if d.experts else 0)) + 3
    # every MAC of the single process is done once over the ranks, except the replicated router's (tp times)
    router = sum(m.single[f"model.layers.{i}.mlp.gate"]["macs"] for i in range(LAYERS)) if d.experts else 0
    assert sum(r.total("macs") for r in m.ranks) == sum(v.get("macs", 0) for v in m.single.values()) + (
        tp - 1) * router


@pytest.mark.parametrize(("tp", "name", "shape"), CASES, ids=IDS)
def test_row_parallel_reduction_moves_into_the_all_reduce(request: pytest.FixtureRequest, tp: int, name: str,
                                                          shape: tuple[int, int, int]) -> None:
    """A rowwise linear sums K/tp products per output on each rank (K/tp - 1 ADD); the all-reduce adds the
    tp partial sums: the (tp - 1) * T * H ADD the ranks do not do as aten ops."""
    m, d = get(request, tp, name, shape), dims(tp, name)
    t = shape[0] * shape[1]
    k = d.heads * d.head_dim
    node = "model.layers.1.self_attn.o_proj"
    assert m.per_rank(node, "add") == [t * H * (k // tp - 1)] * tp
    assert m.summed(node, "add") == m.single[node]["add"] - (tp - 1) * t * H
    assert m.per_rank(node, "act") == [t * H] * tp  # every rank writes the whole (partial) output


@pytest.mark.parametrize(("tp", "name", "shape"), CASES, ids=IDS)
def test_collectives_per_rank(request: pytest.FixtureRequest, tp: int, name: str,
                              shape: tuple[int, int, int]) -> None:
    """Per forward: the vocab-parallel embedding's all-reduce, 2 all-reduces per layer (after o_proj and after
    the MLP: down_proj, or mixtral's experts), and the lm_head's all-gather of the logits; T*H*4 bytes each
    all-reduce (fp32), T*V*4 the all-gather's output. Identical on every rank."""
    m, d = get(request, tp, name, shape), dims(tp, name)
    t = shape[0] * shape[1]
    mlp = "mlp.experts" if d.experts else "mlp.down_proj"
    want = [("all_reduce", "model.embed_tokens", t * H * FP32)]
    for layer in range(LAYERS):
        want += [("all_reduce", f"model.layers.{layer}.self_attn.o_proj", t * H * FP32),
                 ("all_reduce", f"model.layers.{layer}.{mlp}", t * H * FP32)]
    want.append(("all_gather", "lm_head", t * V * FP32))
    for rank in m.ranks:
        assert m.collective_rows(rank.rank) == want
        assert {(c.world, c.dtype) for c in rank.collectives} == {(tp, "float32")}
        gather = rank.collectives[-1]
        assert (gather.input_bytes, gather.output_bytes) == (t * V // tp * FP32, t * V * FP32)
        # (1 + 2 * layers) all-reduces of T*H*4 and one all-gather of T*V*4
        assert rank.collective_bytes() == (1 + 2 * LAYERS) * t * H * FP32 + t * V * FP32
    assert {c.op for c in m.ranks[0].collectives} == {
        "_c10d_functional.all_reduce",  # the embedding: DTensor's Partial -> Replicate redistribute
        "c10d.allreduce_",  # rowwise linears and the MoE experts: dist.all_reduce on the local output
        "_c10d_functional.all_gather_into_tensor",  # lm_head: DTensor's Shard(-1) -> Replicate
    }
    if (tp, name, shape) == (2, "llama-2-7b", (2, 3, 0)):
        assert m.ranks[0].collective_bytes("all_reduce") == 5 * 1_536  # 5 x 6*64*4
        assert m.ranks[0].collective_bytes("all_gather") == 3_072  # 6*128*4


@pytest.mark.parametrize(("tp", "name", "shape"), CASES, ids=IDS)
def test_params_per_rank(request: pytest.FixtureRequest, tp: int, name: str, shape: tuple[int, int, int]) -> None:
    m, d = get(request, tp, name, shape), dims(tp, name)
    q, kv = d.heads * d.head_dim, d.kv * d.head_dim
    attention = (H * q + 2 * H * kv + q * H) // tp  # q, k, v colwise, o rowwise: all split
    mlp = d.experts * 3 * H * INTER // tp if d.experts else 3 * H * INTER // tp  # experts: all of them, INTER / tp each
    replicated_layer = 2 * H + (2 * d.head_dim if name == "qwen3-8b" else 0) + H * d.experts  # norms, router
    head = 0 if d.tied else V * H // tp
    per_rank = V * H // tp + LAYERS * (attention + mlp + replicated_layer) + H + head  # embed, layers, norm, head
    assert [r.params for r in m.ranks] == [per_rank] * tp
    replicated = LAYERS * replicated_layer + H
    assert sum(r.params for r in m.ranks) == m.single_params + (tp - 1) * replicated
    assert m.per_rank("model.embed_tokens", "params") == [V * H // tp] * tp  # vocab-parallel rows
    assert m.per_rank("lm_head", "params") == [head] * tp
    if (tp, name) == (2, "llama-2-7b"):
        # 128*64/2 + 2*((4096 + 2*4096 + 4096)/2 + 3*64*96/2 + 2*64) + 64 + 128*64/2
        assert m.ranks[0].params == 43_328 and m.single_params == 86_336
    if (tp, name) == (2, "mixtral-8x7b"):  # 4 experts x 3 x 64 x 48 per rank and layer; router 64 x 4 whole
        assert m.per_rank("model.layers.0.mlp.experts", "params") == [36_864, 36_864]
        assert m.per_rank("model.layers.0.mlp.gate", "params") == [256, 256]


@pytest.mark.parametrize(("tp", "name", "shape"), CASES, ids=IDS)
def test_cache_heads_and_embedding_and_lm_head(request: pytest.FixtureRequest, tp: int, name: str,
                                               shape: tuple[int, int, int]) -> None:
    m, d = get(request, tp, name, shape), dims(tp, name)
    b, s, p = shape
    t = b * s
    for rank in m.ranks:  # keys + values of this rank's KV heads
        assert rank.cache_by_layer == {layer: 2 * b * (s + p) * (d.kv // tp) * d.head_dim for layer in range(LAYERS)}
        assert rank.unknown_ops == [] and rank.unattributed_ops == []
    # the masked lookup writes the whole B x S x H (zero rows for ids outside this rank's vocabulary slice)
    assert m.per_rank("model.embed_tokens", "act") == [t * H] * tp
    assert m.per_rank("lm_head", "act") == [t * V // tp] * tp  # this rank's logit columns, before the gather
    scores = m.single["model.layers.0.self_attn:scores"]
    assert m.per_rank("model.layers.0.self_attn:scores", "act") == [scores["act"] // tp] * tp  # heads / tp
    assert m.max_logit_diff < 1e-5  # the sharded run computes the single process's logits


def test_mixtral_experts_are_split_on_the_intermediate_dim(tp2: dict) -> None:
    """moe_tp_experts: every rank keeps all 4 experts with half the intermediate (packed gate_up colwise,
    down rowwise), runs every token's top-2 (the replicated router picks them on every rank) and all-reduces
    the experts' output."""
    m = tp2[("mixtral-8x7b", (2, 3, 0))]
    t, k, half = 6, 2, INTER // 2
    experts = "model.layers.0.mlp.experts"
    assert m.tp_plan[f"{experts}.gate_up_proj"] == "packed_colwise"
    assert m.tp_plan[f"{experts}.down_proj"] == "rowwise"
    assert m.tp_plan[experts] == "moe_tp_experts"
    # gate_up out T*k*2*INTER/2, the gating product T*k*INTER/2, down out T*k*H, routing weights T*k*H, top-k sum T*H
    assert m.per_rank(experts, "act") == [t * k * 2 * half + t * k * half + 2 * t * k * H + t * H] * 2 == [3_648] * 2
    assert m.per_rank(f"{experts}.act_fn", "act") == [t * k * half] * 2 == [576] * 2


def test_plan_of_each_family(tp2: dict) -> None:
    """What transformers applied, module by module (layer 0; layer 1 alike)."""
    dense = {"model.embed_tokens": "embedding_rowwise",  # added by transformers to every base model plan
             **{f"model.layers.0.self_attn.{p}": "colwise" for p in ("q_proj", "k_proj", "v_proj")},
             "model.layers.0.self_attn.o_proj": "rowwise", "lm_head": "colwise_gather_output"}
    mlp = {**{f"model.layers.0.mlp.{p}": "colwise" for p in ("gate_proj", "up_proj")},
           "model.layers.0.mlp.down_proj": "rowwise"}
    norms = {"model.layers.0.self_attn.q_norm": "replicated_with_grad_allreduce",
             "model.layers.0.self_attn.k_norm": "replicated_with_grad_allreduce"}
    experts = {"model.layers.0.mlp.experts": "moe_tp_experts",  # a module, and its two 3-d parameters:
               "model.layers.0.mlp.experts.gate_up_proj": "packed_colwise",
               "model.layers.0.mlp.experts.down_proj": "rowwise"}
    for name, want in (("llama-2-7b", {**dense, **mlp}), ("qwen3-8b", {**dense, **mlp, **norms}),
                       ("mixtral-8x7b", {**dense, **experts})):
        plan = tp2[(name, (2, 3, 0))].tp_plan
        got = {k: v for k, v in plan.items() if ".layers.1." not in k and not k.endswith(".weight")}
        assert got == want, name


def test_diff_against_a_per_rank_prediction(tp2: dict) -> None:
    """``diff`` compares a prediction (node path -> metric -> count) with a rank, as a parallel plan's will be:
    the single-process run is exactly the single-device graph (what validate checks), and rank 0 differs from
    that graph on exactly the sharded nodes."""
    from llm_profiler.validation.compare import predicted_by_node
    from llm_profiler.validation.reference import reference

    m = tp2[("llama-2-7b", (2, 3, 0))]
    graph = predicted_by_node(reference("llama-2-7b", tiny=True).profile, 2, 3, 0)
    assert m.diff(-1, graph) == []
    rows = m.diff(0, graph)
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn:rope", "self_attn:scores",
                 "self_attn:softmax", "self_attn:context", "self_attn.o_proj", "mlp.gate_proj", "mlp.act_fn",
                 "mlp.up_proj", "mlp:gate_mul", "mlp.down_proj"]
    sharded = {f"model.layers.{i}.{n}" for i in range(LAYERS) for n in per_layer} | {"model.embed_tokens", "lm_head"}
    assert {node for node, *_ in rows} == sharded
    assert ("model.layers.0.self_attn.q_proj", "macs", 24_576, 12_288) in rows  # 6*64*64 whole, half per rank
    assert ("model.embed_tokens", "params", 8_192, 4_096) in rows  # 128*64 whole, 64 vocabulary rows per rank
    assert [r for r in rows if r[0] == "model.embed_tokens"] == [("model.embed_tokens", "params", 8_192, 4_096)]


def test_refusals() -> None:
    with pytest.raises(ArgumentError, match="world_size 3 must divide num_attention_heads"):
        measure_tensor_parallel("llama-2-7b", 3)
    with pytest.raises(ArgumentError, match="world_size must be an integer >= 2"):
        measure_tensor_parallel("llama-2-7b", 1)
    with pytest.raises(ArgumentError, match="world_size 4 must divide num_key_value_heads \\(2\\)"):
        measure_tensor_parallel("qwen3-8b", 4)
    with pytest.raises(ArgumentError, match="tiny must be True"):
        measure_tensor_parallel("llama-2-7b", 2, tiny=False)
    with pytest.raises(ArgumentError, match="start_method must be 'fork', 'spawn' or None"):
        measure_tensor_parallel("llama-2-7b", 2, start_method="forkserver")


@pytest.mark.skipif(os.environ.get("LLM_PROFILER_TP_SPAWN") != "1",
                    reason="fresh interpreters take about a minute to start here: LLM_PROFILER_TP_SPAWN=1 runs it")
def test_spawned_ranks_measure_the_same(tp2: dict) -> None:
    """Fresh interpreters (spawn) count what the forked ranks count (fork is the default: faster to start)."""
    spawned = measure_tensor_parallel("llama-2-7b", 2, 2, 1, 3, start_method="spawn")
    forked = tp2[("llama-2-7b", (2, 1, 3))]
    assert [r.nodes for r in spawned.ranks] == [r.nodes for r in forked.ranks]
    assert [r.collectives for r in spawned.ranks] == [r.collectives for r in forked.ranks]
