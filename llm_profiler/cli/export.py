"""``llm-profiler export``: the symbolic formula of a metric, structured by powers of S."""

from __future__ import annotations

import argparse
from typing import Any

from .. import metrics as M
from ..report.export import EXPORT_FORMATS, export_expr
from ._common import (
    METRIC_HELP,
    SCOPE_HELP,
    add_engine_arg,
    add_model_args,
    add_subcommand,
    emit,
    load_model,
    metric_arg,
    scope_name,
)

ORDER = 60

EPILOG = """\
examples:
  llm-profiler export llama-2-7b                                  # FLOPs of the transformer, by powers of S
  llm-profiler export llama-2-7b --metric macs --scope attn --format latex
  llm-profiler export llama-2-7b --metric cache --format sympy    # parseable by sympy.sympify
  llm-profiler export llama-2-7b --format python > flops.py       # a function computing it exactly

Symbols: B batch, S new tokens per sequence, P tokens already in the KV cache. The expression is expanded,
then collected by powers of S (the quadratic attention term apart from the per-token one), each coefficient
collected by B.
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "export", help="the symbolic formula (text, sympy, LaTeX, Python)",
                            description="The exact formula of a metric in B, S and P.", epilog=EPILOG)
    add_model_args(parser)
    add_engine_arg(parser, "hf-eager", counts=True)
    parser.add_argument("-m", "--metric", dest="metric", type=metric_arg, default=M.FLOPS,
                        metavar="METRIC", help=f"{METRIC_HELP} (default flops)")
    parser.add_argument("--attr", dest="metric", type=metric_arg, help=argparse.SUPPRESS)  # the old name, hidden
    parser.add_argument("--scope", metavar="SCOPE", help=SCOPE_HELP)
    parser.add_argument("-f", "--format", choices=EXPORT_FORMATS, default="text",
                        help="text (by powers of S, default), sympy, latex or python")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    model = load_model(args)
    scope = scope_name(args.scope)
    expr = model.expr(args.metric, scope)
    emit(export_expr(expr, args.format, metric=args.metric, scope=scope, model=model.spec.name), args.output)
    return 0
