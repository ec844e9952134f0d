"""The serving simulator (llm_profiler.serving): the scheduler against hand-worked traces, the step cost
against perf's roofline, the saturation bound, Little's law, speculative decoding, cost, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llm_profiler.errors import ProfilerError, QueryError
from llm_profiler.perf import roofline
from llm_profiler.serving import (
    DoesNotFitError,
    Lengths,
    SchedulerConfig,
    Server,
    Speculative,
    StepCost,
    Workload,
    WorkloadError,
    cost_report,
    expected_tokens,
    max_rate_under_slo,
    simulate,
    speedup,
)
from llm_profiler.serving.speculative import cost_per_token

SMALL = "llama-3.2-1b"


def _trace(tmp_path, rows: list[tuple[int, int]]) -> str:
    path = tmp_path / "trace.csv"
    path.write_text("prompt_tokens,output_tokens,arrival_s\n" + "".join(f"{p},{o},0\n" for p, o in rows))
    return str(path)


# --- the scheduler, by hand -------------------------------------------------------------------------------


def test_scheduler_hand_worked_trace(tmp_path):
    """Budget 8 tokens per step, 4-token blocks, at most 3 running; A (prompt 5, output 3), B (6, 2),
    C (3, 2), D (4, 1), all at t = 0. Each batch entry is (request, tokens this step, cached context P).

    step 1: nothing runs; admit A: 5 tokens (2 blocks), budget 3 left; admit B: its first 3 prompt tokens.
            A's prompt is done: it samples its first token (A: 6 tokens).        [(A,5,0), (B,3,0)]
    step 2: running first: A decodes 1 token at P=5; B its last 3 prompt tokens at P=3 (budget 4 left);
            admit C: 3 tokens; now 3 run (max_num_seqs): D waits.             [(A,1,5), (B,3,3), (C,3,0)]
            A has 2 output tokens, B and C their first.
    step 3: three decodes; D still cannot enter (3 running).                  [(A,1,6), (B,1,6), (C,1,3)]
            A reaches 3 tokens, B and C 2: all three finish.
    step 4: D is admitted and prefilled; its first token is its only one.       [(D,4,0)]
    """
    wl = Workload.make(trace=_trace(tmp_path, [(5, 3), (6, 2), (3, 2), (4, 1)]), arrival="burst", rate=None)
    cfg = SchedulerConfig(max_num_seqs=3, max_num_batched_tokens=8, block_size=4, num_kv_blocks=100)
    server = Server(SMALL, "h100", scheduler=cfg)
    r = server.run(wl, record_batches=True)
    A, B, C, D = 0, 1, 2, 3
    assert r.raw["batches"] == [
        [(A, 5, 0), (B, 3, 0)],
        [(A, 1, 5), (B, 3, 3), (C, 3, 0)],
        [(A, 1, 6), (B, 1, 6), (C, 1, 3)],
        [(D, 4, 0)],
    ]
    assert r.steps == 4 and r.preemptions == 0
    # the clock: each step lasts the roofline of its exact batch
    c = server.cost
    t1 = c.step(None, [(5, 0), (3, 0)])[0]
    t2 = c.step(np.array([5]), [(3, 3), (3, 0)])[0]
    t3 = c.step(np.array([6, 6, 3]))[0]
    t4 = c.step(None, [(4, 0)])[0]
    ttft = r.raw["ttft"]
    assert ttft[A] == pytest.approx(t1, rel=1e-12)            # A's prompt is done in step 1
    assert ttft[B] == pytest.approx(t1 + t2, rel=1e-12)       # B's in step 2 (chunked)
    assert ttft[C] == pytest.approx(t1 + t2, rel=1e-12)
    assert ttft[D] == pytest.approx(t1 + t2 + t3 + t4, rel=1e-12)
    assert r.raw["e2e"][A] == pytest.approx(t1 + t2 + t3, rel=1e-12)
    assert r.duration_s == pytest.approx(t1 + t2 + t3 + t4, rel=1e-12)
    # A: tokens at the ends of steps 1, 2, 3: TPOT = (t2 + t3) / 2
    assert r.raw["tpot"][A] == pytest.approx((t2 + t3) / 2, rel=1e-12)


def test_scheduler_preemption_trace(tmp_path):
    """Budget 8, 4-token blocks, only 3 blocks; A and B (prompt 4, output 4 each) at t = 0.

    step 1: A 4 tokens (1 block), B 4 tokens (1 block), 1 block free; both sample their first token.
    step 2: A and B decode at P=4 and each needs a 2nd block: 2 > 1 free, so the last admitted (B) is
            preempted (its block freed: 2 free, back to the front of the queue); A takes one. [(A,1,4)]
    steps 3-4: A decodes; B (now prompt + 1 generated = 5 tokens, 2 blocks) does not fit in the 1
            free block.                                                                  [(A,1,5)], [(A,1,6)]
            A finishes (4 tokens) and frees its 2 blocks.
    step 5: B is recomputed: 5 tokens at P=0 (2 blocks); it samples its 2nd token.        [(B,5,0)]
    steps 6-7: B decodes to its 4th token.                                              [(B,1,5)], [(B,1,6)]
    """
    wl = Workload.make(trace=_trace(tmp_path, [(4, 4), (4, 4)]), arrival="burst", rate=None)
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=8, block_size=4, num_kv_blocks=3)
    server = Server(SMALL, "h100", scheduler=cfg)
    A, B = 0, 1
    expected = [[(A, 4, 0), (B, 4, 0)], [(A, 1, 4)], [(A, 1, 5)], [(A, 1, 6)], [(B, 5, 0)], [(B, 1, 5)], [(B, 1, 6)]]
    for fast in (True, False):  # the vectorised decode stretches give the same steps
        r = server.run(wl, record_batches=True, fast_forward=fast)
        assert r.raw["batches"] == expected
        assert r.preemptions == 1 and list(r.raw["preemptions"]) == [0, 1]
        # 2 of 3 blocks at most: A and B's 1 each in step 1, A's 2 after B's preemption (1 free), B's 2 later
        assert r.kv_utilization_max == pytest.approx(2 / 3)
    # B's first token came at the end of step 1, its TTFT is not redone by the recompute
    assert r.raw["ttft"][B] == r.raw["ttft"][A]


def test_prefix_cache_skips_prompt_tokens(tmp_path):
    """Hit rate 0.5 on a 100-token prompt with 16-token blocks: floor(0.5 * 100 / 16) * 16 = 48 tokens are
    cached, so the first (and only) chunk is 52 tokens at P = 48."""
    wl = Workload.make(trace=_trace(tmp_path, [(100, 2)]), arrival="burst", rate=None)
    cfg = SchedulerConfig(prefix_cache_hit=0.5)
    r = Server(SMALL, "h100", scheduler=cfg).run(wl, record_batches=True)
    assert r.raw["batches"][0] == [(0, 52, 48)]
    assert r.raw["batches"][1] == [(0, 1, 100)]


def test_fast_forward_equals_step_by_step():
    wl = Workload.make(prompt=Lengths.parse("lognormal:600:0.7"), output=Lengths.parse("uniform:20:300"), rate=8.0,
                       num_requests=300, seed=3)
    server = Server(SMALL, "h100", scheduler=SchedulerConfig(max_num_seqs=16))
    a, b = server.run(wl, fast_forward=False), server.run(wl, fast_forward=True)
    for key in ("ttft", "e2e", "tpot", "itl", "step_dt", "step_kv", "step_in_system"):
        np.testing.assert_allclose(a.raw[key], b.raw[key], rtol=1e-9, atol=1e-12)
    assert a.steps == b.steps and a.preemptions == b.preemptions


# --- the step cost ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v3", "gemma-2-9b"])
@pytest.mark.parametrize("engine", ["vllm", "hf-eager"])
def test_single_sequence_prefill_equals_phase_report(model, engine):
    """One sequence is the same forward on the same roofline: perf.phase_report's latency exactly (its
    node formulas at B = 1; the per-sequence / per-forward split adds back to the same value)."""
    c = StepCost(model, "h100", engine)
    for seq, past in ((2048, 0), (100, 500), (1, 4095)):
        expected = roofline(model, "h100", "prefill", seq=seq, past=past, engine=engine).latency_s
        assert c.step(None, [(seq, past)])[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("model", ["llama-3.1-8b", "deepseek-v3"])
def test_uniform_batches_equal_batched_forward(model):
    """B sequences at one (S, P): sum_i f1 + f0 = B f1 + f0, the batched forward; deepseek-v3's decode
    takes the absorbed-MLA decode formulas, its prefill chunks the naive ones, as perf does."""
    c = StepCost(model, "h100")
    assert c.decode_step(32, 1000) == pytest.approx(roofline(model, "h100", "decode", batch=32, past=1000).latency_s, rel=1e-12)
    assert c.step(None, [(16, 0)] * 8)[0] == pytest.approx(roofline(model, "h100", "prefill", batch=8, seq=16).latency_s, rel=1e-12)


def test_mixed_step_reads_weights_once():
    """A mixed step costs less than its prefill and its decodes as two steps (the weights are read once),
    and more than either alone."""
    c = StepCost("llama-3.1-8b", "h100")
    ctx = np.array([100, 2000, 3000, 500])
    mixed, pre, dec = c.step(ctx, [(512, 0)])[0], c.step(None, [(512, 0)])[0], c.step(ctx)[0]
    assert max(pre, dec) < mixed < pre + dec
    # the bytes: 4 decodes read the weights once (not 4 times): 16.06 GB stored, less the embedding
    # table a lookup reads 4 rows of (128256 x 4096 x 2 = 1.05 GB) = 15.01 GB, plus ~0.79 GB of KV cache
    # (5600 tokens x 32 layers x 2 x 1024 x 2 bytes = 0.73 GB) and activations
    _, _, nbytes = c.step(ctx)
    assert 15.7e9 < nbytes < 15.9e9


# --- saturation bound and Little's law ------------------------------------------------------------------


def test_saturation_throughput_equals_closed_form():
    """64 identical requests (prompt 16, output 512) at once with max_num_seqs 32 run as two waves of 32:
    each is one prefill step of 32 x 16 tokens and 511 steps of 32 decodes, i.e. exactly a generation of
    batch 32 (perf's closed form): output tokens/s = 32 * 512 / generation latency."""
    server = Server("llama-3.1-8b", "h100", scheduler=SchedulerConfig(max_num_seqs=32))
    wl = Workload.make(prompt=Lengths(value=16), output=Lengths(value=512), arrival="burst", rate=None, num_requests=64)
    r = server.run(wl)
    gen = roofline("llama-3.1-8b", "h100", "generate", batch=32, seq=16, new_tokens=512)
    assert r.output_tokens_per_s == pytest.approx(gen.tokens_per_s, rel=1e-9)
    assert r.duration_s == pytest.approx(2 * gen.latency_s, rel=1e-9)
    # the bound "max_num_seqs decodes per step at the step time": 32 / step(32 decodes at the mean context
    # 16 + 255.5); the step time is linear in P, and the prefill step (1 of 512) adds ~0.15%: within 0.5%
    bound = 32 / server.cost.decode_step(32, 16 + 255)
    assert r.output_tokens_per_s == pytest.approx(bound, rel=5e-3)
    assert r.output_tokens_per_s < bound


def test_overloaded_throughput_stays_under_the_bound():
    """Poisson arrivals far above capacity: at most max_num_seqs decodes per step, each step at least the
    step of 16 decodes at the shortest context, so output tokens/s <= 16 / that step."""
    server = Server(SMALL, "h100", scheduler=SchedulerConfig(max_num_seqs=16))
    wl = Workload.make(prompt=Lengths.parse("uniform:64:256"), output=Lengths.parse("uniform:64:256"), rate=1e4,
                       num_requests=400)
    r = server.run(wl)
    bound = 16 / server.cost.decode_step(16, 64)
    assert r.output_tokens_per_s < bound
    assert r.mean_running > 15  # saturated: the running set is nearly always full


def test_littles_law():
    """L = lambda W on the simulated system: the time-average number of requests in the system (waiting +
    running, sampled per step) equals the arrival rate (requests / run length) times the mean time in the
    system (end-to-end latency). The samples are taken at step starts, so an arrival joins the count up to
    one step late; with ~25 ms steps against ~2 s latencies that is within 1%."""
    wl = Workload.make(prompt=Lengths.parse("lognormal:1024:0.8"), output=Lengths.parse("lognormal:256:0.8"),
                       rate=15.0, num_requests=2000)
    r = simulate("llama-3.1-8b", "h100", wl)
    lam = r.num_requests / r.duration_s
    assert r.mean_in_system == pytest.approx(lam * r.e2e_s.mean, rel=0.01)
    assert lam == pytest.approx(15.0, rel=0.05)  # 2000 Poisson arrivals: relative std 1/sqrt(2000) = 2.2%


# --- speculative decoding -----------------------------------------------------------------------------


def test_speculative_closed_form():
    # k = 4, a = 0.8: (1 - 0.8**5) / (1 - 0.8) = (1 - 0.32768) / 0.2 = 3.3616
    assert expected_tokens(4, 0.8) == pytest.approx(3.3616, abs=1e-12)
    assert expected_tokens(3, 1.0) == 4.0  # every draft accepted: k + 1
    assert expected_tokens(5, 0.0) == 1.0  # none: the target's own token
    # Leviathan et al. theorem 3.8 with c = 0.05: 3.3616 / (0.05 * 4 + 1) = 2.80133...
    assert speedup(4, 0.8, 0.05) == pytest.approx(3.3616 / 1.2, rel=1e-12)
    assert cost_per_token(4, 0.8, 0.05) == pytest.approx(1.2 / 3.3616, rel=1e-12)


def test_speculative_in_the_simulator_matches_closed_form():
    """Free (n-gram) drafts, k = 4, a = 0.8: tokens per verifying step average 3.3616. 32 requests of 2000
    tokens give ~19,000 verifications (per-step std ~1.5 tokens -> std of the mean ~0.3%); each request's
    last step is cut at its output length (~1 in 600 steps), so within 2%."""
    wl = Workload.make(prompt=Lengths(value=64), output=Lengths(value=2000), arrival="burst", rate=None, num_requests=32)
    spec = Speculative.make(4, 0.8)
    r = simulate(SMALL, "h100", wl, speculative=spec, scheduler=SchedulerConfig(max_num_seqs=32))
    assert r.speculative is not None
    assert r.speculative.expected_tokens_per_step == pytest.approx(3.3616)
    assert r.speculative.simulated_tokens_per_step == pytest.approx(3.3616, rel=0.02)
    assert r.output_tokens == 32 * 2000
    plain = simulate(SMALL, "h100", wl, scheduler=SchedulerConfig(max_num_seqs=32))
    # verifying 5 tokens at batch 32 costs little more than decoding 1 (memory-bound): TPOT drops ~3x
    assert plain.tpot_s.mean / r.tpot_s.mean > 2.5


def test_speculative_draft_model_costs_time():
    wl = Workload.make(prompt=Lengths(value=64), output=Lengths(value=200), arrival="burst", rate=None, num_requests=8)
    free = simulate("llama-3.1-8b", "h100", wl, speculative=Speculative.make(4, 0.8))
    draft = simulate("llama-3.1-8b", "h100", wl, speculative=Speculative.make(4, 0.8, draft=SMALL))
    assert draft.busy_s > free.busy_s
    assert draft.kv.draft_weights_bytes > 2e9  # llama-3.2-1b's 1.24 G parameters in bf16


def test_mtp_needs_the_config_field():
    with pytest.raises(QueryError, match="num_nextn_predict_layers"):
        Server("llama-3.1-8b", "h100", speculative=Speculative.make(1, 0.8, draft="mtp"))


# --- cost and energy -----------------------------------------------------------------------------------


def test_cost_arithmetic():
    """One busy hour at $3.00 on one GPU, 2 M input and 1 M output tokens, 25% of the time on the input:
    $3.00 in all; input 0.75 / 2 M = $0.375 per M; output 2.25 / 1 M = $2.25 per M; the whole bill over
    the output: $3.00 per M, over all 3 M tokens $1.00 per M. Energy: 700 W x 3600 s busy + 0.15 x 700 W x
    1800 s idle = 2,520,000 + 189,000 J; per output token 2.709 J."""
    c = cost_report("H100-SXM", busy_s=3600, idle_s=1800, input_tokens=2_000_000, output_tokens=1_000_000,
                    input_share=0.25, cost_per_hour=3.0)
    assert c.usd_total == pytest.approx(3.0 * 1.5)  # busy + idle hours are both paid for
    c = cost_report("H100-SXM", busy_s=3600, idle_s=0, input_tokens=2_000_000, output_tokens=1_000_000,
                    input_share=0.25, cost_per_hour=3.0)
    assert c.usd_total == pytest.approx(3.0)
    assert c.usd_per_million_input == pytest.approx(0.375)
    assert c.usd_per_million_output == pytest.approx(2.25)
    assert c.usd_per_million_output_all == pytest.approx(3.0)
    assert c.usd_per_million_tokens == pytest.approx(1.0)
    e = cost_report("H100-SXM", busy_s=3600, idle_s=1800, input_tokens=0, output_tokens=1_000_000, input_share=0.0)
    assert e.usd_per_gpu_hour == 3.0 and "mercatus" in e.price_source.lower()  # the documented default
    assert e.energy_j == pytest.approx(700 * 3600 + 105 * 1800)
    assert e.joules_per_output_token == pytest.approx(2.709)
    none = cost_report("TPU-v5e", busy_s=1, idle_s=0, input_tokens=1, output_tokens=1, input_share=0.5)
    assert none.usd_total is None and none.energy_j is None and "cost_per_hour" in none.price_source


def test_simulated_cost_is_consistent():
    wl = Workload.make(prompt=Lengths(value=256), output=Lengths(value=64), rate=4.0, num_requests=100)
    r = simulate(SMALL, "h100", wl, cost_per_hour=2.0)
    c = r.cost
    assert c is not None and c.usd_total == pytest.approx(2.0 * r.duration_s / 3600, rel=1e-9)
    assert c.usd_per_million_output_all == pytest.approx(c.usd_total / r.output_tokens * 1e6, rel=1e-9)
    assert c.energy_j == pytest.approx(700 * r.busy_s + 105 * r.idle_s, rel=1e-9)


# --- the SLO search --------------------------------------------------------------------------------------


def test_max_rate_under_slo_brackets_the_answer():
    wl = Workload.make(prompt=Lengths.parse("lognormal:2048:0.5"), output=Lengths(value=64), rate=2.0, num_requests=300)
    search = max_rate_under_slo(SMALL, "h100", wl, slo_ttft_s=0.05)
    assert 0 < search.rate <= search.saturation_rate
    passing = [p.rate for p in search.points if p.meets]
    failing = [p.rate for p in search.points if not p.meets]
    assert max(passing) == search.rate
    if failing:  # the SLO binds below saturation: the next failing rate is within 2% above
        above = min(r for r in failing if r > search.rate)
        assert (above - search.rate) / search.rate <= 0.02
    assert search.at_rate is not None and search.at_rate.ttft_s.p99 <= 0.05


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, match", [
    ({"rate": -1.0}, "rate must be a positive"),
    ({"rate": 0.0}, "rate must be a positive"),
    ({"rate": math.nan}, "rate must be a positive"),
    ({"num_requests": 0}, "num_requests"),
])
def test_bad_workload(fields, match):
    with pytest.raises(WorkloadError, match=match):
        Workload.make(**fields)


@pytest.mark.parametrize("text", ["0", "-5", "uniform:10", "lognormal:512", "normal:abc:1", "zipf:1:2", "fixed:1:2"])
def test_bad_lengths(text):
    with pytest.raises(WorkloadError, match="--prompt-len must be"):
        Lengths.parse(text, "--prompt-len")


def test_empty_trace(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt_tokens,output_tokens\n")
    with pytest.raises(WorkloadError, match="has no requests"):
        Workload.make(trace=str(empty)).requests()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_tokens": 10, "output_tokens": 0}\n')
    with pytest.raises(WorkloadError, match="output_tokens must be a positive integer"):
        Workload.make(trace=str(bad)).requests()


def test_budget_smaller_than_one_token():
    with pytest.raises(QueryError, match="max_num_batched_tokens"):
        SchedulerConfig.make(max_num_batched_tokens=0)


def test_model_that_does_not_fit():
    # llama-3.1-70b: 141 GB of bf16 weights > 0.9 x 80 GiB
    with pytest.raises(DoesNotFitError, match="does not fit H100-SXM"):
        simulate("llama-3.1-70b", "h100", Workload.make(num_requests=1))


def test_request_longer_than_the_cache(tmp_path):
    wl = Workload.make(trace=_trace(tmp_path, [(100, 100)]), arrival="burst", rate=None)
    with pytest.raises(DoesNotFitError, match="needs 13 KV blocks"):  # ceil(200 / 16) = 13 > 10
        simulate(SMALL, "h100", wl, scheduler=SchedulerConfig(num_kv_blocks=10))


def test_errors_are_profiler_errors():
    for err in (WorkloadError, DoesNotFitError):
        assert issubclass(err, ProfilerError)
    with pytest.raises(QueryError, match="spec_k"):
        Speculative.make(0, 0.8)
    with pytest.raises(QueryError, match="spec_accept"):
        Speculative.make(4, 1.5)


# --- the command line --------------------------------------------------------------------------------------


def test_cli_serve_json(capsys):
    from llm_profiler.cli import main

    code = main(["serve", SMALL, "--device", "h100", "--rate", "4", "--requests", "50", "--prompt-len", "256",
                 "--output-len", "32", "--json"])
    out = capsys.readouterr()
    assert code == 0 and out.err == ""  # no progress bar with --json
    body = json.loads(out.out)
    assert body["num_requests"] == 50 and body["output_tokens"] == 50 * 32
    assert body["ttft_s"]["p99"] >= body["ttft_s"]["p50"] > 0


def test_cli_serve_text_and_errors(capsys):
    from llm_profiler.cli import main

    assert main(["serve", SMALL, "--requests", "20", "--output-len", "8", "--spec-k", "2", "--spec-accept", "0.7", "-q"]) == 0
    text = capsys.readouterr().out
    assert "throughput" in text and "TTFT" in text and "speculative k 2" in text
    assert "2.1900 tokens per target step" in text  # (1 - 0.7**3) / 0.3 = 2.19
    assert main(["serve", SMALL, "--rate", "-1"]) == 2
    assert "--rate" in capsys.readouterr().err
    assert main(["serve", "llama-3.1-70b", "--device", "h100", "--requests", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model does not fit") and err.count("\n") == 1
    assert main(["serve", SMALL, "--spec-k", "2"]) == 2
    assert "both --spec-k and --spec-accept" in capsys.readouterr().err


def test_cli_serve_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from llm_profiler.cli import main

    out = tmp_path / "serve.png"
    assert main(["serve", SMALL, "--requests", "40", "--output-len", "16", "--rates", "2,8", "--plot", str(out), "-q"]) == 0
    assert out.stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "rate (req/s)" in text and "8.000" in text


def test_block_need_without_the_grid():
    """The stretch's cumulative block need, event by event, equals the (steps x sequences) grid:
    sum_i max(ceil((nc_i + j + 1) / bs) - held_i, 0) after step j."""
    rng = np.random.default_rng(7)
    bs = 16
    nc = rng.integers(1, 3000, 40)
    held = -(-nc // bs) + rng.integers(0, 2, 40)  # some hold one block ahead
    k = 300
    j = np.arange(k)
    grid = np.maximum(-(-(nc[None, :] + j[:, None] + 1) // bs) - held[None, :], 0).sum(axis=1)
    np.testing.assert_array_equal(Server._block_need(nc, held, k, bs), grid)


def test_mtp_drafts_cost_one_layer_and_the_head():
    """GLM-4.5-Air has num_nextn_predict_layers = 1: an MTP draft costs its last decoder layer plus the
    final norm and lm_head of a batch-1 decode step. With 46 layers, one layer is ~1/46 = 2.2% of the layers'
    time and the lm_head (151,552 x 4,096 bf16 = 1.24 GB against ~12 GB of weights read per token) adds
    ~5-10%: the ratio lies between 1/46 and 0.15."""
    from llm_profiler import load_config, profile_model

    spec = Speculative.make(1, 0.85, draft="mtp")
    server = Server("glm-4.5-air", "h200", weight_dtype="fp8", speculative=spec)
    assert server.draft_ratio is not None and 1 / 46 < server.draft_ratio < 0.15
    # formulas alone do not keep the config field: pass it
    with pytest.raises(QueryError, match="num_nextn_predict_layers"):
        Server(profile_model("glm-4.5-air"), "h200", weight_dtype="fp8", speculative=spec)
    again = Server(profile_model("glm-4.5-air"), "h200", weight_dtype="fp8", speculative=spec,
                   config=load_config("glm-4.5-air"))
    assert again.draft_ratio == pytest.approx(server.draft_ratio)


def test_rate_search_refuses_what_it_cannot_vary(tmp_path):
    with pytest.raises(QueryError, match="not burst"):
        max_rate_under_slo(SMALL, "h100", Workload.make(arrival="burst", rate=None))
    with pytest.raises(QueryError, match="own arrival times"):
        max_rate_under_slo(SMALL, "h100", Workload.make(trace=_trace(tmp_path, [(10, 2)])))


def test_budget_cut_speculative_rows_still_progress():
    """A 4-token budget with k = 4: each decode asks for 5 tokens, the first gets 4 (3 drafts), the others
    none in that step; every request still completes with exactly its output tokens."""
    wl = Workload.make(prompt=Lengths(value=4), output=Lengths(value=20), arrival="burst", rate=None, num_requests=3)
    r = simulate(SMALL, "h100", wl, speculative=Speculative.make(4, 0.8),
                 scheduler=SchedulerConfig(max_num_batched_tokens=4))
    assert r.output_tokens == 60 and not np.isnan(r.raw["e2e"]).any()


def test_contexts_past_the_tables():
    """Contexts and step token counts past the tabulated range are evaluated per call: the same roofline."""
    from llm_profiler.serving.step_cost import TABLE_MAX

    c = StepCost("llama-3.1-8b", "h100")
    far = TABLE_MAX + 5
    assert c.decode_step(4, far) == pytest.approx(roofline("llama-3.1-8b", "h100", "decode", batch=4, past=far).latency_s,
                                                  rel=1e-12)
    assert c.step(None, [(far, 0)])[0] == pytest.approx(roofline("llama-3.1-8b", "h100", "prefill", seq=far).latency_s,
                                                        rel=1e-12)
    t, _ = c.decode_run(np.array([TABLE_MAX - 1, 5]), 3)
    np.testing.assert_allclose(t, [c.step(np.array([TABLE_MAX - 1 + j, 5 + j]))[0] for j in range(3)], rtol=1e-12)
