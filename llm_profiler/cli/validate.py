"""``llm-profiler validate``: run the real transformers model and compare every module's counts."""

from __future__ import annotations

import argparse
from typing import Any

from ..report.export import to_json
from ._common import add_model_args, add_shape_args, add_subcommand, emit

ORDER = 50

EPILOG = """\
examples:
  llm-profiler validate llama-3.2-1b --batch 2 --seq 3                # full size, on the meta device
  llm-profiler validate llama-3.2-1b --batch 3 --seq 7 --past 5 --tiny  # tiny dims, real CPU run
  llm-profiler validate llama-3.2-1b --seq 1 --past 9 --all            # every row, not only mismatches
  llm-profiler validate llama-3.2-1b --seq 7 --past 5 --engine hf-sdpa # transformers' SDPA attention
  llm-profiler validate ./my-model/config.json --json
  llm-profiler validate llama-3.2-1b --seq 2048 --peak --peak-dtype bf16  # + measured vs predicted peak memory

Needs the validation extra (pip install 'llm-profiler[validate]': torch and transformers).
Exit code: 0 when every module x metric value is exact, 1 on any mismatch or unknown aten op, 2 on errors
(e.g. torch or transformers missing).
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "validate", help="check the counts against the real model (torch)",
                            description="Measure the transformers model op by op (aten dispatch) and compare "
                                        "each module's counts with the formulas.", epilog=EPILOG)
    add_model_args(parser, "config", help="preset alias or hub id, config.json path or folder")
    add_shape_args(parser, batch=1, seq=8, past=0)
    parser.add_argument("--tiny", action="store_true",
                        help="the same architecture at tiny dimensions, run for real on the CPU")
    parser.add_argument("--all", action="store_true", help="print every row, not only the mismatches")
    parser.add_argument("--engine", choices=("hf-eager", "hf-sdpa"), default="hf-eager",
                        help="the transformers attention run and compared: hf-eager (the reference) or hf-sdpa "
                             "(SDPA, against the hf-sdpa execution profile) (default hf-eager)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json", help="the full report as JSON")
    fmt.add_argument("--csv", dest="fmt", action="store_const", const="csv",
                     help="the rows (mismatches, or every row with --all) as CSV with exact integers")
    fmt.add_argument("--markdown", dest="fmt", action="store_const", const="markdown",
                     help="the rows as a Markdown table")
    parser.set_defaults(fmt="text")
    parser.add_argument("--peak", action="store_true",
                        help="also measure the peak live bytes of the forward and compare them with the memory "
                             "model (activations + the KV cache it leaves); with --json: {validation, peak}")
    parser.add_argument("--peak-dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="dtype of the --peak run and prediction (default fp32)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..validation import validate

    if args.revision is not None or args.hf_token is not None:
        from ..config import load_config

        source: Any = load_config(args.config, hf_token=args.hf_token, revision=args.revision)
    else:
        source = args.config
    report = validate(source, args.batch, args.seq, args.past, tiny=args.tiny, as_family=args.as_family,
                      engine=args.engine)
    if args.peak:  # validate() has checked that torch and transformers import
        import json

        from ..validation.peak import compare_peak

        peak = compare_peak(source, args.batch, args.seq, args.past, tiny=args.tiny, dtype=args.peak_dtype,
                            as_family=args.as_family)
        if args.fmt == "json":
            both = {"validation": report.model_dump(mode="json"), "peak": peak.model_dump(mode="json")}
            emit(json.dumps(both, indent=2) + "\n")
        elif args.fmt in ("csv", "markdown"):
            emit(_rows(report, args) + "\n" + peak.summary_line() + "\n")
        else:
            emit(report.table(all_rows=args.all, exact=True) + peak.summary_line() + "\n")
        return 0 if report.ok else 1  # the peak is a model, not an exact count: it does not set the exit code
    if args.fmt == "json":
        emit(to_json(report))
    elif args.fmt in ("csv", "markdown"):
        emit(_rows(report, args))
    else:
        emit(report.table(all_rows=args.all, exact=True))
    return 0 if report.ok else 1


def _rows(report: Any, args: argparse.Namespace) -> str:
    """``--csv`` / ``--markdown``: one row per node x metric (the mismatches, or every row with ``--all``)."""
    from ..report.export import render_table

    rows = report.rows if args.all else report.mismatches
    return render_table(["node", "metric", "predicted", "measured", "difference"],
                        [[r.node or "(root)", r.metric, r.predicted, r.measured, r.diff] for r in rows],
                        args.fmt, exact=True, left=2)
