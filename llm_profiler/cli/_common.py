"""Shared pieces of the subcommands: the parser class, argument groups, value parsers, output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import metrics as M
from ..errors import ProfilerError, QueryError
from ..profile import ModelProfile, profile_model
from ..scopes import valid_scopes_text

# Defaults of the shape options: one sequence, a 2048-token prompt, an empty cache (a typical prefill).
DEFAULT_BATCH, DEFAULT_SEQ, DEFAULT_PAST = 1, 2048, 0
MAX_GRID_POINTS = 1_000_000  # a sweep larger than this is almost surely a typo


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def add_subcommand(subparsers: Any, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_args(parser: argparse.ArgumentParser, name: str = "model", help: str | None = None) -> None:
    parser.add_argument(name, metavar=name.upper(),
                        help=help or "preset alias or hub id (see `llm-profiler presets`), config.json path or folder")
    add_source_args(parser)


def add_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("config loading")
    group.add_argument("--as-family", metavar="TYPE", help="treat the config as this model_type's family")
    group.add_argument("--hf-token", metavar="TOKEN", help="token for gated hub repos (default: $HF_TOKEN)")
    group.add_argument("--revision", metavar="REV", help="hub revision (branch, tag or commit)")


def add_shape_args(parser: argparse.ArgumentParser, batch: int = DEFAULT_BATCH, seq: int = DEFAULT_SEQ,
                   past: int = DEFAULT_PAST) -> None:
    group = parser.add_argument_group("shape")
    group.add_argument("-b", "--batch", type=int, default=batch, metavar="B",
                       help=f"sequences processed together (default {batch})")
    group.add_argument("-s", "--seq", type=int, default=seq, metavar="S",
                       help=f"new tokens per sequence in this forward (default {seq})")
    group.add_argument("-p", "--past", type=int, default=past, metavar="P",
                       help=f"tokens already in the KV cache (default {past}; S=1 with P>0 is a decode step)")


def add_format_args(parser: argparse.ArgumentParser, formats: Sequence[str] = ("json", "csv", "markdown"),
                    default: str = "text") -> None:
    group = parser.add_mutually_exclusive_group()
    helps = {"json": "JSON (pydantic schema, see docs/api.md)", "csv": "CSV with exact integers",
             "markdown": "a Markdown table", "text": "an aligned text table"}
    for fmt in formats:
        group.add_argument(f"--{fmt}", dest="fmt", action="store_const", const=fmt, help=helps[fmt])
    parser.set_defaults(fmt=default)
    parser.add_argument("--exact", action="store_true",
                        help="print exact integers (1,234,567) instead of human units (1.23M)")


def metric_arg(text: str) -> str:
    try:
        return M.canonical(text)
    except QueryError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def metric_list(text: str) -> list[str]:
    return [metric_arg(part) for part in text.split(",") if part.strip()] or [metric_arg(text)]


def int_list(text: str) -> list[int]:
    """'0,1,4-7' -> [0, 1, 4, 5, 6, 7]."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,4-7, got {text!r}") from None
    return out


def grid(text: str) -> list[int]:
    """Values of a sweep axis: '1,2,4', '128:4096:x2' (geometric, end included), '0:1024:256' (step),
    '1:8' (step 1), or a mix '1,2,8:64:x2'."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if ":" not in part:
                out.append(int(part))
                continue
            fields = part.split(":")
            if len(fields) not in (2, 3):
                raise ValueError
            start, stop = int(fields[0]), int(fields[1])
            step = fields[2] if len(fields) == 3 else "1"
            if step.startswith(("x", "*")):
                factor = int(step[1:])
                if factor < 2 or start < 1:
                    raise argparse.ArgumentTypeError(f"{part!r}: a geometric range needs start >= 1 and factor >= 2")
                value = start
                while value <= stop:
                    out.append(value)
                    value *= factor
            else:
                increment = int(step.lstrip("+"))
                if increment < 1:
                    raise argparse.ArgumentTypeError(f"{part!r}: the step must be >= 1")
                out.extend(range(start, stop + 1, increment))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad value list {text!r}; use 1,2,4 or start:stop:xFACTOR (128:4096:x2) or start:stop:STEP"
            ) from None
        if len(out) > MAX_GRID_POINTS:
            raise argparse.ArgumentTypeError(f"{text!r} has more than {MAX_GRID_POINTS} values")
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} gives no values")
    return list(dict.fromkeys(out))  # unique, in the order given


def shape_triple(text: str) -> tuple[int, int, int]:
    """'B,S' or 'B,S,P'."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected B,S or B,S,P (e.g. 1,1,2048), got {text!r}")
    return values[0], values[1], values[2] if len(values) == 3 else 0


def load_model(args: argparse.Namespace, source: str | None = None) -> ModelProfile:
    return profile_model(source if source is not None else args.model, as_family=args.as_family,
                         hf_token=args.hf_token, revision=args.revision)


def scope_name(scope: str | None) -> str:
    from ..scopes import TRANSFORMER

    return (scope or TRANSFORMER).strip()


def emit(text: str, output: str | None = None) -> None:
    """Write to stdout, or to the file ``output`` (a note on stderr says where it went)."""
    if output in (None, "-"):
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as err:
        raise ProfilerError(f"cannot write {output!r}: {err.strerror or err}") from None
    print(f"wrote {output}", file=sys.stderr)


def note(text: str) -> None:
    print(text, file=sys.stderr)


SCOPE_HELP = f"what to count: {valid_scopes_text()} (default transformer)"
METRIC_HELP = f"metric: {', '.join(M.ALL)}"
