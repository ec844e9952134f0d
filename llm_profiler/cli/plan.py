"""``llm-profiler plan``: the parallel plans of a system ranked by latency or throughput under its memory."""

from __future__ import annotations

import argparse
from typing import Any

from ..phases import DECODE, PHASES
from ._common import (
    add_engine_arg,
    add_format_args,
    add_model_args,
    add_subcommand,
    emit,
    int_arg,
    load_model,
)

ORDER = 42

EPILOG = """\
examples:
  llm-profiler plan llama-3.1-70b --system dgx-h100 --phase decode --batch 8
  llm-profiler plan mixtral-8x7b --system hgx-a100-8 --objective throughput --batch 64 --top 10
  llm-profiler plan deepseek-v3 --system dgx-h200 --phase decode --batch 64 --past 2048 --json

Every tp x pp x dp = devices of the system (ep over the dp replicas for MoE models), each checked against
the model and its busiest rank's memory; plans that fit first (docs/parallel.md).
"""


def register(subparsers: Any) -> None:
    from ..hardware.systems import list_systems
    from ..parallel.search import OBJECTIVES, search_plans

    parser = add_subcommand(subparsers, "plan", help="the best parallel plans of a system",
                            description="Search the parallel plans (tp, pp, dp, ep) of a system for the best latency "
                                        "or throughput of one phase, under each rank's memory.", epilog=EPILOG)
    add_model_args(parser)
    parser.add_argument("--system", required=True, metavar="NAME|FILE",
                        help=f"{', '.join(list_systems())}, or a .json / .yaml system file")
    parser.add_argument("--phase", choices=[p for p in PHASES if p != "generate"], default=DECODE, help="default decode")
    parser.add_argument("-b", "--batch", type=int_arg(1, name="batch"), default=1, metavar="B", help="sequences (default 1)")
    parser.add_argument("-s", "--seq", type=int_arg(1, name="seq"), default=None, metavar="S",
                        help="prompt tokens (prefill; default 2048) or tokens per decode step (default 1)")
    parser.add_argument("-p", "--past", type=int_arg(0, name="past"), default=0, metavar="P", help="cached tokens (default 0)")
    import inspect

    defaults = inspect.signature(search_plans).parameters
    parser.add_argument("--objective", choices=OBJECTIVES, default=defaults["objective"].default,
                        help=f"rank by latency or tokens/s (default {defaults['objective'].default})")
    parser.add_argument("--top", type=int_arg(1, 1000, name="top"), default=defaults["top"].default, metavar="K",
                        help=f"plans to list (default {defaults['top'].default})")
    add_engine_arg(parser, "vllm")
    add_format_args(parser, formats=("json",))
    parser.set_defaults(handler=run)


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def run(args: argparse.Namespace) -> int:
    from ..parallel.search import search_plans

    model = load_model(args)
    result = search_plans(model, args.system, args.phase, batch=args.batch, seq=args.seq, past=args.past,
                          objective=args.objective, top=args.top, engine=args.engine)
    if args.fmt == "json":
        emit(result.model_dump_json(indent=2) + "\n")
        return 0
    gib = 2**30
    lines = [f"{result.model} {result.phase} (batch {result.batch}, seq {result.seq}, past {result.past}) on "
             f"{result.system}, engine {result.engine}: best {len(result.plans)} plans by {result.objective}",
             f"  {'plan':<22} {'latency ms':>10} {'tokens/s':>11} {'compute':>9} {'memory':>9} {'comm':>9} "
             f"{'bubble':>9} {'GiB/rank':>9} fits"]
    for p in result.plans:
        lines.append(f"  {p.plan:<22} {_ms(p.latency_s):>10} {p.tokens_per_s:>11,.1f} {_ms(p.compute_s):>9} "
                     f"{_ms(p.memory_s):>9} {_ms(p.communication_s):>9} {_ms(p.bubble_s):>9} "
                     f"{p.memory_bytes_per_rank / gib:>9.2f} {'yes' if p.fits else 'NO'}")
    lines.append("  (compute, memory, comm, bubble in ms; GiB/rank: weights + KV + activations of the busiest rank)")
    if result.skipped:
        lines.append(f"  skipped {len(result.skipped)} plans that do not apply at this batch, e.g. {result.skipped[0]}")
    emit("\n".join(lines) + "\n")
    return 0
