"""``llm-profiler profile``: one model at one shape: the summary, one number, or the per-layer table."""

from __future__ import annotations

import argparse
from typing import Any

from .. import metrics as M
from ..api import summary_lines, summary_metrics
from ..errors import QueryError
from ..hardware.dtypes import get_dtype
from ..report.export import per_layer_result, render_table, summary_table, to_json
from ._common import (
    METRIC_HELP,
    SCOPE_HELP,
    add_engine_arg,
    add_format_args,
    add_model_args,
    add_shape_args,
    add_subcommand,
    emit,
    int_list,
    load_model,
    metric_arg,
    metric_list,
    note,
    scope_name,
)

ORDER = 10

EPILOG = """\
examples:
  llm-profiler profile llama-2-7b --batch 16 --seq 200            # the seed's summary of the transformer
  llm-profiler profile llama-2-7b --exact                          # exact integers, not 3.16  (10^12)
  llm-profiler profile qwen3-30b-a3b --kv-dtype fp8                # MoE: active params; KV bytes in fp8
  llm-profiler profile llama-2-7b --seq 1 --past 4096              # one decode step after 4096 tokens
  llm-profiler profile llama-2-7b --metric macs --scope attn       # one number
  llm-profiler profile llama-2-7b --metric flops --scope layers.0 -q # just the integer
  llm-profiler profile llama-2-7b --per-layer --layers 0,1         # per-layer table (human units)
  llm-profiler profile llama-2-7b --per-layer --exact --metrics flops,params
  llm-profiler profile llama-2-7b --json                           # totals as JSON
  llm-profiler profile llama-2-7b --per-layer --plot layers.png    # stacked per-layer bars

The summary counts the transformer (everything but lm_head) unless --scope says otherwise, and says what it
leaves out. Counts print in the seed's notation, a mantissa times a power of ten that is a multiple of 3
(MULT:       3.16  (10^12) is 3.16e12); --exact prints the integers. CACHE and ACT are element counts, with
their bytes at --kv-dtype / --act-dtype beside them.
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "profile", help="count one model at one shape",
                            description="Exact counts of one model at one (batch, seq, past) shape.",
                            epilog=EPILOG)
    add_model_args(parser)
    add_engine_arg(parser, "hf-eager", counts=True)
    add_shape_args(parser)
    query = parser.add_argument_group("what to show")
    query.add_argument("-m", "--metric", dest="attr", type=metric_arg, metavar="METRIC",
                       help=f"print one {METRIC_HELP}")
    query.add_argument("--attr", dest="attr", type=metric_arg, help=argparse.SUPPRESS)  # the old name, hidden
    query.add_argument("--scope", metavar="SCOPE", help=SCOPE_HELP)
    query.add_argument("--metrics", type=metric_list, metavar="M1,M2",
                       help="metrics of the summary or of the table columns (default: the seed's ten)")
    query.add_argument("--per-layer", action="store_true",
                       help="the breakdown table: embed, each layer and its parts, final norm, lm_head, total")
    query.add_argument("--layers", type=int_list, metavar="0,1,4-7", help="only these layers in --per-layer")
    query.add_argument("-q", "--quiet", action="store_true", help="with --metric: print only the integer")
    query.add_argument("--plot", metavar="FILE", help="also write stacked per-layer bars of --metric (default "
                                                       "flops) to FILE (.png, .svg or .pdf; needs matplotlib)")
    dtypes = parser.add_argument_group("bytes beside CACHE and ACT")
    dtypes.add_argument("--act-dtype", default="bf16", metavar="DT", help="activation dtype (default bf16)")
    dtypes.add_argument("--kv-dtype", default=None, metavar="DT",
                        help="KV-cache dtype (default: the activation dtype)")
    add_format_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.layers is not None and not args.per_layer:
        raise QueryError("--layers only applies to --per-layer")
    if args.per_layer and args.scope is not None:
        raise QueryError("--scope does not apply to --per-layer (the table shows every scope)")
    if args.attr is not None and args.metrics is not None:
        raise QueryError("use either --metric (one metric) or --metrics (several)")
    for option, name in (("--act-dtype", args.act_dtype), ("--kv-dtype", args.kv_dtype)):
        if name is not None:
            try:
                get_dtype(name)
            except QueryError as err:
                raise QueryError(f"{option}: {err}") from None
    prof = load_model(args).at(args.batch, args.seq, args.past)
    if args.plot:
        from ..report.plots import plot_layers

        note(f"wrote {plot_layers(prof, args.attr or M.FLOPS, args.plot)}")
    if args.per_layer:
        emit(_per_layer(prof, args))
    elif args.attr is not None:
        emit(_one(prof, args))
    else:
        emit(_summary(prof, args))
    return 0


def _per_layer(prof: Any, args: argparse.Namespace) -> str:
    metrics = args.metrics or ([args.attr] if args.attr else list(M.SUMMARY))
    if args.layers is not None:
        n_layers = len(prof.by_layer(M.PARAMS))
        bad = [i for i in args.layers if not 0 <= i < n_layers]
        if bad:
            raise QueryError(f"--layers: no layer {bad[0]}; the model has layers 0..{n_layers - 1}")
    if args.fmt == "json":
        return to_json(per_layer_result(prof, metrics, args.layers))
    return prof.table(metrics, exact=args.exact, fmt=args.fmt, layers=args.layers)


def _one(prof: Any, args: argparse.Namespace) -> str:
    scope = scope_name(args.scope)
    if args.fmt == "json":
        return to_json(prof.result(scope, [args.attr]))
    value = prof.total(args.attr, scope)
    if args.quiet:
        return f"{value}\n"
    if args.fmt in ("csv", "markdown"):
        return render_table(["scope", "metric", "value"], [[scope, M.LABELS[args.attr], value]], args.fmt,
                            args.exact, left=2)
    return _seed_text(prof, scope, {args.attr: value}, args)


def _summary(prof: Any, args: argparse.Namespace) -> str:
    scope = scope_name(args.scope)
    result = prof.result(scope, summary_metrics(prof, scope, args.metrics or M.SUMMARY))
    if args.fmt == "json":
        return to_json(result)
    if args.fmt in ("csv", "markdown"):
        return summary_table(result, args.fmt, args.exact)
    return _seed_text(prof, scope, result.totals, args)


def _seed_text(prof: Any, scope: str, values: dict[str, int], args: argparse.Namespace) -> str:
    lines = summary_lines(prof, scope, values, exact=args.exact, act_dtype=args.act_dtype, kv_dtype=args.kv_dtype,
                          how="--scope model")
    return "\n".join(lines) + "\n"
