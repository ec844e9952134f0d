"""``llm-profiler sweep``: metrics over a grid of shapes, evaluated vectorised, written as CSV."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from .. import metrics as M
from ..checks import MAX_GRID_POINTS, check_grid
from ..profile import ModelProfile, check_shape
from ..report.export import sweep_table, to_json
from ..results import SweepPoint, SweepResult
from ._common import (
    SCOPE_HELP,
    add_engine_arg,
    add_format_args,
    add_model_args,
    add_subcommand,
    emit,
    grid,
    load_model,
    metric_list,
    note,
    scope_name,
)

ORDER = 30

EPILOG = """\
examples:
  llm-profiler sweep llama-2-7b --metrics flops --batch 1,2,4 --seq 128:4096:x2 --past 0,512
  llm-profiler sweep llama-2-7b --metrics flops,cache --seq 1 --past 0:8192:1024 -o decode.csv
  llm-profiler sweep llama-2-7b --metrics flops --seq 128:32768:x2 --plot flops_vs_seq.png

Value lists: 1,2,4 | start:stop:xFACTOR (geometric, stop included) | start:stop:STEP | a mix (1,2,8:64:x2).
A sweep has at most 1,000,000 points (batch values x seq values x past values), counted before anything is
expanded; a million points take about 15 s and 1.2 GB.
Rows run over every (batch, seq, past) combination, batch slowest. Counts are exact integers (values that
could overflow int64 are recomputed with Python integers).
--plot draws prefill (S=seq, P=0) and decode (S=1, P=seq) curves of the first metric over the --seq values,
at the first --batch value.
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "sweep", help="metrics over a grid of shapes, as CSV",
                            description="Exact counts over every combination of batch, seq and past.",
                            epilog=EPILOG)
    add_model_args(parser)
    add_engine_arg(parser, "hf-eager", counts=True)
    parser.add_argument("--metrics", dest="metrics", type=metric_list, default=[M.FLOPS],
                        metavar="M1,M2", help="metric(s) to sweep (default flops)")
    # the old names, hidden: `-m/--metric/--attr` took the same comma list
    parser.add_argument("-m", "--metric", "--attr", dest="metrics", type=metric_list, help=argparse.SUPPRESS)
    parser.add_argument("--scope", metavar="SCOPE", help=SCOPE_HELP)
    parser.add_argument("-b", "--batch", type=grid, default=[1], metavar="LIST", help="batch values (default 1)")
    parser.add_argument("-s", "--seq", type=grid, default=[2048], metavar="LIST",
                        help="new-token values (default 2048)")
    parser.add_argument("-p", "--past", type=grid, default=[0], metavar="LIST", help="cached-token values (default 0)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--plot", metavar="FILE", help="also write a metric vs sequence length plot (.png/.svg)")
    add_format_args(parser, ("csv", "json", "markdown", "text"), default="csv")
    parser.set_defaults(handler=run)


def evaluate(model: ModelProfile, metric: str, scope: str, shapes: list[tuple[int, int, int]]) -> list[int]:
    """The metric at every shape, vectorised and exact (ModelProfile.sweep goes to Python ints past int64)."""
    import numpy as np

    b, s, p = (np.array(axis, dtype=np.int64) for axis in zip(*shapes))
    return [int(v) for v in model.sweep(metric, scope, batch=b, seq=s, past=p)]


LARGE_SWEEP = 100_000  # points past which a note on stderr says the sweep takes a while


def run(args: argparse.Namespace) -> int:
    # Counted first: the product of the axes, before the model is even loaded.
    points = check_grid({"batch": len(args.batch), "seq": len(args.seq), "past": len(args.past)}, MAX_GRID_POINTS)
    model = load_model(args)
    scope = scope_name(args.scope)
    # The same checks as one shape (ShapeError names batch, seq or past).
    for b in args.batch:
        check_shape(b, 1, 0)
    for s in args.seq:
        check_shape(1, s, 0)
    for p in args.past:
        check_shape(1, 1, p)
    if points > LARGE_SWEEP:
        note(f"sweep: {points:,} points x {len(args.metrics)} metric(s); about {points * 15 // 1_000_000 + 1} s")
    shapes = list(itertools.product(args.batch, args.seq, args.past))
    columns = {m: evaluate(model, m, scope, shapes) for m in args.metrics}
    spec = model.spec
    result = SweepResult(
        model=spec.name, model_type=spec.model_type, family=spec.family, scope=scope, metrics=list(args.metrics),
        points=[SweepPoint(batch=b, seq=s, past=p, values={m: columns[m][i] for m in args.metrics})
                for i, (b, s, p) in enumerate(shapes)],
    )
    if args.plot:
        from ..report.plots import plot_seq_curve

        note(f"wrote {plot_seq_curve(model, args.metrics[0], args.seq, args.plot, batch=args.batch[0], scope=scope)}")
    text = to_json(result) if args.fmt == "json" else sweep_table(result, args.fmt, args.exact)
    emit(text, args.output)
    return 0
