"""The ``llm-profiler`` command line: ``main(argv) -> exit code``.

Subcommands are discovered: every module of this package whose name does not start with ``_`` is imported
and its ``register(subparsers)`` adds one (or more) subparsers, each with ``set_defaults(handler=fn)``
where ``fn(args) -> int`` is the exit code. An optional module constant ``ORDER`` (default 100) sorts the
subcommands in ``--help``. Adding ``cli/roofline.py`` with a ``register`` is all it takes to add a command.

Exit codes: 0 success, 1 a check failed (``validate`` found a mismatch), 2 a usage or profiler error
(one line ``error: <message>`` on stderr), 3 an internal error, i.e. a bug (one line that says so and how to
report it), 130 interrupted. Never a traceback, unless ``--debug`` (anywhere on the command line) asks for it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from ..errors import ProfilerError
from ._common import Parser, add_debug_arg

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
MAX_MESSAGE = 2000  # characters of one error line
BUG_REPORT = ("please report it to the llm-profiler issue tracker with the command line you ran and the output "
              "of `llm-profiler --version` (add --debug for the traceback)")

EPILOG = """\
examples:
  llm-profiler profile llama-2-7b --batch 16 --seq 200
  llm-profiler profile llama-2-7b --metric macs --scope attn --seq 4096
  llm-profiler profile llama-2-7b --per-layer --layers 0,1 --markdown
  llm-profiler compare llama-2-7b mistral-7b --seq 4096
  llm-profiler sweep llama-2-7b --metric flops --batch 1,8 --seq 128:4096:x2 --past 0,512
  llm-profiler export llama-2-7b --metric flops --scope attn --format latex
  llm-profiler presets
  llm-profiler validate llama-3.2-1b --batch 2 --seq 3 --tiny

MODEL is a bundled preset (alias or hub id, see `llm-profiler presets`), a config.json file or folder,
or any hub id (fetches config.json only; --hf-token or HF_TOKEN for gated repos).
Run `llm-profiler COMMAND --help` for the options of a command.

exit codes: 0 success, 1 validate found a mismatch, 2 an error in the request (one line on stderr),
3 an internal error (a bug: one line that says how to report it; --debug prints the traceback), 130 interrupted.
"""


def _subcommand_modules(only: str | None = None) -> list[ModuleType]:
    """The subcommand modules (each module is named after its command); ``only`` imports just that one,
    so a command pays for its own imports and not for every other command's."""
    modules = []
    names = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    if only in names:
        names = [only]
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        if callable(getattr(module, "register", None)):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def _command(argv: Sequence[str] | None) -> str | None:
    """The subcommand named in ``argv`` (its first argument that is not an option), if any."""
    for arg in argv or ():
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only the subcommand it names is registered (help lists them all)."""
    from .. import __version__

    parser = Parser(
        prog="llm-profiler",
        description="Exact operation counts (FLOPs, MACs, params, KV cache, activations) of transformer LLMs "
                    "from their Hugging Face config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llm-profiler {__version__}")
    add_debug_arg(parser)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for module in _subcommand_modules(_command(argv)):
        module.register(subparsers)
    return parser


def _one_line(err: BaseException) -> str:
    try:
        text = " ".join(str(err).split()) or type(err).__name__
    except Exception:  # an exception whose __str__ fails
        text = type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def _wants_debug(argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--debug":
            return True
    return False


def _traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (``sys.argv[1:]`` by default) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _wants_debug(argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        return int(handler(args) or 0)
    except SystemExit as exit_:  # argparse (--help, --version, usage errors): hand back its code
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_ERROR)
    except ProfilerError as err:
        _traceback(debug)
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `llm-profiler ... | head`: the reader left, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not complain again
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:  # the last resort: every size should have been refused before the work started
        _traceback(debug)
        print(f"error: internal error: out of memory; the request should have been refused as too large, which "
              f"is a bug in llm-profiler: {BUG_REPORT}", file=sys.stderr)
        return EXIT_BUG
    except Exception as err:  # the last resort: anything but a ProfilerError is a bug of ours
        _traceback(debug)
        print(f"error: internal error ({type(err).__name__}: {_one_line(err)}); this is a bug in llm-profiler: "
              f"{BUG_REPORT}", file=sys.stderr)
        return EXIT_BUG


__all__ = ["build_parser", "main"]
