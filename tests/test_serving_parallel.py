"""Serving under a parallel plan (llm_profiler.serving with plan= / system=): step times from one rank's
sharded roofline plus the plan's collectives (perf's plan roofline, exactly), KV blocks per rank, dp replicas
splitting the request stream, the smallest plan named when a model does not fit; and the vectorised decode
stretches (decode_run across finishes) against step-by-step costs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_profiler.errors import ProfilerError, QueryError
from llm_profiler.parallel import PlanError
from llm_profiler.perf import roofline
from llm_profiler.serving import (
    DoesNotFitError,
    Lengths,
    SchedulerConfig,
    Server,
    Speculative,
    StepCost,
    Workload,
)
from llm_profiler.serving.step_cost import PlanStepCost

BIG = "llama-3.1-70b"
SMALL = "llama-3.2-1b"


@pytest.fixture(scope="module")
def tp8() -> Server:
    return Server(BIG, system="dgx-h100", plan={"tp": 8})


# --- the step time under a plan ---------------------------------------------------------------------


@pytest.mark.parametrize("batch,past", [(1, 0), (8, 1000), (64, 4096)])
def test_tp8_decode_step_is_the_plans_roofline(tp8, batch, past):
    """Llama-3.1-70B on a DGX H100 at tp=8: a step of `batch` decodes at context `past` takes exactly perf's
    roofline of that decode under the plan (one rank's sharded nodes + 2 all-reduces per layer, the
    embedding's and the logits' all-gather: at batch 1, 5.196 ms of weights + 1.073 ms of collectives =
    6.269 ms, docs/parallel.md)."""
    r = roofline(BIG, phase="decode", batch=batch, past=past, plan={"tp": 8}, system="dgx-h100")
    assert tp8.cost.decode_step(batch, past) == pytest.approx(r.latency_s, rel=1e-12)
    if batch == 1:
        assert r.latency_s == pytest.approx(6.269e-3, rel=1e-3)


def test_tp8_prefill_and_mixed_steps(tp8):
    """Two 1000-token prompts in one step = perf's prefill of batch 2 under the plan. A mixed step (3 decodes
    + one 512-token chunk) pays the collectives once for its 515 tokens: its time is the rank's roofline of
    that exact batch plus the collectives at 515 tokens and 4 sequences (each all-reduce carries
    515 x 8192 x 2 bytes; the logits' all-gather 4 rows of 128256 x 2 bytes)."""
    r = roofline(BIG, phase="prefill", batch=2, seq=1000, plan={"tp": 8}, system="dgx-h100")
    assert tp8.cost.step(None, [(1000, 0)] * 2)[0] == pytest.approx(r.latency_s, rel=1e-12)
    cost = tp8.cost
    assert isinstance(cost, PlanStepCost)
    ctx = np.array([100, 2000, 3000])
    rank = cost.stages[0].step(ctx, [(512, 0)])[0]
    comm = cost.communication(515, 4)
    assert cost.step(ctx, [(512, 0)])[0] == pytest.approx(rank + comm[0], rel=1e-12)
    # the collectives: 1 + 80 + 80 all-reduces of 515 x 8192 x 2 = 8,437,760 bytes and one all-gather of
    # 4 x 128,256 x 2 = 1,026,048 bytes, on NVLink 4 (450 GB/s per direction, 0.47 us per hop, 8 ranks)
    from llm_profiler.hardware.systems import get_system
    from llm_profiler.parallel.comm import link_for, ring_all_reduce_s, ring_gather_s

    link = link_for(get_system("dgx-h100"), 8)
    expected = 161 * ring_all_reduce_s(515 * 8192 * 2, 8, link.bandwidth, link.latency_s) + \
        ring_gather_s(4 * 128256 * 2, 8, link.bandwidth, link.latency_s)
    assert comm[0] == pytest.approx(expected, rel=1e-12)


def test_pipeline_step_is_pp_times_the_slowest_stage():
    """tp=4 pp=2: perf's plan roofline with one micro-batch, (1 + pp - 1) x the slowest stage's time."""
    server = Server(BIG, system="dgx-h100", plan={"tp": 4, "pp": 2})
    r = roofline(BIG, phase="decode", batch=8, past=1000, plan={"tp": 4, "pp": 2}, system="dgx-h100")
    assert server.cost.decode_step(8, 1000) == pytest.approx(r.latency_s, rel=1e-12)
    cost = server.cost
    assert isinstance(cost, PlanStepCost)
    ctx = np.full(8, 1000)
    stages = [s.step(ctx)[0] + c for s, c in zip(cost.stages, cost.communication(8, 8))]
    assert cost.decode_step(8, 1000) == pytest.approx(2 * max(stages), rel=1e-12)


def test_plan_decode_run_equals_step_by_step():
    cost = Server(BIG, system="dgx-h100", plan={"tp": 4, "pp": 2}).cost
    ctx, left = np.array([100, 2000, 3000, 7]), np.array([3, 10, 6, 1])
    t, _ = cost.decode_run(ctx, 10, left)
    np.testing.assert_allclose(t, [cost.step(ctx[left > j] + j)[0] for j in range(10)], rtol=1e-12)


# --- KV capacity per rank ----------------------------------------------------------------------------


def test_tp8_kv_blocks_per_rank(tp8):
    """KV blocks = (device memory x 0.9 - per-rank weights - activations) / per-rank bytes per block:
    usable 80 GiB x 0.9 = 77,309,411,328; weights per rank 17,640,734,720 (70,552,387,584 sharded parameters
    / 8 + 1,318,912 replicated norm scales, bf16: docs/parallel.md); activations of one 8192-token chunk at
    the rank's widths 2 x 8192 x 8192 x 2 + 3 x 8192 x 3584 x 2 = 444,596,224; a 16-token block holds
    16 x 80 layers x 2 (K, V) x 1 KV head (8 / 8) x 128 x 2 bytes = 655,360 bytes:
    (77,309,411,328 - 17,640,734,720 - 444,596,224) // 655,360 = 90,368 blocks (1,445,888 tokens)."""
    cap = tp8.capacity(4096)
    assert cap.usable_bytes == 77_309_411_328
    assert cap.weights_bytes == 17_640_734_720
    assert cap.activation_bytes == 2 * 8192 * 8192 * 2 + 3 * 8192 * 3584 * 2 == 444_596_224
    assert cap.block_bytes == 16 * 80 * 2 * 1 * 128 * 2 == 655_360
    assert cap.num_blocks == (77_309_411_328 - 17_640_734_720 - 444_596_224) // 655_360 == 90_368
    assert cap.plan == "tp=8"


def test_a_one_device_plan_is_the_single_device_server():
    wl = Workload.make(prompt=Lengths.parse("uniform:50:400"), output=Lengths.parse("uniform:10:80"), rate=20.0,
                       num_requests=150, seed=4)
    a, b = Server(SMALL, "h100"), Server(SMALL, "h100", plan={"tp": 1})
    assert a.capacity(1024).num_blocks == b.capacity(1024).num_blocks
    ra, rb = a.run(wl), b.run(wl)
    for key in ("ttft", "e2e", "step_dt"):
        np.testing.assert_allclose(ra.raw[key], rb.raw[key], rtol=1e-12)


# --- data-parallel replicas ---------------------------------------------------------------------------


def test_dp_replicas_split_the_stream(tmp_path):
    """dp=2: replica r serves requests r, r + 2, ... on its own tp=2 ranks; each replica's requests see
    exactly what a tp=2 server given only them sees. Little's law holds over the whole system
    (in-system counts add over replicas)."""
    wl = Workload.make(prompt=Lengths.parse("uniform:50:600"), output=Lengths.parse("uniform:10:120"), rate=30.0,
                       num_requests=200, seed=2)
    both = Server(SMALL, "h100", plan={"tp": 2, "dp": 2}).run(wl)
    one = Server(SMALL, "h100", plan={"tp": 2})
    req = wl.requests()
    assert both.replicas == 2 and both.devices == 4 and both.cost is not None and both.cost.gpus == 4
    for r in range(2):
        idx = np.arange(r, 200, 2)
        path = tmp_path / f"replica{r}.csv"  # its requests as a trace (arrivals shifted to start at 0)
        path.write_text("prompt_tokens,output_tokens,arrival_s\n" + "".join(
            f"{p},{o},{float(a)!r}\n" for p, o, a in zip(req.prompt[idx], req.output[idx], req.arrival[idx])))
        alone = one.run(Workload.make(trace=str(path)))
        np.testing.assert_allclose(both.raw["ttft"][idx], alone.raw["ttft"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(both.raw["e2e"][idx], alone.raw["e2e"], rtol=1e-9, atol=1e-12)
    lam = both.num_requests / both.duration_s
    assert both.mean_in_system == pytest.approx(lam * both.e2e_s.mean, rel=0.02)


# --- errors --------------------------------------------------------------------------------------------


def test_a_model_that_does_not_fit_names_the_smallest_plan():
    """Llama-3.1-70B's 131.42 GiB of bf16 weights do not fit one H100's 72 GiB usable; halved over tp=2
    (65.7 GiB) they leave room for KV: the error names tp=2."""
    with pytest.raises(DoesNotFitError, match=r"smallest plan that fits: tp=2 \(2 x H100-SXM"):
        Server(BIG, "h100").run(Workload(num_requests=4))
    with pytest.raises(DoesNotFitError, match=r"does not fit one device on dgx-h100.*smallest plan that fits: tp=2"):
        Server(BIG, system="dgx-h100", plan={"tp": 1}).run(Workload(num_requests=4))


def test_a_request_longer_than_a_ranks_cache_names_a_larger_plan():
    """tp=2 holds 2,205 blocks per rank; a 100,010-token request needs 6,251: tp=4 holds it."""
    wl = Workload.make(prompt=Lengths(value=100_000), output=Lengths(value=10), arrival="burst", rate=None,
                       num_requests=1)
    with pytest.raises(DoesNotFitError, match=r"one rank of tp=2 holds .*smallest plan that fits: tp=4"):
        Server(BIG, system="dgx-h100", plan={"tp": 2}).run(wl)


@pytest.mark.parametrize("plan,match", [({"tp": 3}, "tp=3 does not divide the 64 attention heads"),
                                        ({"tp": 2, "cp": 2}, "cp=2: context parallelism"),
                                        ({"pp": 2, "micro_batches": 2}, "micro_batches=2"),
                                        ({"ep": 2, "dp": 2}, "has no routed experts")])
def test_plans_that_do_not_apply(plan, match):
    with pytest.raises(PlanError, match=match):
        Server(BIG, system="dgx-h100", plan=plan)


def test_a_draft_model_under_a_plan_is_refused():
    with pytest.raises(QueryError, match="draft model under a parallel plan"):
        Server(SMALL, "h100", plan={"tp": 2}, speculative=Speculative.make(4, 0.8, draft=SMALL))
    # n-gram drafts are fine
    Server(SMALL, "h100", plan={"tp": 2}, speculative=Speculative.make(4, 0.8))


def test_cli_serve_under_a_plan(capsys):
    from llm_profiler.cli import main

    assert main(["serve", SMALL, "--system", "dgx-h100", "--tp", "2", "--dp", "2", "--requests", "40",
                 "--output-len", "16", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["plan"] == "tp=2 dp=2" and body["devices"] == 4 and body["replicas"] == 2
    assert body["kv"]["plan"] == "tp=2 dp=2"
    assert main(["serve", SMALL, "--system", "dgx-h100", "--tp", "2", "--requests", "20", "--output-len", "8", "-q"]) == 0
    assert "dgx-h100 (tp=2, 2 x H100-SXM)" in capsys.readouterr().out
    assert main(["serve", SMALL, "--device", "h100", "--tp", "2", "--cp", "2", "--requests", "10", "-q"]) == 2
    assert "cp=2" in capsys.readouterr().err


def test_plan_errors_are_profiler_errors():
    with pytest.raises(ProfilerError):
        Server(BIG, system="dgx-h100", plan={"tp": 3})


# --- the vectorised decode stretches ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["llama-3.1-8b", "gemma-2-9b", "deepseek-v3"])
def test_decode_run_with_finishes_equals_step_by_step(model):
    """decode_run over steps where sequences leave (sequence i in steps j < left_i) equals step() on each
    step's own batch: llama (every group a polynomial in P but the online softmax's CeilDiv(P + 1, 128)),
    gemma-2 (sliding windows: Min atoms) and deepseek-v3 (routed experts: weights not affine in the tokens)."""
    c = StepCost(model, "h100")
    rng = np.random.default_rng(0)
    ctx, left = rng.integers(1, 9000, 12), rng.integers(1, 40, 12)
    k = int(left.max())
    t, f = c.decode_run(ctx, k, left)
    ref = [c.step(ctx[left > j] + j) for j in range(k)]
    np.testing.assert_allclose(t, [r[0] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(f, [r[1] for r in ref], rtol=1e-12)


def test_decode_rows_are_polynomials_in_the_context():
    """Llama-3.1-8B under vllm: every node group's decode FLOPs and bytes are a polynomial of degree 1 in the
    context P but the softmax's FLOPs (4224 x ceil((P + 1) / 128) + 128 P + 4224: the online softmax's
    per-tile rescaling), which the tables sum instead; so a batch's cost depends on its contexts only
    through their count and sum: 4 decodes at 100, 200, 300, 400 cost what 4 at 250 do, but for that group."""
    c = StepCost("llama-3.1-8b", "h100")
    coef, cols = c.decode_poly(1)
    assert coef.shape[0] == 2
    g = len(c.multiplicity)
    assert [c.group_paths[i % g] for i in cols] == ["model.layers.0.self_attn:softmax"] * 2
    spread, flat = c.decode_rows(np.array([100, 200, 300, 400])), c.decode_rows(np.array([250] * 4))
    others = np.setdiff1d(np.arange(2 * g), cols)
    np.testing.assert_allclose(spread[others], flat[others], rtol=1e-15)
    # ceil(101/128) + ceil(201/128) + ceil(301/128) + ceil(401/128) = 1 + 2 + 3 + 4 = 10 tiles; 4 x ceil(251/128) = 8
    assert spread[cols[0]] - flat[cols[0]] == 4224 * (10 - 8)


def test_stretches_across_finishes_equal_step_by_step():
    """Light load (stretches run across finishes up to the next arrival) and a tight KV cache (stretches
    stop before a step that would preempt): the vectorised run equals the step-by-step one."""
    wl = Workload.make(prompt=Lengths.parse("lognormal:300:0.7"), output=Lengths.parse("uniform:5:200"), rate=3.0,
                       num_requests=200, seed=11)
    for cfg in (SchedulerConfig(), SchedulerConfig(max_num_seqs=12, num_kv_blocks=120)):
        server = Server(SMALL, "h100", scheduler=cfg)
        a, b = server.run(wl, fast_forward=False), server.run(wl, fast_forward=True)
        for key in ("ttft", "e2e", "tpot", "itl", "step_t", "step_dt", "step_kv", "step_in_system", "step_running"):
            np.testing.assert_allclose(a.raw[key], b.raw[key], rtol=1e-9, atol=1e-12)
        assert a.steps == b.steps and a.preemptions == b.preemptions
