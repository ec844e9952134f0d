"""Shared pieces of the subcommands: the parser class, argument groups, value parsers, output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import metrics as M
from ..checks import (
    MAX_GRID_POINTS,
    MAX_INT,
    check_as_family,
    check_dtype_name,
    check_float,
    check_int,
    short,
)
from ..errors import ProfilerError, QueryError
from ..profile import ModelProfile, profile_model
from ..scopes import valid_scopes_text

# Defaults of the shape options: one sequence, a 2048-token prompt, an empty cache (a typical prefill).
DEFAULT_BATCH, DEFAULT_SEQ, DEFAULT_PAST = 1, 2048, 0
# MAX_GRID_POINTS (llm_profiler.checks): values of one list, and points of a sweep (the product of its axes).


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's parser must not reset the value the main parser set (`--debug` goes anywhere).
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, also print the Python traceback")


def add_subcommand(subparsers: Any, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_arg(parser)
    return parser


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
    group.add_argument("-b", "--batch", type=int_arg(1, name="batch"), default=batch, metavar="B",
                       help=f"sequences processed together (default {batch})")
    group.add_argument("-s", "--seq", type=int_arg(1, name="seq"), default=seq, metavar="S",
                       help=f"new tokens per sequence in this forward (default {seq})")
    group.add_argument("-p", "--past", type=int_arg(0, name="past"), default=past, metavar="P",
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
    """'flops,macs' -> ['flops', 'macs'] (canonical names, duplicates dropped)."""
    names = [metric_arg(part) for part in text.split(",") if part.strip()] or [metric_arg(text)]
    return list(dict.fromkeys(names))


def _check_count(text: str, count: int, total: int) -> int:
    """Add ``count`` values to ``total``, refusing lists past ``MAX_GRID_POINTS`` before they are expanded."""
    total += count
    if total > MAX_GRID_POINTS:
        raise argparse.ArgumentTypeError(
            f"{short(text)} asks for {total:,} values; the limit is "
            f"{MAX_GRID_POINTS:,} (MAX_GRID_POINTS): narrow the range or take a larger step")
    return total


def _int(text: str) -> int:
    value = int(text)  # ValueError for anything else (and for 4300+ digits)
    if abs(value) > MAX_INT:
        raise argparse.ArgumentTypeError(f"{short(text)}: values must be below 2**63")
    return value


def int_list(text: str) -> list[int]:
    """'0,1,4-7' -> [0, 1, 4, 5, 6, 7] (duplicates dropped); ranges are counted before they are expanded."""
    bounds: list[tuple[int, int]] = []
    total = 0
    try:
        for part in (p.strip() for p in text.split(",")):
            if "-" in part[1:]:
                cut = part.index("-", 1)
                lo, hi = _int(part[:cut]), _int(part[cut + 1:])
                if hi < lo:
                    raise argparse.ArgumentTypeError(f"{short(part)} is an empty range (write LOW-HIGH)")
            else:
                lo = hi = _int(part)
            total = _check_count(text, hi - lo + 1, total)
            bounds.append((lo, hi))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,4-7, got {short(text)}") from None
    out: list[int] = []
    for lo, hi in bounds:
        out.extend(range(lo, hi + 1))
    return list(dict.fromkeys(out))


def _geometric_count(start: int, stop: int, factor: int) -> int:
    count, value = 0, start
    while value <= stop:  # at most log2(stop) steps: ~14,000 for the largest int that parses
        count, value = count + 1, value * factor
    return count


def grid(text: str) -> list[int]:
    """Values of a sweep axis: '1,2,4', '128:4096:x2' (geometric, end included), '0:1024:256' (step),
    '1:8' (step 1), or a mix '1,2,8:64:x2'. Counted before expanding: at most ``MAX_GRID_POINTS`` values."""
    parts: list[tuple[int, int, int, bool]] = []  # (start, stop, step or factor, geometric)
    total = 0
    for part in (p.strip() for p in text.split(",")):
        try:
            if ":" not in part:
                value = _int(part)
                parts.append((value, value, 1, False))
                total = _check_count(text, 1, total)
                continue
            fields = part.split(":")
            if len(fields) not in (2, 3):
                raise ValueError
            start, stop = _int(fields[0]), _int(fields[1])
            step = fields[2] if len(fields) == 3 else "1"
            if step.startswith(("x", "*")):
                factor = _int(step[1:])
                if factor < 2 or start < 1:
                    raise argparse.ArgumentTypeError(
                        f"{short(part)}: a geometric range needs start >= 1 and factor >= 2")
                total = _check_count(text, _geometric_count(start, stop, factor), total)
                parts.append((start, stop, factor, True))
            else:
                increment = _int(step.lstrip("+"))
                if increment < 1:
                    raise argparse.ArgumentTypeError(f"{short(part)}: the step must be >= 1")
                total = _check_count(text, max(0, (stop - start) // increment + 1), total)
                parts.append((start, stop, increment, False))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad value list {short(text)}; use 1,2,4 or start:stop:xFACTOR (128:4096:x2) or start:stop:STEP"
            ) from None
    out: list[int] = []
    for first, last, stride, geometric in parts:
        if geometric:
            value = first
            while value <= last:
                out.append(value)
                value *= stride
        else:
            out.extend(range(first, last + 1, stride))
    if not out:
        raise argparse.ArgumentTypeError(f"{short(text)} gives no values")
    return list(dict.fromkeys(out))  # unique, in the order given


def int_arg(minimum: int | None = None, maximum: int | None = MAX_INT, name: str = "value") -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``[minimum, maximum]``; the message names the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {short(text)}") from None
        try:
            return check_int(value, name, minimum=minimum, maximum=maximum)
        except ProfilerError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "integer"
    return parse


def float_arg(minimum: float | None = None, maximum: float | None = None, *, min_open: bool = False,
              max_open: bool = False, unit: str = "", name: str = "value") -> Callable[[str], float]:
    """An argparse ``type=``: a finite number in the interval (nan, inf, 1e309 and out-of-range values are
    one clear error naming the option)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {short(text)}") from None
        try:
            return check_float(value, name, minimum=minimum, maximum=maximum, min_open=min_open,
                               max_open=max_open, unit=unit)
        except ProfilerError as err:
            raise argparse.ArgumentTypeError(f"{err} (from {short(text)})") from None

    parse.__name__ = "number"
    return parse


def dtype_arg(text: str) -> str:
    """An argparse ``type=`` for dtype names: bounded length (whether the name is known is checked later)."""
    try:
        return check_dtype_name(text, "value")
    except ProfilerError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def shape_triple(text: str) -> tuple[int, int, int]:
    """'B,S' or 'B,S,P'."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected B,S or B,S,P (e.g. 1,1,2048), got {text!r}")
    return values[0], values[1], values[2] if len(values) == 3 else 0


ENGINE_NAMES = ("hf-eager", "hf-sdpa", "vllm")  # llm_profiler.engines.PROFILES (not imported: start-up cost)


def add_engine_arg(parser: argparse.ArgumentParser, default: str, counts: bool = False) -> None:
    """``--engine``: the execution profile (docs/engines.md); counts default to the validated reference,
    latency and memory answers to what a serving engine does. ``counts``: the command's counts themselves
    follow the engine (profile, sweep, export)."""
    parser.add_argument("--engine", dest="counts_engine" if counts else "engine", choices=ENGINE_NAMES, default=default,
                        help=f"execution profile: hf-eager (transformers eager, the validated reference), hf-sdpa, "
                             f"vllm (flash attention, paged KV, last-position logits) (default {default})")


def load_model(args: argparse.Namespace, source: str | None = None) -> ModelProfile:
    check_as_family(args.as_family, "--as-family")
    return profile_model(source if source is not None else args.model, as_family=args.as_family,
                         hf_token=args.hf_token, revision=args.revision,
                         engine=getattr(args, "counts_engine", None))


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
