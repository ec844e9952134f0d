"""The ``llm-profiler`` command line: ``main(argv) -> exit code``.

Subcommands are discovered: every module of this package whose name does not start with ``_`` is imported
and its ``register(subparsers)`` adds one (or more) subparsers, each with ``set_defaults(handler=fn)``
where ``fn(args) -> int`` is the exit code. An optional module constant ``ORDER`` (default 100) sorts the
subcommands in ``--help``. Adding ``cli/roofline.py`` with a ``register`` is all it takes to add a command.

Exit codes: 0 success, 1 a check failed (``validate`` found a mismatch), 2 a usage or profiler error
(one line ``error: <message>`` on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from ..errors import ProfilerError
from ._common import Parser

EPILOG = """\
examples:
  llm-profiler profile llama-2-7b --batch 16 --seq 200
  llm-profiler profile llama-2-7b --attr macs --scope attn --seq 4096
  llm-profiler profile llama-2-7b --per-layer --layers 0,1 --markdown
  llm-profiler compare llama-2-7b mistral-7b --seq 4096
  llm-profiler sweep llama-2-7b --metric flops --batch 1,8 --seq 128:4096:x2 --past 0,512
  llm-profiler export llama-2-7b --metric flops --scope attn --format latex
  llm-profiler presets
  llm-profiler validate llama-3.2-1b --batch 2 --seq 3 --tiny

MODEL is a bundled preset (alias or hub id, see `llm-profiler presets`), a config.json file or folder,
or any hub id (fetches config.json only; --hf-token or HF_TOKEN for gated repos).
Run `llm-profiler COMMAND --help` for the options of a command.
"""


def _subcommand_modules() -> list[ModuleType]:
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "register", None)):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(
        prog="llm-profiler",
        description="Exact operation counts (FLOPs, MACs, params, KV cache, activations) of transformer LLMs "
                    "from their Hugging Face config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llm-profiler {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for module in _subcommand_modules():
        module.register(subparsers)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (``sys.argv[1:]`` by default) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return 2
        return int(handler(args) or 0)
    except SystemExit as exit_:  # argparse (--help, --version, usage errors): hand back its code
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except ProfilerError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `llm-profiler ... | head`: the reader left, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not complain again
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
