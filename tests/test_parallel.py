"""Parallel plans: per-rank counts and weights from the facts, collectives and their payloads, the comm model,
the pipeline bubble, expert placement, fit under a plan and the plan search (docs/parallel.md).

Llama-3.1-70B (its config.json): hidden 8192, 80 layers, 64 heads, 8 KV heads, head_dim 128, intermediate
28672, vocabulary 128256, untied embeddings. Mixtral-8x7B: hidden 4096, 32 layers, 32 heads, 8 KV heads,
intermediate 14336, 8 experts top-2, vocabulary 32000.
"""

from __future__ import annotations

import json

import pytest

from llm_profiler.cli import main
from llm_profiler.errors import QueryError
from llm_profiler.hardware.systems import get_system
from llm_profiler.memory import largest_batch
from llm_profiler.parallel import PlanError, make_plan, per_rank
from llm_profiler.parallel.comm import bubble_fraction, collective_s, link_for, ring_all_reduce_s
from llm_profiler.parallel.search import search_plans
from llm_profiler.parallel.shard import rank_model, stage_layers
from llm_profiler.perf import roofline
from llm_profiler.profile import profile_model

L70 = "llama-3.1-70b"
H, LAYERS, INTER, V = 8192, 80, 28672, 128256

# per layer, the sharded matrices: q, o (8192 x 8192), k, v (1024 x 8192), gate, up, down (8192 x 28672)
LAYER_SHARDED = 2 * H * H + 2 * 1024 * H + 3 * H * INTER  # 855,638,016
SHARDED = LAYERS * LAYER_SHARDED + 2 * V * H  # + embedding and lm_head (vocab-parallel): 70,552,387,584
REPLICATED = (2 * LAYERS + 1) * H  # the 161 RMSNorm scales: 1,318,912


def test_llama70b_tp8_per_rank_params_and_weight_bytes() -> None:
    assert SHARDED == 70_552_387_584 and REPLICATED == 1_318_912
    assert SHARDED + REPLICATED == profile_model(L70).count("params", "model")  # 70,553,706,496
    rank = rank_model(profile_model(L70), make_plan(tp=8))
    assert rank.count("params", "model") == SHARDED // 8 + REPLICATED == 8_820_367_360
    r = roofline(L70, phase="decode", plan={"tp": 8}, system="dgx-h100")
    assert r.parallel is not None
    # bf16: an eighth of the sharded weights plus the replicated norms, 2 bytes each
    assert r.parallel.weight_bytes_sharded == 2 * SHARDED // 8 == 17_638_096_896
    assert r.parallel.weight_bytes_replicated == 2 * REPLICATED == 2_637_824
    assert r.parallel.weight_bytes_per_rank == 17_640_734_720


def test_llama70b_tp8_per_rank_node_counts() -> None:
    """B=2, S=3, P=5 on one of 8 ranks: 8 of 64 heads, 1 of 8 KV heads, 3584 of 28672 features."""
    p = per_rank(L70, make_plan(tp=8), batch=2, seq=3, past=5)
    n = {x.path: x for x in p.nodes}
    rows = 2 * 3
    q = n["model.layers.0.self_attn.q_proj"]
    assert q.rule == "column" and q.counts["macs"] == rows * 1024 * H and q.counts["params"] == 1024 * H
    assert q.counts["add"] == rows * 1024 * (H - 1) and q.counts["act"] == rows * 1024
    k = n["model.layers.0.self_attn.k_proj"]
    assert k.counts["macs"] == rows * 128 * H  # one KV head of 128
    o = n["model.layers.0.self_attn.o_proj"]  # row-parallel: k = 8192 / 8 = 1024, the output whole (partial sums)
    assert o.rule == "row" and o.counts["macs"] == rows * H * 1024 and o.counts["add"] == rows * H * (1024 - 1)
    assert o.counts["act"] == rows * H
    scores = n["model.layers.0.self_attn:scores"]  # 8 heads x S x (P + S) keys x 128
    assert scores.counts["macs"] == 2 * 8 * 3 * (5 + 3) * 128
    assert n["model.layers.0.self_attn:kv_cache"].counts["cache"] == 2 * 2 * 1 * 128 * (5 + 3)  # K+V, B, 1 head
    assert n["model.layers.0.mlp.act_fn"].counts["act"] == rows * INTER // 8
    assert n["model.layers.0.input_layernorm"].rule == "replicated"
    assert n["lm_head"].counts["macs"] == rows * H * (V // 8)  # 128256 = 8 x 16032
    # every matmul of the layers is split evenly: 8 ranks' MACs are the model's
    full = profile_model(L70)
    layers_rank = sum(x.counts["macs"] for x in p.nodes if ".layers." in x.path)
    assert 8 * layers_rank == full.count("macs", "model.layers*", 2, 3, 5)


def test_llama70b_tp8_collectives_and_payloads() -> None:
    p = per_rank(L70, make_plan(tp=8), batch=4, seq=16, past=0)
    per_layer = [c for c in p.collectives if c.after.startswith("model.layers.0.")]
    # Megatron: 2 all-reduces per layer (after o_proj and down_proj), each B*S*hidden*2 bytes
    assert [(c.kind, c.after) for c in per_layer] == [("all_reduce", "model.layers.0.self_attn.o_proj"),
                                                       ("all_reduce", "model.layers.0.mlp.down_proj")]
    assert all(c.payload_bytes == 4 * 16 * 8192 * 2 == 1_048_576 for c in per_layer)
    kinds = [c.kind for c in p.collectives]
    assert kinds.count("all_reduce") == 2 * 80 + 1  # + the vocab-parallel embedding's
    gather = p.collectives[-1]  # lm_head on every position (a plain forward): B*S x vocab logits gathered
    assert (gather.kind, gather.after, gather.payload_bytes) == ("all_gather", "lm_head", 4 * 16 * V * 2)


def test_roofline_cli_tp8_decode_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roofline", L70, "--system", "dgx-h100", "--tp", "8", "--phase", "decode", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    par = out["parallel"]
    assert out["schema_version"] == 3 and par["plan_name"] == "tp=8" and par["weight_bytes_per_rank"] == 17_640_734_720
    layer = [c for c in par["collectives"] if c["site"] in ("attention", "mlp")]
    assert [(c["kind"], c["count"], c["payload_bytes"]) for c in layer] == [("all_reduce", 80, 16384)] * 2  # 1*1*8192*2
    # ring all-reduce of 16384 bytes among 8 over NVLink 4 (450 GB/s per direction, 0.47 us per hop, systems.py)
    t = 2 * 7 / 8 * 16384 / 450e9 + 2 * 7 * 0.47e-6
    assert layer[0]["time_s"] == pytest.approx(t, rel=1e-12) and t == pytest.approx(6.6437e-6, rel=1e-4)
    comm = sum(c["total_s"] for c in par["collectives"])
    assert par["communication_s"] == pytest.approx(comm)
    assert out["latency_s"] == par["latency_s"] == pytest.approx(par["compute_s"] + par["memory_s"] + comm)
    assert comm > 0.001  # 161 all-reduces of ~6.6 us and the logits' all-gather


def test_roofline_text_shows_split(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roofline", L70, "--system", "dgx-h100", "--tp", "8", "--phase", "decode"]) == 0
    text = capsys.readouterr().out
    assert "split        compute" in text and "communication" in text and "bubble" in text
    assert "80 x all_reduce" in text and "per rank     weights 17.6 GB" in text


def test_comm_model() -> None:
    nv = link_for(get_system("dgx-h100"), 8)
    assert (nv.bandwidth, nv.latency_s, nv.inter_node) == (450e9, pytest.approx(0.47e-6), False)
    assert collective_s("all_reduce", 1e6, 8, nv) == ring_all_reduce_s(1e6, 8, 450e9, 0.47e-6)
    assert collective_s("all_gather", 1e6, 8, nv) == pytest.approx(7 / 8 * 1e6 / 450e9 + 7 * 0.47e-6)
    assert collective_s("send_recv", 1e6, 2, nv) == pytest.approx(1e6 / 450e9 + 0.47e-6)
    ib = link_for(get_system("dgx-h100"), 16)  # two nodes: 8 x 400 Gb/s = 400 GB/s per node, 50 GB/s per GPU
    assert (ib.bandwidth, ib.latency_s, ib.inter_node) == (50e9, pytest.approx(2.7e-6), True)
    # double binary tree: 2 * size / bw + 2 * ceil(log2 16) * lat
    assert collective_s("all_reduce", 1e6, 16, ib) == pytest.approx(2 * 1e6 / 50e9 + 2 * 4 * 2.7e-6)
    assert collective_s("all_reduce", 1e6, 1, nv) == 0.0


def test_pipeline_bubble_and_stages() -> None:
    assert bubble_fraction(4, 4) == 3 / 7 and bubble_fraction(1, 8) == 0
    assert [len(r) for r in stage_layers(80, 3)] == [27, 27, 26]
    r = roofline(L70, phase="prefill", batch=8, seq=512, plan={"tp": 2, "pp": 4, "micro_batches": 4}, system="dgx-h100")
    par = r.parallel
    assert par is not None and len(par.stage_s) == 4 and par.rank_batch == 2
    step = max(par.stage_s)
    assert par.bubble_s == pytest.approx(3 * step)  # (pp - 1) stage-times
    assert par.latency_s == pytest.approx((4 + 4 - 1) * step)
    assert par.bubble_s / par.latency_s == pytest.approx(bubble_fraction(4, 4))
    sends = [c for c in par.collectives if c.kind == "send_recv"]
    assert len(sends) == 3 and all(c.payload_bytes == 2 * 512 * 8192 * 2 for c in sends)  # micro-batch B*S*h*2


def test_expert_placement_mixtral_and_deepseek() -> None:
    one = 3 * 4096 * 14336  # Mixtral: gate_up (2 x 14336 x 4096) + down (4096 x 14336)
    p = per_rank("mixtral-8x7b", make_plan(dp=2, ep=2), batch=2, seq=4)
    experts = {x.path: x for x in p.nodes}["model.layers.0.mlp.experts"]
    assert experts.rule == "experts" and experts.counts["params"] == 4 * one  # 8 experts / ep 2
    # each rank runs its own tokens' pairs: B/dp * S * top_k pairs of one expert's MACs
    assert experts.counts["macs"] == 1 * 4 * 2 * one
    a2a = [c for c in p.collectives if c.kind == "all_to_all"]
    assert len(a2a) == 2 * 32 and all(c.payload_bytes == 1 * 4 * 2 * 4096 * 2 for c in a2a)  # dispatch + combine
    p = per_rank("mixtral-8x7b", make_plan(tp=2), batch=1, seq=4)
    experts = {x.path: x for x in p.nodes}["model.layers.0.mlp.experts"]
    assert experts.counts["params"] == 8 * one // 2  # moe_tp_experts: every expert, half its intermediate
    assert experts.counts["macs"] == 4 * 2 * one // 2
    ds = rank_model(profile_model("deepseek-v3"), make_plan(dp=8, ep=8))
    node = next(n for n in ds.nodes if n.path == "model.layers.3.mlp.experts")
    assert node.facts.weights[0].shape == (256 // 8, 3 * 7168 * 2048)  # 32 of 256 experts per rank


def test_bad_plans_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PlanError, match=r"tp=3 does not divide the 64 attention heads .*allowed tp: 1, 2, 4, 8, 16, 32, 64"):
        roofline(L70, phase="decode", plan={"tp": 3}, system="dgx-h100")
    assert main(["roofline", L70, "--system", "dgx-h100", "--tp", "3", "--phase", "decode"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(PlanError, match="ep=3 does not divide the 8 routed experts"):
        per_rank("mixtral-8x7b", make_plan(dp=3, ep=3), 3, 1)
    with pytest.raises(PlanError, match="has no routed experts"):
        per_rank(L70, make_plan(dp=2, ep=2), 2, 1)
    with pytest.raises(PlanError, match="pp=81 exceeds the 80 layers"):
        per_rank(L70, make_plan(pp=81), 1, 1)
    with pytest.raises(PlanError, match="ep=4 must divide dp=2"):
        make_plan(dp=2, ep=4)
    with pytest.raises(PlanError, match="tp: Input should be greater than or equal to 1 \\(got 0\\)"):
        make_plan(tp=0)
    with pytest.raises(PlanError, match="batch 3 is not divisible by dp x micro_batches = 2 x 1"):
        per_rank(L70, make_plan(dp=2), 3, 1)
    with pytest.raises(PlanError, match="sp .* needs tp > 1"):
        make_plan(sp=True)


def test_kv_heads_replicated_beyond_kv_count() -> None:
    p = per_rank(L70, make_plan(tp=16), batch=1, seq=2)
    assert any("replicated on 2 ranks" in note for note in p.notes)
    n = {x.path: x for x in p.nodes}
    assert n["model.layers.0.self_attn.k_proj"].counts["params"] == 128 * H  # one whole KV head
    assert n["model.layers.0.self_attn.q_proj"].counts["params"] == 4 * 128 * H  # 64 / 16 heads


def test_sequence_parallel_collectives() -> None:
    p = per_rank(L70, make_plan(tp=8, sp=True), batch=1, seq=8)
    layer0 = [c.kind for c in p.collectives if c.after.startswith("model.layers.0.")]
    assert layer0 == ["reduce_scatter", "all_gather"] * 2  # instead of the two all-reduces
    norm = {x.path: x for x in p.nodes}["model.layers.0.input_layernorm"]
    assert norm.rule == "tokens" and norm.counts["sqrt"] == 8 // 8  # one rsqrt per token, S/tp tokens


def test_fit_names_the_smallest_plan(capsys: pytest.CaptureFixture[str]) -> None:
    # Mixtral-8x7B: 46,702,792,704 params = 93.4 GB in bf16 > 80 GiB; tp=2 holds 43.5 GiB per rank
    assert main(["fit", "mixtral-8x7b", "--device", "a100-80gb"]) == 0
    text = capsys.readouterr().out
    assert "largest batch = 0" in text and "smallest plan that fits: tp=2" in text
    r = largest_batch("mixtral-8x7b", "a100-80gb")
    assert r.value == 0 and r.smallest_plan == "tp=2"
    r2 = largest_batch("mixtral-8x7b", "a100-80gb", plan={"tp": 2})
    assert r2.plan == "tp=2" and r2.value > 0 and r2.at_value is not None
    assert r2.at_value.weights < 47 * 10**9  # half the sharded weights + replicated norms, router, ...
    r3 = largest_batch(L70, system="dgx-h100", plan={"tp": 4, "dp": 2})
    assert r3.value % 2 == 0  # dp x a rank's batch


def test_plan_search_ranks_by_latency_and_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    s = search_plans(L70, "dgx-h100", "decode", batch=8, top=3)
    assert s.plans[0].plan == "tp=8" and all(p.fits for p in s.plans)
    assert [p.latency_s for p in s.plans] == sorted(p.latency_s for p in s.plans)
    t = search_plans("mixtral-8x7b", "hgx-a100-8", "prefill", batch=64, seq=512, objective="throughput", top=4)
    assert [p.tokens_per_s for p in t.plans] == sorted((p.tokens_per_s for p in t.plans), reverse=True)
    assert main(["plan", L70, "--system", "dgx-h100", "--batch", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plans"][0]["plan"] == "tp=8"
    with pytest.raises(PlanError, match="objective must be one of latency, throughput"):
        search_plans(L70, "dgx-h100", objective="cost")


def test_family_outside_the_tp_table_is_refused() -> None:
    """GPT-2's fused c_attn / c_proj are not in rules.STYLES: tp > 1 says so instead of guessing."""
    with pytest.raises(PlanError, match=r"tp=2: the linear modules of .*gpt2.* allowed tp: 1"):
        per_rank("gpt2", make_plan(tp=2), 1, 1)
    assert per_rank("gpt2", make_plan(pp=2), 1, 1).stage == 0  # pipeline stages need no TP table


def test_generation_under_a_plan() -> None:
    """A generation = the prefill, then N - 1 decode steps each through the plan (communication per step)."""
    kw = {"batch": 8, "seq": 512, "plan": {"tp": 8}, "system": "dgx-h100"}
    pre = roofline(L70, phase="prefill", **kw)
    one = roofline(L70, phase="generate", new_tokens=1, **kw)
    assert one.latency_s == pre.latency_s and one.tpot_s is None  # no decode step
    gen = roofline(L70, phase="generate", new_tokens=64, **kw)
    assert gen.ttft_s == pre.latency_s and gen.tokens == 8 * 64
    assert gen.latency_s == pytest.approx(gen.ttft_s + 63 * gen.tpot_s)
    first = roofline(L70, phase="decode", batch=8, past=512, plan={"tp": 8}, system="dgx-h100")
    last = roofline(L70, phase="decode", batch=8, past=512 + 62, plan={"tp": 8}, system="dgx-h100")
    assert first.latency_s <= gen.tpot_s <= last.latency_s  # the mean step lies between the first and the last
    par = gen.parallel
    assert par is not None and par.latency_s == pytest.approx(par.compute_s + par.memory_s + par.communication_s
                                                              + par.bubble_s)
    assert par.communication_s == pytest.approx(pre.parallel.communication_s + 63 * first.parallel.communication_s)


def test_new_systems_by_hand() -> None:
    b300 = get_system("DGX B300")
    assert b300.device.name == "B300" and b300.device_count == 8 and b300.intra_node.bandwidth == 900e9
    assert b300.inter_node_bandwidth_per_device == 800e9 / 8  # one 800 Gb/s ConnectX-8 per GPU = 100 GB/s
    for name, device, per_direction in (("mi325x-8", "MI325X", 448e9), ("mi355x-8", "MI355X", 537.6e9),
                                        ("hgx-h20-8", "H20", 450e9)):
        s = get_system(name)
        assert (s.device.name, s.intra_node.bandwidth, s.inter_node) == (device, per_direction, None)
        with pytest.raises(QueryError, match="no inter-node network"):
            link_for(s, 16)


def test_context_parallel_prefill() -> None:
    """cp=4 at B=2, S=16, P=8: each rank runs 4 of the 16 prompt tokens; K / V of all 24 tokens gathered."""
    split = per_rank(L70, make_plan(cp=4), batch=2, seq=16, past=8)
    whole = per_rank(L70, make_plan(), batch=2, seq=16, past=8)
    for a, b in zip(split.nodes, whole.nodes):
        if a.kind != "lm_head":  # every node's work split four ways (eager scores: 4 of 16 queries x all keys)
            assert {k: 4 * v for k, v in a.counts.items() if k not in ("params", "active_params")} == \
                {k: v for k, v in b.counts.items() if k not in ("params", "active_params")}, a.path
        assert a.counts.get("params") == b.counts.get("params")  # weights whole on every rank
    gathers = [c for c in split.collectives if c.group == "cp"]
    # one per layer: K and V of 8 KV heads x 128 x (8 + 16) tokens x B=2, bf16
    assert len(gathers) == 80 and all(c.payload_bytes == 2 * 8 * 256 * 24 * 2 == 196_608 for c in gathers)
    with pytest.raises(PlanError, match="seq 10 is not divisible by cp=4"):
        per_rank(L70, make_plan(cp=4), batch=1, seq=10)
    with pytest.raises(PlanError, match="cp=2 splits a prefill's prompt"):
        roofline(L70, phase="decode", plan={"cp": 2, "tp": 4}, system="dgx-h100")
    r = roofline(L70, phase="prefill", seq=32768, plan={"tp": 8, "cp": 2}, system="dgx-h100")
    assert r.parallel is not None and r.parallel.devices == 16
    cp_rows = [c for c in r.parallel.collectives if c.group == "cp"]
    assert cp_rows[0].link.startswith("InfiniBand") and cp_rows[0].payload_bytes == 1 * 256 * 32768 * 2  # 1 KV head


def test_rank_activations_use_the_rank_widths() -> None:
    """Peak activations per rank under tp=8 (vllm: one 8192-token chunk): the MLP's residual and normed input
    (2 x 8192 x 8192) and its act(gate), up and product at 28672 / 8 = 3584 features (3 x 8192 x 3584), bf16."""
    r = largest_batch(L70, system="dgx-h100", plan={"tp": 8}, context=8192)
    assert r.at_value is not None
    assert r.at_value.activations == 2 * 8192 * 8192 * 2 + 3 * 8192 * 3584 * 2 == 444_596_224
    assert r.at_value.weights == 17_640_734_720


# --- linear-attention and state-space mixers under tp (vLLM's sharding) ---------------------------------


def test_gated_deltanet_split_by_heads_under_tp4() -> None:
    """Qwen3-Next-80B-A3B: 16 key heads and 32 value heads of 128; conv over q, k, v: 2*16*128 + 32*128 = 8192
    channels. tp=4 gives each rank 4 key / 8 value heads: in_proj_qkvz (2*2048 + 2*4096) / 4 = 3072 rows,
    in_proj_ba 2*32 / 4 = 16, conv 8192 / 4 = 2048 channels (kernel 4), A_log / dt_bias 32 / 4 = 8, out_proj
    4096 / 4 = 1024 columns; the output norm's weight (head_dim 128, shared by every head) stays whole."""
    model = profile_model("qwen3-next-80b-a3b")
    rank = rank_model(model, make_plan(tp=4))
    weights = {n.path.rsplit(".", 1)[-1].rsplit(":", 1)[-1]: [w.shape for w in n.facts.weights]
               for n in rank.nodes if n.layer == 0 and n.facts.weights}
    assert weights["in_proj_qkvz"] == [(3072, 2048)] and weights["in_proj_ba"] == [(16, 2048)]
    assert weights["conv1d"] == [(2048, 4)] and weights["gates"] == [(8,), (8,)]
    assert weights["norm"] == [(128,)] and weights["out_proj"] == [(2048, 1024)]
    # the states a rank holds: conv B*2048*4, recurrent B*8*128*128 (a quarter of the whole layer's)
    assert rank.count("cache", "model.layers.0", 2, 3, 0) == 2 * 2048 * 4 + 2 * 8 * 128 * 128
    assert model.count("cache", "model.layers.0", 2, 3, 0) == 4 * rank.count("cache", "model.layers.0", 2, 3, 0)
    # the delta rule's arithmetic is per head: a quarter on each rank
    node = "model.layers.0.linear_attn:delta_rule"
    assert 4 * rank.count("mult", node, 2, 70, 5) == model.count("mult", node, 2, 70, 5)


def test_linear_mixers_end_their_block_with_an_all_reduce() -> None:
    """48 layers, each ending its mixer (36 DeltaNets' out_proj, 12 attentions' o_proj) and its MoE with an
    all-reduce, plus the embedding's and the logits all-gather: 1 + 96 + 1 collectives."""
    from llm_profiler.parallel.collectives import collectives

    model = profile_model("qwen3-next-80b-a3b")
    found = collectives(model.graph, make_plan(tp=4), act_bytes=2)
    assert len(found) == 98
    assert [(c.kind, c.after) for c in found[1:3]] == [("all_reduce", "model.layers.0.linear_attn.out_proj"),
                                                       ("all_reduce", "model.layers.0.mlp.experts")]
    # B*S*hidden*2 bytes at (2, 3, 0): 2*3*2048*2
    assert found[1].bytes_at(2, 3, 0) == 24_576


def test_mamba2_split_by_heads_and_groups() -> None:
    """Nemotron-H-56B's Mamba-2: 256 heads of 64 (inner 16384), 8 groups of state 256, conv 4; tp=8: in_proj
    (2*16384 + 2*8*256 + 256) / 8 = 4640 rows, conv (16384 + 2*8*256) / 8 = 2560 channels, A_log / D /
    dt_bias 256 / 8 = 32, the gated norm 16384 / 8 = 2048, out_proj 16384 / 8 = 2048 columns; per-rank params
    of the mixer: (37120*8192 + 20480*5 + 768 + 16384 + 8192*16384) / 8."""
    rank = rank_model(profile_model("nemotron-h-56b"), make_plan(tp=8))
    mixer = next(n.layer for n in rank.nodes if n.path.endswith(".mixer.in_proj"))
    shapes = {n.path.rsplit(".", 1)[-1]: [w.shape for w in n.facts.weights]
              for n in rank.nodes if n.layer == mixer and n.facts.weights}
    assert shapes["in_proj"] == [(4640, 8192)] and shapes["out_proj"] == [(8192, 2048)]
    assert shapes["norm"] == [(2048,)]
    assert rank.count("params", f"model.layers.{mixer}.mixer", 1, 1, 0) == (
        37120 * 8192 + 20480 * 5 + 768 + 16384 + 8192 * 16384) // 8
    assert shapes["conv1d"] == [(2560, 1, 4), (2560,)]  # depthwise weight and bias


def test_linear_mixers_outside_the_model_are_refused() -> None:
    with pytest.raises(PlanError, match=r"tp=32 does not divide the 16 linear-attention key heads .* allowed tp: "
                                        r"1, 2, 4, 8, 16"):
        per_rank("qwen3-next-80b-a3b", make_plan(tp=32), 1, 1)
    with pytest.raises(PlanError, match=r"tp=3 does not divide the 8192 Mamba channels .* allowed tp: 1, 2, 4"):
        per_rank("jamba-1.5-mini", make_plan(tp=3), 1, 1)
    from pathlib import Path

    bamba = json.loads((Path(__file__).parent / "family_configs" / "transformers--BambaConfig-defaults.json")
                       .read_text())  # BambaConfig's defaults: one B / C group
    with pytest.raises(PlanError, match=r"tp=2 does not divide the 1 Mamba-2 B / C groups .* allowed tp: 1"):
        per_rank(bamba, make_plan(tp=2), 1, 1)


def test_hybrid_fit_names_a_tensor_parallel_plan() -> None:
    # Qwen3-Next-80B-A3B: 79,674,391,296 params = 148.4 GiB in bf16 > 80 GiB; with its DeltaNet layers split by
    # heads, tp=2 holds half of every sharded weight per rank (the search tries tp before pp)
    r = largest_batch("qwen3-next-80b-a3b", "h100")
    assert r.value == 0 and r.smallest_plan == "tp=2"


def test_pure_state_space_stack_under_tp() -> None:
    """Mamba2Config's defaults (Mamba-Codestral-7B's dims: 128 heads, 8 groups): no attention, so its head
    fields (placeholders) are not checked; every mixer ends with out_proj's all-reduce."""
    from pathlib import Path

    config = json.loads((Path(__file__).parent / "family_configs" / "transformers--Mamba2Config-defaults.json")
                        .read_text())
    rank = per_rank(config, make_plan(tp=8), 1, 1)
    assert rank.stage == 0
    model = rank_model(profile_model(config), make_plan(tp=8))
    in_proj = next(n for n in model.nodes if n.path.endswith("layers.0.mixer.in_proj"))
    assert [w.shape for w in in_proj.facts.weights] == [((2 * 8192 + 2 * 8 * 128 + 128) // 8, 4096)]


def test_mamba1_split_by_channels_with_x_proj_all_reduced() -> None:
    """Jamba-1.5-Mini's Mamba-1 (inner 8192, state 16, dt rank 256) under tp=2, as vLLM's MambaMixer: in_proj
    2*8192 / 2 = 8192 rows, conv 8192 / 2 = 4096 channels, A_log + D (8192*16 + 8192) / 2, dt_proj 8192 / 2 rows;
    x_proj row-parallel (288 x 4096), its 256 + 2*16 = 288 outputs all-reduced mid-block (B*S*288*2 bytes);
    the dt / B / C norms run whole on every rank."""
    from llm_profiler.parallel.collectives import collectives

    model = profile_model("jamba-1.5-mini")
    rank = rank_model(model, make_plan(tp=2))
    shapes = {n.path.rsplit(".", 1)[-1]: [w.shape for w in n.facts.weights]
              for n in rank.nodes if n.layer == 0 and n.facts.weights}
    assert shapes["in_proj"] == [(8192, 4096)] and shapes["conv1d"] == [(4096, 1, 4), (4096,)]
    assert shapes["mamba"] == [((8192 * 16 + 8192) // 2,)] and shapes["dt_proj"] == [(4096, 256), (4096,)]
    assert shapes["x_proj"] == [(288, 4096)] and shapes["dt_layernorm"] == [(256,)]
    found = collectives(model.graph, make_plan(tp=2), act_bytes=2)
    assert [(c.after, c.bytes_at(1, 10, 0)) for c in found[1:3]] == [
        ("model.layers.0.mamba.x_proj", 10 * 288 * 2), ("model.layers.0.mamba.out_proj", 10 * 4096 * 2)]
    # the conv and SSM states a rank holds: B*4096*4 + B*4096*16
    assert rank.count("cache", "model.layers.0", 1, 10, 0) == 4096 * 4 + 4096 * 16


def test_logit_scalings_split_with_the_vocabulary() -> None:
    """An elementwise op on the logits (granite's / cohere's scaling, a LM_HEAD node without a matmul) runs on
    each rank's vocabulary slice; minicpm3's scaling of the hidden states before the head is replicated."""
    configs = "tests/family_configs/"
    granite = profile_model(configs + "ibm-granite--granite-3.1-3b-a800m-instruct.json")
    rank = rank_model(granite, make_plan(tp=4)).at(2, 3).values[":logits_scaling"]
    # vocab 49,155 -> ceil(49155 / 4) = 12,289 per rank; B*S = 6 tokens: 6 * 12,289 = 73,734 divisions
    assert rank["div"] == 6 * 12_289 == 73_734
    cohere = profile_model(configs + "transformers--Cohere2MoeConfig-defaults.json")
    assert rank_model(cohere, make_plan(tp=4)).at(2, 3).values[":logit_scale"]["mult"] == 6 * 256_000 // 4
    minicpm = profile_model(configs + "transformers--MiniCPM3Config-defaults.json")
    # hidden 2560: 6 * 2560 = 15,360 divisions of the final hidden states, on every rank
    assert rank_model(minicpm, make_plan(tp=4)).at(2, 3).values[":logits_scaling"]["div"] == 6 * 2560 == 15_360
