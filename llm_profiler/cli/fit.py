"""``llm-profiler fit``: the largest batch (or context) whose weights, KV cache and activations fit a device."""

from __future__ import annotations

import argparse
from typing import Any

from ..traffic import weights_label
from ._common import (
    add_engine_arg,
    add_format_args,
    add_model_args,
    add_subcommand,
    emit,
    float_arg,
    int_arg,
    load_model,
)
from .roofline import add_dtype_args, add_parallel_args, plan_of

ORDER = 41
MAX_OVERHEAD_GIB = 1e6  # a million GiB: no device comes near it

EPILOG = """\
examples:
  llm-profiler fit llama-2-7b --device h100 --seq 2048                 # largest batch for 2048-token prompts
  llm-profiler fit llama-2-7b --device a100-80gb --seq 512 --context 4096 --kv-dtype fp8
  llm-profiler fit llama-2-7b --device rtx-4090 --solve context --batch 1 --weight-dtype int4
  llm-profiler fit mistral-7b --device l4 --seq 1024 --attention fused --memory-fraction 0.9 --json
  llm-profiler fit mixtral-8x7b --device a100-80gb          # does not fit one: names the smallest plan that does
  llm-profiler fit llama-3.1-70b --system dgx-h100 --tp 8 --context 8192   # per rank of a plan

Memory = weights + KV cache at the context + peak live activations of a forward (docs/phases.md).
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "fit", help="largest batch (or context) that fits a device",
                            description="Solve the largest batch (or context length) whose weights, KV cache "
                                        "and peak activations fit the device's memory.", epilog=EPILOG)
    add_model_args(parser)
    group = parser.add_argument_group("what to solve")
    group.add_argument("--solve", choices=("batch", "context"), default="batch", help="default batch")
    group.add_argument("-s", "--seq", type=int_arg(1, name="seq"), default=None, metavar="S",
                       help="prompt tokens prefilled in one forward (default 2048 for --solve batch; for "
                            "--solve context: the whole context in one forward)")
    group.add_argument("-c", "--context", type=int_arg(1, name="context"), default=None, metavar="C",
                       help="tokens the KV cache holds at the end (prompt + new; default: seq)")
    group.add_argument("-b", "--batch", type=int_arg(1, name="batch"), default=1, metavar="B", help="batch for --solve context (default 1)")
    group.add_argument("--lm-head", choices=("all", "last"), default=None,
                       help="logits for all positions (default) or the last only")
    group.add_argument("--attention", choices=("eager", "fused"), default=None,
                       help="eager attention keeps S x keys scores per head; fused (flash/SDPA) does not "
                            "(default: the engine's)")
    add_engine_arg(parser, "vllm")
    group.add_argument("--memory-fraction", type=float_arg(0, 1, min_open=True, name="memory_fraction"), default=1.0, metavar="F",
                       help="usable fraction of the device memory (default 1)")
    group.add_argument("--overhead", type=float_arg(0, MAX_OVERHEAD_GIB, unit="GiB", name="overhead"), default=0.0, metavar="GIB",
                       help="GiB reserved for the runtime (CUDA context, allocator) (default 0; at most 1e6)")
    add_dtype_args(parser)
    add_parallel_args(parser)
    add_format_args(parser)
    parser.set_defaults(handler=run)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def run(args: argparse.Namespace) -> int:
    from ..memory import largest_batch, largest_context

    model = load_model(args)
    common = dict(weight_dtype=args.weight_dtype, act_dtype=args.act_dtype, kv_dtype=args.kv_dtype,
                  lm_head=args.lm_head, memory_fraction=args.memory_fraction,
                  overhead_bytes=int(args.overhead * 2**30), attention=args.attention, engine=args.engine,
                  plan=plan_of(args), system=args.system)
    if args.solve == "batch":
        given = {} if args.seq is None else {"seq": args.seq}  # else largest_batch's default (2048): one default
        result = largest_batch(model, args.device, context=args.context, **given, **common)
    else:
        result = largest_context(model, args.device, args.batch, args.seq, **common)
    if args.fmt == "json":
        emit(result.model_dump_json(indent=2) + "\n")
        return 0
    if args.fmt in ("csv", "markdown"):
        emit(fit_table(result, args.fmt, args.exact))
        return 0
    d = result.dtypes
    lines = [f"{result.model} on {result.device} (weights {weights_label(d)}, activations {d['act']}, KV {d['kv']}, "
             f"engine {result.engine}{', per rank of ' + result.plan if result.plan else ''}): largest "
             f"{result.solved_for} = {result.value}"]
    if result.smallest_plan:
        lines.append(f"  smallest plan that fits: {result.smallest_plan}")
    for label, u in (("at", result.at_value), ("one more", result.at_next)):
        if u is None:
            continue
        lines.append(f"  {label:<9} batch {u.batch}, seq {u.seq}, context {u.context}: weights {_gib(u.weights)} + "
                     f"KV {_gib(u.kv_cache)} + activations {_gib(u.activations)} = {_gib(u.total)} "
                     f"of {_gib(u.capacity)} -> {'fits' if u.fits else 'does not fit'}")
    lines += [f"  note: {t}" for t in result.notes]
    emit("\n".join(lines) + "\n")
    return 0


FIT_COLUMNS = ("model", "device", "engine", "solved_for", "usage", "value", "batch", "seq", "context", "weights",
               "kv_cache", "activations", "total", "capacity", "fits")


def fit_table(result: Any, fmt: str, exact: bool) -> str:
    """The answer and the memory at it and one beyond it, one row each (``--csv`` / ``--markdown``; bytes)."""
    from ..report.export import render_table

    rows = [[result.model, result.device, result.engine, result.solved_for, label, result.value, u.batch, u.seq,
             u.context, u.weights, u.kv_cache, u.activations, u.total, u.capacity, u.fits]
            for label, u in (("at", result.at_value), ("one more", result.at_next)) if u is not None]
    return render_table(list(FIT_COLUMNS), rows, fmt, exact, left=5)
