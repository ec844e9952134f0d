"""``llm-profiler compare``: two models at one shape, or one model at two shapes, side by side."""

from __future__ import annotations

import argparse
from typing import Any

from .. import metrics as M
from ..errors import QueryError
from ..report.export import compare_result, compare_table, to_json
from ._common import (
    SCOPE_HELP,
    add_engine_arg,
    add_format_args,
    add_model_args,
    add_shape_args,
    add_subcommand,
    emit,
    load_model,
    metric_list,
    scope_name,
    shape_triple,
)

ORDER = 20

EPILOG = """\
examples:
  llm-profiler compare llama-2-7b mistral-7b --seq 4096             # two models, same shape
  llm-profiler compare llama-2-7b --seq 2048 --shape2 1,1,2048       # prefill vs one decode step
  llm-profiler compare llama-2-7b llama-3.1-8b --scope attn --metrics flops,cache --markdown

The ratio column is right / left ("-" where the left value is 0).
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "compare", help="two configs (or one at two shapes) side by side",
                            description="Totals of two profiles side by side, with their ratio.", epilog=EPILOG)
    add_model_args(parser, "model", help="the left model (preset, hub id, config.json path or folder)")
    add_engine_arg(parser, "hf-eager", counts=True)
    parser.add_argument("model2", metavar="MODEL2", nargs="?",
                        help="the right model (default: MODEL again, at --shape2)")
    add_shape_args(parser)
    parser.add_argument("--shape2", type=shape_triple, metavar="B,S[,P]",
                        help="the right side's shape (default: the same as the left)")
    parser.add_argument("--scope", metavar="SCOPE", help=SCOPE_HELP)
    parser.add_argument("--metrics", type=metric_list, metavar="M1,M2",
                        help="metrics to compare (default: the seed's ten)")
    add_format_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.model2 is None and args.shape2 is None:
        raise QueryError("compare needs a second model (MODEL2) or a second shape (--shape2 B,S[,P])")
    scope = scope_name(args.scope)
    metrics = args.metrics or list(M.SUMMARY)
    left = load_model(args).at(args.batch, args.seq, args.past)
    right_model = load_model(args, args.model2) if args.model2 is not None else left.model
    right = right_model.at(*(args.shape2 or (args.batch, args.seq, args.past)))
    result = compare_result(left.result(scope, metrics), right.result(scope, metrics))
    if args.fmt == "json":
        emit(to_json(result))
        return 0
    text = compare_table(result, args.fmt, args.exact)
    if args.fmt == "text":
        title = (f"{result.left.model} at two shapes" if result.left.model == result.right.model
                 else f"{result.left.model} vs {result.right.model}")
        text = f"{scope}: {title}\n{text}"
    emit(text)
    return 0
