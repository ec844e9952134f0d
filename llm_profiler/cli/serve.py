"""``llm-profiler serve``: simulate serving a request mix (continuous batching on exact step costs)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import (
    add_engine_arg,
    add_model_args,
    add_subcommand,
    emit,
    float_arg,
    int_arg,
    load_model,
    note,
)

ORDER = 45
MAX_RATES = 64

EPILOG = """\
examples:
  llm-profiler serve llama-3.1-8b --device h100 --rate 10 --requests 2000 --prompt-len lognormal:1024:0.8 --output-len lognormal:256:0.8
  llm-profiler serve llama-3.1-8b --device h100 --find-max-rate --slo-ttft 1.0 --plot serve.png
  llm-profiler serve llama-3.1-8b --device h100 --rate 5 --spec-k 4 --spec-accept 0.8 --spec-draft llama-3.2-1b
  llm-profiler serve deepseek-v3 --device h200 --weight-dtype fp8 --spec-k 1 --spec-accept 0.85 --spec-draft mtp
  llm-profiler serve mistral-7b --trace requests.jsonl --json
  llm-profiler serve llama-3.1-70b --system dgx-h100 --tp 8 --rate 5 --requests 2000   # per rank of a plan
  llm-profiler serve llama-3.1-70b --system dgx-h100 --tp 4 --dp 2 --rate 10           # 2 replicas split the stream

Lengths: N (fixed), uniform:LOW:HIGH, normal:MEAN:STD, lognormal:MEAN:SIGMA. Step times are the roofline of
each step's exact batch under the engine's execution profile (under a plan: one rank's sharded roofline plus
the collectives, pp x the slowest stage); the scheduler is vLLM-like (docs/serving.md).
"""


def register(subparsers: Any) -> None:
    from .roofline import add_dtype_args, add_parallel_args

    parser = add_subcommand(subparsers, "serve", help="simulate serving a request mix: throughput, latency, SLO rate, cost",
                            description="Simulate continuous batching of a request mix on a device: throughput, "
                                        "TTFT / TPOT / inter-token / end-to-end latency, KV use, preemptions, "
                                        "the highest rate under an SLO, cost and energy per token.", epilog=EPILOG)
    add_model_args(parser)
    wl = parser.add_argument_group("workload")
    wl.add_argument("--rate", type=float_arg(0, min_open=True, name="--rate", unit="requests/s"), default=1.0,
                    metavar="R", help="arrival rate in requests/s (default 1; the starting point of --find-max-rate)")
    wl.add_argument("--requests", type=int_arg(1, 1_000_000, name="--requests"), default=1000, metavar="N",
                    help="requests to simulate (default 1000)")
    wl.add_argument("--prompt-len", default="512", metavar="DIST", help="prompt tokens (default 512)")
    wl.add_argument("--output-len", default="128", metavar="DIST", help="output tokens (default 128)")
    wl.add_argument("--max-len", type=int_arg(1, name="--max-len"), default=None, metavar="T",
                    help="clip drawn prompt and output lengths to at most T tokens each")
    wl.add_argument("--arrival", choices=("poisson", "fixed", "burst"), default="poisson",
                    help="arrival process (default poisson; burst: all at t = 0)")
    wl.add_argument("--trace", metavar="FILE", help="requests from a CSV or JSON-lines file (prompt_tokens, output_tokens[, arrival_s])")
    wl.add_argument("--seed", type=int_arg(0, name="--seed"), default=0, help="RNG seed (default 0)")
    sc = parser.add_argument_group("scheduler")
    sc.add_argument("--max-num-seqs", type=int_arg(1, 1_000_000, name="--max-num-seqs"), default=256, metavar="N",
                    help="running sequences at most (default 256, vLLM's)")
    sc.add_argument("--max-batched-tokens", type=int_arg(1, 10_000_000, name="--max-batched-tokens"), default=None,
                    metavar="T", help="token budget per step (default: the engine's, 8192 for vllm)")
    sc.add_argument("--block-size", type=int_arg(1, 4096, name="--block-size"), default=None, metavar="T",
                    help="KV block size in tokens (default: the engine's, 16)")
    sc.add_argument("--memory-fraction", type=float_arg(0, 1, min_open=True, name="--memory-fraction"), default=0.9,
                    metavar="F", help="fraction of device memory the engine uses (default 0.9, vLLM's)")
    sc.add_argument("--num-kv-blocks", type=int_arg(1, name="--num-kv-blocks"), default=None, metavar="N",
                    help="KV blocks (default: what the memory holds after weights and activations)")
    sc.add_argument("--prefix-hit", type=float_arg(0, 1, max_open=True, name="--prefix-hit"), default=0.0, metavar="H",
                    help="prefix-cache hit rate: the fraction of each prompt not recomputed (default 0)")
    add_engine_arg(parser, "vllm")
    add_dtype_args(parser)
    add_parallel_args(parser)  # --system, --tp / --pp / --dp / --ep ... (roofline's: one definition)
    parser.add_argument("--flops-efficiency", type=float_arg(0, 1, min_open=True, name="--flops-efficiency"), default=1.0,
                        metavar="F", help="fraction of peak FLOP/s attainable (default 1)")
    parser.add_argument("--bandwidth-efficiency", type=float_arg(0, 1, min_open=True, name="--bandwidth-efficiency"),
                        default=1.0, metavar="F", help="fraction of peak bandwidth attainable (default 1)")
    slo = parser.add_argument_group("SLO")
    slo.add_argument("--slo-ttft", type=float_arg(0, min_open=True, name="--slo-ttft", unit="seconds"), default=1.0,
                     metavar="S", help="p99 TTFT target in seconds for --find-max-rate (default 1.0)")
    slo.add_argument("--slo-tpot", type=float_arg(0, min_open=True, name="--slo-tpot", unit="seconds"), default=None,
                     metavar="S", help="p99 TPOT target in seconds (default none)")
    slo.add_argument("--find-max-rate", action="store_true",
                     help="search the highest arrival rate meeting the SLO (doubling from --rate, then bisection)")
    slo.add_argument("--rates", default=None, metavar="LIST",
                     help="also simulate these arrival rates (comma list) for the rate table and plot")
    sp = parser.add_argument_group("speculative decoding")
    sp.add_argument("--spec-k", type=int_arg(1, 64, name="--spec-k"), default=None, metavar="K", help="draft tokens per step")
    sp.add_argument("--spec-accept", type=float_arg(0, 1, name="--spec-accept"), default=None, metavar="A",
                    help="per-token acceptance rate")
    sp.add_argument("--spec-draft", default="ngram", metavar="D",
                    help="ngram (free drafts), mtp (the config's MTP heads) or a draft model (default ngram)")
    sp.add_argument("--spec-cost-ratio", type=float_arg(0, name="--spec-cost-ratio"), default=None, metavar="C",
                    help="a draft forward's cost over a target decode step (overrides the draft's own)")
    ct = parser.add_argument_group("cost and energy")
    ct.add_argument("--cost-per-hour", type=float_arg(0, min_open=True, name="--cost-per-hour"), default=None, metavar="USD",
                    help="$ per GPU-hour (default: a documented figure for A100-80GB, H100-SXM, H200)")
    ct.add_argument("--tdp", type=float_arg(0, min_open=True, name="--tdp", unit="W"), default=None, metavar="W",
                    help="board power in watts (default: the datasheet's, where on record)")
    ct.add_argument("--idle-fraction", type=float_arg(0, 1, name="--idle-fraction"), default=0.15, metavar="F",
                    help="idle power as a fraction of TDP (default 0.15, an assumption)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", dest="fmt", action="store_const", const="json", default="text",
                     help="JSON (the ServeResult / RateSearch schema)")
    out.add_argument("--plot", metavar="FILE", help="latency CDFs (and throughput / p99 TTFT against rate) to FILE")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _rates(text: str | None) -> list[float]:
    from ..errors import QueryError

    if not text:
        return []
    parts = [p for p in text.split(",") if p.strip()]
    if len(parts) > MAX_RATES:
        raise QueryError(f"--rates has {len(parts)} values; at most {MAX_RATES}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise QueryError(f"--rates must be a comma list of positive numbers, got {text!r}") from None
    if not values or any(not (v > 0 and v < float("inf")) for v in values):
        raise QueryError(f"--rates must be a comma list of positive numbers, got {text!r}")
    return sorted(set(values))


def _ms(x: float) -> str:
    return f"{x * 1e3:,.1f} ms" if x < 10 else f"{x:,.2f} s"


def format_result(r: Any) -> str:
    gib = 2**30
    kv = r.kv
    where = r.device if r.plan is None else f"{r.system} ({r.plan}, {r.devices} x {r.device})"
    kv_where = "" if r.plan is None else " per rank"
    lines = [
        f"{r.model} on {where}, engine {r.engine}: {r.workload}",
        f"  scheduler   max_num_seqs {r.scheduler['max_num_seqs']}, {r.scheduler['max_num_batched_tokens']:,} tokens per "
        f"step, prefix-cache hit {r.scheduler['prefix_cache_hit']:g}; KV{kv_where} {kv.num_blocks:,} blocks of {kv.block_size} tokens "
        f"({kv.num_blocks * kv.block_size:,} tokens) = {kv.num_blocks * kv.block_bytes / gib:.2f} GiB beside weights "
        f"{kv.weights_bytes / gib:.2f} GiB + activations {kv.activation_bytes / gib:.2f} GiB of {kv.usable_bytes / gib:.2f} GiB usable",
        f"  throughput  {r.requests_per_s:,.2f} requests/s, {r.input_tokens_per_s:,.0f} input tokens/s, "
        f"{r.output_tokens_per_s:,.0f} output tokens/s (over {r.duration_s:,.1f} s, busy {r.busy_s / r.duration_s:.0%}{' per replica' if r.replicas > 1 else ''}, "
        f"{r.steps:,} steps)" if r.duration_s else "  throughput  -",
        f"  {'latency':<12}{'mean':>12}{'p50':>12}{'p90':>12}{'p99':>12}",
    ]
    for label, p in (("TTFT", r.ttft_s), ("TPOT", r.tpot_s), ("inter-token", r.itl_s), ("end-to-end", r.e2e_s)):
        lines.append(f"  {label:<12}{_ms(p.mean):>12}{_ms(p.p50):>12}{_ms(p.p90):>12}{_ms(p.p99):>12}")
    lines.append(f"  batch       {r.mean_running:.1f} sequences per step on average; {r.mean_in_system:.1f} requests in "
                 f"the system; KV use mean {r.kv_utilization_mean:.1%}, max {r.kv_utilization_max:.1%}; "
                 f"preemptions {r.preemptions}")
    if r.speculative is not None:
        s = r.speculative
        lines.append(f"  speculative k {s.k}, acceptance {s.acceptance:g}, draft {s.draft}: "
                     f"{s.expected_tokens_per_step:.4f} tokens per target step (closed form), "
                     f"{s.simulated_tokens_per_step:.4f} simulated over {s.verify_rows:,} verifications")
    c = r.cost
    if c is not None:
        if c.usd_per_gpu_hour is not None:
            lines.append(f"  cost        ${c.usd_per_gpu_hour:.2f} per GPU-hour ({c.price_source}): "
                         f"${(c.usd_per_million_input or 0):.4f} per M input tokens, "
                         f"${(c.usd_per_million_output or 0):.4f} per M output tokens (time split by FLOPs); "
                         f"${(c.usd_per_million_output_all or 0):.4f} per M output tokens with the whole bill")
        else:
            lines.append(f"  cost        {c.price_source}")
        if c.tdp_watts is not None:
            lines.append(f"  energy      {c.tdp_watts:g} W busy, {c.idle_watts:g} W idle ({c.power_source}): "
                         f"{(c.joules_per_output_token or 0):.3f} J per output token, {(c.joules_per_token or 0):.3f} J "
                         f"per token, {(c.energy_j or 0) / 3.6e6:.3f} kWh")
        else:
            lines.append(f"  energy      {c.power_source}")
    lines += [f"  note: {t}" for t in r.notes]
    return "\n".join(lines) + "\n"


def format_points(points: list[Any], slo: float | None) -> str:
    lines = [f"  {'rate (req/s)':>13}{'p99 TTFT':>12}{'p99 TPOT':>12}{'requests/s':>12}{'output tok/s':>14}  meets SLO"]
    for p in points:
        lines.append(f"  {p.rate:>13.3f}{_ms(p.ttft_p99_s):>12}{_ms(p.tpot_p99_s):>12}{p.requests_per_s:>12.2f}"
                     f"{p.output_tokens_per_s:>14,.0f}  {'yes' if p.meets else 'no'}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from ..serving import SchedulerConfig, Server, Speculative
    from ..serving.simulator import RatePoint, max_rate_under_slo, meets_slo, stderr_progress
    from ..serving.workload import Lengths, Workload

    extra = _rates(args.rates)
    prompt, output = Lengths.parse(args.prompt_len, "--prompt-len"), Lengths.parse(args.output_len, "--output-len")
    if args.max_len is not None:
        prompt = prompt.model_copy(update={"maximum": args.max_len})
        output = output.model_copy(update={"maximum": args.max_len})
    workload = Workload.make(prompt=prompt, output=output, rate=args.rate, arrival=args.arrival,
                             num_requests=args.requests, seed=args.seed, trace=args.trace)
    spec = None
    if (args.spec_k is None) != (args.spec_accept is None):
        from ..errors import QueryError

        raise QueryError("speculative decoding needs both --spec-k and --spec-accept")
    if args.spec_k is not None:
        spec = Speculative.make(args.spec_k, args.spec_accept, args.spec_draft, args.spec_cost_ratio)
    config = SchedulerConfig.make(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_batched_tokens,
                                  block_size=args.block_size, memory_fraction=args.memory_fraction,
                                  num_kv_blocks=args.num_kv_blocks, prefix_cache_hit=args.prefix_hit)
    from .roofline import plan_of

    plan = plan_of(args)
    model = load_model(args)
    model_config = None
    if spec is not None and spec.draft == "mtp":
        from ..config import load_config

        model_config = load_config(args.model, hf_token=args.hf_token, revision=args.revision)
    server = Server(model, args.device, config=model_config, engine=args.engine, scheduler=config, speculative=spec,
                    weight_dtype=args.weight_dtype, act_dtype=args.act_dtype, kv_dtype=args.kv_dtype,
                    flops_efficiency=args.flops_efficiency, bandwidth_efficiency=args.bandwidth_efficiency,
                    cost_per_hour=args.cost_per_hour, tdp_watts=args.tdp, idle_fraction=args.idle_fraction,
                    plan=plan, system=args.system)
    show = None if (args.quiet or args.fmt == "json") else stderr_progress()
    search = None
    points: list[RatePoint] = []
    if args.find_max_rate:
        search = max_rate_under_slo(None, workload=workload, slo_ttft_s=args.slo_ttft, slo_tpot_s=args.slo_tpot,
                                    server=server, progress=show)
        points = list(search.points)
        result = search.at_rate
    else:
        result = server.run(workload, progress=show)
    for rate in extra:
        if any(p.rate == rate for p in points):
            continue
        r = server.run(workload.with_rate(rate), progress=show)
        ok, ttft, tpot = meets_slo(r, 99.0, args.slo_ttft, args.slo_tpot)
        points.append(RatePoint(rate=rate, ttft_p99_s=ttft, tpot_p99_s=tpot, requests_per_s=r.requests_per_s,
                                output_tokens_per_s=r.output_tokens_per_s, meets=ok))
    points.sort(key=lambda p: p.rate)
    if args.plot and result is not None:
        from ..serving.plots import plot_serving

        written = plot_serving(result, args.plot, points or None, args.slo_ttft,
                               search.saturation_rate if search is not None else None)
        note(f"wrote {written}")
    if args.fmt == "json":
        body: dict[str, Any] = {"result": result.model_dump(mode="json") if result is not None else None}
        if search is not None:
            body["search"] = search.model_dump(mode="json", exclude={"at_rate"})
        if extra:
            body["points"] = [p.model_dump(mode="json") for p in points]
        emit(json.dumps(body if (search is not None or extra) else body["result"], indent=2) + "\n")
        return 0
    text = ""
    if search is not None:
        slo = f"p99 TTFT <= {args.slo_ttft:g} s" + (f", p99 TPOT <= {args.slo_tpot:g} s" if args.slo_tpot else "")
        text += (f"max rate under the SLO ({slo}): {search.rate:.3f} requests/s (saturation: "
                 f"{search.saturation_rate:.3f} requests/s with every request at once)\n")
        text += "".join(f"  note: {t}\n" for t in search.notes)
    if points:
        text += format_points(points, args.slo_ttft)
    if result is not None:
        text += ("at that rate:\n" if search is not None else "") + format_result(result)
    emit(text)
    return 0
