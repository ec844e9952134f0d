"""``llm-profiler roofline``: roofline time of a prefill, a decode step or a whole generation on a device."""

from __future__ import annotations

import argparse
from typing import Any

from ..checks import check_int, check_new_tokens, short
from ..errors import LimitError, ShapeError
from ..hardware import list_devices
from ..phases import PHASES, PREFILL, Phase
from ._common import (
    add_engine_arg,
    add_format_args,
    add_model_args,
    add_subcommand,
    dtype_arg,
    emit,
    float_arg,
    int_arg,
    load_model,
    note,
)

ORDER = 40
MAX_BATCHES = 256  # values of --batch: one roofline report each

EPILOG = """\
examples:
  llm-profiler roofline llama-2-7b --device a100-80gb --phase decode --past 1024
  llm-profiler roofline llama-3.1-8b --device a100-80gb --seq 2048 --engine hf-eager   # the transformers forward
  llm-profiler roofline llama-2-7b --device h100 --phase prefill --batch 8 --seq 2048 --nodes 10
  llm-profiler roofline llama-2-7b --phase generate --seq 512 --new-tokens 256 --lm-head last
  llm-profiler roofline mistral-7b --phase decode --past 8192 --weight-dtype int4 --kv-dtype fp8 --json
  llm-profiler roofline llama-2-7b --phase decode --batch 1,8,64 --plot roofline.png
  llm-profiler roofline llama-3.1-70b --system dgx-h100 --tp 8 --phase decode   # per rank, with communication

Per node: time = max(FLOPs / peak, bytes / bandwidth); a forward is the sum over its nodes (docs/phases.md).
"""


def add_dtype_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dtypes and device")
    group.add_argument("--device", default="a100-80gb", metavar="NAME",
                       help=f"device spec (default a100-80gb): {', '.join(list_devices())}")
    group.add_argument("--weight-dtype", type=dtype_arg, default=None, metavar="DT",
                       help="weight storage: fp32, bf16, fp16, fp8, int8, int4 (int4-gN) (default: as the config's "
                            "quantization_config, else bf16)")
    group.add_argument("--act-dtype", type=dtype_arg, default="bf16", metavar="DT", help="activation dtype (default bf16)")
    group.add_argument("--kv-dtype", type=dtype_arg, default=None, metavar="DT", help="KV-cache dtype (default: the activation dtype)")


def add_parallel_args(parser: argparse.ArgumentParser) -> None:
    """--tp / --pp / --dp / --ep / --sp / --micro-batches / --embedding and --system: the defaults are
    ``parallel.make_plan``'s (one place)."""
    import inspect

    from ..hardware.systems import list_systems
    from ..parallel.plan import make_plan

    default = {k: v.default for k, v in inspect.signature(make_plan).parameters.items()}
    group = parser.add_argument_group("parallelism (docs/parallel.md)")
    group.add_argument("--system", default=None, metavar="NAME|FILE",
                       help=f"a multi-device system (its device replaces --device): {', '.join(list_systems())}, "
                            "or a .json / .yaml system file")
    for flag, name, what in (("--tp", "tp", "tensor-parallel ranks"), ("--pp", "pp", "pipeline stages"),
                             ("--dp", "dp", "data-parallel replicas"), ("--ep", "ep", "expert-parallel ranks (divides dp)"),
                             ("--cp", "cp", "context-parallel ranks (a prefill's prompt split)"),
                             ("--micro-batches", "micro_batches", "pipeline micro-batches")):
        group.add_argument(flag, dest=name, type=int_arg(1, 1 << 20, name=name), default=default[name], metavar="N",
                           help=f"{what} (default {default[name]})")
    group.add_argument("--sp", action="store_true", default=default["sp"],
                       help="sequence parallelism in the tensor-parallel group (reduce-scatter + all-gather)")
    group.add_argument("--embedding", choices=("vocab", "replicated"), default=default["embedding"],
                       help="vocab-parallel embedding (Megatron, vLLM) or replicated (transformers' tp plan) "
                            f"(default {default['embedding']})")


def plan_of(args: argparse.Namespace) -> Any:
    """The plan the options ask for, or None when none is asked (one device, no --system)."""
    from ..parallel.plan import make_plan

    plan = make_plan(tp=args.tp, pp=args.pp, dp=args.dp, ep=args.ep, sp=args.sp, micro_batches=args.micro_batches,
                     embedding=args.embedding, cp=args.cp)
    if plan == make_plan() and args.system is None:
        return None
    return plan


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "roofline", help="roofline time of a prefill, decode step or generation",
                            description="Roofline latency, bytes moved, FLOPs and utilization of one inference "
                                        "phase on a device.", epilog=EPILOG)
    add_model_args(parser)
    shape = parser.add_argument_group("phase and shape")
    shape.add_argument("--phase", choices=PHASES, default=PREFILL, help="default prefill")
    shape.add_argument("-b", "--batch", default="1", metavar="B",
                       help=f"sequences (default 1; a comma list of at most {MAX_BATCHES} plots one point per batch "
                            "with --plot)")
    shape.add_argument("-s", "--seq", type=int_arg(1, name="seq"), default=None, metavar="S",
                       help="prompt tokens (prefill, generate; default 2048) or tokens per decode step (default 1)")
    shape.add_argument("-p", "--past", type=int_arg(0, name="past"), default=0, metavar="P", help="cached tokens before (default 0)")
    shape.add_argument("-n", "--new-tokens", type=int_arg(1, None, name="new_tokens"), default=128, metavar="N",
                       help="tokens to generate (generate; default 128; at most 1,000,000)")
    shape.add_argument("--lm-head", choices=("all", "last"), default=None,
                       help="lm_head over all positions (a plain forward) or the last only (default: the engine's; "
                            "vllm: last, hf-eager: all)")
    add_engine_arg(parser, "vllm")
    add_dtype_args(parser)
    parser.add_argument("--compute-dtype", type=dtype_arg, default=None, metavar="DT",
                        help="the dtype the matmuls run at, which picks the peak (default: the activation dtype)")
    parser.add_argument("--flops-efficiency", type=float_arg(0, 1, min_open=True, name="flops_efficiency"), default=1.0, metavar="F",
                        help="fraction of peak FLOP/s attainable, in (0, 1] (default 1)")
    parser.add_argument("--bandwidth-efficiency", type=float_arg(0, 1, min_open=True, name="bandwidth_efficiency"), default=1.0, metavar="F",
                        help="fraction of peak bandwidth attainable, in (0, 1] (default 1)")
    parser.add_argument("--measured", type=float_arg(0, min_open=True, unit="seconds", name="measured"), default=None, metavar="SECONDS",
                        help="a measured latency of the phase: also print its MFU and MBU")
    parser.add_argument("--nodes", type=int_arg(0, name="nodes"), default=0, metavar="K", help="show the K slowest nodes (prefill, decode)")
    add_parallel_args(parser)
    add_format_args(parser)
    parser.add_argument("--plot", metavar="FILE", help="write a roofline chart to FILE (needs matplotlib)")
    parser.set_defaults(handler=run)


def _batches(text: str) -> list[int]:
    parts = [x for x in text.split(",") if x.strip()]
    if len(parts) > MAX_BATCHES:
        raise LimitError(f"--batch has {len(parts):,} values; at most {MAX_BATCHES} (one report each)")
    try:
        values = [int(x) for x in parts]
    except ValueError:
        raise ShapeError(f"--batch must be an integer or a comma list of integers, got {short(text)}") from None
    if not values:
        raise ShapeError(f"--batch must be an integer or a comma list of integers, got {short(text)}")
    return list(dict.fromkeys(check_int(v, "--batch", minimum=1, error=ShapeError) for v in values))


def _phase(args: argparse.Namespace, batch: int) -> Phase:
    if args.lm_head is None:
        from ..engines import get_engine

        args.lm_head = get_engine(args.engine).lm_head
    if args.phase == "decode":
        return Phase.decode(batch, args.past, args.seq or 1, args.lm_head)
    if args.phase == "generate":
        return Phase.generate(batch, args.seq or 2048, args.new_tokens, args.past, args.lm_head)
    return Phase.prefill(batch, args.seq or 2048, args.past, args.lm_head)


def run(args: argparse.Namespace) -> int:
    from ..perf import format_report, measured_utilization, phase_report, settings

    batches = _batches(args.batch)  # every size is checked before the model is loaded
    if args.phase == "generate":
        check_new_tokens(args.new_tokens, "--new-tokens")
    model = load_model(args)
    plan = plan_of(args)
    device: Any = args.device
    if args.system is not None:
        from ..hardware.systems import get_system

        device = get_system(args.system).device
    st = settings(device, args.weight_dtype, args.act_dtype, args.kv_dtype, args.compute_dtype,
                  args.flops_efficiency, args.bandwidth_efficiency)
    per_node = args.phase != "generate"
    reports = [phase_report(model, _phase(args, b), st, nodes=per_node and bool(args.nodes or args.plot),
                            engine=args.engine, plan=plan, system=args.system) for b in batches]
    if args.plot:
        from ..report.plots import plot_roofline

        points = []
        for r in reports:
            if per_node:  # every node a point, coloured by kind (and batch when several)
                tag = f" B={r.batch}" if len(reports) > 1 else ""
                points += [(f"{n.kind}{tag}", n.flops, n.bytes) for n in r.nodes if n.flops > 0 and n.bytes > 0]
            else:
                points += [(f"{r.phase} {label} B={r.batch}", p.flops.total, p.io.total)
                           for label, p in (("prefill", r.prefill), ("decode", r.decode)) if p]
        note(f"wrote {plot_roofline(points, st.device, st.compute_dtype, args.plot, st.flops_efficiency, st.bandwidth_efficiency)}")
    if args.fmt == "json":
        body = [r.model_dump(mode="json") for r in reports]
        import json

        emit(json.dumps(body[0] if len(body) == 1 else body, indent=2) + "\n")
        return 0
    if args.fmt in ("csv", "markdown"):
        emit(roofline_table(reports, args.fmt, args.exact, args.measured, st.device))
        return 0
    out = []
    for r in reports:
        text = format_report(r, args.nodes)
        if args.measured is not None:
            mfu, mbu = measured_utilization(r, args.measured, st.device)
            text += f"  measured {args.measured:g} s: MFU {mfu:.1%}   MBU {mbu:.1%}\n"
        out.append(text)
    emit("\n".join(out))
    return 0


ROOFLINE_COLUMNS = ("model", "device", "engine", "phase", "batch", "seq", "past", "new_tokens", "latency_s",
                    "tokens_per_s", "ttft_s", "tpot_s", "flops", "bytes", "mfu", "mbu", "bound", "fits")


def roofline_table(reports: list[Any], fmt: str, exact: bool, measured: float | None = None,
                   device: Any = None) -> str:
    """The main figures of each report, one row per batch (``--csv`` / ``--markdown``); with ``measured``,
    also its MFU and MBU."""
    from ..perf import measured_utilization
    from ..report.export import render_table

    header = list(ROOFLINE_COLUMNS) + (["measured_s", "measured_mfu", "measured_mbu"] if measured is not None else [])
    rows: list[list[Any]] = []
    for r in reports:
        row: list[Any] = [r.model, r.device, r.engine, r.phase, r.batch, r.seq, r.past,
                          r.new_tokens if r.phase == "generate" else None, r.latency_s, r.tokens_per_s, r.ttft_s,
                          r.tpot_s, r.flops.total, r.io.total, r.mfu, r.mbu, r.bound, r.fits]
        if measured is not None:
            row += [measured, *measured_utilization(r, measured, device)]
        rows.append(row)
    return render_table(header, rows, fmt, exact, left=4)
